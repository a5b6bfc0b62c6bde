package deb

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

type entry struct {
	name, body string
	link       bool
}

// makeDeb writes an ar archive laid out as dpkg-deb does, with data.tar
// compressed per ext.
func makeDeb(t *testing.T, ext string, entries []entry) string {
	t.Helper()
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.body)), Typeflag: tar.TypeReg}
		if e.link {
			h = &tar.Header{Name: e.name, Linkname: e.body, Typeflag: tar.TypeSymlink}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if !e.link {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	var data bytes.Buffer
	var w io.WriteCloser
	var err error
	switch ext {
	case ".gz":
		w = gzip.NewWriter(&data)
	case ".zst":
		w, err = zstd.NewWriter(&data)
	case ".xz":
		w, err = xz.NewWriter(&data)
	}
	if err != nil {
		t.Fatal(err)
	}
	w.Write(tarBuf.Bytes())
	w.Close()
	var ar bytes.Buffer
	ar.WriteString("!<arch>\n")
	member := func(name string, b []byte) {
		fmt.Fprintf(&ar, "%-16s%-12d%-6d%-6d%-8o%-10d`\n", name, 0, 0, 0, 0o100644, len(b))
		ar.Write(b)
		if len(b)%2 == 1 {
			ar.WriteByte('\n')
		}
	}
	member("debian-binary", []byte("2.0\n"))
	member("control.tar.xz", []byte("odd")) // odd size: exercises the padding
	member("data.tar"+ext, data.Bytes())
	p := filepath.Join(t.TempDir(), "linux-image-test"+ext+".deb")
	if err := os.WriteFile(p, ar.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

var kernelEntries = []entry{
	{name: "./boot/vmlinuz-6.1.0-9-amd64", body: "kernel image"},
	{name: "./boot/config-6.1.0-9-amd64", body: "CONFIG_X=y"},
	{name: "./lib/modules/6.1.0-9-amd64/kernel/drivers/block/virtio_blk.ko", body: "ko 1"},
	{name: "./lib/modules/6.1.0-9-amd64/modules.builtin", body: "builtin"},
	{name: "./lib/modules/6.1.0-9-amd64/build", body: "/usr/src/linux-headers", link: true},
	{name: "./usr/share/doc/linux-image/changelog.gz", body: "doc"},
	{name: "./../../etc/evil", body: "outside"},
}

func TestExtractKernelCompressions(t *testing.T) {
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		t.Run(ext, func(t *testing.T) {
			dst := t.TempDir()
			k, err := ExtractKernel(context.Background(), makeDeb(t, ext, kernelEntries), dst)
			if err != nil {
				t.Fatal(err)
			}
			if k.Version != "6.1.0-9-amd64" || k.Modules != 1 ||
				k.Vmlinuz != filepath.Join(dst, "boot/vmlinuz-6.1.0-9-amd64") || k.ModulesDir != filepath.Join(dst, "lib/modules/6.1.0-9-amd64") {
				t.Fatalf("kernel = %+v", k)
			}
			if b, _ := os.ReadFile(k.Vmlinuz); string(b) != "kernel image" {
				t.Errorf("vmlinuz = %q", b)
			}
			var got []string
			filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					rel, _ := filepath.Rel(dst, p)
					got = append(got, rel)
				}
				return nil
			})
			want := "boot/vmlinuz-6.1.0-9-amd64 lib/modules/6.1.0-9-amd64/kernel/drivers/block/virtio_blk.ko lib/modules/6.1.0-9-amd64/modules.builtin"
			if strings.Join(got, " ") != want {
				t.Errorf("extracted %v, want %s", got, want)
			}
		})
	}
}

func TestExtractKernelErrors(t *testing.T) {
	notDeb := filepath.Join(t.TempDir(), "x.deb")
	os.WriteFile(notDeb, []byte("PK\x03\x04 a zip"), 0o644)
	tests := []struct {
		name, deb, want string
	}{
		{"not an ar archive", notDeb, "not a Debian package"},
		{"no kernel", makeDeb(t, ".gz", kernelEntries[2:4]), "no boot/vmlinuz-*"},
		{"no modules", makeDeb(t, ".gz", kernelEntries[:2]), "no lib/modules/6.1.0-9-amd64/"},
		{"missing file", "/nonexistent/linux-image.deb", "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ExtractKernel(context.Background(), tt.deb, t.TempDir())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// realDeb returns a Debian linux-image .deb from .cache/appliance, where
// the QEMU test keeps the one it fetches; else it fetches one there.
func realDeb(t *testing.T) string {
	t.Helper()
	cache, _ := filepath.Abs("../../../.cache/appliance")
	debs, _ := filepath.Glob(filepath.Join(cache, "linux-image-*.deb"))
	if len(debs) == 0 {
		_ = os.MkdirAll(cache, 0o755)
		cmd := exec.Command("sh", "-c", `apt-get download "$(apt-cache search --names-only '^linux-image-6.1.0-[0-9]+-amd64$' | sort -V | tail -1 | cut -d' ' -f1)"`)
		cmd.Dir = cache
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Skipf("SKIP (loud): cannot fetch a Debian kernel into %s: %v: %s", cache, err, out)
		}
		debs, _ = filepath.Glob(filepath.Join(cache, "linux-image-*.deb"))
	}
	if len(debs) == 0 {
		t.Skip("SKIP (loud): no linux-image .deb in " + cache)
	}
	return debs[len(debs)-1]
}

// TestExtractRealKernelMatchesDpkg extracts a real linux-image .deb and
// compares with dpkg -x, the reference tool: same vmlinuz, same modules.
func TestExtractRealKernelMatchesDpkg(t *testing.T) {
	if testing.Short() {
		t.Skip("extracts a 400 MB kernel package: not in -short")
	}
	deb := realDeb(t)
	dst := t.TempDir()
	start := time.Now()
	k, err := ExtractKernel(context.Background(), deb, dst)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("extracted %s (%d modules) in %v", k.Version, k.Modules, time.Since(start).Round(time.Millisecond))
	// The QEMU test keeps dpkg -x of the same .deb in .cache/appliance/kernel;
	// run dpkg only when that is missing or another version.
	ref := filepath.Join(filepath.Dir(deb), "kernel")
	if _, err := os.Stat(filepath.Join(ref, "boot", "vmlinuz-"+k.Version)); err != nil {
		ref = t.TempDir()
		if out, err := exec.Command("dpkg", "-x", deb, ref).CombinedOutput(); err != nil {
			t.Skipf("SKIP (loud): dpkg -x: %v: %s", err, out)
		}
	}
	hash := func(p string) [32]byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(b)
	}
	if hash(k.Vmlinuz) != hash(filepath.Join(ref, "boot", "vmlinuz-"+k.Version)) {
		t.Error("vmlinuz differs from dpkg -x")
	}
	refMods := filepath.Join(ref, "lib", "modules", k.Version)
	if _, err := os.Stat(refMods); err != nil {
		refMods = filepath.Join(ref, "usr", "lib", "modules", k.Version)
	}
	n := 0
	err = filepath.WalkDir(refMods, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(refMods, p)
		mine := filepath.Join(k.ModulesDir, rel)
		if strings.HasSuffix(p, ".ko") {
			n++
			// Hash a sample: all would double the test's I/O.
			if n%200 == 1 && hash(mine) != hash(p) {
				t.Errorf("%s differs from dpkg -x", rel)
			}
		}
		if _, err := os.Stat(mine); err != nil {
			t.Errorf("dpkg -x has %s, ExtractKernel does not", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != k.Modules || n < 1000 {
		t.Errorf("dpkg -x has %d modules, ExtractKernel %d", n, k.Modules)
	}
}

func TestCachedKernelReuses(t *testing.T) {
	cache := t.TempDir()
	debPath := makeDeb(t, ".gz", kernelEntries)
	k1, err := CachedKernel(context.Background(), debPath, cache)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(k1.Vmlinuz, filepath.Join(cache, "kernels")+"/") || k1.Version != "6.1.0-9-amd64" || k1.Modules != 1 {
		t.Fatalf("first call = %+v", k1)
	}
	// Mark the cached copy: a second call that re-extracted would undo it.
	if err := os.WriteFile(k1.Vmlinuz, []byte("cached"), 0o644); err != nil {
		t.Fatal(err)
	}
	k2, err := CachedKernel(context.Background(), debPath, cache)
	if err != nil {
		t.Fatal(err)
	}
	if k2 != k1 {
		t.Errorf("second call = %+v, want %+v", k2, k1)
	}
	if b, _ := os.ReadFile(k2.Vmlinuz); string(b) != "cached" {
		t.Errorf("second call re-extracted the package")
	}
	// Another package is another entry.
	other := makeDeb(t, ".zst", append([]entry{{name: "./boot/config-x", body: "other"}}, kernelEntries...))
	k3, err := CachedKernel(context.Background(), other, cache)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(filepath.Dir(k3.Vmlinuz)) == filepath.Dir(filepath.Dir(k1.Vmlinuz)) {
		t.Errorf("two packages share the cache entry %s", k3.Vmlinuz)
	}
	if ents, _ := os.ReadDir(filepath.Join(cache, "kernels")); len(ents) != 2 {
		t.Errorf("cache holds %d entries, want 2 (no temp dirs left)", len(ents))
	}
}

// TestExtractKernelUsrMerge: trixie and later ship usr/lib/modules.
func TestExtractKernelUsrMerge(t *testing.T) {
	dst := t.TempDir()
	k, err := ExtractKernel(context.Background(), makeDeb(t, ".xz", []entry{
		{name: "./boot/vmlinuz-6.12.9-amd64", body: "k"},
		{name: "./usr/lib/modules/6.12.9-amd64/kernel/fs/ext4/ext4.ko", body: "ko"},
	}), dst)
	if err != nil {
		t.Fatal(err)
	}
	if k.ModulesDir != filepath.Join(dst, "lib/modules/6.12.9-amd64") || k.Modules != 1 {
		t.Fatalf("kernel = %+v", k)
	}
	if _, err := os.Stat(filepath.Join(k.ModulesDir, "kernel/fs/ext4/ext4.ko")); err != nil {
		t.Error(err)
	}
}
