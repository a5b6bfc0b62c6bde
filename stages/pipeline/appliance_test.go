package pipeline_test

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencsp/installer/e2e/pvesim"
	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/infra/proxmox"
	"github.com/opencsp/installer/internal/state"
	"github.com/opencsp/installer/stages"
	"github.com/opencsp/installer/stages/pipeline"
	"github.com/opencsp/installer/stages/provision"
)

// newApplianceEnv is newEnv with managementVM.provision.method appliance
// and a (fake) appliance ISO next to the config, where appliance.iso's
// default points.
func newApplianceEnv(t *testing.T, s setup) *env {
	t.Helper()
	e := newEnv(t, s)
	e.cfg.ManagementVM.Provision.Method = config.ProvisionAppliance
	iso := make([]byte, 256<<10)
	rand.Read(iso)
	if err := os.WriteFile(e.cfg.ApplianceISO(), iso, 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// runAppliance runs the infrastructure stages like env.run, with the
// appliance wait bounded by installTimeout.
func (e *env) runAppliance(ctx context.Context, installTimeout time.Duration) error {
	e.t.Helper()
	p, err := proxmox.New(e.cfg, fastOptions)
	if err != nil {
		e.t.Fatal(err)
	}
	store, err := state.Open(ctx, e.stateDir)
	if err != nil {
		e.t.Fatal(err)
	}
	defer store.Close()
	r := &stages.Runner{Stages: pipeline.Infrastructure(p), Store: store, Config: e.cfg}
	for _, st := range r.Stages {
		if ps, ok := st.(*provision.Stage); ok {
			ps.SetAgentTimeouts(2*time.Second, 5*time.Second)
			ps.SetInstallTimeout(installTimeout)
		}
	}
	return r.Run(ctx, stages.Options{})
}

// checkAppliance asserts the end state of a converged appliance install.
func (e *env) checkAppliance() provision.Outputs {
	e.t.Helper()
	st := e.state()
	for _, name := range []string{"preflight", "images", "provision"} {
		if st.StatusOf(name) != state.Done {
			e.t.Fatalf("stage %s: %s (%s)", name, st.StatusOf(name), st.Stages[name].Error)
		}
	}
	var out provision.Outputs
	decode(e.t, st.Stages["provision"].Outputs, &out)
	if out.Method != "appliance" || out.Address != staticIP || !out.AddressConfirmed || out.VMID == 0 {
		e.t.Errorf("provision outputs: %+v", out)
	}
	if n := e.vmsNamed("opencsp-lab-mgmt"); n != 1 {
		e.t.Errorf("%d VMs named opencsp-lab-mgmt", n)
	}
	if n := e.vmsNamed("opencsp-lab-debian-12"); n != 0 {
		e.t.Errorf("%d templates made for an appliance install", n)
	}
	info, _ := e.sim.VM(out.VMID)
	c := info.Config
	if !info.Running || c["boot"] != "order=scsi0;net0" || c["ide2"] != "none,media=cdrom" || c["reboot"] != "" ||
		!strings.Contains(c["tags"], "opencsp-lab") || c["cores"] != "2" || c["memory"] != "4096" {
		e.t.Errorf("VM %d: %+v", out.VMID, info)
	}
	disk, _, _ := strings.Cut(c["scsi0"], ",")
	if iso, ok := e.sim.DiskInstalled(info.Node, disk); !ok || !strings.HasPrefix(iso, "local:iso/opencsp-appliance-") {
		e.t.Errorf("disk %s installed=%v from %q; scsi0 %q", disk, ok, iso, c["scsi0"])
	}
	if !strings.Contains(c["scsi0"], "size=20G") {
		e.t.Errorf("scsi0 %q, want the managementVM.diskGiB size", c["scsi0"])
	}
	e.validateLog()
	return out
}

// uploads counts ISO upload calls.
func (e *env) uploads() int {
	n := 0
	for _, r := range e.sim.Requests() {
		if r.Method == "POST" && strings.HasSuffix(r.Path, "/upload") {
			n++
		}
	}
	return n
}

func TestApplianceInstallConverges(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup setup
	}{
		{"standalone", setup{}},
		{"cluster pinned", setup{nodes: 3, shared: true, vmNode: "pve2"}},
		// appliance.after: reboot — "reboot: 0" turns the reboot into a stop.
		{"appliance reboots", setup{simOpts: func(o *pvesim.Options) { o.ApplianceReboots = true }}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newApplianceEnv(t, tc.setup)
			if err := e.runAppliance(t.Context(), 10*time.Second); err != nil {
				t.Fatalf("install: %v", err)
			}
			out := e.checkAppliance()
			if tc.setup.vmNode != "" && out.Node != tc.setup.vmNode {
				t.Errorf("VM on %s, want pinned %s", out.Node, tc.setup.vmNode)
			}
			if n := e.uploads(); n != 1 {
				t.Errorf("%d uploads", n)
			}
			before := len(e.sim.MutatingRequests())
			if err := e.runAppliance(t.Context(), 10*time.Second); err != nil {
				t.Fatalf("rerun: %v", err)
			}
			if after := e.sim.MutatingRequests(); len(after) != before {
				t.Errorf("rerun made %d mutating calls: %+v", len(after)-before, after[before:])
			}
		})
	}
}

// TestApplianceFaults: each fault either converges at once or fails naming
// the stage and the cause, and the rerun converges; never two VMs. An
// appliance that fails or hangs is reported with the VM and its console.
func TestApplianceFaults(t *testing.T) {
	failing := errors.New("payload verification failed")
	for _, tc := range []struct {
		name     string
		setup    setup
		inject   func(e *env)
		failWith string // "": the first run converges
		final    bool   // the failure needs a person: no rerun
	}{
		{"upload http 500", setup{}, func(e *env) {
			e.sim.InjectHTTPError(pvesim.HTTPFault{Method: "POST", Path: `/upload$`, Status: 500, Count: 2})
		}, "", false},
		{"upload task fails", setup{}, func(e *env) { e.sim.FailTasks("imgcopy", "import failed: cp: No space left on device", 1) }, "No space left on device", false},
		{"create task fails", setup{}, func(e *env) { e.sim.FailTasks("qmcreate", "unable to create VM 100 - lvcreate failed", 1) }, "lvcreate failed", false},
		{"start task fails", setup{}, func(e *env) { e.sim.FailTasks("qmstart", "start failed: kvm: error", 1) }, "kvm: error", false},
		{"nextid race", setup{}, func(e *env) { e.sim.RaceNextID(3) }, "", false},
		{"appliance fails", setup{simOpts: func(o *pvesim.Options) {
			o.OnApplianceBoot = func(context.Context, pvesim.ApplianceBoot) error { return failing }
		}}, nil, "serial console", true},
		{"appliance hangs", setup{simOpts: func(o *pvesim.Options) {
			o.OnApplianceBoot = func(ctx context.Context, _ pvesim.ApplianceBoot) error { <-ctx.Done(); return ctx.Err() }
		}}, nil, "did not power off within", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newApplianceEnv(t, tc.setup)
			if tc.inject != nil {
				tc.inject(e)
			}
			err := e.runAppliance(t.Context(), 500*time.Millisecond)
			if tc.failWith != "" {
				if err == nil || !strings.Contains(err.Error(), tc.failWith) || !strings.Contains(err.Error(), "stage provision") {
					t.Fatalf("want a provision failure naming %q, got %v", tc.failWith, err)
				}
				if tc.final {
					if !strings.Contains(err.Error(), "VM 100 (opencsp-lab-mgmt on pve)") || !strings.Contains(err.Error(), "qm terminal 100") {
						t.Errorf("the error does not name the VM and its console: %v", err)
					}
					if n := e.vmsNamed("opencsp-lab-mgmt"); n != 1 {
						t.Errorf("%d management VMs", n)
					}
					e.validateLog()
					return
				}
				e.sim.ClearFaults()
				err = e.runAppliance(t.Context(), 10*time.Second)
			}
			if err != nil {
				t.Fatalf("install: %v", err)
			}
			e.checkAppliance()
		})
	}
}

// TestApplianceKilled: a run killed mid-upload or while the appliance
// installs leaves its task or VM behind; the rerun picks it up — never a
// second upload of the same file, a second VM or a second install.
func TestApplianceKilled(t *testing.T) {
	for _, tc := range []struct {
		name   string
		setup  func(e *env)
		killAt func(e *env) bool
	}{
		{"mid-upload", func(e *env) { e.sim.SetTaskDuration("imgcopy", 1500*time.Millisecond) }, func(e *env) bool {
			for _, task := range e.sim.Tasks() {
				if task.Type == "imgcopy" && task.Running {
					return true
				}
			}
			return false
		}},
		{"mid-install", nil, func(e *env) bool {
			for _, id := range e.sim.VMIDs() {
				if vm, ok := e.sim.VM(id); ok && vm.Running && strings.HasPrefix(vm.Config["boot"], "order=ide2") {
					return true
				}
			}
			return false
		}},
		// Between the power-off and the switch to the disk: the phase is
		// read from the start task history, so the rerun does not install twice.
		{"after power-off", func(e *env) {
			e.sim.AddLatency(pvesim.LatencyFault{Method: "GET", Path: `/storage/local-lvm/content$`, Delay: time.Second})
		}, func(e *env) bool {
			for _, id := range e.sim.VMIDs() {
				if vm, ok := e.sim.VM(id); ok && !vm.Running && strings.HasPrefix(vm.Config["boot"], "order=ide2") && len(e.sim.Console(id)) > 0 {
					return true
				}
			}
			return false
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			e := newApplianceEnv(t, setup{simOpts: func(o *pvesim.Options) {
				o.OnApplianceBoot = func(ctx context.Context, _ pvesim.ApplianceBoot) error {
					if tc.name == "after power-off" {
						return nil
					}
					select { // the appliance finishes only once the first run is killed
					case <-release:
						return nil
					case <-ctx.Done():
						return ctx.Err()
					}
				}
			}})
			if tc.setup != nil {
				tc.setup(e)
			}
			ctx, cancel := context.WithCancel(t.Context())
			go func() {
				for ctx.Err() == nil && !tc.killAt(e) {
					time.Sleep(5 * time.Millisecond)
				}
				time.Sleep(50 * time.Millisecond)
				cancel()
			}()
			if err := e.runAppliance(ctx, 10*time.Second); err == nil {
				t.Fatal("the killed run succeeded")
			}
			close(release)
			e.sim.ClearFaults()
			creates, starts := 0, 0
			if err := e.runAppliance(t.Context(), 10*time.Second); err != nil {
				t.Fatalf("rerun: %v", err)
			}
			for _, r := range e.sim.Requests() {
				creates += b2i(r.Method == "POST" && strings.HasSuffix(r.Path, "/qemu"))
				starts += b2i(r.Method == "POST" && strings.HasSuffix(r.Path, "/status/start"))
			}
			if n := e.uploads(); n != 1 {
				t.Errorf("%d uploads", n)
			}
			if creates != 1 || starts != 2 { // one ISO boot, one disk boot
				t.Errorf("%d creates, %d starts; want 1 and 2", creates, starts)
			}
			e.checkAppliance()
			if len(e.state().Stages["provision"].InFlight) != 0 {
				t.Error("in-flight tasks left after the rerun")
			}
		})
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestAppliancePreflight: method appliance checks the ISO and its storage,
// not the template and image storages; nothing is created.
func TestAppliancePreflight(t *testing.T) {
	for _, tc := range []struct {
		name string
		bad  func(e *env)
		want []string
	}{
		{"all good, import storage unused", func(e *env) { e.cfg.Infrastructure.Proxmox.Storage.Images = "local-lvm" }, nil},
		{"no ISO", func(e *env) { os.Remove(e.cfg.ApplianceISO()) }, []string{"appliance.iso: ", "opencsp-appliance.iso cannot be read", "opencsp image iso"}},
		{"ISO storage without iso content", func(e *env) { e.cfg.Infrastructure.Proxmox.Storage.ISO = "local-lvm" },
			[]string{`storage local-lvm does not allow content "iso"`}},
		{"ISO storage full", func(e *env) { e.sim.SetStorageCapacity("pve", "local", 128<<10) },
			[]string{"storage local on node pve has 0.0 GiB free"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newApplianceEnv(t, setup{})
			tc.bad(e)
			p, err := proxmox.New(e.cfg, fastOptions)
			if err != nil {
				t.Fatal(err)
			}
			ps, err := p.Preflight(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if (len(ps) == 0) != (tc.want == nil) {
				t.Fatalf("problems %v, want %q", ps, tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(ps.Error(), w) {
					t.Errorf("problems lack %q:\n%s", w, ps.Error())
				}
			}
			if n := len(e.sim.MutatingRequests()); n != 0 {
				t.Errorf("preflight made %d mutating calls", n)
			}
		})
	}
}

// TestApplianceRebuiltISO: an ISO rebuilt before the VM first booted (here:
// its start failed) is uploaded under its new content name and the waiting
// VM is pointed at it; the old upload is not taken for the new file.
func TestApplianceRebuiltISO(t *testing.T) {
	e := newApplianceEnv(t, setup{})
	e.sim.FailTasks("qmstart", "start failed: kvm: error", 1)
	if err := e.runAppliance(t.Context(), 10*time.Second); err == nil || !strings.Contains(err.Error(), "kvm: error") {
		t.Fatalf("want the start failure, got %v", err)
	}
	first := e.sim.Volumes("pve", "local")
	iso := make([]byte, 256<<10) // same size, new content
	rand.Read(iso)
	if err := os.WriteFile(e.cfg.ApplianceISO(), iso, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.runAppliance(t.Context(), 10*time.Second); err != nil {
		t.Fatalf("rerun: %v", err)
	}
	out := e.checkAppliance()
	if n := e.uploads(); n != 2 {
		t.Errorf("%d uploads, want 2", n)
	}
	info, _ := e.sim.VM(out.VMID)
	disk, _, _ := strings.Cut(info.Config["scsi0"], ",")
	from, _ := e.sim.DiskInstalled("pve", disk)
	if slices.Contains(first, from) || !strings.HasPrefix(from, "local:iso/opencsp-appliance-") {
		t.Errorf("installed from %s; the first upload was %v", from, first)
	}
}
