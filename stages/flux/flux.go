// Package flux is the flux stage: it renders and pushes the ops repo (internal/opsrepo) with
// the embedded Flux install manifests and the sync manifests in the cluster folder's
// flux-system/, then bootstraps Flux on the K3s cluster with the semantics of flux2's
// pkg/bootstrap (components, source Secret, sync, health), implemented with client-go
// server-side apply (field manager opencsp) rather than by importing flux2, whose module
// would pull Helm, controller-runtime and more into the installer. On the installer host with
// managementVM.provision.method appliance it adopts the sync the node bootstrapped itself
// (adopt.go) and changes nothing.
package flux

import (
	"context"
	"fmt"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/opsrepo"
	"github.com/opencsp/installer/internal/version"
	"github.com/opencsp/installer/stages"
	"github.com/opencsp/installer/stages/flux/kube"
	fluxmanifests "github.com/opencsp/installer/stages/flux/manifests"
)

// Name of the stage.
const Name = "flux"

// K3sOutputs is the part of the k3s stage's outputs this stage reads.
type K3sOutputs struct {
	Kubeconfig string `json:"kubeconfig"`
	Server     string `json:"server"`
}

// Options of the stage (from CLI flags).
type Options struct {
	// Registry replaces ghcr.io/fluxcd in the Flux images (air-gapped
	// mirror); it overrides the config's flux.registry.
	Registry string
	// ForceSyncPath allows moving an existing sync to another URL/path.
	ForceSyncPath bool
	// Vars are extra cluster variables for the render (see opsrepo.RenderInput.Vars).
	Vars map[string]string
	// AdoptAppliance is set on the installer host (stages/pipeline): with
	// managementVM.provision.method appliance the node bootstrapped Flux
	// itself, and this stage adopts that sync instead of pushing with the
	// host's age key. The node's own run leaves it false and bootstraps.
	AdoptAppliance bool
}

// Stage implements stages.Stage.
type Stage struct{ opts Options }

// New returns the flux stage.
func New(opts Options) *Stage { return &Stage{opts: opts} }

// Name implements stages.Stage.
func (*Stage) Name() string { return Name }

// Options returns the options the stage was built with.
func (s *Stage) Options() Options { return s.opts }

type inputs struct {
	OpsRepo    config.OpsRepo                    `json:"ops_repo"`
	Components map[string]config.ComponentConfig `json:"components"`
	Flux       string                            `json:"flux"`
	Registry   string                            `json:"registry"`
	Version    string                            `json:"version"`
	// Method is set for provision method appliance only (adopt), so
	// other fingerprints stay as they were.
	Method string `json:"method,omitempty"`
}

// Inputs implements stages.Stage: the ops repo, the components and the Flux versions.
func (s *Stage) Inputs(cfg *config.Config) any {
	in := inputs{OpsRepo: cfg.OpsRepo, Components: cfg.Components, Flux: fluxmanifests.Versions(),
		Registry: s.registry(cfg), Version: version.Get().Version}
	if s.adopts(cfg) {
		in.Method = cfg.ManagementVM.Provision.Method
	}
	return in
}

// registry is the Flux image mirror: the option (flag) wins over the
// config's flux.registry.
func (s *Stage) registry(cfg *config.Config) string {
	if s.opts.Registry != "" {
		return s.opts.Registry
	}
	return cfg.Flux.Registry
}

// Plan implements stages.Stage.
func (s *Stage) Plan(ctx context.Context, env *stages.Env) ([]stages.Change, error) {
	if s.adopts(env.Config) {
		w := wantSyncOf(env.Config)
		return []stages.Change{{Action: "adopt", Target: "flux sync " + SyncName,
			Detail: "bootstrapped by the appliance node from " + redactURL(w.url) + " " + w.path}}, nil
	}
	return []stages.Change{
		{Action: "push", Target: "ops repo " + redactURL(env.Config.OpsRepo.URL), Detail: "render " + opsrepo.ClusterPath(env.Config)},
		{Action: "apply", Target: "flux components", Detail: "Flux " + firstLine(fluxmanifests.Versions())},
		{Action: "apply", Target: "flux sync", Detail: "GitRepository + Kustomization " + SyncName},
	}, nil
}

// Run implements stages.Stage.
func (s *Stage) Run(ctx context.Context, env *stages.Env) error {
	var k3s K3sOutputs
	if err := env.StageOutputs("k3s", &k3s); err != nil {
		return err
	}
	client, err := kube.NewFromKubeconfig(k3s.Kubeconfig)
	if err != nil {
		return err
	}
	if s.adopts(env.Config) {
		return s.adopt(ctx, env, client)
	}
	repo, err := opsrepo.RepoOptionsFromConfig(env.Config, env.Secrets)
	if err != nil {
		return err
	}
	var prev Outputs
	if err := env.Outputs(&prev); err != nil {
		return err
	}
	repo.Auth.KnownHostKey = prev.HostKey
	var prov struct {
		Address string `json:"address"`
	}
	_ = env.StageOutputs("provision", &prov) // optional: static address otherwise
	res, err := Bootstrap(ctx, Params{
		Client: client, Config: env.Config, StateDir: env.StateDir, Repo: repo,
		Registry: s.registry(env.Config), ForceSyncPath: s.opts.ForceSyncPath, Vars: s.opts.Vars,
		MgmtAddress: prov.Address, InstallerVersion: version.Get().Version, Secrets: env.Secrets,
		Log: env.Log, Step: env.Step,
	})
	if err != nil {
		return err
	}
	hostKey := res.HostKey
	if hostKey == "" {
		hostKey = prev.HostKey
	}
	return env.SetOutputs(Outputs{Commit: res.Commit, Path: res.Path, URL: redactURL(res.URL), Layers: res.Layers, HostKey: hostKey})
}

// Outputs are recorded after a successful run.
type Outputs struct {
	Commit  string   `json:"commit"`
	Path    string   `json:"path"`
	URL     string   `json:"url"`
	Layers  []string `json:"layers"`
	HostKey string   `json:"host_key,omitempty"`
}

// Verify implements stages.Stage: the root Kustomization exists and is Ready.
func (s *Stage) Verify(ctx context.Context, env *stages.Env) error {
	var k3s K3sOutputs
	if err := env.StageOutputs("k3s", &k3s); err != nil {
		return err
	}
	client, err := kube.NewFromKubeconfig(k3s.Kubeconfig)
	if err != nil {
		return err
	}
	u, err := client.Get(ctx, KustomizationGVK, Namespace, SyncName)
	if err != nil {
		return err
	}
	if u == nil || !kube.FluxReady(u) {
		return fmt.Errorf("Kustomization %s/%s is missing or not Ready", Namespace, SyncName)
	}
	return nil
}

func firstLine(s string) string {
	for i, c := range s {
		if c == '\n' {
			return s[:i]
		}
	}
	return s
}
