package deb

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// CachedKernel is ExtractKernel into cacheDir/kernels/<sha256 of the .deb>,
// reusing an earlier extraction of the same package: unpacking a
// linux-image package costs tens of seconds, hashing it well under one.
func CachedKernel(ctx context.Context, debPath, cacheDir string) (Kernel, error) {
	sum, err := fileSHA256(debPath)
	if err != nil {
		return Kernel{}, err
	}
	dir := filepath.Join(cacheDir, "kernels", sum)
	index := filepath.Join(dir, "kernel.json")
	if b, err := os.ReadFile(index); err == nil {
		var k Kernel
		if json.Unmarshal(b, &k) == nil && k.Version != "" {
			k.Vmlinuz = filepath.Join(dir, "boot", "vmlinuz-"+k.Version)
			k.ModulesDir = filepath.Join(dir, "lib", "modules", k.Version)
			if _, err := os.Stat(k.Vmlinuz); err == nil {
				return k, nil
			}
		}
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return Kernel{}, fmt.Errorf("kernel cache: %w", err)
	}
	// Extract next to the final place and rename: a crash or a concurrent
	// build never leaves a half-extracted kernel under the final name.
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".extract-")
	if err != nil {
		return Kernel{}, fmt.Errorf("kernel cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	k, err := ExtractKernel(ctx, debPath, tmp)
	if err != nil {
		return Kernel{}, err
	}
	b, _ := json.Marshal(Kernel{Version: k.Version, Modules: k.Modules})
	if err := os.WriteFile(filepath.Join(tmp, "kernel.json"), b, 0o644); err != nil {
		return Kernel{}, fmt.Errorf("kernel cache: %w", err)
	}
	os.RemoveAll(dir) // an index-less leftover
	if err := os.Rename(tmp, dir); err != nil {
		return Kernel{}, fmt.Errorf("kernel cache: %w", err)
	}
	k.Vmlinuz = filepath.Join(dir, "boot", "vmlinuz-"+k.Version)
	k.ModulesDir = filepath.Join(dir, "lib", "modules", k.Version)
	return k, nil
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
