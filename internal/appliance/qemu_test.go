package appliance_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
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
	for _, tool := range []string{"grub-mkimage", "mkfs.vfat", "mcopy"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("SKIP (loud): %s missing: apt-get install grub-efi-amd64-bin dosfstools mtools", tool)
		}
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("SKIP (loud): qemu-system-x86_64 missing: apt-get install qemu-system-x86")
	}
}

// osImage writes a small GPT raw image with one partition full of a pattern.
func osImage(p string) error {
	const size = 8 << 20
	d, err := diskfs.Create(p, size, diskfs.SectorSizeDefault)
	if err != nil {
		return fmt.Errorf("os image: %w", err)
	}
	err = d.Partition(&gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true,
		Partitions: []*gpt.Partition{{Index: 1, Start: 2048, End: 2048 + 4096 - 1, Type: gpt.LinuxFilesystem, Name: "root"}}})
	d.Close()
	if err != nil {
		return fmt.Errorf("os image partition table: %w", err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	pat := bytes.Repeat([]byte("opencsp-os-image-"), 4096*512/17+1)[:4096*512]
	if _, err := f.WriteAt(pat, 1<<20); err != nil {
		return fmt.Errorf("os image: %w", err)
	}
	return f.Close()
}

func initBinary(dir string) (string, error) {
	out := filepath.Join(dir, "opencsp")
	// Stripped: the binary is in the initramfs and the payload, and every MiB
	// costs boot and hashing time under TCG.
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./cmd/installer")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build init binary: %w: %s", err, b)
	}
	return out, nil
}

func sum(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

const ovmf = "/usr/share/ovmf/OVMF.fd"

// The ISO costs a Go build of the installer (6-30 s, by load) and an ISO
// build (1-5 s), so every boot in this test binary shares one.
var (
	fixOnce sync.Once
	fix     struct {
		dir, iso, osImg string
		err             error
	}
)

func TestMain(m *testing.M) {
	code := m.Run()
	if fix.dir != "" {
		os.RemoveAll(fix.dir)
	}
	os.Exit(code)
}

// sharedISO returns the appliance ISO (BIOS + UEFI, wipe false) and the OS
// image it carries, building both on first use.
func sharedISO(t *testing.T) (string, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("QEMU boot: not in -short")
	}
	needTools(t)
	vmlinuz, mods := kernel(t)
	fixOnce.Do(func() {
		fix.dir, fix.err = os.MkdirTemp("", "opencsp-appliance-test-")
		if fix.err != nil {
			return
		}
		fix.iso, fix.osImg, fix.err = buildISO(t, fix.dir, vmlinuz, mods)
	})
	if fix.err != nil {
		t.Fatalf("shared ISO: %v", fix.err)
	}
	return fix.iso, fix.osImg
}

func buildISO(t *testing.T, dir, vmlinuz, mods string) (string, string, error) {
	start := time.Now()
	bin, err := initBinary(dir)
	if err != nil {
		return "", "", err
	}
	t.Logf("init binary built in %v", time.Since(start).Round(time.Millisecond))
	osImg := filepath.Join(dir, "os.img")
	if err := osImage(osImg); err != nil {
		return "", "", err
	}
	k3s := filepath.Join(dir, "k3s")
	if err := os.MkdirAll(k3s, 0o755); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(filepath.Join(k3s, "k3s"), []byte("fake k3s binary\n"), 0o755); err != nil {
		return "", "", err
	}
	cfg := filepath.Join(dir, "opencsp.yaml")
	if err := os.WriteFile(cfg, []byte("apiVersion: opencsp.io/v1alpha1\nkind: InstallConfig\n"), 0o644); err != nil {
		return "", "", err
	}
	out := filepath.Join(dir, "appliance.iso")
	opts := appliance.Options{
		Kernel: vmlinuz, ModulesDir: mods, InitBinary: bin, OSImage: osImg, K3sDir: k3s, Config: cfg,
		Manifests: fstest.MapFS{"base/kustomization.yaml": {Data: []byte("resources: []\n")}},
		Settings:  payload.Settings{UserData: "#cloud-config\nhostname: mgmt\n", MetaData: "instance-id: i-1\n"},
		Boot:      iso.DefaultBoot(), EFI: true, Out: out,
	}
	start = time.Now()
	if err := appliance.Build(context.Background(), opts); err != nil {
		return "", "", fmt.Errorf("build iso: %w", err)
	}
	fi, _ := os.Stat(out)
	t.Logf("iso built in %v (%d MiB)", time.Since(start).Round(time.Millisecond), fi.Size()>>20)
	return out, osImg, nil
}

// emptyDisk creates a sparse all-zero raw disk of size bytes.
func emptyDisk(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "target.raw")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestApplianceBootsAndInstallsToEmptyDisk(t *testing.T) {
	isoPath, osImg := sharedISO(t)
	cdrom := func(target string) []string {
		return []string{"-cdrom", isoPath, "-boot", "d", "-drive", "file=" + target + ",format=raw,if=ide,index=0"}
	}
	for _, tc := range []struct {
		name           string
		args           func(target string) []string
		fw             string   // what the appliance reports
		medium, target []string // device names the appliance may use for each
	}{
		{"bios-cd", cdrom, "BIOS", []string{"/dev/sr0"}, []string{"/dev/sda"}},
		{"uefi-cd", func(target string) []string { return append([]string{"-bios", ovmf}, cdrom(target)...) }, "UEFI",
			[]string{"/dev/sr0"}, []string{"/dev/sda"}},
		// USB-stick style: the hybrid image and the target are both IDE disks;
		// the kernel names them in either order (async probe), and the medium
		// must never become the target.
		{"uefi-disk", func(target string) []string {
			return []string{"-bios", ovmf, "-drive", "file=" + isoPath + ",format=raw,if=ide,index=0,snapshot=on",
				"-drive", "file=" + target + ",format=raw,if=ide,index=1"}
		}, "UEFI", []string{"/dev/sda", "/dev/sdb"}, []string{"/dev/sda", "/dev/sdb"}},
		// The same USB-stick image on a BIOS machine: SeaBIOS runs the hybrid MBR's isolinux.
		{"bios-disk", func(target string) []string {
			return []string{"-drive", "file=" + isoPath + ",format=raw,if=ide,index=0,snapshot=on",
				"-drive", "file=" + target + ",format=raw,if=ide,index=1"}
		}, "BIOS", []string{"/dev/sda", "/dev/sdb"}, []string{"/dev/sda", "/dev/sdb"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.fw == "UEFI" {
				if _, err := os.Stat(ovmf); err != nil {
					t.Skipf("SKIP (loud): %s missing: apt-get install ovmf", ovmf)
				}
			}
			target := emptyDisk(t, 256<<20)
			isoSum := fileSum(t, isoPath)
			start := time.Now()
			lines := boot(t, tc.args(target)...)
			t.Logf("%s: boot to power-off %v", tc.name, time.Since(start).Round(time.Millisecond))
			medium, dev := consoleField(lines, mediumRE), consoleField(lines, targetRE)
			if !slices.Contains(tc.medium, medium) || !slices.Contains(tc.target, dev) || medium == dev {
				t.Errorf("medium %q (want one of %v), target %q (want one of %v, not the medium)", medium, tc.medium, dev, tc.target)
			}
			for _, want := range []string{"booted via " + tc.fw, "payload verified", "os image written and verified",
				"seed partition 2 (CIDATA) written", "data partition 3 (OPENCSPDATA) written", "opencsp-appliance: done", "powering off"} {
				if !strings.Contains(lines, want) {
					t.Errorf("serial console lacks %q", want)
				}
			}
			if t.Failed() {
				t.Fatalf("console:\n%s", tail(lines, 40))
			}
			checkInstalled(t, target, osImg)
			if fileSum(t, isoPath) != isoSum {
				t.Error("the ISO changed (snapshot=on must keep the medium read-only)")
			}
		})
	}
}

var (
	mediumRE = regexp.MustCompile(`opencsp-appliance: medium (\S+) mounted`)
	targetRE = regexp.MustCompile(`opencsp-appliance: target disk (\S+) \(empty\)`)
)

// consoleField returns the first submatch of re on the console, "" if none.
func consoleField(lines string, re *regexp.Regexp) string {
	if m := re.FindStringSubmatch(lines); m != nil {
		return m[1]
	}
	return ""
}

// checkInstalled opens the target with go-diskfs: GPT with root + CIDATA +
// data, the OS bytes, the seed files and every payload file's checksum.
func checkInstalled(t *testing.T, target, osImg string) {
	t.Helper()
	d, err := diskfs.Open(target, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	pt, err := d.GetPartitionTable()
	if err != nil {
		t.Fatal(err)
	}
	tbl, ok := pt.(*gpt.Table)
	if !ok {
		t.Fatalf("partition table %T, want GPT", pt)
	}
	parts := tbl.Partitions
	if len(parts) != 3 || parts[1].Name != "cidata" || parts[2].Name != "opencsp-data" {
		t.Fatalf("partitions: %+v", parts)
	}
	want, err := os.ReadFile(osImg)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	f, err := os.Open(target)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.ReadAt(got, 0)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
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
		b, err := readWhole(fh)
		if err != nil {
			t.Fatalf("partition %d %s: %v", part, p, err)
		}
		return string(b)
	}
	if ud := readFile(2, "/user-data"); !strings.Contains(ud, "hostname: mgmt") {
		t.Errorf("user-data: %q", ud)
	}
	if md := readFile(2, "/meta-data"); md != "instance-id: i-1\n" {
		t.Errorf("meta-data: %q", md)
	}
	var m payload.Manifest
	if err := json.Unmarshal([]byte(readFile(3, "/manifest.json")), &m); err != nil {
		t.Fatalf("data partition manifest.json: %v", err)
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

// TestApplianceRefuses boots the BIOS CD (the cheapest path) into situations
// where the appliance must refuse: it says why and what to do, powers off and
// leaves the target disk byte for byte as it was.
func TestApplianceRefuses(t *testing.T) {
	isoPath, osImg := sharedISO(t)
	for _, tc := range []struct {
		name   string
		iso    func(t *testing.T) string
		target func(t *testing.T) string
		want   []string
	}{
		{"used disk without wipe", func(*testing.T) string { return isoPath }, func(t *testing.T) string { return usedDisk(t, osImg) },
			[]string{"refusing: disk /dev/sda is not empty", "set appliance.wipe: true in the install config", "--wipe to opencsp image iso"}},
		{"corrupted payload", func(t *testing.T) string { return tamperedISO(t, isoPath, "payload/opencsp.yaml") },
			func(t *testing.T) string { return emptyDisk(t, 256<<20) },
			[]string{"payload file payload/opencsp.yaml: checksum mismatch", "the medium is damaged"}},
		{"target smaller than the payload", func(*testing.T) string { return isoPath }, func(t *testing.T) string { return emptyDisk(t, 64<<20) },
			[]string{"refusing: target /dev/sda has 67108864 bytes", "attach a disk of at least"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			medium, target := tc.iso(t), tc.target(t)
			before := fileSum(t, target)
			start := time.Now()
			lines := boot(t, "-cdrom", medium, "-boot", "d", "-drive", "file="+target+",format=raw,if=ide,index=0")
			t.Logf("%s: boot to power-off %v", tc.name, time.Since(start).Round(time.Millisecond))
			for _, want := range append(tc.want, "FAILED: ", "disk left untouched", "powering off") {
				if !strings.Contains(lines, want) {
					t.Errorf("serial console lacks %q", want)
				}
			}
			// Disk refusals come before the payload is hashed; a bad payload never verifies.
			for _, never := range []string{"payload verified", "writing os image", "opencsp-appliance: done"} {
				if strings.Contains(lines, never) {
					t.Errorf("serial console has %q", never)
				}
			}
			if t.Failed() {
				t.Fatalf("console:\n%s", tail(lines, 40))
			}
			if after := fileSum(t, target); after != before {
				t.Fatalf("target disk changed: sha256 %s before, %s after", before, after)
			}
		})
	}
}

// usedDisk is a 256 MiB disk holding a GPT and data (an OS image).
func usedDisk(t *testing.T, osImg string) string {
	t.Helper()
	p := emptyDisk(t, 256<<20)
	b, err := os.ReadFile(osImg)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return p
}

// tamperedISO copies the ISO and flips one byte of file inside it, at the
// extent go-diskfs reports, so the size stays and only the sha256 differs.
func tamperedISO(t *testing.T, src, file string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "tampered.iso")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := diskfs.Open(p, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := d.GetFilesystem(0)
	if err != nil {
		t.Fatalf("read %s as iso9660: %v", p, err)
	}
	fh, err := fsys.OpenFile("/"+file, os.O_RDONLY)
	if err != nil {
		t.Fatalf("%s in %s: %v", file, p, err)
	}
	isoFile, ok := fh.(*iso9660.File)
	if !ok {
		t.Fatalf("%s: %T is not an iso9660 file", file, fh)
	}
	off := int64(isoFile.Location()) * 2048
	d.Close()
	if b[off] != 'a' { // the config starts with "apiVersion": proves the extent is right
		t.Fatalf("%s extent at %d starts with %q, want 'a'", file, off, b[off])
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{'A'}, off); err != nil {
		t.Fatal(err)
	}
	return p
}

func fileSum(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
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
	start := time.Now()
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		l := sc.Text()
		buf.WriteString(l + "\n")
		// The elapsed time per progress line shows where a slow boot spends it.
		if i := strings.Index(l, "opencsp-appliance:"); i >= 0 {
			t.Logf("+%5.1fs %s", time.Since(start).Seconds(), l[i:])
		} else if strings.Contains(l, "Kernel panic") {
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

// readWhole reads a go-diskfs file in one Read: v1.9.4's FAT Read returns
// bytes past the end of the file when a read starts mid-cluster (as
// io.ReadAll's growing buffer does), so read exactly the size.
func readWhole(f io.ReadSeeker) ([]byte, error) {
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	b := make([]byte, n)
	_, err = io.ReadFull(f, b)
	return b, err
}
