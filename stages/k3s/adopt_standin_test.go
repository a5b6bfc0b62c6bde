package k3s_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencsp/installer/e2e/standin"
	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/events"
	"github.com/opencsp/installer/internal/state"
	"github.com/opencsp/installer/stages"
	"github.com/opencsp/installer/stages/flux"
	"github.com/opencsp/installer/stages/k3s"
	"github.com/opencsp/installer/stages/provision"
)

// adoptOnStandin is the installer host's side of provision method
// appliance, run against the VM stand-in whose first boot bootstrapped
// itself: the k3s stage over SSH and the flux stage adopt what the node did.
// Nothing on the node, in the cluster's Flux sync or in the ops repo may
// change. fx serves the node's Flux side; commit is the ops repo's head.
func adoptOnStandin(t *testing.T, ctx context.Context, inst *standin.Instance, cfg *config.Config, fx *fluxSide, repo, addr, commit string) {
	t.Helper()
	begin := time.Now()
	if m := cfg.ManagementVM.Provision.Method; m != config.ProvisionAppliance {
		t.Fatalf("config provision method %q, want appliance", m)
	}
	store, err := state.Open(ctx, filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	rec := &events.Recorder{}
	list := []stages.Stage{
		&fakeProvision{out: provision.Outputs{VMID: 130, Node: "pve1", Name: "mgmt", Address: addr, AddressConfirmed: true}},
		k3s.New(k3s.Options{ConnectTimeout: time.Minute, ReadyTimeout: time.Minute}),
		flux.New(flux.Options{AdoptAppliance: true}),
	}
	run := func(opts stages.Options) error {
		rec.Reset()
		r := &stages.Runner{Stages: list, Store: store, Config: cfg, Events: rec}
		return r.Run(ctx, opts)
	}
	steps := func(stage string) []string {
		var out []string
		for _, e := range rec.Events() {
			if e.Stage == stage && e.Status == events.Started && e.Step != "" {
				out = append(out, e.Step)
			}
		}
		return out
	}
	outputs := func(stage string, v any) {
		t.Helper()
		f, err := store.Load()
		if err != nil || f.Stages[stage] == nil {
			t.Fatalf("state of %s: %v", stage, err)
		}
		if err := json.Unmarshal(f.Stages[stage].Outputs, v); err != nil {
			t.Fatal(err)
		}
	}

	node := serviceState(t, ctx, inst)
	sync := fluxObjects(t, ctx, fx.Client())
	if err := run(stages.Options{}); err != nil {
		t.Fatalf("adopt: %v\n%s", err, fx.report())
	}
	t.Logf("k3s and flux adopted in %s", time.Since(begin).Round(10*time.Millisecond))
	if got, want := steps(k3s.Name), []string{"connect", "first-boot", "node-state", "ready"}; !slices.Equal(got, want) {
		t.Errorf("k3s steps %v, want %v (no upload, install or restart)", got, want)
	}
	if got, want := steps(flux.Name), []string{"check-sync", "health"}; !slices.Equal(got, want) {
		t.Errorf("flux steps %v, want %v (no render, push or apply)", got, want)
	}
	if after := serviceState(t, ctx, inst); after != node {
		t.Errorf("adopting touched the node:\nbefore %s\nafter  %s", node, after)
	}
	if after := fluxObjects(t, ctx, fx.Client()); after != sync {
		t.Errorf("adopting changed Flux objects: %s -> %s", sync, after)
	}
	if c := gitHead(t, repo); c != commit {
		t.Errorf("adopting pushed %s (was %s)", c, commit)
	}

	var ko k3s.Outputs
	outputs(k3s.Name, &ko)
	if ko.Version != k3sVersion || ko.NodeName != "mgmt" || ko.Server != "https://"+addr+":6443" || ko.HostKeyFingerprint == "" {
		t.Errorf("k3s outputs %+v", ko)
	}
	if sum := strings.Fields(exec1(t, ctx, inst, "sha256sum", "/etc/rancher/k3s/config.yaml"))[0]; ko.ConfigDigest != "sha256:"+sum {
		t.Errorf("k3s outputs config digest %s, the node's config.yaml has sha256:%s", ko.ConfigDigest, sum)
	}
	if fi, err := os.Stat(ko.Kubeconfig); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("kubeconfig %s: %v, want mode 0600", ko.Kubeconfig, err)
	}
	client, server := kubeClient(t, ko.Kubeconfig)
	if server != ko.Server {
		t.Errorf("kubeconfig server %s, want %s", server, ko.Server)
	}
	if nodes := listNames(t, ctx, client, server+"/api/v1/nodes"); !slices.Equal(nodes, []string{"mgmt"}) {
		t.Errorf("nodes through the adopted kubeconfig %v, want [mgmt]", nodes)
	}
	var fo flux.Outputs
	outputs(flux.Name, &fo)
	if fo.Commit != commit || fo.Path != "clusters/lab" || len(fo.Layers) == 0 {
		t.Errorf("flux outputs %+v, want commit %s, path clusters/lab and the planned layers", fo, commit)
	}

	// Unchanged inputs: both stages are skipped after their Verify.
	if err := run(stages.Options{}); err != nil || len(steps(k3s.Name))+len(steps(flux.Name)) != 0 {
		t.Errorf("rerun: err %v, steps %v %v, want both skipped", err, steps(k3s.Name), steps(flux.Name))
	}

	// The config asks for another cluster folder and branch than the node
	// synced: refused naming both, nothing changed.
	cfg.OpsRepo.Path, cfg.OpsRepo.Branch = "clusters/elsewhere", "next"
	err = run(stages.Options{Only: flux.Name})
	cfg.OpsRepo.Path, cfg.OpsRepo.Branch = "", ""
	if !errors.Is(err, flux.ErrSyncChanged) || !strings.Contains(err.Error(), `"./clusters/elsewhere"`) || !strings.Contains(err.Error(), `branch "main", not "next"`) {
		t.Errorf("other path and branch: err %v, want ErrSyncChanged naming ./clusters/elsewhere and branch next", err)
	}
	if after := fluxObjects(t, ctx, fx.Client()); after != sync {
		t.Errorf("refused adopt changed Flux objects: %s -> %s", sync, after)
	}
	if c := gitHead(t, repo); c != commit {
		t.Errorf("refused adopt pushed %s (was %s)", c, commit)
	}
	t.Logf("adoption checks done in %s", time.Since(begin).Round(10*time.Millisecond))
}
