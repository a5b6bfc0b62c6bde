package sandbox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencsp/installer/e2e/sandbox"
	"github.com/opencsp/installer/internal/appliance/seed"
	"github.com/opencsp/installer/internal/state"
)

// applianceStages is what TestApplianceInstall runs: every stage once the
// k3s and flux stages adopt the node's result for method appliance.
var applianceStages = []string{"preflight", "images", "provision", "k3s", "flux", "rollout"}

// TestApplianceInstall drives provision method appliance through the real
// CLI: `opencsp image iso` from the sandbox config, then `opencsp install`
// from empty. pvesim boots the uploaded ISO on an empty VM and the sandbox
// acts as the appliance (reads and verifies the payload from the ISO bytes);
// the installer boots the disk, the VM stand-in's cloud-init runs the ISO's
// seed (node bootstrap: K3s stand-in, Flux push from the node), the
// installer adopts it and rollout waits for every layer. A rerun changes
// nothing.
func TestApplianceInstall(t *testing.T) {
	requireSandbox(t)
	for _, f := range []string{"/usr/lib/ISOLINUX/isolinux.bin", "/usr/lib/syslinux/modules/bios/ldlinux.c32"} {
		if _, err := os.Stat(f); err != nil {
			t.Skipf("SANDBOX APPLIANCE TEST SKIPPED: %s missing: apt-get install isolinux syslinux-common", f)
		}
	}
	for _, tool := range []string{"grub-mkimage", "mkfs.vfat", "mcopy"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("SANDBOX APPLIANCE TEST SKIPPED: %s missing: apt-get install grub-efi-amd64-bin dosfstools mtools", tool)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	begin := time.Now()
	bin := buildStaticInstaller(t)
	t.Logf("static opencsp built in %s", time.Since(begin).Round(100*time.Millisecond))

	begin = time.Now()
	s, err := sandbox.Up(ctx, sandbox.Options{Dir: filepath.Join(t.TempDir(), "sandbox"), Log: tlog{t}, Appliance: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(context.Background()); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	t.Logf("sandbox up in %s", time.Since(begin).Round(100*time.Millisecond))
	env := s.Env()

	r := run(t, ctx, bin, s.Dir, env, "image", "iso", "-c", sandbox.ConfigFile)
	if r.code != 0 {
		t.Fatalf("image iso: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	isoPath := filepath.Join(s.Dir, sandbox.ApplianceISOFile)
	if fi, err := os.Stat(isoPath); err != nil {
		t.Fatalf("image iso wrote no %s: %v", isoPath, err)
	} else {
		t.Logf("ISO %d MiB", fi.Size()>>20)
	}

	args := []string{"-c", sandbox.ConfigFile}
	r = install(t, ctx, bin, s.Dir, env, args...)
	if r.code != 0 || !strings.Contains(r.stdout, "Install complete") {
		t.Fatalf("install: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	// The installer adopts what the node did: it installs no K3s, pushes
	// nothing and clones nothing.
	for _, want := range []string{"[k3s] adopted k3s", "[flux] adopted the Flux sync"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("install output lacks %q:\n%s", want, r.stdout)
		}
	}
	for _, step := range []string{"upload k3s", "run the k3s install script", "clone template"} {
		if strings.Contains(r.stdout, step) {
			t.Errorf("install did %q on an appliance node:\n%s", step, r.stdout)
		}
	}
	if err := s.PVE.ValidateLog(); err != nil {
		t.Errorf("requests the real PVE API would reject:\n%v", err)
	}
	st, err := state.Peek(filepath.Join(s.Dir, ".opencsp"))
	if err != nil {
		t.Fatal(err)
	}
	var took []string
	for _, name := range applianceStages {
		if got := st.StatusOf(name); got != state.Done {
			t.Errorf("stage %s: %s, want done", name, got)
		}
		if rec := st.Stages[name]; rec != nil {
			took = append(took, fmt.Sprintf("%s %s", name, time.Duration(rec.DurationMS)*time.Millisecond))
		}
	}
	t.Logf("stages: %s", strings.Join(took, ", "))

	// Exactly one VM, no template: the appliance installed it from the ISO.
	ids := s.PVE.VMIDs()
	if len(ids) != 1 {
		t.Fatalf("VMs %v, want exactly the management VM", ids)
	}
	vmid := ids[0]
	vm, _ := s.PVE.VM(vmid)
	if vm.Config["template"] == "1" {
		t.Errorf("VM %d is a template", vmid)
	}
	disk, iso := s.ApplianceDisk(vmid)
	if disk == "" || !strings.HasPrefix(iso, "local:iso/opencsp-appliance") {
		t.Fatalf("no appliance run installed VM %d (disk %q, iso %q)", vmid, disk, iso)
	}
	if from, ok := s.PVE.DiskInstalled(vm.Node, diskVolume(vm.Config[disk])); !ok || from != iso {
		t.Errorf("pvesim: disk %s of VM %d installed from %q (%v), want %s", disk, vmid, from, ok, iso)
	}
	if !vm.Running || !strings.HasPrefix(vm.Config["boot"], "order="+disk) {
		t.Errorf("VM %d: running %v, boot %q: want it running from %s", vmid, vm.Running, vm.Config["boot"], disk)
	}
	uploads := 0
	for _, req := range s.PVE.MutatingRequests() {
		if strings.HasSuffix(req.Path, "/upload") {
			uploads++
		}
	}
	if uploads != 1 {
		t.Errorf("the ISO was uploaded %d times, want once", uploads)
	}

	// The node bootstrapped itself from the ISO's data: its own state says
	// k3s and flux are done, and its push is the ops repo's only commit.
	inst := s.Instance(vmid)
	if inst == nil {
		t.Fatalf("no stand-in runs VM %d", vmid)
	}
	nodeState, err := state.Peek(filepath.Join(inst.RootDir(), "var/lib/opencsp/state"))
	if err != nil {
		t.Fatalf("node state: %v", err)
	}
	for _, name := range []string{"k3s", "flux"} {
		if got := nodeState.StatusOf(name); got != state.Done {
			t.Errorf("node bootstrap stage %s: %s, want done", name, got)
		}
	}
	var flux struct{ Commit string }
	if rec := nodeState.Stages["flux"]; rec != nil {
		_ = json.Unmarshal(rec.Outputs, &flux)
	}
	head := gitOut(t, s, "rev-parse", "refs/heads/main")
	if flux.Commit == "" || flux.Commit != head {
		t.Errorf("ops repo main is %s, the node pushed %q", head, flux.Commit)
	}
	if n := gitOut(t, s, "rev-list", "--count", "refs/heads/main"); n != "1" {
		t.Errorf("ops repo main has %s commits, want the node's one bootstrap commit", n)
	}
	// The stand-in booted the ISO's seed, not pvesim's cloud-init drive:
	// its instance id, and the data partition's fstab entry (which cannot
	// mount in nspawn: the files are there from before boot instead).
	root := inst.RootDir()
	if id, _ := os.ReadFile(filepath.Join(root, "var/lib/cloud/data/instance-id")); !strings.HasPrefix(string(id), "opencsp-sandbox-") {
		t.Errorf("cloud-init instance id %q: not the appliance seed's (opencsp-sandbox-<hash>)", id)
	}
	if fstab, _ := os.ReadFile(filepath.Join(root, "etc/fstab")); !strings.Contains(string(fstab), "LABEL=OPENCSPDATA\t"+seed.DataMount) &&
		!strings.Contains(string(fstab), "LABEL=OPENCSPDATA "+seed.DataMount) {
		t.Errorf("cloud-init wrote no fstab entry for the data partition:\n%s", fstab)
	}
	if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(seed.DataMount), "opencsp.yaml")); err != nil {
		t.Errorf("the data partition's node config is not at %s: %v", seed.DataMount, err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "var/log/cloud-init.log")); !strings.Contains(string(b), "Activate mounts: PASS:mount -a") {
		t.Errorf("cloud-init's mount -a of the seed's mounts did not pass (nofail should make the missing partition harmless)")
	}
	if con := strings.Join(s.PVE.Console(vmid), "\n"); !strings.Contains(con, "opencsp-appliance: done") || !strings.Contains(con, "powering off") {
		t.Errorf("VM %d console: the appliance run did not finish and power off:\n%s", vmid, con)
	}

	// A payload byte changed on the ISO: the appliance refuses it naming the file.
	bad := filepath.Join(t.TempDir(), "tampered.iso")
	isoBytes, err := os.ReadFile(isoPath)
	if err != nil {
		t.Fatal(err)
	}
	nodeCfg, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(seed.DataMount), "opencsp.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if i := bytes.Index(isoBytes, nodeCfg); i < 0 {
		t.Fatal("the node config's bytes are not on the ISO")
	} else {
		isoBytes[i] ^= 0x20
	}
	if err := os.WriteFile(bad, isoBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := sandbox.ReadApplianceISO(ctx, bad, filepath.Join(t.TempDir(), "vm")); err == nil || !strings.Contains(err.Error(), "payload/opencsp.yaml corrupted") {
		t.Errorf("tampered ISO: %v, want payload/opencsp.yaml corrupted", err)
	}

	// The rerun changes nothing: no mutating PVE call, same refs.
	mutating := len(s.PVE.MutatingRequests())
	refs := gitRefs(t, s)
	unit := k3sUnit(t, ctx, s, vmid)
	if !strings.Contains(unit, "NRestarts=0") {
		t.Errorf("k3s restarted on the appliance node: %s", unit)
	}
	r = install(t, ctx, bin, s.Dir, env, args...)
	if r.code != 0 {
		t.Fatalf("rerun: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, name := range applianceStages {
		if !strings.Contains(r.stdout, "["+name+"] skipped") {
			t.Errorf("rerun did not skip stage %s:\n%s", name, r.stdout)
		}
	}
	if after := s.PVE.MutatingRequests(); len(after) != mutating {
		t.Errorf("rerun made %d mutating PVE calls: %+v", len(after)-mutating, after[mutating:])
	}
	if got := gitRefs(t, s); got != refs {
		t.Errorf("rerun changed the ops repo: %q -> %q", refs, got)
	}
	if got := k3sUnit(t, ctx, s, vmid); got != unit {
		t.Errorf("rerun restarted k3s:\n%s\n->\n%s", unit, got)
	}
}

// buildStaticInstaller builds the opencsp binary static and stripped: `image
// iso` puts itself in the ISO as the appliance's /init (static only), and
// every MiB is hashed and copied a few times.
func buildStaticInstaller(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "opencsp")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "github.com/opencsp/installer/cmd/installer")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build opencsp: %v\n%s", err, out)
	}
	return bin
}

func gitOut(t *testing.T, s *sandbox.Sandbox, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"-C", filepath.Join(s.Git.Dir(), "ops.git")}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v: %s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// diskVolume is the volid of a drive value ("local-lvm:vm-100-disk-0,size=20G").
func diskVolume(drive string) string {
	v, _, _ := strings.Cut(drive, ",")
	return v
}
