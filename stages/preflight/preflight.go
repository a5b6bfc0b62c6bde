// Package preflight is the first stage: it checks, before anything is
// created, that the install can work, and reports every problem together.
// It checks what lives on this machine (secret references, SSH keys) and,
// through the provider, the cloud: API, TLS, token, version, nodes,
// storages, bridge and capacity.
package preflight

import (
	"context"
	"fmt"
	"time"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/infra"
	"github.com/opencsp/installer/stages"
)

// Name is the stage name used in state and on the command line.
const Name = "preflight"

// Stage implements stages.Stage.
type Stage struct{ provider infra.Provider }

// New returns the preflight stage; provider nil checks this machine only.
func New(p infra.Provider) *Stage { return &Stage{provider: p} }

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
	return inputs{cfg.Infrastructure, m.SSH, cfg.OpsRepo.Auth,
		vmNeeds{m.Name, m.Node, m.Cores, m.MemoryMiB, m.DiskGiB}, cfg.Images}
}

func (*Stage) Plan(_ context.Context, env *stages.Env) ([]stages.Change, error) {
	var changes []stages.Change
	for _, c := range checkNames(env.Config) {
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
	if len(ps) > 0 {
		return ps
	}
	return env.SetOutputs(Outputs{CheckedAt: time.Now().UTC(), Checks: checkNames(env.Config)})
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
func checkNames(cfg *config.Config) []string {
	var out []string
	if p := cfg.Infrastructure.Proxmox; p != nil && cfg.Infrastructure.Provider == "proxmox" {
		out = append(out, "proxmox token "+p.TokenSecret.String())
	}
	if o := cfg.Infrastructure.OpenStack; o != nil && cfg.Infrastructure.Provider == "openstack" {
		out = append(out, "openstack credential "+o.ApplicationCredentialSecret.String())
	}
	if s := cfg.ManagementVM.SSH; s.PrivateKeyFile != "" {
		out = append(out, "ssh key "+cfg.ResolvePath(s.PrivateKeyFile))
	} else {
		out = append(out, "ssh-agent keys")
	}
	if a := cfg.OpsRepo.Auth; !a.Token.IsZero() {
		out = append(out, "ops repo token "+a.Token.String())
	} else if a.SSHKeyFile != "" {
		out = append(out, "ops repo key "+cfg.ResolvePath(a.SSHKeyFile))
	}
	return out
}
