// Package preflight is the first stage: it checks, before anything is
// created, that the install can work, and reports every problem together.
// Today it checks what lives on this machine (secret references, SSH keys);
// the Proxmox API checks join it with the Proxmox provider.
package preflight

import (
	"context"
	"time"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/stages"
)

// Name is the stage name used in state and on the command line.
const Name = "preflight"

// Stage implements stages.Stage.
type Stage struct{}

// New returns the preflight stage.
func New() *Stage { return &Stage{} }

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
}

func (*Stage) Inputs(cfg *config.Config) any {
	return inputs{cfg.Infrastructure, cfg.ManagementVM.SSH, cfg.OpsRepo.Auth}
}

func (*Stage) Plan(_ context.Context, env *stages.Env) ([]stages.Change, error) {
	var changes []stages.Change
	for _, c := range checkNames(env.Config) {
		changes = append(changes, stages.Change{Action: "check", Target: c})
	}
	return changes, nil
}

func (*Stage) Run(_ context.Context, env *stages.Env) error {
	done := env.Step("local", "check secrets and keys on this machine")
	if ps := localChecks(env.Config, env.Secrets); len(ps) > 0 {
		done(ps)
		return ps
	}
	done(nil)
	return env.SetOutputs(Outputs{CheckedAt: time.Now().UTC(), Checks: checkNames(env.Config)})
}

// Verify repeats the local checks: they are cheap and read-only, and a
// secret that vanished since the last run must stop the install here.
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
