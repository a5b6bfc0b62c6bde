package appliance_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/opencsp/installer/internal/appliance"
	"github.com/opencsp/installer/internal/appliance/iso"
	"github.com/opencsp/installer/internal/appliance/payload"
)

// kernel returns vmlinuz and the modules dir of a Debian kernel extracted
// under .cache/appliance/kernel (apt-get download + dpkg -x on first use).
func kernel(t *testing.T) (string, string) {
	t.Helper()
	cache, _ := filepath.Abs("../../.cache/appliance")
	vm, _ := filepath.Glob(filepath.Join(cache, "kernel/boot/vmlinuz-*"))
	if len(vm) == 0 {
		_ = os.MkdirAll(cache, 0o755)
		sh := `apt-get download "$(apt-cache search --names-only '^linux-image-6.1.0-[0-9]+-amd64$' | sort -V | tail -1 | cut -d' ' -f1)" && dpkg -x linux-image-*.deb kernel`
		cmd := exec.Command("sh", "-c", sh)
		cmd.Dir = cache
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Skipf("SKIP (loud): cannot fetch a Debian kernel into %s: %v: %s", cache, err, out)
		}
		vm, _ = filepath.Glob(filepath.Join(cache, "kernel/boot/vmlinuz-*"))
	}
	mods, _ := filepath.Glob(filepath.Join(cache, "kernel/lib/modules/*"))
	if len(vm) == 0 || len(mods) == 0 {
		t.Skip("SKIP (loud): no kernel in " + cache)
	}
	return vm[0], mods[0]
}

func needTools(t *testing.T) {
	t.Helper()
	for _, f := range []string{"/usr/lib/ISOLINUX/isolinux.bin", "/usr/lib/syslinux/modules/bios/ldlinux.c32"} {
		if _, err := os.Stat(f); err != nil {
			t.Skipf("SKIP (loud): %s missing: apt-get install isolinux syslinux-common", f)
		}
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("SKIP (loud): qemu-system-x86_64 missing: apt-get install qemu-system-x86")
	}
}

// osImage writes a small GPT raw image with one partition full of a pattern.
func osImage(t *testing.T, p string) {
	t.Helper()
	const size = 8 << 20
	d, err := diskfs.Create(p, size, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Partition(&gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true,
		Partitions: []*gpt.Partition{{Index: 1, Start: 2048, End: 2048 + 4096 - 1, Type: gpt.LinuxFilesystem, Name: "root"}}}); err != nil {
		t.Fatal(err)
	}
	d.Close()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	pat := bytes.Repeat([]byte("opencsp-os-image-"), 4096*512/17+1)[:4096*512]
	if _, err := f.WriteAt(pat, 1<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func initBinary(t *testing.T, dir string) string {
	t.Helper()
	out := filepath.Join(dir, "opencsp")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "./cmd/installer")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build init binary: %v: %s", err, b)
	}
	return out
}

func sum(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

func TestApplianceBIOSCDInstallsToEmptyDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("QEMU boot: not in -short")
	}
	needTools(t)
	vmlinuz, mods := kernel(t)
	dir := t.TempDir()
	start := time.Now()
	bin := initBinary(t, dir)
	t.Logf("init binary built in %v", time.Since(start))

	osImg := filepath.Join(dir, "os.img")
	osImage(t, osImg)
	k3s := filepath.Join(dir, "k3s")
	_ = os.MkdirAll(k3s, 0o755)
	_ = os.WriteFile(filepath.Join(k3s, "k3s"), []byte("fake k3s binary\n"), 0o755)
	cfg := filepath.Join(dir, "opencsp.yaml")
	_ = os.WriteFile(cfg, []byte("apiVersion: opencsp.io/v1alpha1\nkind: InstallConfig\n"), 0o644)
	out := filepath.Join(dir, "appliance.iso")
	opts := appliance.Options{
		Kernel: vmlinuz, ModulesDir: mods, InitBinary: bin, OSImage: osImg, K3sDir: k3s, Config: cfg,
		Manifests: fstest.MapFS{"base/kustomization.yaml": {Data: []byte("resources: []\n")}},
		Settings:  payload.Settings{UserData: "#cloud-config\nhostname: mgmt\n", MetaData: "instance-id: i-1\n"},
		Boot:      iso.DefaultBoot(), Out: out,
	}
	start = time.Now()
	if err := appliance.Build(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	t.Logf("iso built in %v", time.Since(start))

	target := filepath.Join(dir, "target.raw")
	if err := os.WriteFile(target, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(target, 256<<20); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	lines := boot(t, "-cdrom", out, "-boot", "d", "-drive", "file="+target+",format=raw,if=ide,index=0")
	t.Logf("qemu run %v", time.Since(start))
	for _, want := range []string{"payload verified", "target disk /dev/sda (empty)", "os image written and verified",
		"seed partition 2 (CIDATA) written", "data partition 3 (OPENCSPDATA) written", "opencsp-appliance: done"} {
		if !strings.Contains(lines, want) {
			t.Errorf("serial console lacks %q", want)
		}
	}
	if t.Failed() {
		t.Fatalf("console:\n%s", tail(lines, 40))
	}

	// The target disk: GPT with root + CIDATA + data, OS bytes, seed, payload.
	d, err := diskfs.Open(target, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	pt, err := d.GetPartitionTable()
	if err != nil {
		t.Fatal(err)
	}
	parts := pt.(*gpt.Table).Partitions
	if len(parts) != 3 || parts[1].Name != "cidata" || parts[2].Name != "opencsp-data" {
		t.Fatalf("partitions: %+v", parts)
	}
	want, _ := os.ReadFile(osImg)
	got := make([]byte, len(want))
	f, _ := os.Open(target)
	_, _ = f.ReadAt(got, 0)
	f.Close()
	if sum(got[1<<20:3<<20]) != sum(want[1<<20:3<<20]) { // partition 1; the GPT itself is rewritten
		t.Error("os image partition 1 bytes differ")
	}
	readFile := func(part int, p string) string {
		fsys, err := d.GetFilesystem(part)
		if err != nil {
			t.Fatalf("partition %d: %v", part, err)
		}
		fh, err := fsys.OpenFile(p, os.O_RDONLY)
		if err != nil {
			t.Fatalf("partition %d %s: %v", part, p, err)
		}
		b, _ := io.ReadAll(fh)
		return string(b)
	}
	if ud := readFile(2, "/user-data"); !strings.Contains(ud, "hostname: mgmt") {
		t.Errorf("user-data: %q", ud)
	}
	if md := readFile(2, "/meta-data"); md != "instance-id: i-1\n" {
		t.Errorf("meta-data: %q", md)
	}
	var m payload.Manifest
	mf := filepath.Join(dir, "m.json")
	_ = os.WriteFile(mf, []byte(readFile(3, "/manifest.json")), 0o644)
	if err := payload.ReadJSON(mf, &m); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, e := range m.Files {
		if e.Path == payload.OSImagePath {
			continue
		}
		if s := sum([]byte(readFile(3, "/"+strings.TrimPrefix(e.Path, "payload/")))); s != e.SHA256 {
			t.Errorf("data %s: sha256 %s, want %s", e.Path, s, e.SHA256)
		}
		checked++
	}
	if checked < 3 {
		t.Errorf("only %d payload files checked", checked)
	}
}

// boot runs QEMU (TCG, no network) until it powers off and returns the
// serial console output.
func boot(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	base := []string{"-accel", "tcg", "-m", "1024", "-display", "none", "-serial", "stdio", "-monitor", "none", "-nic", "none", "-no-reboot"}
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", append(base, args...)...)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var buf strings.Builder
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		l := sc.Text()
		buf.WriteString(l + "\n")
		if strings.Contains(l, "opencsp-appliance:") || strings.Contains(l, "Kernel panic") {
			t.Log(strings.TrimSpace(l))
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Logf("console:\n%s", buf.String())
		t.Fatalf("qemu: %v", err)
	}
	return buf.String()
}

func tail(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
