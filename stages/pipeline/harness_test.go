package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencsp/installer/e2e/pvesim"
	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/infra/proxmox"
	"github.com/opencsp/installer/internal/state"
	"github.com/opencsp/installer/internal/testutil"
	"github.com/opencsp/installer/internal/testutil/pvetest"
	"github.com/opencsp/installer/stages"
	"github.com/opencsp/installer/stages/pipeline"
)

// env is one test installation: an emulator, an image mirror, a config.
type env struct {
	t        *testing.T
	sim      *pvesim.Server
	cfg      *config.Config
	dir      string
	stateDir string
}

type setup struct {
	nodes   int
	shared  bool
	upload  bool
	extra   string // appended to infrastructure.proxmox
	vmNode  string
	dhcp    bool
	simOpts func(*pvesim.Options)
	bridges []string // what GET /nodes/{node}/network lists; default vmbr0
}

const staticIP = "192.0.2.10"

func newEnv(t *testing.T, s setup) *env {
	t.Helper()
	dir := testutil.CorpusDir(t)
	pvetest.Mirror(t, dir)
	opts := pvesim.Options{Nodes: max(1, s.nodes), SharedStorage: s.shared, LockTimeout: 300 * time.Millisecond,
		TaskDuration: 5 * time.Millisecond, Seed: 1,
		AddressFor: func(vmid int, node string) (string, bool) { return staticIP + "/24", true }}
	if s.simOpts != nil {
		s.simOpts(&opts)
	}
	pve := pvetest.Start(t, opts, s.bridges)
	sim := pve.Sim
	t.Setenv("OPENCSP_TEST_PVE_SECRET", sim.TokenSecret())

	templates := "local-lvm"
	if s.shared {
		templates = "shared-nfs"
	}
	network := "address: " + staticIP + "/24\n    gateway: 192.0.2.1\n    dns: [192.0.2.1]"
	if s.dhcp {
		network = "dhcp: true"
	}
	node := ""
	if s.vmNode != "" {
		node = "\n  node: " + s.vmNode
	}
	yaml := fmt.Sprintf(`apiVersion: opencsp.io/v1alpha1
kind: InstallConfig
profile: standalone
cluster: {name: lab, domain: lab.example.net}
infrastructure:
  provider: proxmox
  proxmox:
    endpoint: %s
    tokenID: %s
    tokenSecret: env:OPENCSP_TEST_PVE_SECRET
    tls: {fingerprint: "%s"}
    uploadImages: %v
    storage: {templates: %s, disks: %s, images: local, iso: local}
%s
images: [./debian-12.yaml]
managementVM:
  cores: 2
  memoryMiB: 4096
  diskGiB: 20%s
  network:
    %s
  ssh: {user: opencsp, privateKeyFile: id_ed25519}
k3s: {version: v1.33.5+k3s1}
opsRepo: {url: ssh://git@git.example.net/ops/opencsp.git}
`, pve.URL, sim.TokenID(), pve.Fingerprint, s.upload, templates, templates, s.extra, node, network)
	path := filepath.Join(dir, "opencsp.yaml")
	os.WriteFile(path, []byte(yaml), 0o644)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	return &env{t: t, sim: sim, cfg: cfg, dir: dir, stateDir: filepath.Join(dir, "state")}
}

// fastOptions keep retries and polls short for tests.
var fastOptions = proxmox.Options{
	Poll:     proxmox.Backoff{Initial: 5 * time.Millisecond, Max: 50 * time.Millisecond},
	Retry:    proxmox.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	Attempts: 8,
}

// run runs the install pipeline through the real Runner with a state store.
func (e *env) run(ctx context.Context) error {
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
		if ps, ok := st.(interface {
			SetAgentTimeouts(time.Duration, time.Duration)
		}); ok {
			ps.SetAgentTimeouts(2*time.Second, 5*time.Second)
		}
	}
	return r.Run(ctx, stages.Options{})
}

func (e *env) state() *state.File {
	e.t.Helper()
	f, err := state.Peek(e.stateDir)
	if err != nil {
		e.t.Fatal(err)
	}
	return f
}

// vmsNamed counts the emulator's VMs with a name.
func (e *env) vmsNamed(name string) int {
	n := 0
	for _, id := range e.sim.VMIDs() {
		if vm, ok := e.sim.VM(id); ok && vm.Config["name"] == name {
			n++
		}
	}
	return n
}

func (e *env) validateLog() {
	e.t.Helper()
	if err := e.sim.ValidateLog(); err != nil {
		e.t.Errorf("requests the real API would reject:\n%v", err)
	}
}

func decode(t *testing.T, raw []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatal(err)
	}
}
