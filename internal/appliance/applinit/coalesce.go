//go:build linux

package applinit

import (
	"fmt"
	"io/fs"
	"os"

	"github.com/diskfs/go-diskfs/backend"
)

// coalescer is a go-diskfs backend over a device that joins contiguous
// writes. go-diskfs writes FAT data one cluster per WriteAt (512 bytes on a
// partition under 260 MB); on a block device every such write is a syscall
// and often a read-modify-write of a page, which under emulation made the
// data partition cost half a minute for 80 MB. Reads flush first, so what
// go-diskfs reads back is what it wrote.
type coalescer struct {
	f     *os.File
	start int64  // device offset of buf[0]
	buf   []byte // pending contiguous bytes, len <= cap
}

const coalesceMax = 8 << 20

func newCoalescer(f *os.File) *coalescer {
	return &coalescer{f: f, buf: make([]byte, 0, coalesceMax)}
}

var (
	_ backend.Storage      = (*coalescer)(nil)
	_ backend.WritableFile = (*coalescer)(nil)
)

func (c *coalescer) flush() error {
	if len(c.buf) == 0 {
		return nil
	}
	if _, err := c.f.WriteAt(c.buf, c.start); err != nil {
		return fmt.Errorf("write %s at %d: %w", c.f.Name(), c.start, err)
	}
	c.buf = c.buf[:0]
	return nil
}

func (c *coalescer) WriteAt(p []byte, off int64) (int, error) {
	if len(c.buf) > 0 && off == c.start+int64(len(c.buf)) && len(c.buf)+len(p) <= coalesceMax {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	if err := c.flush(); err != nil {
		return 0, err
	}
	if len(p) >= coalesceMax {
		return c.f.WriteAt(p, off)
	}
	c.start = off
	c.buf = append(c.buf, p...)
	return len(p), nil
}

func (c *coalescer) ReadAt(p []byte, off int64) (int, error) {
	if err := c.flush(); err != nil {
		return 0, err
	}
	return c.f.ReadAt(p, off)
}

func (c *coalescer) Read(p []byte) (int, error) {
	if err := c.flush(); err != nil {
		return 0, err
	}
	return c.f.Read(p)
}

func (c *coalescer) Seek(off int64, whence int) (int64, error) {
	if err := c.flush(); err != nil {
		return 0, err
	}
	return c.f.Seek(off, whence)
}

func (c *coalescer) Stat() (fs.FileInfo, error) { return c.f.Stat() }

// Sys hands out the file for ioctls (BLKRRPART after a partition table
// write), so everything written so far must be on the device.
func (c *coalescer) Sys() (*os.File, error) {
	if err := c.flush(); err != nil {
		return nil, err
	}
	return c.f, nil
}

func (c *coalescer) Writable() (backend.WritableFile, error) { return c, nil }

func (c *coalescer) Path() string { return c.f.Name() }

// Close flushes, syncs and closes; its error is the one that matters.
func (c *coalescer) Close() error {
	err := c.flush()
	if serr := c.f.Sync(); err == nil && serr != nil {
		err = fmt.Errorf("sync %s: %w", c.f.Name(), serr)
	}
	if cerr := c.f.Close(); err == nil {
		err = cerr
	}
	return err
}
