package iso

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
