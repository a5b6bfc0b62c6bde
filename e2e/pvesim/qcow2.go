package pvesim

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"strings"
)

var qcow2Magic = []byte{'Q', 'F', 'I', 0xfb}

// qcow2VirtualSize reads the virtual size from a qcow2 header. It reports
// false for files that are not qcow2 or that reference a backing file
// (which PVE refuses for untrusted images).
func qcow2VirtualSize(path string) (int64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	hdr := make([]byte, 32)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return 0, false
	}
	if !bytes.Equal(hdr[:4], qcow2Magic) {
		return 0, false
	}
	if v := binary.BigEndian.Uint32(hdr[4:8]); v != 2 && v != 3 {
		return 0, false
	}
	if binary.BigEndian.Uint64(hdr[8:16]) != 0 { // backing_file_offset
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(hdr[24:32])), true
}

func isVMDK(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	hdr := make([]byte, 64)
	n, _ := io.ReadFull(f, hdr)
	hdr = hdr[:n]
	return bytes.HasPrefix(hdr, []byte("KDMV")) || bytes.HasPrefix(hdr, []byte("# Disk DescriptorFile"))
}

func ovaHasOVF(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			return false
		}
		if strings.HasSuffix(h.Name, ".ovf") {
			return true
		}
	}
}

// FakeQCOW2 returns a minimal qcow2 (version 3) header announcing the given
// virtual size: enough for the emulator's image checks and import size, so
// tests can serve "cloud images" without real data.
func FakeQCOW2(virtualSize int64) []byte {
	h := make([]byte, 104)
	copy(h, qcow2Magic)
	binary.BigEndian.PutUint32(h[4:], 3)                    // version
	binary.BigEndian.PutUint32(h[20:], 16)                  // cluster_bits
	binary.BigEndian.PutUint64(h[24:], uint64(virtualSize)) // size
	binary.BigEndian.PutUint32(h[96:], 4)                   // refcount_order
	binary.BigEndian.PutUint32(h[100:], 104)                // header_length
	return h
}
