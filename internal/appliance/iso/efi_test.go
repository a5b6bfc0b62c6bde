package iso

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func TestBuildEFIImageDeterministic(t *testing.T) {
	if _, err := os.Stat("/usr/lib/grub/x86_64-efi/linux.mod"); err != nil {
		t.Skip("SKIP (loud): grub-efi-amd64-bin not installed")
	}
	if _, err := exec.LookPath("mcopy"); err != nil {
		t.Skip("SKIP (loud): mtools not installed")
	}
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	if err := BuildEFIImage(context.Background(), EFITools{}, "console=ttyS0", a); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if err := BuildEFIImage(context.Background(), EFITools{}, "console=ttyS0", b); err != nil {
		t.Fatal(err)
	}
	x, _ := os.ReadFile(a)
	y, _ := os.ReadFile(b)
	if !bytes.Equal(x, y) {
		t.Fatalf("two EFI images differ (sizes %d, %d)", len(x), len(y))
	}
}
