package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/opencsp/installer/internal/appliance"
	"github.com/opencsp/installer/internal/appliance/payload"
	"github.com/opencsp/installer/internal/config"
)

// imageDir is an appliance config (from config init) plus stand-in inputs
// that pass the build's own checks: a static init binary, boot files, a
// kernel and an empty modules dir. edit rewrites the config.
func imageDir(t *testing.T, edit func(string) string) (dir, file string, flags []string) {
	t.Helper()
	dir, file = writeExample(t, "appliance")
	p := filepath.Join(dir, file)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		if err := os.WriteFile(p, []byte(edit(string(b))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	touch := func(name string, size int64) string {
		q := filepath.Join(dir, name)
		if err := os.WriteFile(q, []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		if size > 0 {
			if err := os.Truncate(q, size); err != nil { // sparse
				t.Fatal(err)
			}
		}
		return q
	}
	if err := os.Mkdir(filepath.Join(dir, "modules"), 0o755); err != nil {
		t.Fatal(err)
	}
	gofmt := filepath.Join(runtime.GOROOT(), "bin", "gofmt") // static: the toolchain is built without cgo
	flags = []string{"--init-binary", gofmt, "--kernel", touch("vmlinuz", 0), "--modules-dir", filepath.Join(dir, "modules"),
		"--os-image", touch("os.img", 8<<20), "--uefi=false", "--no-manifests",
		"--isolinux-bin", touch("isolinux.bin", 0), "--ldlinux-c32", touch("ldlinux.c32", 0), "--isohdpfx-bin", touch("isohdpfx.bin", 0)}
	return dir, file, flags
}

// without drops a flag and its value from flags.
func without(flags []string, name string) []string {
	var out []string
	for i := 0; i < len(flags); i++ {
		if flags[i] == name {
			i++
			continue
		}
		out = append(out, flags[i])
	}
	return out
}

// httpsOpsRepo switches the example's ops repo to https with token ref.
func httpsOpsRepo(s, ref string) string {
	s = strings.Replace(s, "url: ssh://git@git.example.net/ops/opencsp.git", "url: https://git.example.net/ops/opencsp.git", 1)
	return strings.Replace(s, "    sshKeyFile: id_ed25519\n", "    token: "+ref+"\n", 1)
}

func noKernelInConfig(s string) string {
	return strings.Replace(s, "  kernel:\n    deb: ./linux-image-amd64.deb\n", "", 1)
}

func TestImageISOBadInputs(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(string) string
		args  func(dir, file string, flags []string) []string
		wants []string
	}{
		{"no config", nil,
			func(dir, _ string, flags []string) []string { return append([]string{"-c", "missing.yaml"}, flags...) },
			[]string{"missing.yaml", "config init --profile appliance"}},
		{"kernel .deb from the config missing", nil,
			func(_, file string, flags []string) []string {
				return append([]string{"-c", file}, without(without(flags, "--kernel"), "--modules-dir")...)
			},
			[]string{"appliance.kernel.deb", "linux-image-amd64.deb", "is not a readable file"}},
		{"no kernel at all", noKernelInConfig,
			func(_, file string, flags []string) []string {
				return append([]string{"-c", file}, without(without(flags, "--kernel"), "--modules-dir")...)
			},
			[]string{"kernel: not set", "--kernel", "appliance.kernel"}},
		{"payload file missing", noKernelInConfig,
			func(dir, file string, flags []string) []string {
				return append([]string{"-c", file}, append(without(flags, "--os-image"), "--os-image", filepath.Join(dir, "gone.img"))...)
			},
			[]string{"osImage", "gone.img", "no such file"}},
		{"payload larger than managementVM.diskGiB",
			func(s string) string { return strings.Replace(noKernelInConfig(s), "diskGiB: 100", "diskGiB: 20", 1) },
			func(dir, file string, flags []string) []string {
				// 20 GiB of OS image alone fills the disk; sparse, so free.
				big := filepath.Join(dir, "big.img")
				if err := os.WriteFile(big, nil, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Truncate(big, 20<<30); err != nil {
					t.Fatal(err)
				}
				return append([]string{"-c", file}, append(without(flags, "--os-image"), "--os-image", big)...)
			},
			[]string{"targetDiskSize", "the payload does not fit", "target disk is 20480 MiB", "managementVM.diskGiB"}},
		{"payload larger than --target-disk-size", noKernelInConfig,
			func(_, file string, flags []string) []string {
				return append([]string{"-c", file, "--target-disk-size", "100000000"}, flags...)
			},
			[]string{"targetDiskSize", "the payload does not fit"}},
		{"dynamically linked init binary", noKernelInConfig,
			func(_, file string, flags []string) []string {
				return append([]string{"-c", file}, append(without(flags, "--init-binary"), "--init-binary", "/bin/true")...)
			},
			[]string{"initBinary", "/bin/true is dynamically linked", "CGO_ENABLED=0"}},
		{"ops repo token unset", func(s string) string { return httpsOpsRepo(noKernelInConfig(s), "env:OPENCSP_TEST_UNSET_GIT_TOKEN") },
			func(_, file string, flags []string) []string { return append([]string{"-c", file}, flags...) },
			[]string{"opsRepo.auth.token", "OPENCSP_TEST_UNSET_GIT_TOKEN is not set"}},
		{"bad --target-disk", noKernelInConfig,
			func(_, file string, flags []string) []string {
				return append([]string{"-c", file, "--target-disk", "sda"}, flags...)
			},
			[]string{"targetDisk", `"sda"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, file, flags := imageDir(t, tt.edit)
			args := append([]string{"image", "iso"}, tt.args(dir, file, flags)...)
			r := opencsp(t, dir, args...)
			if r.code != 2 {
				t.Errorf("exit code %d, want 2\nstderr: %s", r.code, r.stderr)
			}
			for _, w := range tt.wants {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
				}
			}
			isos, _ := filepath.Glob(filepath.Join(dir, "*.iso"))
			if len(isos) > 0 || exists(filepath.Join(dir, ".opencsp")) {
				t.Errorf("a refused build left %v (state dir: %v)", isos, exists(filepath.Join(dir, ".opencsp")))
			}
		})
	}
}

// TestImageISOFromConfig builds an ISO from the appliance config with a
// real kernel's modules and reads the settings back with xorriso: the
// seed, wipe and after come from the config, the output path too. The
// config has a PVE token (env) and a git token (file): the ISO carries the
// git token in its secrets file only, and the PVE token nowhere.
func TestImageISOFromConfig(t *testing.T) {
	mods, _ := filepath.Glob("../../.cache/appliance/kernel/lib/modules/*")
	vmlinuz, _ := filepath.Glob("../../.cache/appliance/kernel/boot/vmlinuz-*")
	if len(mods) == 0 || len(vmlinuz) == 0 {
		t.Skip("SKIP (loud): no Debian kernel in .cache/appliance/kernel (the QEMU test of internal/appliance fetches it)")
	}
	if _, err := exec.LookPath("xorriso"); err != nil {
		t.Skip("SKIP (loud): xorriso missing: apt-get install xorriso")
	}
	for _, f := range []string{"/usr/lib/ISOLINUX/isolinux.bin", "/usr/lib/syslinux/modules/bios/ldlinux.c32", "/usr/lib/ISOLINUX/isohdpfx.bin"} {
		if _, err := os.Stat(f); err != nil {
			t.Skipf("SKIP (loud): %s missing: apt-get install isolinux syslinux-common", f)
		}
	}
	dir, file, flags := imageDir(t, func(s string) string {
		s = httpsOpsRepo(noKernelInConfig(s), "file:./git-token")
		s = strings.Replace(s, "  wipe: false\n", "  wipe: true\n", 1)
		return strings.Replace(s, "  after: poweroff\n", "  after: reboot\n", 1)
	})
	const gitToken = "git-token-on-the-iso-6e0b"
	if err := os.WriteFile(filepath.Join(dir, "git-token"), []byte(gitToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	absMods, _ := filepath.Abs(mods[0])
	absKernel, _ := filepath.Abs(vmlinuz[0])
	flags = without(without(without(without(without(flags, "--modules-dir"), "--kernel"), "--isolinux-bin"), "--ldlinux-c32"), "--isohdpfx-bin")
	args := append([]string{"image", "iso", "-c", file, "--kernel", absKernel, "--modules-dir", absMods}, flags...)
	r := opencsp(t, dir, args...)
	if r.code != 0 {
		t.Fatalf("image iso: exit %d\n%s", r.code, r.stderr)
	}
	out := filepath.Join(dir, "opencsp-appliance.iso") // appliance.iso of the example
	if !strings.Contains(r.stdout, out) {
		t.Errorf("stdout %q does not name %s", r.stdout, out)
	}
	got := filepath.Join(t.TempDir(), "appliance.json")
	x := exec.Command("xorriso", "-osirrox", "on", "-indev", out, "-extract", "/"+payload.SettingsPath, got)
	if b, err := x.CombinedOutput(); err != nil {
		t.Fatalf("xorriso extract: %v\n%s", err, b)
	}
	var s payload.Settings
	if err := payload.ReadJSON(got, &s); err != nil {
		t.Fatal(err)
	}
	if !s.Wipe || s.After != "reboot" || s.TargetDisk != "auto" {
		t.Errorf("settings = wipe %v after %q targetDisk %q, want the config's true, reboot, auto", s.Wipe, s.After, s.TargetDisk)
	}
	var ud struct {
		Hostname string `yaml:"hostname"`
		Users    []struct {
			Keys []string `yaml:"ssh_authorized_keys"`
		} `yaml:"users"`
	}
	if err := yaml.Unmarshal([]byte(s.UserData), &ud); err != nil || ud.Hostname != "opencsp-lab-mgmt" || len(ud.Users) != 1 || len(ud.Users[0].Keys) != 1 {
		t.Errorf("user-data (%v):\n%s", err, s.UserData)
	}
	pub, _ := os.ReadFile(filepath.Join(dir, "id_ed25519.pub"))
	if f := strings.Fields(string(pub)); len(f) < 2 || !strings.Contains(s.UserData, f[1]) {
		t.Errorf("user-data does not authorize the config's key %s", pub)
	}
	if !strings.Contains(s.NetworkConfig, "192.0.2.10/24") {
		t.Errorf("network-config lacks the config's address:\n%s", s.NetworkConfig)
	}
	if b, _ := json.Marshal(s); strings.Contains(string(b), "pve-secret-value-123") {
		t.Error("the PVE token secret is in the ISO's settings")
	}
	// The init binary is carried for node bootstrap on the installed system.
	bin := filepath.Join(t.TempDir(), "opencsp")
	if b, err := exec.Command("xorriso", "-osirrox", "on", "-indev", out, "-extract", "/"+payload.BinaryPath, bin).CombinedOutput(); err != nil {
		t.Fatalf("xorriso extract %s: %v\n%s", payload.BinaryPath, err, b)
	}
	if f, err := elf.Open(bin); err != nil {
		t.Errorf("payload binary: %v", err)
	} else {
		f.Close()
	}

	// The PVE token is nowhere in the ISO's bytes; the git token is there
	// once, in the secrets file, and the node config only refers to it.
	isoBytes, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: %v, mode %v; want 0600, it carries the git token", out, err, fi.Mode().Perm())
	}
	if bytes.Contains(isoBytes, []byte("pve-secret-value-123")) {
		t.Error("the PVE token secret is in the ISO")
	}
	if n := bytes.Count(isoBytes, []byte(gitToken)); n != 1 {
		t.Errorf("the git token occurs %d times in the ISO, want once (the secrets file)", n)
	}
	extract := func(isoPath string) string {
		p := filepath.Join(t.TempDir(), path.Base(isoPath))
		if b, err := exec.Command("xorriso", "-osirrox", "on", "-indev", out, "-extract", "/"+isoPath, p).CombinedOutput(); err != nil {
			t.Fatalf("xorriso extract %s: %v\n%s", isoPath, err, b)
		}
		b, _ := os.ReadFile(p)
		return string(b)
	}
	if tok := extract(payload.Dir + "/" + payload.OpsRepoTokenFile); tok != gitToken+"\n" {
		t.Errorf("%s = %q, want the git token", payload.OpsRepoTokenFile, tok)
	}
	node := extract(payload.Dir + "/" + payload.ConfigFile)
	for _, gone := range []string{gitToken, "PVE_TOKEN_SECRET", "privateKeyFile", "./git-token"} {
		if strings.Contains(node, gone) {
			t.Errorf("node config holds %q:\n%s", gone, node)
		}
	}
	if !strings.Contains(node, "token: file:"+payload.OpsRepoTokenFile) {
		t.Errorf("node config does not refer to the carried token:\n%s", node)
	}
	var m payload.Manifest
	if err := json.Unmarshal([]byte(extract(payload.ManifestPath)), &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Find(payload.Dir + "/" + payload.OpsRepoTokenFile); !ok {
		t.Errorf("manifest does not list %s", payload.OpsRepoTokenFile)
	}

	// Reproducible: the same config and inputs give the same bytes. The
	// build does not need the PVE token (it is never on the ISO): the second
	// build runs without it.
	t.Setenv("PVE_TOKEN_SECRET", "")
	again := filepath.Join(dir, "again.iso")
	if r := opencsp(t, dir, append(args, "-o", again)...); r.code != 0 {
		t.Fatalf("second image iso: exit %d\n%s", r.code, r.stderr)
	}
	againBytes, err := os.ReadFile(again)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := sha256.Sum256(isoBytes), sha256.Sum256(againBytes); a != b {
		t.Errorf("two builds from the same inputs differ: sha256 %x vs %x", a, b)
	} else {
		t.Logf("two builds, one sha256: %x (%d bytes)", a, len(isoBytes))
	}
}

// TestImageKernelURL: appliance.kernel.url is fetched through the artifact
// cache, pinned by sha256, only when Build asks (after its input checks).
func TestImageKernelURL(t *testing.T) {
	body := []byte("!<arch>\nnot really a kernel package, only bytes to pin\n")
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { hits.Add(1); w.Write(body) }))
	defer srv.Close()
	sum := sha256.Sum256(body)
	for _, tt := range []struct {
		name, sha, wantErr string
	}{
		{"pinned", hex.EncodeToString(sum[:]), ""},
		{"wrong sha256", strings.Repeat("ab", 32), "appliance.kernel.url"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hits.Store(0)
			dir, file, _ := imageDir(t, func(s string) string {
				return strings.Replace(s, "    deb: ./linux-image-amd64.deb\n",
					"    url: "+srv.URL+"/linux-image.deb\n    sha256: "+tt.sha+"\n", 1)
			})
			cfg, err := config.Load(filepath.Join(dir, file))
			if err != nil {
				t.Fatal(err)
			}
			var o appliance.Options
			cache := filepath.Join(dir, "cache")
			if err := fromConfig(&o, cfg, func(string) bool { return false }, cache); err != nil {
				t.Fatal(err)
			}
			if o.FetchKernel == nil || o.KernelDeb != "" || hits.Load() != 0 {
				t.Fatalf("kernel url: FetchKernel set %v, KernelDeb %q, %d fetches before Build", o.FetchKernel != nil, o.KernelDeb, hits.Load())
			}
			p, err := o.FetchKernel(context.Background())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("FetchKernel = %q, %v; want an error naming %s", p, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(p); !bytes.Equal(b, body) || !strings.HasPrefix(p, cache) {
				t.Errorf("fetched %s = %q", p, b)
			}
		})
	}
}
