package remote

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencsp/installer/internal/logging"
)

func TestLocalCommands(t *testing.T) {
	ctx := context.Background()
	rec := &recordHandler{}
	red := logging.NewRedactor()
	red.Add("s3cr3t-value")
	l := NewLocal(slog.New(rec), red)

	// Run logs stdout and stderr line by line.
	if err := l.Run(ctx, "echo one; echo two >&2"); err != nil {
		t.Fatal(err)
	}
	if got := rec.lines(); !slices.Equal(got, []string{"stdout:one", "stderr:two"}) && !slices.Equal(got, []string{"stderr:two", "stdout:one"}) {
		t.Errorf("logged %v, want stdout:one and stderr:two", got)
	}

	// Output returns stdout and keeps it out of the log.
	rec.reset()
	out, err := l.Output(ctx, "echo private-kubeconfig")
	if err != nil || string(out) != "private-kubeconfig\n" {
		t.Fatalf("Output = %q, %v", out, err)
	}
	for _, line := range rec.lines() {
		if strings.Contains(line, "private-kubeconfig") {
			t.Errorf("Output's stdout was logged: %q", line)
		}
	}

	// A failing command is an ExitError with its code and stderr, secrets redacted.
	err = l.Run(ctx, "echo 'bad s3cr3t-value' >&2; exit 7")
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 7 || !ee.Local {
		t.Fatalf("err = %#v, want ExitError code 7", err)
	}
	if strings.Contains(err.Error(), "s3cr3t-value") || !strings.Contains(err.Error(), "bad [REDACTED]") ||
		!strings.HasPrefix(err.Error(), "command ") {
		t.Errorf("error = %q, want the redacted stderr, not called remote", err)
	}
}

// Cancelling ends the command and what it started (its process group).
func TestLocalCancelKillsProcessGroup(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	l := NewLocal(nil, nil)
	pidFile := filepath.Join(t.TempDir(), "pid")
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, "sleep 30 & echo $! > "+pidFile+"; wait") }()
	var pid int
	for deadline := time.Now().Add(5 * time.Second); pid == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if pid == 0 {
		t.Fatal("background sleep did not start")
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("cancel took %s", d)
	}
	time.Sleep(100 * time.Millisecond)
	if err := syscall.Kill(pid, 0); err == nil {
		if b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); !strings.Contains(string(b), ") Z") {
			t.Errorf("child sleep %d still running after cancel", pid)
		}
	}
}

func TestLocalFiles(t *testing.T) {
	ctx := context.Background()
	l := NewLocal(nil, nil)
	dir := t.TempDir()
	dst := filepath.Join(dir, "etc", "rancher", "k3s", "config.yaml")

	// Missing files wrap fs.ErrNotExist for both reads and checksums.
	if _, err := l.ReadFile(ctx, dst); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadFile of a missing file: %v", err)
	}
	if _, err := l.SHA256(ctx, dst); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("SHA256 of a missing file: %v", err)
	}
	if err := l.WriteFile(ctx, "relative/path", []byte("x"), 0o600); err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Errorf("relative path: err = %v", err)
	}

	tests := []struct {
		name    string
		content []byte
		mode    fs.FileMode
		upload  bool
	}{
		{"create with parents", []byte("node-name: a\n"), 0o600, false},
		{"replace, new mode", []byte("node-name: b\n"), 0o644, false},
		{"upload over it", bytes.Repeat([]byte("k3s"), 300_000), 0o755, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var calls int
			var last [2]int64
			if tc.upload {
				src := filepath.Join(t.TempDir(), "src")
				if err := os.WriteFile(src, tc.content, 0o600); err != nil {
					t.Fatal(err)
				}
				err := l.UploadFile(ctx, src, dst, tc.mode, func(done, total int64) { calls++; last = [2]int64{done, total} })
				if err != nil {
					t.Fatal(err)
				}
				if n := int64(len(tc.content)); calls == 0 || last != [2]int64{n, n} {
					t.Errorf("progress: %d calls, last %v, want it to end at %d/%d", calls, last, n, n)
				}
			} else if err := l.WriteFile(ctx, dst, tc.content, tc.mode); err != nil {
				t.Fatal(err)
			}
			got, err := l.ReadFile(ctx, dst)
			if err != nil || !bytes.Equal(got, tc.content) {
				t.Fatalf("ReadFile: %d bytes, %v; want the %d written", len(got), err, len(tc.content))
			}
			fi, err := os.Stat(dst)
			if err != nil || fi.Mode().Perm() != tc.mode {
				t.Errorf("mode %v (%v), want %v", fi.Mode().Perm(), err, tc.mode)
			}
			sum := sha256.Sum256(tc.content)
			if s, err := l.SHA256(ctx, dst); err != nil || s != hex.EncodeToString(sum[:]) {
				t.Errorf("SHA256 = %s, %v", s, err)
			}
			entries, _ := os.ReadDir(filepath.Dir(dst))
			if len(entries) != 1 {
				t.Errorf("leftovers next to the file: %v", entries)
			}
		})
	}
	if err := l.UploadFile(ctx, filepath.Join(dir, "nope"), dst, 0o644, nil); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "nope") {
		t.Errorf("upload of a missing source: %v", err)
	}
}
