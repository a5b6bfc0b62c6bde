// Package initramfs writes the appliance initramfs: a gzip-compressed newc
// cpio whose /init is the (static) installer binary, plus the kernel modules
// the appliance loads, in load order (lib/modules/load-order).
package initramfs

import (
	"compress/gzip"
	"context"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/opencsp/installer/internal/appliance/cpio"
	"github.com/opencsp/installer/internal/appliance/kmod"
)

// ModuleDir and OrderFile are where the init finds its modules.
const (
	ModuleDir = "lib/modules"
	OrderFile = "lib/modules/load-order"
)

// Build writes the initramfs for the init binary and modules (already in
// dependency order) to out.
func Build(ctx context.Context, initBinary string, mods []kmod.Info, out string) error {
	bin, err := os.ReadFile(initBinary)
	if err != nil {
		return fmt.Errorf("init binary: %w", err)
	}
	entries := []cpio.Entry{}
	for _, d := range []string{"dev", "proc", "sys", "mnt", "mnt/medium", "tmp", "lib", ModuleDir} {
		entries = append(entries, cpio.Entry{Name: d, Mode: fs.ModeDir | 0o755})
	}
	entries = append(entries, cpio.Entry{Name: "init", Mode: 0o755, Data: bin})
	var order []string
	for _, m := range mods {
		if err := ctx.Err(); err != nil {
			return err
		}
		b, err := os.ReadFile(m.Path)
		if err != nil {
			return fmt.Errorf("module %s: %w", m.Name, err)
		}
		entries = append(entries, cpio.Entry{Name: ModuleDir + "/" + m.Name + ".ko", Mode: 0o644, Data: b})
		order = append(order, m.Name)
	}
	entries = append(entries, cpio.Entry{Name: OrderFile, Mode: 0o644, Data: []byte(strings.Join(order, "\n") + "\n")})

	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("initramfs %s: %w", out, err)
	}
	defer f.Close()
	zw, _ := gzip.NewWriterLevel(f, gzip.BestSpeed) // header has no name and zero mtime: deterministic
	cw := cpio.NewWriter(zw)
	for _, e := range entries {
		if err := cw.Write(e); err != nil {
			return err
		}
	}
	if err := cw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("initramfs gzip: %w", err)
	}
	return f.Close()
}
