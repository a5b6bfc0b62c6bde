// Package sshdtest runs a real OpenSSH server (Debian's openssh-server) as a
// child process of a test, on 127.0.0.1 with its own host keys, authorized
// keys and config, plus throwaway Unix users with chosen sudo rights. Tests of
// code that talks SSH (internal/remote, the k3s stage) share it.
//
// It needs /usr/sbin/sshd and root (sshd must switch users); Require skips
// loudly otherwise. CI installs openssh-server, openssh-client and sudo.
package sshdtest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// SSHD is where Debian's openssh-server installs the daemon.
const SSHD = "/usr/sbin/sshd"

// Require skips t, loudly, when a real sshd cannot be run here.
func Require(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(SSHD); err != nil {
		t.Skipf("\n\n*** SKIPPED: %s not found: these tests need a real OpenSSH server. ***\n"+
			"*** Install it: apt-get install -y openssh-server openssh-client sudo (CI does). ***\n", SSHD)
	}
	if os.Geteuid() != 0 {
		t.Skip("\n\n*** SKIPPED: the sshd tests run sshd and create users, which needs root. ***\n")
	}
}

// HostKeys is a set of server host keys (ed25519 and ECDSA P-256) on disk.
type HostKeys struct {
	Dir   string
	Files []string
	Keys  map[string]ssh.PublicKey // by key type, e.g. ssh.KeyAlgoED25519
}

// NewHostKeys generates fresh host keys in a temp dir.
func NewHostKeys(t testing.TB) *HostKeys {
	t.Helper()
	dir := t.TempDir()
	hk := &HostKeys{Dir: dir, Keys: map[string]ssh.PublicKey{}}
	_, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for name, priv := range map[string]crypto.Signer{"ed25519": edPriv, "ecdsa": ecPriv} {
		file := filepath.Join(dir, "ssh_host_"+name+"_key")
		writePrivateKey(t, file, priv, "")
		pub, err := ssh.NewPublicKey(priv.Public())
		if err != nil {
			t.Fatal(err)
		}
		hk.Files = append(hk.Files, file)
		hk.Keys[pub.Type()] = pub
	}
	return hk
}

// Fingerprint is the SHA256 fingerprint of the host key of keyType.
func (h *HostKeys) Fingerprint(keyType string) string {
	return ssh.FingerprintSHA256(h.Keys[keyType])
}

// Key is a client key pair written to disk.
type Key struct {
	Path   string // private key, OpenSSH format, mode 0600
	Signer ssh.Signer
}

// Public is the public key.
func (k Key) Public() ssh.PublicKey { return k.Signer.PublicKey() }

// NewKey generates an unencrypted ed25519 client key.
func NewKey(t testing.TB) Key {
	return newKey(t, "")
}

// NewEncryptedKey generates an ed25519 client key protected by passphrase.
func NewEncryptedKey(t testing.TB, passphrase string) Key {
	return newKey(t, passphrase)
}

func newKey(t testing.TB, passphrase string) Key {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "id_ed25519")
	writePrivateKey(t, p, priv, passphrase)
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return Key{Path: p, Signer: signer}
}

func writePrivateKey(t testing.TB, path string, priv crypto.PrivateKey, passphrase string) {
	t.Helper()
	var block *pem.Block
	var err error
	if passphrase == "" {
		block, err = ssh.MarshalPrivateKey(priv, "sshdtest")
	} else {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "sshdtest", []byte(passphrase))
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Options configure a Server.
type Options struct {
	// Port to listen on; 0 picks a free one.
	Port int
	// HostKeys to serve; nil generates fresh ones.
	HostKeys *HostKeys
	// Extra sshd_config lines.
	Extra []string
}

// Server is a running sshd. Stop it with Stop or let the test cleanup do it.
type Server struct {
	Host     string
	Port     int
	HostKeys *HostKeys

	dir      string // config, pid file, authorized keys; world-readable for test users
	cmd      *exec.Cmd
	logPath  string
	exited   chan struct{}
	stopOnce sync.Once
}

// Addr is host:port.
func (s *Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// Start runs sshd and waits until it accepts connections.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	Require(t)
	if opts.HostKeys == nil {
		opts.HostKeys = NewHostKeys(t)
	}
	if opts.Port == 0 {
		opts.Port = FreePort(t)
	}
	// sshd refuses to start without its privilege separation directory,
	// which only the packaged service creates.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatalf("sshdtest: %v", err)
	}
	// Not t.TempDir: its parent is 0700, and sshd reads a user's
	// authorized_keys as that user.
	dir, err := os.MkdirTemp("", "sshdtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "authorized_keys"), 0o755); err != nil {
		t.Fatal(err)
	}
	s := &Server{Host: "127.0.0.1", Port: opts.Port, HostKeys: opts.HostKeys, dir: dir,
		logPath: filepath.Join(dir, "sshd.log"), exited: make(chan struct{})}

	cfg := []string{
		"Port " + strconv.Itoa(s.Port),
		"ListenAddress 127.0.0.1",
		"PidFile " + filepath.Join(dir, "sshd.pid"),
		"AuthorizedKeysFile " + filepath.Join(dir, "authorized_keys", "%u"),
		"UsePAM no",
		"StrictModes no",
		"PermitRootLogin prohibit-password",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"PubkeyAuthentication yes",
		"UseDNS no",
		"MaxStartups 200",
		"MaxSessions 50",
		"LogLevel VERBOSE",
		"Subsystem sftp internal-sftp",
	}
	for _, f := range opts.HostKeys.Files {
		cfg = append(cfg, "HostKey "+f)
	}
	cfg = append(cfg, opts.Extra...)
	cfgPath := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(cfgPath, []byte(strings.Join(cfg, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// -D: stay in the foreground, -e: log to stderr. A file, not a pipe:
	// per-connection sshd processes inherit it and may outlive the listener,
	// and a pipe would make Wait wait for them.
	logFile, err := os.Create(s.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	s.cmd = exec.Command(SSHD, "-D", "-e", "-f", cfgPath)
	s.cmd.Stdout = logFile
	s.cmd.Stderr = logFile
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("sshdtest: start sshd: %v", err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("sshd log (%s):\n%s", s.Addr(), s.Log())
		}
	})
	if err := s.waitReady(10 * time.Second); err != nil {
		t.Fatalf("sshdtest: %v\nsshd log:\n%s", err, s.Log())
	}
	return s
}

func (s *Server) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("sshd exited at start")
		default:
		}
		c, err := net.DialTimeout("tcp", s.Addr(), 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("sshd did not listen on %s within %s", s.Addr(), timeout)
}

// Stop terminates the listening sshd (sessions already open keep their own
// processes until the client disconnects).
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		if s.cmd.Process != nil {
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
		}
		select {
		case <-s.exited:
		case <-time.After(5 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	})
}

// Log is sshd's output so far.
func (s *Server) Log() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// Authorize adds key to user's authorized keys on this server.
func (s *Server) Authorize(t testing.TB, user string, key ssh.PublicKey) {
	t.Helper()
	p := filepath.Join(s.dir, "authorized_keys", user)
	f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(ssh.MarshalAuthorizedKey(key)); err != nil {
		t.Fatal(err)
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// SudoRights is what a test user may do with sudo.
type SudoRights int

// Sudo rights of a test user.
const (
	NoSudo           SudoRights = iota // no sudoers entry
	SudoNoPassword                     // NOPASSWD: ALL, like a cloud image's default user
	SudoWithPassword                   // ALL, but sudo asks for a password
)

// User is a throwaway Unix user, removed at test cleanup.
type User struct {
	Name string
	Home string
}

// AddUser creates a user with a home directory, a usable (not locked) but
// password-less account, and the given sudo rights.
func AddUser(t testing.TB, rights SudoRights) *User {
	t.Helper()
	Require(t)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	u := &User{Name: "octest" + hex.EncodeToString(b)}
	u.Home = "/home/" + u.Name
	// "*" instead of the default "!": with UsePAM no, sshd refuses locked
	// accounts even for key logins.
	if err := retryLocked(func() ([]byte, error) {
		return exec.Command("useradd", "--create-home", "--home-dir", u.Home, "--shell", "/bin/sh",
			"--password", "*", u.Name).CombinedOutput()
	}); err != nil {
		t.Fatalf("sshdtest: useradd %s: %v", u.Name, err)
	}
	sudoers := filepath.Join("/etc/sudoers.d", "sshdtest-"+u.Name)
	t.Cleanup(func() {
		_ = os.Remove(sudoers)
		// --force: a session process may linger a moment after the client closed.
		if err := retryLocked(func() ([]byte, error) {
			return exec.Command("userdel", "--force", "--remove", u.Name).CombinedOutput()
		}); err != nil {
			t.Logf("sshdtest: userdel %s: %v", u.Name, err)
		}
	})
	var rule string
	switch rights {
	case SudoNoPassword:
		rule = u.Name + " ALL=(ALL) NOPASSWD:ALL\n"
	case SudoWithPassword:
		rule = u.Name + " ALL=(ALL) ALL\n"
	}
	if rule != "" {
		if err := os.WriteFile(sudoers, []byte(rule), 0o440); err != nil {
			t.Fatal(err)
		}
	}
	return u
}

// retryLocked retries user database commands that fail because another test
// process holds /etc/passwd's lock.
func retryLocked(run func() ([]byte, error)) error {
	var err error
	for range 50 {
		var out []byte
		out, err = run()
		if err == nil {
			return nil
		}
		err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(out))
		var ee *exec.ExitError
		// useradd/userdel exit 10 when they cannot lock the user files
		if !errors.As(err, &ee) || (ee.ExitCode() != 10 && !strings.Contains(string(out), "lock")) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}
