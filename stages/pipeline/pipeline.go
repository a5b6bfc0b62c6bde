// Package pipeline assembles the install stages in their order. It is the
// one place that knows every stage package.
package pipeline

import (
	"github.com/opencsp/installer/internal/infra"
	"github.com/opencsp/installer/stages"
	"github.com/opencsp/installer/stages/flux"
	"github.com/opencsp/installer/stages/images"
	"github.com/opencsp/installer/stages/k3s"
	"github.com/opencsp/installer/stages/preflight"
	"github.com/opencsp/installer/stages/provision"
	"github.com/opencsp/installer/stages/rollout"
)

// Install returns the install stages in order, working through provider.
// Stages join as they are built: preflight, images, provision, k3s, flux,
// rollout.
func Install(provider infra.Provider) []stages.Stage {
	return InstallWith(provider, InstallOptions{})
}

// InstallOptions are the stage options the CLI sets (flags).
type InstallOptions struct {
	// Flux are the flux stage's options (--force-sync-path).
	Flux flux.Options
	// Preflight are the preflight stage's options (the ops repo check).
	Preflight preflight.Options
}

// InstallWith is Install with stage options.
func InstallWith(provider infra.Provider, o InstallOptions) []stages.Stage {
	list := Infrastructure(provider)
	list[0] = preflight.NewWith(provider, o.Preflight)
	// This is the installer host: an appliance node bootstrapped Flux itself.
	fo := o.Flux
	fo.AdoptAppliance = true
	return append(list,
		k3s.New(k3s.Options{}),
		flux.New(fo),
		rollout.New(0),
	)
}

// Infrastructure returns the stages that talk only to the infrastructure
// provider (preflight, images, provision): the leading part of Install,
// which runs without a reachable management VM (tests against the PVE
// emulator alone).
func Infrastructure(provider infra.Provider) []stages.Stage {
	return []stages.Stage{
		preflight.New(provider),
		images.New(provider),
		provision.New(provider),
	}
}

// Names lists the stage names of Install, for flag validation and help.
func Names() []string { return names(Install(nil)) }

// InfrastructureNames lists the stage names of Infrastructure.
func InfrastructureNames() []string { return names(Infrastructure(nil)) }

func names(list []stages.Stage) []string {
	var out []string
	for _, s := range list {
		out = append(out, s.Name())
	}
	return out
}
