package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/opencsp/installer/internal/remote/sshdtest"
)

func TestBackoffGrowsWithJitterAndCap(t *testing.T) {
	initial, maxB := 100*time.Millisecond, 1*time.Second
	tests := []struct {
		attempt  int
		min, max time.Duration
	}{
		{1, 50 * time.Millisecond, 100 * time.Millisecond},
		{2, 100 * time.Millisecond, 200 * time.Millisecond},
		{4, 400 * time.Millisecond, 800 * time.Millisecond},
		{5, 500 * time.Millisecond, time.Second},
		{50, 500 * time.Millisecond, time.Second},
	}
	for _, tt := range tests {
		for range 100 {
			if d := backoff(initial, maxB, tt.attempt); d < tt.min || d > tt.max {
				t.Fatalf("backoff(attempt %d) = %s, want in [%s, %s]", tt.attempt, d, tt.min, tt.max)
			}
		}
	}
}

func TestShellQuoteSurvivesTheShell(t *testing.T) {
	for _, s := range []string{"", "plain", "a b", "it's", `"dq" $HOME $(id) ; | & \ ` + "`x`", "new\nline", "'''"} {
		out, err := exec.Command("sh", "-c", "printf %s "+shellQuote(s)).Output()
		if err != nil || string(out) != s {
			t.Errorf("sh printf %s = %q, %v; want %q", shellQuote(s), out, err, s)
		}
	}
}

func TestRetryableClassification(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"refused", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, true},
		{"no route", &net.OpError{Op: "dial", Err: syscall.EHOSTUNREACH}, true},
		{"network unreachable", fmt.Errorf("dial: %w", syscall.ENETUNREACH), true},
		{"handshake EOF", fmt.Errorf("ssh: handshake failed: %w", io.EOF), true},
		{"reset", fmt.Errorf("ssh: handshake failed: %w", syscall.ECONNRESET), true},
		{"attempt timeout", fmt.Errorf("dial: %w", context.DeadlineExceeded), true},
		{"dns", &net.DNSError{Err: "no such host", Name: "vm", IsNotFound: true}, true},
		{"algorithm mismatch", errors.New("ssh: handshake failed: ssh: no common algorithm for key exchange"), false},
		{"other", errors.New("something else"), false},
	}
	for _, tt := range tests {
		if got := retryable(tt.err); got != tt.want {
			t.Errorf("%s: retryable(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

func TestLineLoggerSplitsAndBoundsLines(t *testing.T) {
	h := &recordHandler{}
	l := newLineLogger(context.Background(), slog.New(h), "stdout")
	for _, chunk := range []string{"he", "llo\nwor", "ld\r\n", strings.Repeat("x", maxLogLine+10)} {
		_, _ = l.Write([]byte(chunk))
	}
	l.flush()
	got := h.lines()
	want := []string{"stdout:hello", "stdout:world", "stdout:" + strings.Repeat("x", maxLogLine+10)}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("lines = %.80q, want %.80q", got, want)
	}
}

func TestTailAndLimitedBuffer(t *testing.T) {
	tb := &tailBuffer{max: 16}
	_, _ = tb.Write([]byte("line1\nline2\nline3\nline4\n"))
	if got := tb.lastLines(2); got != "line3\nline4" {
		t.Errorf("lastLines = %q", got)
	}
	lb := &limitedBuffer{max: 4}
	if n, _ := lb.Write([]byte("abcdef")); n != 6 || lb.String() != "abcd" || !lb.over {
		t.Errorf("limitedBuffer n=%d content=%q over=%v", n, lb.String(), lb.over)
	}
}

func TestAgentAuthentication(t *testing.T) {
	sshdtest.Require(t)
	srv := sshdtest.Start(t, sshdtest.Options{})
	key := sshdtest.NewKey(t)
	srv.Authorize(t, "root", key.Public())

	keyring := agent.NewKeyring()
	if err := keyring.Add(agent.AddedKey{PrivateKey: privateKeyOf(t, key)}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { _ = agent.ServeAgent(keyring, c); _ = c.Close() }()
		}
	}()

	c, err := Dial(context.Background(), Config{Host: srv.Host, Port: srv.Port, User: "root", AgentSocket: sock, ConnectTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("Dial via agent: %v", err)
	}
	defer c.Close()
	if err := c.Run(context.Background(), "true"); err != nil {
		t.Fatal(err)
	}

	// An agent with the wrong key: the error names the agent and its key.
	other := sshdtest.NewKey(t)
	if err := keyring.RemoveAll(); err != nil {
		t.Fatal(err)
	}
	if err := keyring.Add(agent.AddedKey{PrivateKey: privateKeyOf(t, other)}); err != nil {
		t.Fatal(err)
	}
	_, err = Dial(context.Background(), Config{Host: srv.Host, Port: srv.Port, User: "root", AgentSocket: sock, AuthRetryWindow: -1})
	var ae *AuthError
	if !errors.As(err, &ae) || !strings.Contains(err.Error(), "ssh-agent "+sock) || !strings.Contains(err.Error(), ae.Keys[0]) {
		t.Errorf("err = %v, want an AuthError naming the agent and key", err)
	}
}

func privateKeyOf(t *testing.T, k sshdtest.Key) any {
	t.Helper()
	pem, err := os.ReadFile(k.Path)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := ssh.ParseRawPrivateKey(pem)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestKeepAliveKeepsConnectionUsable(t *testing.T) {
	sshdtest.Require(t)
	srv := sshdtest.Start(t, sshdtest.Options{})
	key := sshdtest.NewKey(t)
	srv.Authorize(t, "root", key.Public())
	c, err := Dial(context.Background(), Config{Host: srv.Host, Port: srv.Port, User: "root", KeyFile: key.Path, KeepAlive: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond) // several keepalives
	if err := c.Run(context.Background(), "true"); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(c.Close(), c.Close()); err != nil && !strings.Contains(err.Error(), "closed") {
		t.Errorf("double Close: %v", err)
	}
}

// TestConnectionLostMidCommand: the connection dropping under a running command (its sshd
// session killed) is reported as ErrConnectionLost, not as the library's bare "exited without
// exit status".
func TestConnectionLostMidCommand(t *testing.T) {
	sshdtest.Require(t)
	srv := sshdtest.Start(t, sshdtest.Options{})
	key := sshdtest.NewKey(t)
	srv.Authorize(t, "root", key.Public())
	c, err := Dial(context.Background(), Config{Host: srv.Host, Port: srv.Port, User: "root", KeyFile: key.Path})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The shell's parent is this connection's sshd session process.
	err = c.Run(ctx, "kill -9 $PPID; sleep 10")
	if !errors.Is(err, ErrConnectionLost) || !strings.Contains(err.Error(), "sleep 10") {
		t.Fatalf("err = %v, want ErrConnectionLost naming the command", err)
	}
	if ctx.Err() != nil {
		t.Fatal("the dropped connection was noticed only at the deadline")
	}
	// The next command on the dead connection cannot open a session: the same cause.
	if err := c.Run(ctx, "true"); !errors.Is(err, ErrConnectionLost) {
		t.Errorf("command after the drop: %v, want ErrConnectionLost", err)
	}
}
