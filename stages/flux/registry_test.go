package flux

import (
	"testing"

	"github.com/opencsp/installer/internal/config"
)

// TestRegistryFromConfigOrFlag: the config's flux.registry picks the Flux
// image mirror, a flag overrides it, and either changes the stage's inputs
// (so a changed mirror re-runs the stage).
func TestRegistryFromConfigOrFlag(t *testing.T) {
	cfg := &config.Config{Flux: config.Flux{Registry: "mirror.example.net/fluxcd"}}
	for _, tc := range []struct {
		name, flag, want string
	}{
		{"config", "", "mirror.example.net/fluxcd"},
		{"flag wins", "other.example.net/flux", "other.example.net/flux"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Options{Registry: tc.flag})
			if got := s.registry(cfg); got != tc.want {
				t.Fatalf("registry = %q, want %q", got, tc.want)
			}
			if in := s.Inputs(cfg).(inputs); in.Registry != tc.want {
				t.Fatalf("inputs registry = %q, want %q", in.Registry, tc.want)
			}
		})
	}
	if New(Options{}).registry(&config.Config{}) != "" {
		t.Error("no mirror configured must mean the upstream registry")
	}
}
