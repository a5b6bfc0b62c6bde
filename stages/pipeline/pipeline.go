// Package pipeline assembles the install stages in their order. It is the
// one place that knows every stage package.
package pipeline

import (
	"github.com/opencsp/installer/stages"
	"github.com/opencsp/installer/stages/preflight"
)

// Install returns the install stages in order. Stages join as they are
// built: preflight, images, provision, k3s, flux, rollout.
func Install() []stages.Stage {
	return []stages.Stage{
		preflight.New(),
	}
}

// Names lists the stage names of Install, for flag validation and help.
func Names() []string {
	var names []string
	for _, s := range Install() {
		names = append(names, s.Name())
	}
	return names
}
