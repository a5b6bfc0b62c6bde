package iso

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// EFITools names the tools that build the UEFI boot image (Debian packages
// grub-efi-amd64-bin, dosfstools, mtools).
type EFITools struct {
	GrubMkimage string // default "grub-mkimage"
	GrubDir     string // default /usr/lib/grub/x86_64-efi
}

// grubModules are the GRUB modules baked into BOOTX64.EFI.
var grubModules = []string{"part_gpt", "part_msdos", "fat", "iso9660", "search", "search_label",
	"linux", "normal", "configfile", "echo", "serial", "terminal", "efi_gop", "gzio"}

// BuildEFIImage writes a small FAT image holding EFI/BOOT/BOOTX64.EFI (GRUB
// with GrubConfig embedded). Output is deterministic: mkfs.vfat --invariant
// and mtools with a fixed clock (SOURCE_DATE_EPOCH is not honoured by mtools
// 4.0.32, so the FAT timestamps come from the invariant settings only).
func BuildEFIImage(ctx context.Context, t EFITools, cmdline, out string) error {
	if t.GrubMkimage == "" {
		t.GrubMkimage = "grub-mkimage"
	}
	if t.GrubDir == "" {
		t.GrubDir = "/usr/lib/grub/x86_64-efi"
	}
	for _, tool := range []string{t.GrubMkimage, "mkfs.vfat", "mcopy", "mmd"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("uefi boot image: %s not found (install grub-efi-amd64-bin, dosfstools, mtools): %w", tool, err)
		}
	}
	dir, err := os.MkdirTemp("", "opencsp-efi-")
	if err != nil {
		return fmt.Errorf("uefi boot image: %w", err)
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "grub.cfg")
	if err := os.WriteFile(cfg, []byte(GrubConfig(cmdline)), 0o644); err != nil {
		return fmt.Errorf("uefi boot image: %w", err)
	}
	efi := filepath.Join(dir, "BOOTX64.EFI")
	args := append([]string{"-O", "x86_64-efi", "-d", t.GrubDir, "-p", "/EFI/BOOT", "-c", cfg, "-o", efi}, grubModules...)
	run := func(name string, args ...string) error {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=1767225600", "TZ=UTC", "MTOOLS_SKIP_CHECK=1")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("uefi boot image: %s: %w: %s", name, err, b)
		}
		return nil
	}
	if err := run(t.GrubMkimage, args...); err != nil {
		return err
	}
	fi, err := os.Stat(efi)
	if err != nil {
		return fmt.Errorf("uefi boot image: %w", err)
	}
	kib := (fi.Size()/1024 + 512 + 1023) &^ 1023 // whole MiB with headroom
	os.Remove(out)
	if err := run("mkfs.vfat", "--invariant", "-i", "4f435350", "-n", "OPENCSPEFI", "-C", out, fmt.Sprint(kib)); err != nil {
		return err
	}
	if err := run("mmd", "-i", out, "::/EFI", "::/EFI/BOOT"); err != nil {
		return err
	}
	if err := os.Chtimes(efi, Epoch, Epoch); err != nil {
		return fmt.Errorf("uefi boot image: %w", err)
	}
	return run("mcopy", "-m", "-i", out, efi, "::/EFI/BOOT/BOOTX64.EFI")
}
