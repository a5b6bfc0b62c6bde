package cpio

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestWriteRoundTripWithSystemCpio(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, e := range []Entry{
		{Name: "dev", Mode: fs.ModeDir | 0o755},
		{Name: "init", Mode: 0o755, Data: []byte("#!/bin/sh\n")},
		{Name: "sbin", Mode: fs.ModeSymlink | 0o777, Data: []byte("bin")},
		{Name: "odd", Mode: 0o644, Data: []byte("abc")},
	} {
		if err := w.Write(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Fatalf("archive length %d not 4-aligned", buf.Len())
	}
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("SKIP: cpio not installed; cannot cross-check")
	}
	dir := t.TempDir()
	cmd := exec.Command("cpio", "-idm", "--quiet")
	cmd.Dir = dir
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v: %s", err, out)
	}
	for name, want := range map[string]string{"init": "#!/bin/sh\n", "odd": "abc"} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(got) != want {
			t.Errorf("%s: got %q, %v", name, got, err)
		}
	}
	if l, err := os.Readlink(filepath.Join(dir, "sbin")); err != nil || l != "bin" {
		t.Errorf("symlink: %q %v", l, err)
	}
}
