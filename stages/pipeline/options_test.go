package pipeline

import (
	"testing"

	"github.com/opencsp/installer/stages/flux"
)

func fluxStage(t *testing.T, o InstallOptions) *flux.Stage {
	t.Helper()
	for _, s := range InstallWith(nil, o) {
		if f, ok := s.(*flux.Stage); ok {
			return f
		}
	}
	t.Fatal("no flux stage")
	return nil
}

func TestInstallWithPassesForceSyncPath(t *testing.T) {
	if fluxStage(t, InstallOptions{}).Options().ForceSyncPath {
		t.Error("ForceSyncPath set by default")
	}
	if !fluxStage(t, InstallOptions{Flux: flux.Options{ForceSyncPath: true}}).Options().ForceSyncPath {
		t.Error("InstallWith dropped Flux.ForceSyncPath")
	}
	if got, want := len(InstallWith(nil, InstallOptions{})), len(Install(nil)); got != want {
		t.Errorf("InstallWith has %d stages, Install %d", got, want)
	}
}

// The install pipeline runs on the installer host: its flux stage adopts
// what an appliance node bootstrapped itself.
func TestInstallWithAdoptsAppliance(t *testing.T) {
	if !fluxStage(t, InstallOptions{}).Options().AdoptAppliance {
		t.Error("the install pipeline's flux stage does not adopt an appliance node's Flux")
	}
}
