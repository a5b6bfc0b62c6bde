// Package pipeline assembles the install stages in their order. It is the
// one place that knows every stage package.
package pipeline

import (
	"github.com/opencsp/installer/internal/infra"
	"github.com/opencsp/installer/stages"
	"github.com/opencsp/installer/stages/images"
	"github.com/opencsp/installer/stages/preflight"
	"github.com/opencsp/installer/stages/provision"
)

// Install returns the install stages in order, working through provider.
// Stages join as they are built: preflight, images, provision, k3s, flux,
// rollout.
func Install(provider infra.Provider) []stages.Stage {
	return []stages.Stage{
		preflight.New(provider),
		images.New(provider),
		provision.New(provider),
	}
}

// Names lists the stage names of Install, for flag validation and help.
func Names() []string {
	var names []string
	for _, s := range Install(nil) {
		names = append(names, s.Name())
	}
	return names
}
