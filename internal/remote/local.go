package remote

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/opencsp/installer/internal/logging"
)

// Local is the Executor for this machine: commands run under sh, files are
// written next to their destination and renamed into place. The caller is
// root already (cloud-init runs the management node's bootstrap as root), so
// there is no sudo.
type Local struct {
	log *slog.Logger
	red *logging.Redactor
}

// NewLocal returns the local executor. log receives command output at debug
// level (nil discards); red scrubs secrets from commands and stderr quoted
// in errors (nil: none).
func NewLocal(log *slog.Logger, red *logging.Redactor) *Local {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Local{log: log, red: red}
}

func (l *Local) redact(s string) string {
	if l.red == nil {
		return s
	}
	return l.red.Redact(s)
}

// Close implements Executor; there is nothing to release.
func (l *Local) Close() error { return nil }

// Run implements Executor.
func (l *Local) Run(ctx context.Context, cmd string) error {
	return l.exec(ctx, cmd, nil)
}

// Output implements Executor.
func (l *Local) Output(ctx context.Context, cmd string) ([]byte, error) {
	var out bytes.Buffer
	err := l.exec(ctx, cmd, &out)
	return out.Bytes(), err
}

// exec runs cmd under sh in its own process group, so cancelling ctx ends
// everything it started (install.sh forks systemctl and friends). With
// stdout nil the output is logged line by line; otherwise it goes to stdout
// only, unlogged.
func (l *Local) exec(ctx context.Context, cmd string, stdout io.Writer) error {
	shown := l.redact(cmd)
	log := l.log.With("addr", "local", "cmd", shown)
	c := exec.CommandContext(ctx, "sh", "-c", cmd)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGTERM) }
	c.WaitDelay = 10 * time.Second
	stdoutLog := newLineLogger(ctx, log, "stdout")
	stderrLog := newLineLogger(ctx, log, "stderr")
	tail := &tailBuffer{max: 4096}
	if stdout == nil {
		c.Stdout = stdoutLog
	} else {
		c.Stdout = stdout
	}
	c.Stderr = io.MultiWriter(stderrLog, tail)
	log.Debug("local command start")
	err := c.Run()
	stdoutLog.flush()
	stderrLog.flush()
	if ctx.Err() != nil {
		return fmt.Errorf("command %q: %w", shown, ctx.Err())
	}
	if err == nil {
		return nil
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		ee := &ExitError{Cmd: shown, Code: exit.ExitCode(), Stderr: l.redact(tail.lastLines(20)), Local: true}
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			ee.Code, ee.Signal = -1, ws.Signal().String()
		}
		return ee
	}
	return fmt.Errorf("command %q: %w", shown, err)
}

// UploadFile implements Executor: a local copy, atomic like Client.Upload.
func (l *Local) UploadFile(ctx context.Context, src, dst string, mode fs.FileMode, progress ProgressFunc) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	pr := newProgressReader(ctx, f, fi.Size(), progress)
	if err := writeAtomic(pr, dst, mode); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	if pr.done != fi.Size() {
		return fmt.Errorf("copy %s to %s: copied %d bytes, expected %d (source changed?)", src, dst, pr.done, fi.Size())
	}
	pr.finish()
	return nil
}

// WriteFile implements Executor.
func (l *Local) WriteFile(ctx context.Context, dst string, content []byte, mode fs.FileMode) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := writeAtomic(bytes.NewReader(content), dst, mode); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	return nil
}

// writeAtomic writes r to a temp file next to dst (mode set before any data,
// so a secret is never readable by others), syncs it and renames it over dst.
func writeAtomic(r io.Reader, dst string, mode fs.FileMode) error {
	if !filepath.IsAbs(dst) {
		return fmt.Errorf("path %q must be absolute", dst)
	}
	dst = filepath.Clean(dst)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("create parent directory: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if err := tmp.Chmod(mode.Perm()); err != nil {
		tmp.Close()
		return err
	}
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

// ReadFile implements Executor.
func (l *Local) ReadFile(ctx context.Context, p string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxReadFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	if len(b) > maxReadFile {
		return nil, fmt.Errorf("read %s: larger than %d bytes", p, maxReadFile)
	}
	return b, nil
}

// SHA256 implements Executor.
func (l *Local) SHA256(ctx context.Context, p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("sha256 of %s: %w", p, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, newProgressReader(ctx, f, -1, nil)); err != nil {
		return "", fmt.Errorf("sha256 of %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
