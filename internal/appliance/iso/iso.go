// Package iso builds the appliance's bootable ISO with go-diskfs: El Torito
// for BIOS (isolinux) and UEFI (a GRUB EFI image in a FAT image), Rock Ridge
// without Joliet, an isohybrid MBR for USB sticks, and deterministic bytes
// for the same inputs (timestamps normalised after go-diskfs wrote them).
package iso

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
)

// Label is the ISO volume label the appliance init looks for.
const Label = "OPENCSP"

// Epoch is the fixed time written into every timestamp of the ISO.
var Epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Boot names the boot loader inputs (Debian package paths by default).
type Boot struct {
	IsolinuxBin string // isolinux package
	LdlinuxC32  string // syslinux-common package
	IsohdpfxBin string // isolinux package: MBR boot code for the hybrid image
	EFIImage    string // FAT image with EFI/BOOT/BOOTX64.EFI; empty: BIOS only
}

// DefaultBoot returns the Debian 12 paths.
func DefaultBoot() Boot {
	return Boot{
		IsolinuxBin: "/usr/lib/ISOLINUX/isolinux.bin",
		LdlinuxC32:  "/usr/lib/syslinux/modules/bios/ldlinux.c32",
		IsohdpfxBin: "/usr/lib/ISOLINUX/isohdpfx.bin",
	}
}

// Spec is everything that goes into the ISO.
type Spec struct {
	Kernel  string            // bzImage
	Initrd  string            // initramfs (gzip newc cpio)
	Cmdline string            // kernel command line
	Files   map[string]string // ISO path (no leading slash) -> source file
	Boot    Boot
}

// Paths inside the ISO.
const (
	KernelPath   = "boot/vmlinuz"
	InitrdPath   = "boot/initrd.gz"
	EFIImagePath = "boot/efi.img"
	isolinuxDir  = "isolinux"
)

// Validate checks that every input file exists and is a regular file.
func (s Spec) Validate() error {
	check := func(field, p string) error {
		if p == "" {
			return fmt.Errorf("%s: not set", field)
		}
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s: %s is not a regular file", field, p)
		}
		return nil
	}
	for _, c := range [][2]string{{"kernel", s.Kernel}, {"initrd", s.Initrd},
		{"boot.isolinuxBin", s.Boot.IsolinuxBin}, {"boot.ldlinuxC32", s.Boot.LdlinuxC32}, {"boot.isohdpfxBin", s.Boot.IsohdpfxBin}} {
		if err := check(c[0], c[1]); err != nil {
			return err
		}
	}
	if s.Boot.EFIImage != "" {
		if err := check("boot.efiImage", s.Boot.EFIImage); err != nil {
			return err
		}
	}
	for _, k := range sortedKeys(s.Files) {
		if strings.HasPrefix(k, "/") || strings.Contains(k, "..") {
			return fmt.Errorf("payload path %q must be relative without ..", k)
		}
		if err := check("payload file "+k, s.Files[k]); err != nil {
			return err
		}
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// isolinuxCfg boots the appliance kernel straight away on serial and VGA.
func isolinuxCfg(cmdline string) string {
	return "SERIAL 0 115200\nDEFAULT opencsp\nPROMPT 0\nTIMEOUT 1\nLABEL opencsp\n  KERNEL /" + KernelPath +
		"\n  INITRD /" + InitrdPath + "\n  APPEND " + cmdline + "\n"
}

// GrubConfig is the config embedded in the GRUB EFI image: it finds the ISO
// by label and boots the same kernel and initramfs.
func GrubConfig(cmdline string) string {
	return "serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n" +
		"search --no-floppy --set=root --label " + Label + "\n" +
		"linux /" + KernelPath + " " + cmdline + "\ninitrd /" + InitrdPath + "\nboot\n"
}

// Build writes the ISO to out. Inputs are validated before anything is
// written; the output is written to a temporary file next to out and renamed.
func Build(ctx context.Context, s Spec, out string) error {
	if err := s.Validate(); err != nil {
		return err
	}
	outDir := filepath.Dir(out)
	tmp, err := os.CreateTemp(outDir, ".opencsp-iso-*")
	if err != nil {
		return fmt.Errorf("output %s: %w", out, err)
	}
	tmpName := tmp.Name()
	tmp.Close()
	os.Remove(tmpName)
	defer os.Remove(tmpName)

	staging, err := os.MkdirTemp("", "opencsp-iso-staging-")
	if err != nil {
		return fmt.Errorf("staging dir: %w", err)
	}
	defer os.RemoveAll(staging)
	files := map[string]string{
		path.Join(isolinuxDir, "isolinux.bin"): s.Boot.IsolinuxBin,
		path.Join(isolinuxDir, "ldlinux.c32"):  s.Boot.LdlinuxC32,
		KernelPath:                             s.Kernel,
		InitrdPath:                             s.Initrd,
	}
	if s.Boot.EFIImage != "" {
		files[EFIImagePath] = s.Boot.EFIImage
	}
	for k, v := range s.Files {
		files[k] = v
	}
	var total int64
	for _, k := range sortedKeys(files) {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := copyFile(files[k], filepath.Join(staging, filepath.FromSlash(k)))
		if err != nil {
			return err
		}
		total += n + 2048
	}
	if err := os.WriteFile(filepath.Join(staging, isolinuxDir, "isolinux.cfg"), []byte(isolinuxCfg(s.Cmdline)), 0o644); err != nil {
		return fmt.Errorf("isolinux.cfg: %w", err)
	}
	if err := normaliseTree(staging); err != nil {
		return err
	}

	size := total + 4<<20
	d, err := diskfs.Create(tmpName, size, diskfs.SectorSizeDefault)
	if err != nil {
		return fmt.Errorf("create %s: %w", tmpName, err)
	}
	d.LogicalBlocksize = 2048
	fsys, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 0, FSType: filesystem.TypeISO9660, VolumeLabel: Label, WorkDir: staging})
	if err != nil {
		d.Close()
		return fmt.Errorf("iso9660 create: %w", err)
	}
	isofs, ok := fsys.(*iso9660.FileSystem)
	if !ok {
		d.Close()
		return fmt.Errorf("iso9660 create: unexpected filesystem type %T", fsys)
	}
	entries := []*iso9660.ElToritoEntry{{
		Platform: iso9660.BIOS, Emulation: iso9660.NoEmulation,
		BootFile: "/" + path.Join(isolinuxDir, "isolinux.bin"), BootTable: true, LoadSegment: 0,
	}}
	entries[0].SetLoadSize(4)
	if s.Boot.EFIImage != "" {
		entries = append(entries, &iso9660.ElToritoEntry{Platform: iso9660.EFI, Emulation: iso9660.NoEmulation, BootFile: "/" + EFIImagePath})
	}
	err = isofs.Finalize(iso9660.FinalizeOptions{
		RockRidge:        true,
		Joliet:           false, // pitfall 1: Joliet breaks BIOS boot
		VolumeIdentifier: Label,
		ElTorito:         &iso9660.ElTorito{BootCatalog: "/boot/boot.cat", Entries: entries},
	})
	if cerr := d.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("iso9660 finalize: %w", err)
	}
	if err := postProcess(tmpName, s.Boot.IsohdpfxBin); err != nil {
		return err
	}
	if err := os.Rename(tmpName, out); err != nil {
		return fmt.Errorf("output %s: %w", out, err)
	}
	slog.DebugContext(ctx, "iso built", "out", out)
	return nil
}

func copyFile(src, dst string) (int64, error) {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return 0, fmt.Errorf("staging %s: %w", dst, err)
	}
	in, err := os.Open(src)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", src, err)
	}
	defer in.Close()
	o, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return 0, fmt.Errorf("staging %s: %w", dst, err)
	}
	n, err := io.Copy(o, in)
	if cerr := o.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("copy %s: %w", src, err)
	}
	return n, nil
}

// normaliseTree sets fixed modes and times in the staging tree (pitfall 4:
// the ISO root takes the staging dir's permissions).
func normaliseTree(root string) error {
	return filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if fi.IsDir() {
			mode = 0o755
		}
		if err := os.Chmod(p, mode); err != nil {
			return fmt.Errorf("staging chmod %s: %w", p, err)
		}
		return nil
	})
}
