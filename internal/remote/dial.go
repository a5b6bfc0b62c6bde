package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// Client is an SSH connection to one machine. It is safe for concurrent use.
type Client struct {
	cfg     Config
	conn    *ssh.Client
	hostKey ssh.PublicKey

	mu   sync.Mutex
	sftp *sftp.Client // opened on first use

	stopKeepAlive chan struct{}
	closeOnce     sync.Once
}

// ConnectError means no SSH connection could be made before the connect
// deadline. Its message lists what was tried and what to check.
type ConnectError struct {
	Addr     string
	User     string
	Source   string // key file or agent
	Attempts int
	Elapsed  time.Duration
	Last     error
}

func (e *ConnectError) Error() string {
	return fmt.Sprintf("ssh: could not connect to %s as %q using %s: gave up after %d attempts in %s (last error: %v). "+
		"Check: is the VM running and does it have this address? has cloud-init finished (it creates the user and installs the key)? "+
		"does a firewall or security group allow TCP port %s from this machine? is %q the right login user for this image "+
		"(e.g. debian, ubuntu, cloud-user)?",
		e.Addr, e.User, e.Source, e.Attempts, e.Elapsed.Round(time.Millisecond), e.Last, portOf(e.Addr), e.User)
}

func (e *ConnectError) Unwrap() error { return e.Last }

func portOf(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "22"
	}
	return port
}

// Dial connects and logs in, retrying while the machine is not reachable yet
// (booting VM) until cfg.ConnectTimeout or ctx ends. Host key mismatches and
// configuration errors fail at once; authentication failures are retried for
// cfg.AuthRetryWindow only.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	plan, err := newHostKeyPlan(cfg.HostKey)
	if err != nil {
		return nil, err
	}
	creds, err := loadCredentials(cfg)
	if err != nil {
		return nil, err
	}
	// The agent is needed only to sign during the handshake.
	defer creds.close()

	addr := cfg.Addr()
	log := cfg.Logger.With("addr", addr, "user", cfg.User)
	start := time.Now()
	dctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()

	var (
		attempts  int
		firstAuth time.Time
		lastErr   error
	)
	for {
		attempts++
		conn, key, err := attempt(dctx, cfg, plan, creds)
		if err == nil {
			c := &Client{cfg: cfg, conn: conn, hostKey: key, stopKeepAlive: make(chan struct{})}
			if plan.known == nil && cfg.HostKey.OnFirstContact != nil {
				if err := cfg.HostKey.OnFirstContact(key); err != nil {
					_ = conn.Close()
					return nil, fmt.Errorf("ssh: record host key of %s: %w", addr, err)
				}
			}
			log.Debug("ssh connected", "attempts", attempts, "host_key", ssh.FingerprintSHA256(key))
			if cfg.KeepAlive > 0 {
				go c.keepAlive(cfg.KeepAlive)
			}
			return c, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("ssh: connect to %s: %w", addr, ctx.Err())
		}
		var mismatch *HostKeyMismatchError
		if errors.As(err, &mismatch) {
			return nil, mismatch
		}
		authErr := isAuthFailure(err)
		if authErr {
			if firstAuth.IsZero() {
				firstAuth = time.Now()
			}
			if cfg.AuthRetryWindow < 0 || time.Since(firstAuth) >= cfg.AuthRetryWindow {
				return nil, &AuthError{Addr: addr, User: cfg.User, Source: creds.source, Keys: creds.offered, Err: err}
			}
		} else if !retryable(err) && dctx.Err() == nil {
			return nil, fmt.Errorf("ssh: connect to %s as %q: %w", addr, cfg.User, err)
		}
		lastErr = err

		delay := backoff(cfg.InitialBackoff, cfg.MaxBackoff, attempts)
		log.Debug("ssh not reachable yet, retrying", "attempt", attempts, "err", err, "retry_in", delay)
		if dctx.Err() != nil || !sleep(dctx, delay) {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("ssh: connect to %s: %w", addr, ctx.Err())
			}
			if authErr {
				return nil, &AuthError{Addr: addr, User: cfg.User, Source: creds.source, Keys: creds.offered, Err: lastErr}
			}
			return nil, &ConnectError{Addr: addr, User: cfg.User, Source: creds.source,
				Attempts: attempts, Elapsed: time.Since(start), Last: lastErr}
		}
	}
}

// attempt makes one TCP connection and handshake per host key algorithm
// family in the plan, stopping at the first that succeeds.
func attempt(ctx context.Context, cfg Config, plan *hostKeyPlan, creds *credentials) (*ssh.Client, ssh.PublicKey, error) {
	addr := cfg.Addr()
	var (
		presented []string
		expected  string
		lastErr   error
	)
	for _, algos := range plan.algoSets {
		conn, key, mismatch, err := handshake(ctx, cfg, plan, creds, algos)
		if err == nil {
			return conn, key, nil
		}
		if mismatch != nil {
			// With only a fingerprint pinned, another of the server's keys
			// may be the one it names: try the next family.
			presented = append(presented, mismatch.Presented...)
			expected = mismatch.Expected
			if len(plan.algoSets) > 1 && plan.known == nil {
				lastErr = mismatch
				continue
			}
			return nil, nil, mismatch
		}
		var neg *ssh.AlgorithmNegotiationError
		if errors.As(err, &neg) && neg.What == "host key" && len(plan.algoSets) > 1 {
			lastErr = err // the server has no key of this family
			continue
		}
		return nil, nil, err
	}
	if len(presented) > 0 {
		return nil, nil, &HostKeyMismatchError{Addr: addr, Expected: expected, Presented: presented, Source: "configured"}
	}
	return nil, nil, lastErr
}

func handshake(ctx context.Context, cfg Config, plan *hostKeyPlan, creds *credentials, algos []string) (*ssh.Client, ssh.PublicKey, *HostKeyMismatchError, error) {
	addr := cfg.Addr()
	actx, cancel := context.WithTimeout(ctx, cfg.AttemptTimeout)
	defer cancel()
	var d net.Dialer
	tcp, err := d.DialContext(actx, "tcp", addr)
	if err != nil {
		return nil, nil, nil, err
	}
	// Bound the handshake too: a booting VM may accept TCP and then stall.
	deadline, _ := actx.Deadline()
	_ = tcp.SetDeadline(deadline)
	stop := context.AfterFunc(actx, func() { _ = tcp.Close() })

	var (
		seen     ssh.PublicKey
		mismatch *HostKeyMismatchError
	)
	sc, chans, reqs, err := ssh.NewClientConn(tcp, addr, &ssh.ClientConfig{
		User:              cfg.User,
		Auth:              []ssh.AuthMethod{creds.method},
		HostKeyCallback:   plan.callback(&seen, &mismatch),
		HostKeyAlgorithms: algos,
	})
	if !stop() && err == nil {
		_ = sc.Close()
		err = fmt.Errorf("ssh handshake with %s: %w", addr, actx.Err())
	}
	if err != nil {
		if mismatch != nil {
			return nil, nil, mismatch, mismatch
		}
		if actx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("%w (attempt timed out after %s)", err, cfg.AttemptTimeout)
		}
		return nil, nil, nil, err
	}
	_ = tcp.SetDeadline(time.Time{})
	return ssh.NewClient(sc, chans, reqs), seen, nil, nil
}

// retryable reports whether err looks like "not up yet": the VM is booting,
// sshd is starting, or the network path is not there yet.
func retryable(err error) bool {
	for _, target := range []error{
		syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.ECONNABORTED, syscall.EHOSTUNREACH,
		syscall.ENETUNREACH, syscall.EHOSTDOWN, syscall.ENETDOWN, syscall.EPIPE, syscall.ETIMEDOUT,
		io.EOF, io.ErrUnexpectedEOF, net.ErrClosed, context.DeadlineExceeded,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	// DHCP-registered names may appear in DNS only once the VM is up.
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "connection reset") || strings.Contains(msg, "no route to host")
}

// backoff is exponential from initial, capped at max, with jitter in
// [d/2, d] so retries of several installers do not synchronise.
func backoff(initial, max time.Duration, attempt int) time.Duration {
	d := initial
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	half := d / 2
	return half + rand.N(half+1)
}

// sleep waits d or until ctx ends; false means ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// HostKey is the key the server presented on login.
func (c *Client) HostKey() ssh.PublicKey { return c.hostKey }

// keepAlive pings the server until the client is closed or the connection
// fails.
func (c *Client) keepAlive(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.stopKeepAlive:
			return
		case <-t.C:
			if _, _, err := c.conn.SendRequest("keepalive@openssh.com", true, nil); err != nil {
				return
			}
		}
	}
}

// Close ends the SFTP session, if any, and the connection.
func (c *Client) Close() error {
	c.closeOnce.Do(func() { close(c.stopKeepAlive) })
	c.mu.Lock()
	s := c.sftp
	c.sftp = nil
	c.mu.Unlock()
	if s != nil {
		_ = s.Close()
	}
	return c.conn.Close()
}

// sftpClient opens the SFTP subsystem once and reuses it.
func (c *Client) sftpClient() (*sftp.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sftp != nil {
		return c.sftp, nil
	}
	s, err := sftp.NewClient(c.conn, sftp.UseConcurrentWrites(true))
	if err != nil {
		return nil, fmt.Errorf("sftp on %s: %w", c.cfg.Addr(), err)
	}
	c.sftp = s
	return s, nil
}
