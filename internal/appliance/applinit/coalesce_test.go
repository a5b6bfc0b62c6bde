//go:build linux

package applinit

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestCoalescerWritesWhatADirectWriterWrites replays the same writes (runs
// of contiguous clusters, jumps back, overwrites, reads in between, one
// write bigger than the buffer) through the coalescer and straight to a
// file: the bytes and every read must match.
func TestCoalescerWritesWhatADirectWriterWrites(t *testing.T) {
	dir := t.TempDir()
	const size = 24 << 20
	open := func(name string) *os.File {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		return f
	}
	direct, viaFile := open("direct"), open("coalesced")
	c := newCoalescer(viaFile)
	rng := rand.New(rand.NewPCG(1, 2))
	off := int64(0)
	for i := range 4000 {
		n := 512 * (1 + rng.IntN(8))
		switch {
		case i == 2000:
			n = coalesceMax + 4096 // bypasses the buffer
			off = 0
		case rng.IntN(10) == 0:
			off = rng.Int64N(size - coalesceMax - 8192) // jump (often back over written bytes)
		}
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(rng.IntN(256))
		}
		if _, err := direct.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
		if w, err := c.WriteAt(p, off); err != nil || w != n {
			t.Fatalf("write %d at %d: %d, %v", n, off, w, err)
		}
		if rng.IntN(50) == 0 { // go-diskfs reads what it just wrote (FAT, directories)
			at := max(off-1000, 0)
			a, b := make([]byte, 3000), make([]byte, 3000)
			_, _ = direct.ReadAt(a, at)
			if _, err := c.ReadAt(b, at); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b) {
				t.Fatalf("read at %d after write %d differs", at, i)
			}
		}
		off += int64(n)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	direct.Close()
	a, _ := os.ReadFile(filepath.Join(dir, "direct"))
	b, _ := os.ReadFile(filepath.Join(dir, "coalesced"))
	if !bytes.Equal(a, b) {
		t.Fatal("coalesced file differs from the directly written one")
	}
}
