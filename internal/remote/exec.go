package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
)

// Command is one remote command line.
type Command struct {
	// Cmd is a POSIX shell command line. With sudo it runs as root under
	// `sudo -n sh -c`, otherwise under the user's login shell.
	Cmd string
	// NoSudo runs Cmd as the login user even when the client uses sudo.
	NoSudo bool
	Stdin  io.Reader
	// Stdout and Stderr, when set, receive a copy of the output.
	Stdout, Stderr io.Writer
	// HideStdout keeps stdout out of the log (it may hold secrets, e.g. a
	// kubeconfig). Stderr is always logged.
	HideStdout bool
}

// ExitError means the remote command ran and failed.
type ExitError struct {
	Cmd    string
	Code   int    // exit status; -1 when killed by a signal
	Signal string // set when killed by a signal
	Stderr string // the last lines of stderr
	// Local: the command ran on this machine (Local), not over SSH.
	Local bool
}

func (e *ExitError) Error() string {
	how := fmt.Sprintf("exited with code %d", e.Code)
	if e.Signal != "" {
		how = "was killed by signal " + e.Signal
	}
	what := "remote command"
	if e.Local {
		what = "command"
	}
	if e.Stderr == "" {
		return fmt.Sprintf("%s %q %s", what, e.Cmd, how)
	}
	return fmt.Sprintf("%s %q %s: %s", what, e.Cmd, how, e.Stderr)
}

// SudoError means sudo refused to run without a password.
type SudoError struct {
	User string
	Err  *ExitError
}

func (e *SudoError) Error() string {
	return fmt.Sprintf("sudo on the remote machine asks user %q for a password, but the installer runs sudo non-interactively (sudo -n): "+
		"allow passwordless sudo for this user (e.g. /etc/sudoers.d/90-opencsp: %q, as cloud-init does for the image's default user) "+
		"or log in as root: %v", e.User, e.User+" ALL=(ALL) NOPASSWD:ALL", e.Err)
}

func (e *SudoError) Unwrap() error { return e.Err }

// Run runs cmd and logs its output line by line.
func (c *Client) Run(ctx context.Context, cmd string) error {
	return c.Exec(ctx, Command{Cmd: cmd})
}

// Output runs cmd and returns its stdout, which is not logged.
func (c *Client) Output(ctx context.Context, cmd string) ([]byte, error) {
	var out bytes.Buffer
	err := c.Exec(ctx, Command{Cmd: cmd, Stdout: &out, HideStdout: true})
	return out.Bytes(), err
}

// Exec runs one command and waits for it. A non-zero exit is an *ExitError
// (or *SudoError); cancelling ctx signals the command and closes its session.
func (c *Client) Exec(ctx context.Context, cmd Command) error {
	line := cmd.Cmd
	sudo := c.cfg.useSudo() && !cmd.NoSudo
	if sudo {
		line = "sudo -n -- sh -c " + shellQuote(cmd.Cmd)
	}
	shown := c.cfg.redact(cmd.Cmd)
	sess, err := c.conn.NewSession()
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("ssh session on %s for %q: %w: %v", c.cfg.Addr(), shown, ErrConnectionLost, err)
	}
	if err != nil {
		return fmt.Errorf("ssh session on %s for %q: %w", c.cfg.Addr(), shown, err)
	}
	defer sess.Close()

	log := c.cfg.Logger.With("addr", c.cfg.Addr(), "cmd", shown)
	tail := &tailBuffer{max: 4096}
	var stdout io.Writer = io.Discard
	stdoutLog := newLineLogger(ctx, log, "stdout")
	if !cmd.HideStdout {
		stdout = stdoutLog
	}
	stderrLog := newLineLogger(ctx, log, "stderr")
	// The gate stops output reaching the caller's writers once Exec has
	// returned (a cancelled command may still be printing).
	gate := &gate{}
	sess.Stdout = gate.wrap(multi(stdout, cmd.Stdout))
	sess.Stderr = gate.wrap(multi(stderrLog, tail, cmd.Stderr))
	sess.Stdin = cmd.Stdin
	defer gate.shut()

	log.Debug("remote command start", "sudo", sudo)
	if err := sess.Start(line); err != nil {
		return fmt.Errorf("start remote command %q: %w", shown, err)
	}
	waited := make(chan error, 1)
	go func() { waited <- sess.Wait() }()
	select {
	case err = <-waited:
	case <-ctx.Done():
		// Best effort: OpenSSH ignores signal requests for root logins
		// (no privilege separation there), and closing the channel does not
		// kill a command without a pty. The command may run on.
		_ = sess.Signal(ssh.SIGTERM)
		_ = sess.Close()
		return fmt.Errorf("remote command %q: %w", shown, ctx.Err())
	}
	stdoutLog.flush()
	stderrLog.flush()

	if ctx.Err() != nil {
		return fmt.Errorf("remote command %q: %w", shown, ctx.Err())
	}
	if err == nil {
		return nil
	}
	var exit *ssh.ExitError
	if errors.As(err, &exit) {
		ee := &ExitError{Cmd: shown, Code: exit.ExitStatus(), Stderr: c.cfg.redact(tail.lastLines(20))}
		if exit.Signal() != "" {
			ee.Code, ee.Signal = -1, exit.Signal()
		}
		if sudo && isSudoPasswordPrompt(ee) {
			return &SudoError{User: c.cfg.User, Err: ee}
		}
		return ee
	}
	var missing *ssh.ExitMissingError
	if errors.As(err, &missing) {
		// The channel closed without an exit status: the connection went away under it.
		return fmt.Errorf("remote command %q on %s: %w (it may still be running there; rerunning resumes): %v", shown, c.cfg.Addr(), ErrConnectionLost, err)
	}
	return fmt.Errorf("remote command %q on %s: %w", shown, c.cfg.Addr(), err)
}

// ErrConnectionLost: the SSH connection dropped before a remote command reported how it ended.
var ErrConnectionLost = errors.New("SSH connection lost before the command finished")

func isSudoPasswordPrompt(e *ExitError) bool {
	s := e.Stderr
	return e.Code == 1 && strings.Contains(s, "sudo") &&
		(strings.Contains(s, "password is required") || strings.Contains(s, "terminal is required") ||
			strings.Contains(s, "no tty present"))
}

// gate forwards writes until shut, then drops them.
type gate struct {
	mu     sync.Mutex
	closed bool
}

func (g *gate) wrap(w io.Writer) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.closed {
			return len(p), nil
		}
		return w.Write(p)
	})
}

func (g *gate) shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func multi(ws ...io.Writer) io.Writer {
	var live []io.Writer
	for _, w := range ws {
		if w != nil {
			live = append(live, w)
		}
	}
	return io.MultiWriter(live...)
}

// shellQuote quotes s as one POSIX shell word.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// lineLogger logs each complete line written to it. Overlong lines are cut
// so memory stays bounded whatever the command prints.
type lineLogger struct {
	ctx    context.Context
	log    *slog.Logger
	stream string
	mu     sync.Mutex
	buf    []byte
}

const maxLogLine = 16 << 10

func newLineLogger(ctx context.Context, log *slog.Logger, stream string) *lineLogger {
	return &lineLogger{ctx: ctx, log: log, stream: stream}
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			l.buf = append(l.buf, p...)
			if len(l.buf) >= maxLogLine {
				l.emit()
			}
			break
		}
		l.buf = append(l.buf, p[:i]...)
		l.emit()
		p = p[i+1:]
	}
	return n, nil
}

func (l *lineLogger) emit() {
	line := strings.TrimRight(string(l.buf), "\r")
	l.buf = l.buf[:0]
	l.log.DebugContext(l.ctx, "remote "+l.stream, "line", line)
}

func (l *lineLogger) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.emit()
	}
}

// tailBuffer keeps the last max bytes written, for error messages.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) lastLines(n int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := strings.Split(strings.TrimSpace(string(t.b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}
