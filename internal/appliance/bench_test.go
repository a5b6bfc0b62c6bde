package appliance_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/opencsp/installer/internal/appliance/iso"
)

// BenchmarkISO builds the same tree (boot files, a 16 MiB kernel and
// initrd, 48 MiB of payload) into a hybrid BIOS ISO with go-diskfs, as
// opencsp image iso does, and with xorriso, the reference tool. The xorriso
// sub-benchmark reports diskfs/xorriso, the time ratio.
func BenchmarkISO(b *testing.B) {
	boot := iso.DefaultBoot()
	for _, f := range []string{boot.IsolinuxBin, boot.LdlinuxC32, boot.IsohdpfxBin} {
		if _, err := os.Stat(f); err != nil {
			b.Skipf("SKIP (loud): %s missing: apt-get install isolinux syslinux-common", f)
		}
	}
	xorriso, err := exec.LookPath("xorriso")
	if err != nil {
		b.Skip("SKIP (loud): xorriso missing: apt-get install xorriso")
	}
	dir := b.TempDir()
	file := func(name string, size int) string {
		p := filepath.Join(dir, name)
		buf := make([]byte, size)
		rand.Read(buf) // incompressible, like the real kernel and images
		if err := os.WriteFile(p, buf, 0o644); err != nil {
			b.Fatal(err)
		}
		return p
	}
	spec := iso.Spec{Kernel: file("vmlinuz", 8<<20), Initrd: file("initrd.gz", 8<<20), Cmdline: "console=ttyS0 -- appliance-init",
		Boot: boot, Files: map[string]string{}}
	for i := range 6 {
		spec.Files[fmt.Sprintf("payload/k3s/file%d", i)] = file(fmt.Sprintf("payload%d", i), 8<<20)
	}
	cfg := filepath.Join(dir, "isolinux.cfg")
	if err := os.WriteFile(cfg, []byte("DEFAULT opencsp\nLABEL opencsp\n  KERNEL /"+iso.KernelPath+"\n  INITRD /"+iso.InitrdPath+"\n  APPEND "+spec.Cmdline+"\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(dir, "out.iso")
	var diskfsNs float64

	b.Run("diskfs", func(b *testing.B) {
		b.SetBytes(int64(64 << 20))
		for b.Loop() {
			if err := iso.Build(context.Background(), spec, out); err != nil {
				b.Fatal(err)
			}
		}
		diskfsNs = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	})
	b.Run("xorriso", func(b *testing.B) {
		// The same tree and boot setup: El Torito no-emulation isolinux with
		// a boot info table, Rock Ridge, no Joliet, isohybrid MBR.
		args := []string{"-as", "mkisofs", "-quiet", "-o", out, "-V", iso.Label, "-R",
			"-b", "isolinux/isolinux.bin", "-c", "boot/boot.cat", "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
			"-isohybrid-mbr", boot.IsohdpfxBin, "-graft-points",
			"isolinux/isolinux.bin=" + boot.IsolinuxBin, "isolinux/ldlinux.c32=" + boot.LdlinuxC32, "isolinux/isolinux.cfg=" + cfg,
			iso.KernelPath + "=" + spec.Kernel, iso.InitrdPath + "=" + spec.Initrd}
		for k, v := range spec.Files {
			args = append(args, k+"="+v)
		}
		b.SetBytes(int64(64 << 20))
		for b.Loop() {
			os.Remove(out) // xorriso refuses to overwrite a non-empty output
			var stderr bytes.Buffer
			cmd := exec.Command(xorriso, args...)
			cmd.Stderr = &stderr
			if err := cmd.Run(); err != nil {
				b.Fatalf("xorriso: %v\n%s", err, stderr.Bytes())
			}
		}
		if xorrisoNs := float64(b.Elapsed().Nanoseconds()) / float64(b.N); diskfsNs > 0 && xorrisoNs > 0 {
			b.ReportMetric(diskfsNs/xorrisoNs, "diskfs/xorriso")
		}
	})
}
