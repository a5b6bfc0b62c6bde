// Package cpio writes "newc" cpio archives as the Linux kernel expects for an
// initramfs. Entries are written in the order given; timestamps are fixed at
// zero so that the same input gives the same bytes.
package cpio

import (
	"fmt"
	"io"
	"io/fs"
)

// Entry is one archive member.
type Entry struct {
	Name string      // path without leading slash, e.g. "lib/modules/x.ko"
	Mode fs.FileMode // permission bits plus fs.ModeDir / fs.ModeSymlink
	Data []byte      // file content, or the target for a symlink
}

// Writer writes newc entries to an underlying writer.
type Writer struct {
	w     io.Writer
	n     int64
	ino   uint32
	close bool
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w, ino: 1} }

func (cw *Writer) write(b []byte) error {
	n, err := cw.w.Write(b)
	cw.n += int64(n)
	return err
}

func (cw *Writer) pad() error {
	if r := cw.n % 4; r != 0 {
		return cw.write(make([]byte, 4-r))
	}
	return nil
}

func unixMode(m fs.FileMode) uint32 {
	perm := uint32(m.Perm())
	switch {
	case m&fs.ModeDir != 0:
		return 0o040000 | perm
	case m&fs.ModeSymlink != 0:
		return 0o120000 | perm
	default:
		return 0o100000 | perm
	}
}

// Write appends one entry.
func (cw *Writer) Write(e Entry) error {
	if cw.close {
		return fmt.Errorf("cpio: write after close")
	}
	name := e.Name + "\x00"
	nlink := 1
	if e.Mode.IsDir() {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		cw.ino, unixMode(e.Mode), 0, 0, nlink, 0, len(e.Data), 0, 0, 0, 0, len(name), 0)
	cw.ino++
	if err := cw.write([]byte(hdr + name)); err != nil {
		return fmt.Errorf("cpio: header %s: %w", e.Name, err)
	}
	if err := cw.pad(); err != nil {
		return err
	}
	if err := cw.write(e.Data); err != nil {
		return fmt.Errorf("cpio: data %s: %w", e.Name, err)
	}
	return cw.pad()
}

// Close writes the trailer. It does not close the underlying writer.
func (cw *Writer) Close() error {
	if err := cw.Write(Entry{Name: "TRAILER!!!"}); err != nil {
		return err
	}
	cw.close = true
	return nil
}
