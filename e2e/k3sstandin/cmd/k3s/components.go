package main

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// ComponentPrefix is the directory inside the air-gap tarball that holds the
// bundled control-plane binaries (the artifact builder packs them there).
const ComponentPrefix = "opencsp-k3s-standin/bin/"

// components are the binaries the stand-in needs from the tarball.
var components = []string{"etcd", "kube-apiserver"}

// extractComponents finds the air-gap tarball in <data-dir>/agent/images and
// unpacks the bundled binaries into <data-dir>/data/<key>/bin, once per
// tarball (K3s likewise unpacks its bundled userspace into data/<hash>).
func extractComponents(dataDir string) (map[string]string, error) {
	imagesDir := filepath.Join(dataDir, "agent", "images")
	entries, err := os.ReadDir(imagesDir)
	if err != nil {
		return nil, fmt.Errorf("air-gap images: %w (the installer uploads k3s-airgap-images-<arch>.tar.zst there)", err)
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".tar.zst") && !strings.HasSuffix(name, ".tar.gz") && !strings.HasSuffix(name, ".tar") {
			continue
		}
		p := filepath.Join(imagesDir, name)
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(fmt.Appendf(nil, "%s|%d|%d", name, fi.Size(), fi.ModTime().UnixNano()))
		binDir := filepath.Join(dataDir, "data", hex.EncodeToString(sum[:8]), "bin")
		paths := map[string]string{}
		for _, c := range components {
			paths[c] = filepath.Join(binDir, c)
		}
		if _, err := os.Stat(filepath.Join(binDir, ".complete")); err == nil {
			return paths, nil
		}
		found, err := unpack(p, binDir)
		if err != nil {
			return nil, fmt.Errorf("unpack %s: %w", p, err)
		}
		if !found {
			continue // an ordinary images tarball without the stand-in's components
		}
		if err := os.WriteFile(filepath.Join(binDir, ".complete"), nil, 0o644); err != nil {
			return nil, err
		}
		return paths, nil
	}
	return nil, fmt.Errorf("no tarball in %s carries %s{%s}", imagesDir, ComponentPrefix, strings.Join(components, ","))
}

// unpack extracts the components from one tarball; found reports whether
// all of them were there.
func unpack(path, binDir string) (found bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var r io.Reader = f
	switch {
	case strings.HasSuffix(path, ".zst"):
		zr, err := zstd.NewReader(f)
		if err != nil {
			return false, err
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(path, ".gz"):
		gr, err := gzip.NewReader(f)
		if err != nil {
			return false, err
		}
		defer gr.Close()
		r = gr
	}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return false, err
	}
	tr := tar.NewReader(r)
	got := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return false, err
		}
		name, ok := strings.CutPrefix(h.Name, ComponentPrefix)
		if !ok || h.Typeflag != tar.TypeReg || strings.Contains(name, "/") {
			continue
		}
		tmp := filepath.Join(binDir, "."+name+".tmp")
		out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
		if err != nil {
			return false, err
		}
		_, err = io.Copy(out, tr)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return false, err
		}
		if err := os.Rename(tmp, filepath.Join(binDir, name)); err != nil {
			return false, err
		}
		got++
	}
	return got >= len(components), nil
}
