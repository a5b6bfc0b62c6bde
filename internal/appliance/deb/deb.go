// Package deb extracts the kernel from a Debian linux-image .deb without
// dpkg: the .deb is an ar archive whose data.tar.{xz,zst,gz} holds
// boot/vmlinuz-<version> and lib/modules/<version>/.
package deb

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Kernel is what ExtractKernel wrote.
type Kernel struct {
	Version    string // e.g. 6.1.0-56-amd64
	Vmlinuz    string // dst/boot/vmlinuz-<version>
	ModulesDir string // dst/lib/modules/<version>
	Modules    int    // number of .ko files
}

// ExtractKernel writes boot/vmlinuz-* and lib/modules/<version>/ of the
// linux-image .deb at debPath below dst (created if needed). Everything
// else in the package is skipped.
func ExtractKernel(ctx context.Context, debPath, dst string) (Kernel, error) {
	f, err := os.Open(debPath)
	if err != nil {
		return Kernel{}, err
	}
	defer f.Close()
	name, member, err := dataMember(bufio.NewReader(f))
	if err != nil {
		return Kernel{}, fmt.Errorf("%s: %w", debPath, err)
	}
	tr, closeFn, err := decompress(name, member)
	if err != nil {
		return Kernel{}, fmt.Errorf("%s: %s: %w", debPath, name, err)
	}
	defer closeFn()
	k, err := extract(ctx, tar.NewReader(tr), dst)
	if err != nil {
		return Kernel{}, fmt.Errorf("%s: %s: %w", debPath, name, err)
	}
	return k, nil
}

// dataMember finds data.tar.* in the ar archive and returns a reader of it.
func dataMember(r *bufio.Reader) (string, io.Reader, error) {
	magic := make([]byte, 8)
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != "!<arch>\n" {
		return "", nil, errors.New("not a Debian package (no ar archive header)")
	}
	hdr := make([]byte, 60)
	for {
		if _, err := io.ReadFull(r, hdr); err != nil {
			if errors.Is(err, io.EOF) {
				return "", nil, errors.New("no data.tar member: not a Debian binary package")
			}
			return "", nil, fmt.Errorf("read ar header: %w", err)
		}
		if string(hdr[58:60]) != "`\n" {
			return "", nil, errors.New("corrupt ar member header")
		}
		// GNU ar ends names with "/"; Debian's dpkg-deb pads with spaces.
		name := strings.TrimRight(strings.TrimSpace(string(hdr[0:16])), "/")
		size, err := strconv.ParseInt(strings.TrimSpace(string(hdr[48:58])), 10, 64)
		if err != nil || size < 0 {
			return "", nil, fmt.Errorf("ar member %q: bad size", name)
		}
		if strings.HasPrefix(name, "data.tar") {
			return name, io.LimitReader(r, size), nil
		}
		// Members are 2-byte aligned.
		if _, err := r.Discard(int(size + size%2)); err != nil {
			return "", nil, fmt.Errorf("ar member %q: %w", name, err)
		}
	}
}

func decompress(name string, r io.Reader) (io.Reader, func(), error) {
	switch path.Ext(name) {
	case ".xz":
		xr, err := xz.NewReader(r)
		return xr, func() {}, err
	case ".zst":
		zr, err := zstd.NewReader(r)
		if err != nil {
			return nil, nil, err
		}
		return zr, zr.Close, nil
	case ".gz":
		gr, err := gzip.NewReader(r)
		if err != nil {
			return nil, nil, err
		}
		return gr, func() { gr.Close() }, nil
	case ".tar":
		return r, func() {}, nil
	}
	return nil, nil, fmt.Errorf("unsupported compression %q (want .xz, .zst or .gz)", path.Ext(name))
}

// kernelPath maps a tar entry to where it goes below dst, or "" to skip it.
// Newer packages (usrmerge) ship usr/lib/modules; both land in lib/modules.
func kernelPath(name string) string {
	p := strings.TrimPrefix(path.Clean("/"+name), "/")
	p = strings.TrimPrefix(p, "usr/")
	switch {
	case strings.HasPrefix(p, "boot/vmlinuz-") && !strings.Contains(p[len("boot/"):], "/"):
		return p
	case strings.HasPrefix(p, "lib/modules/") && strings.Count(p, "/") >= 3:
		return p
	}
	return ""
}

func extract(ctx context.Context, tr *tar.Reader, dst string) (Kernel, error) {
	var k Kernel
	modVersions := map[string]bool{}
	for {
		if err := ctx.Err(); err != nil {
			return Kernel{}, err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Kernel{}, err
		}
		// Only regular files: the build/source symlinks point at headers
		// outside the package.
		if h.Typeflag != tar.TypeReg {
			continue
		}
		rel := kernelPath(h.Name)
		if rel == "" {
			continue
		}
		out := filepath.Join(dst, filepath.FromSlash(rel))
		if err := writeFile(out, tr, h.FileInfo().Mode().Perm()); err != nil {
			return Kernel{}, err
		}
		if v, ok := strings.CutPrefix(rel, "boot/vmlinuz-"); ok {
			if k.Version != "" {
				return Kernel{}, fmt.Errorf("two kernels in one package: %s and %s", k.Version, v)
			}
			k.Version, k.Vmlinuz = v, out
			continue
		}
		modVersions[strings.SplitN(rel, "/", 4)[2]] = true
		if strings.HasSuffix(rel, ".ko") {
			k.Modules++
		}
	}
	switch {
	case k.Version == "":
		return Kernel{}, errors.New("no boot/vmlinuz-* in the package: is it a linux-image package?")
	case !modVersions[k.Version]:
		return Kernel{}, fmt.Errorf("no lib/modules/%s/ in the package", k.Version)
	}
	k.ModulesDir = filepath.Join(dst, "lib", "modules", k.Version)
	return k, nil
}

func writeFile(p string, r io.Reader, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm|0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := io.Copy(w, r); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", p, err)
	}
	return f.Close()
}
