// Package preflight is the first stage: it checks, before anything is
// created, that the install can work, and reports every problem together.
// It checks what lives on this machine (secret references, SSH keys),
// through the provider, the cloud: API, TLS, token, version, nodes,
// storages, bridge and capacity, and the ops repo (a git ls-remote with
// the configured auth: it exists and accepts the credentials).
//
// Failed checks fail the stage (exit code 1 with the resume command), not
// exit code 2: like a rejected token, they are findings about systems
// outside the config (a git server that is down, a repo not created yet)
// that may be fixed without editing the config; rerunning the same
// command resumes. Nothing is created before these checks pass.
package preflight

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/infra"
	"github.com/opencsp/installer/internal/logging"
	"github.com/opencsp/installer/internal/opsrepo"
	"github.com/opencsp/installer/internal/opsrepo/gitrepo"
	"github.com/opencsp/installer/stages"
)

// Name is the stage name used in state and on the command line.
const Name = "preflight"

// Stage implements stages.Stage.
type Stage struct {
	provider infra.Provider
	opts     Options
}

// Options select optional checks.
type Options struct {
	// OpsRepo lists the ops repo's branches with the configured auth (a
	// network call). Off for runs that never touch the ops repo (the
	// infrastructure stages alone, `install --only`).
	OpsRepo bool
}

// New returns the preflight stage; provider nil checks this machine only.
func New(p infra.Provider) *Stage { return &Stage{provider: p} }

// NewWith returns the preflight stage with optional checks.
func NewWith(p infra.Provider, o Options) *Stage { return &Stage{provider: p, opts: o} }

// Outputs is what preflight records.
type Outputs struct {
	CheckedAt time.Time `json:"checked_at"`
	Checks    []string  `json:"checks"`
}

func (*Stage) Name() string { return Name }

// inputs is the slice of config preflight reads: references, not secrets.
type inputs struct {
	Infrastructure config.Infrastructure `json:"infrastructure"`
	SSH            config.SSH            `json:"ssh"`
	OpsAuth        config.GitAuth        `json:"ops_auth"`
	// The ops repo the reachability check lists.
	OpsURL    string `json:"ops_url"`
	OpsBranch string `json:"ops_branch"`
	// What the provider checks capacity and placement for.
	VM     vmNeeds  `json:"vm"`
	Images []string `json:"images"`
}

type vmNeeds struct {
	Name      string `json:"name"`
	Node      string `json:"node"`
	Cores     int    `json:"cores"`
	MemoryMiB int    `json:"memory_mib"`
	DiskGiB   int    `json:"disk_gib"`
}

func (*Stage) Inputs(cfg *config.Config) any {
	m := cfg.ManagementVM
	return inputs{cfg.Infrastructure, m.SSH, cfg.OpsRepo.Auth, cfg.OpsRepo.URL, cfg.OpsRepo.Branch,
		vmNeeds{m.Name, m.Node, m.Cores, m.MemoryMiB, m.DiskGiB}, cfg.Images}
}

func (s *Stage) Plan(_ context.Context, env *stages.Env) ([]stages.Change, error) {
	var changes []stages.Change
	for _, c := range s.checkNames(env.Config) {
		changes = append(changes, stages.Change{Action: "check", Target: c})
	}
	return changes, nil
}

func (s *Stage) Run(ctx context.Context, env *stages.Env) error {
	done := env.Step("local", "check secrets and keys on this machine")
	ps := localChecks(env.Config, env.Secrets)
	if len(ps) > 0 {
		done(ps)
	} else {
		done(nil)
	}
	if s.provider != nil {
		done := env.Step("provider", "check the "+env.Config.Infrastructure.Provider+" API, nodes, storages, network and capacity")
		remote, err := s.provider.Preflight(ctx)
		if err != nil {
			done(err)
			return fmt.Errorf("provider checks: %w", err)
		}
		if len(remote) > 0 {
			done(remote)
		} else {
			done(nil)
		}
		ps = append(ps, remote...)
	}
	// A token or key that does not load is reported by the local checks.
	if s.opts.OpsRepo && env.Config.OpsRepo.URL != "" && !slices.ContainsFunc(ps, func(p infra.Problem) bool { return strings.HasPrefix(p.Check, "ops repo") }) {
		done := env.Step("ops-repo", "check that the ops repo "+gitrepo.SafeURL(env.Config.OpsRepo.URL)+" exists and accepts the credentials")
		found, err := opsRepoCheck(ctx, env.Config, env.Secrets)
		if err != nil {
			p := infra.Problems{{Check: "ops repo", Msg: err.Error()}}
			done(p)
			ps = append(ps, p...)
		} else {
			env.Log.Info("ops repo reachable", "url", gitrepo.SafeURL(env.Config.OpsRepo.URL), "found", found)
			done(nil)
		}
	}
	if len(ps) > 0 {
		return ps
	}
	return env.SetOutputs(Outputs{CheckedAt: time.Now().UTC(), Checks: s.checkNames(env.Config)})
}

// Verify repeats the local checks: they are cheap and read-only, and a
// secret that vanished since the last run must stop the install here.
// The provider checks are not repeated: once the VM exists, capacity
// checks would count it against itself, and later stages report API
// problems with their own context.
func (*Stage) Verify(_ context.Context, env *stages.Env) error {
	if ps := localChecks(env.Config, env.Secrets); len(ps) > 0 {
		return ps
	}
	return nil
}

// checkNames lists the checks Run performs for this config, for plans and state.
func (s *Stage) checkNames(cfg *config.Config) []string {
	var out []string
	if p := cfg.Infrastructure.Proxmox; p != nil && cfg.Infrastructure.Provider == "proxmox" {
		out = append(out, "proxmox token "+p.TokenSecret.String())
	}
	if o := cfg.Infrastructure.OpenStack; o != nil && cfg.Infrastructure.Provider == "openstack" {
		out = append(out, "openstack credential "+o.ApplicationCredentialSecret.String())
	}
	if k := cfg.ManagementVM.SSH; k.PrivateKeyFile != "" {
		out = append(out, "ssh key "+cfg.ResolvePath(k.PrivateKeyFile))
	} else {
		out = append(out, "ssh-agent keys")
	}
	if s.opts.OpsRepo && cfg.OpsRepo.URL != "" {
		out = append(out, "ops repo "+gitrepo.SafeURL(cfg.OpsRepo.URL)+" reachable")
	}
	if a := cfg.OpsRepo.Auth; !a.Token.IsZero() {
		out = append(out, "ops repo token "+a.Token.String())
	} else if a.SSHKeyFile != "" {
		out = append(out, "ops repo key "+cfg.ResolvePath(a.SSHKeyFile))
	}
	return out
}

// opsRepoCheck lists the ops repo's branches with the configured auth and
// says what it found.
func opsRepoCheck(ctx context.Context, cfg *config.Config, redact *logging.Redactor) (string, error) {
	opts, err := opsrepo.RepoOptionsFromConfig(cfg, redact)
	if err != nil {
		return "", err
	}
	branches, err := opsrepo.CheckReachable(ctx, opts)
	if err != nil {
		return "", err
	}
	return opsrepo.DescribeBranches(branches, opts.Branch), nil
}
