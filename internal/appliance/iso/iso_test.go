package iso

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
)

func TestBuildIsReproducibleAndHybrid(t *testing.T) {
	b := DefaultBoot()
	for _, f := range []string{b.IsolinuxBin, b.LdlinuxC32, b.IsohdpfxBin} {
		if _, err := os.Stat(f); err != nil {
			t.Skipf("SKIP (loud): %s missing: apt-get install isolinux syslinux-common", f)
		}
	}
	dir := t.TempDir()
	k, i, p := filepath.Join(dir, "k"), filepath.Join(dir, "i"), filepath.Join(dir, "p")
	for _, f := range []string{k, i, p} {
		_ = os.WriteFile(f, bytes.Repeat([]byte(f), 1000), 0o644)
	}
	s := Spec{Kernel: k, Initrd: i, Cmdline: "console=ttyS0", Files: map[string]string{"payload/x": p}, Boot: b}
	var imgs [][]byte
	for n := range 2 {
		out := filepath.Join(dir, "o"+string(rune('a'+n))+".iso")
		if err := Build(context.Background(), s, out); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(out)
		imgs = append(imgs, data)
		time.Sleep(1100 * time.Millisecond)
	}
	if !bytes.Equal(imgs[0], imgs[1]) {
		t.Fatal("two builds of the same inputs differ")
	}
	img := imgs[0]
	if len(img)%(1<<20) != 0 || img[510] != 0x55 || img[511] != 0xaa || img[446+4] != 0x17 {
		t.Fatalf("not a padded hybrid image: size %d", len(img))
	}
	if string(img[16*2048+40:16*2048+47]) != Label {
		t.Fatal("volume label")
	}
}

func TestBuildRejectsMissingKernelBeforeWriting(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "x.iso")
	err := Build(context.Background(), Spec{Kernel: filepath.Join(dir, "nope"), Boot: DefaultBoot()}, out)
	if err == nil || !strings.HasPrefix(err.Error(), "kernel:") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("output written despite bad input")
	}
}

// TestHybridMBRPointsAtTheEFIImage: UEFI firmware booting the image as a
// disk (USB stick) finds BOOTX64.EFI through MBR partition 2 (0xEF), which
// must cover exactly the EFI image's extent inside the ISO.
func TestHybridMBRPointsAtTheEFIImage(t *testing.T) {
	b := DefaultBoot()
	for _, f := range []string{b.IsolinuxBin, b.LdlinuxC32, b.IsohdpfxBin} {
		if _, err := os.Stat(f); err != nil {
			t.Skipf("SKIP (loud): %s missing: apt-get install isolinux syslinux-common", f)
		}
	}
	dir := t.TempDir()
	k, i, efi := filepath.Join(dir, "k"), filepath.Join(dir, "i"), filepath.Join(dir, "efi.img")
	for _, f := range []string{k, i} {
		_ = os.WriteFile(f, bytes.Repeat([]byte(f), 1000), 0o644)
	}
	const efiSize = 3 << 19 // 1.5 MiB: not a power of two, so a wrong unit shows
	if err := os.WriteFile(efi, bytes.Repeat([]byte{0xe5}, efiSize), 0o644); err != nil {
		t.Fatal(err)
	}
	b.EFIImage = efi
	out := filepath.Join(dir, "o.iso")
	if err := Build(context.Background(), Spec{Kernel: k, Initrd: i, Cmdline: "console=ttyS0", Boot: b}, out); err != nil {
		t.Fatal(err)
	}
	d, err := diskfs.Open(out, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := d.GetFilesystem(0)
	if err != nil {
		t.Fatal(err)
	}
	fh, err := fsys.OpenFile("/"+EFIImagePath, os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	loc := fh.(*iso9660.File).Location()
	d.Close()

	img, _ := os.ReadFile(out)
	p2 := img[446+16 : 446+32]
	start, count := binary.LittleEndian.Uint32(p2[8:]), binary.LittleEndian.Uint32(p2[12:])
	if p2[4] != 0xef || p2[0] != 0 {
		t.Fatalf("partition 2: type %#x boot flag %#x, want 0xef, not active", p2[4], p2[0])
	}
	if start != loc*4 || count != efiSize/512 {
		t.Fatalf("partition 2: start %d count %d, want %d and %d (efi.img at ISO block %d)", start, count, loc*4, efiSize/512, loc)
	}
	if !bytes.Equal(img[int64(start)*512:int64(start)*512+16], bytes.Repeat([]byte{0xe5}, 16)) {
		t.Fatal("partition 2 does not start at the EFI image bytes")
	}
	if p1 := img[446 : 446+16]; p1[0] != 0x80 || p1[4] != 0x17 {
		t.Fatalf("partition 1: boot flag %#x type %#x, want active 0x17", p1[0], p1[4])
	}
}
