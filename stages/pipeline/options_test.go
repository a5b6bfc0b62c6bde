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
