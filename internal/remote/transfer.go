package remote

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"

	"github.com/opencsp/installer/internal/events"
)

// ProgressFunc receives bytes done and the total (0 when unknown). It is
// called at most every ProgressInterval and once more at the end, never
// concurrently (possibly from a helper goroutine).
type ProgressFunc func(done, total int64)

// ProgressInterval throttles ProgressFunc calls.
const ProgressInterval = 100 * time.Millisecond

// maxReadFile bounds ReadFile: it is meant for small files (kubeconfig,
// tokens), and the content is held in memory.
const maxReadFile = 16 << 20

// UploadFile copies the local file src to dst on the remote machine; see Upload.
func (c *Client) UploadFile(ctx context.Context, src, dst string, mode fs.FileMode, progress ProgressFunc) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("upload %s: %w", src, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("upload %s: %w", src, err)
	}
	if err := c.Upload(ctx, f, fi.Size(), dst, mode, progress); err != nil {
		return fmt.Errorf("upload %s: %w", src, err)
	}
	return nil
}

// WriteFile writes content to dst with mode, like Upload. The content is
// never logged.
func (c *Client) WriteFile(ctx context.Context, dst string, content []byte, mode fs.FileMode) error {
	return c.Upload(ctx, bytes.NewReader(content), int64(len(content)), dst, mode, nil)
}

// Upload streams size bytes from r to dst (an absolute path), creating
// missing parent directories. The file appears atomically: it is written
// next to dst and renamed over it. With sudo (non-root user) the data goes
// to a private temp dir in the user's home first and is installed into place
// as root. size < 0 means unknown (no total in progress, no length check).
func (c *Client) Upload(ctx context.Context, r io.Reader, size int64, dst string, mode fs.FileMode, progress ProgressFunc) error {
	if !path.IsAbs(dst) {
		return fmt.Errorf("upload to %q: remote path must be absolute", dst)
	}
	dst = path.Clean(dst)
	pr := newProgressReader(ctx, r, size, progress)
	var err error
	if c.cfg.useSudo() {
		err = c.uploadSudo(ctx, pr, dst, mode)
	} else {
		err = c.uploadDirect(pr, dst, mode)
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return fmt.Errorf("upload to %s:%s: %w", c.cfg.Addr(), dst, err)
	}
	pr.finish()
	return nil
}

func (c *Client) uploadDirect(pr *progressReader, dst string, mode fs.FileMode) error {
	s, err := c.sftpClient()
	if err != nil {
		return err
	}
	if err := s.MkdirAll(path.Dir(dst)); err != nil {
		return fmt.Errorf("create parent directory: %w", err)
	}
	tmp := dst + ".tmp-" + randSuffix()
	if err := c.writeSFTP(pr, tmp, mode); err != nil {
		_ = s.Remove(tmp)
		return err
	}
	if size := pr.size; size >= 0 && pr.done != size {
		_ = s.Remove(tmp)
		return fmt.Errorf("wrote %d bytes, expected %d (source changed?)", pr.done, size)
	}
	// posix-rename replaces dst atomically; plain SFTP rename refuses to.
	if err := s.PosixRename(tmp, dst); err != nil {
		_ = s.Remove(tmp)
		return fmt.Errorf("rename into place: %w", err)
	}
	return nil
}

// writeSFTP creates p with mode (set before any data is written, so a
// secret is never readable by others) and streams pr into it.
func (c *Client) writeSFTP(pr *progressReader, p string, mode fs.FileMode) error {
	s, err := c.sftpClient()
	if err != nil {
		return err
	}
	f, err := s.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return fmt.Errorf("create %s: %w", p, err)
	}
	if err := f.Chmod(mode.Perm()); err != nil {
		_ = f.Close()
		return fmt.Errorf("chmod %s: %w", p, err)
	}
	if _, err := f.ReadFromWithConcurrency(pr, 0); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", p, err)
	}
	return nil
}

func (c *Client) uploadSudo(ctx context.Context, pr *progressReader, dst string, mode fs.FileMode) error {
	s, err := c.sftpClient()
	if err != nil {
		return err
	}
	home, err := s.Getwd()
	if err != nil {
		return fmt.Errorf("find home directory: %w", err)
	}
	stage := path.Join(home, ".opencsp-upload-"+randSuffix())
	if err := s.Mkdir(stage); err != nil {
		return fmt.Errorf("create staging dir %s: %w", stage, err)
	}
	defer func() { _ = s.RemoveAll(stage) }()
	if err := s.Chmod(stage, 0o700); err != nil {
		return fmt.Errorf("chmod staging dir %s: %w", stage, err)
	}
	staged := path.Join(stage, "data")
	if err := c.writeSFTP(pr, staged, 0o600); err != nil {
		return err
	}
	if size := pr.size; size >= 0 && pr.done != size {
		return fmt.Errorf("wrote %d bytes, expected %d (source changed?)", pr.done, size)
	}
	// install sets owner root and the mode; mv within the directory is a
	// rename(2), so readers never see a partial file.
	tmp := dst + ".tmp-" + randSuffix()
	script := fmt.Sprintf("mkdir -p -- %s && install -m %04o -- %s %s && mv -f -- %s %s || { rc=$?; rm -f -- %s; exit $rc; }",
		shellQuote(path.Dir(dst)), mode.Perm(), shellQuote(staged), shellQuote(tmp), shellQuote(tmp), shellQuote(dst), shellQuote(tmp))
	if err := c.Exec(ctx, Command{Cmd: script}); err != nil {
		return fmt.Errorf("install into place: %w", err)
	}
	return nil
}

// ReadFile returns the content of a small remote file (at most 16 MiB),
// through sudo when configured (e.g. /etc/rancher/k3s/k3s.yaml). A missing
// file is an error wrapping fs.ErrNotExist.
func (c *Client) ReadFile(ctx context.Context, p string) ([]byte, error) {
	if c.cfg.useSudo() {
		var out limitedBuffer
		out.max = maxReadFile
		err := c.Exec(ctx, Command{Cmd: "cat -- " + shellQuote(p), Stdout: &out, HideStdout: true})
		if err != nil {
			return nil, fmt.Errorf("read %s:%s: %w", c.cfg.Addr(), p, notExist(err))
		}
		if out.over {
			return nil, fmt.Errorf("read %s:%s: larger than %d bytes", c.cfg.Addr(), p, maxReadFile)
		}
		return out.Bytes(), nil
	}
	s, err := c.sftpClient()
	if err != nil {
		return nil, err
	}
	f, err := s.Open(p)
	if err != nil {
		return nil, fmt.Errorf("read %s:%s: %w", c.cfg.Addr(), p, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxReadFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s:%s: %w", c.cfg.Addr(), p, err)
	}
	if len(b) > maxReadFile {
		return nil, fmt.Errorf("read %s:%s: larger than %d bytes", c.cfg.Addr(), p, maxReadFile)
	}
	return b, nil
}

// SHA256 returns the hex sha256 of a remote file (via sudo when configured),
// so callers can skip uploads that already match. A missing file is an
// error wrapping fs.ErrNotExist.
func (c *Client) SHA256(ctx context.Context, p string) (string, error) {
	out, err := c.Output(ctx, "sha256sum -- "+shellQuote(p))
	if err != nil {
		return "", fmt.Errorf("sha256 of %s:%s: %w", c.cfg.Addr(), p, notExist(err))
	}
	sum, _, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	if len(sum) != 64 {
		return "", fmt.Errorf("sha256 of %s:%s: unexpected sha256sum output %q", c.cfg.Addr(), p, out)
	}
	return sum, nil
}

// notExist adds fs.ErrNotExist to errors of commands that failed on a
// missing file, so callers can use errors.Is.
func notExist(err error) error {
	var ee *ExitError
	if errors.As(err, &ee) && strings.Contains(ee.Stderr, "No such file or directory") {
		return fmt.Errorf("%w: %w", fs.ErrNotExist, err)
	}
	return err
}

func randSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// progressReader counts bytes, stops on ctx, and reports progress throttled.
type progressReader struct {
	ctx      context.Context
	r        io.Reader
	size     int64
	done     int64
	progress ProgressFunc
	last     time.Time
}

func newProgressReader(ctx context.Context, r io.Reader, size int64, progress ProgressFunc) *progressReader {
	return &progressReader{ctx: ctx, r: r, size: size, progress: progress}
}

func (p *progressReader) Read(b []byte) (int, error) {
	if err := p.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := p.r.Read(b)
	p.done += int64(n)
	if p.progress != nil && n > 0 {
		if now := time.Now(); now.Sub(p.last) >= ProgressInterval {
			p.last = now
			p.progress(p.done, max(p.size, 0))
		}
	}
	return n, err
}

func (p *progressReader) finish() {
	if p.progress != nil {
		p.progress(p.done, max(p.size, 0))
	}
}

// limitedBuffer keeps at most max bytes and remembers whether more came.
type limitedBuffer struct {
	bytes.Buffer
	max  int
	over bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if room := b.max - b.Len(); n > room {
		b.over = true
		p = p[:max(room, 0)]
	}
	_, _ = b.Buffer.Write(p)
	return n, nil // claim all: a short write would abort the session
}

// ProgressEvents adapts a ProgressFunc to an events sink: each call emits a
// copy of base with status Progress and the byte counts.
func ProgressEvents(sink events.Sink, base events.Event) ProgressFunc {
	return func(done, total int64) {
		ev := base
		ev.Time = time.Now()
		ev.Status = events.Progress
		ev.BytesDone, ev.BytesTotal = done, total
		sink.Emit(ev)
	}
}
