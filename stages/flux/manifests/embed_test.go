package manifests

import (
	"strings"
	"testing"
)

func TestComponentsRegistry(t *testing.T) {
	for _, tc := range []struct {
		registry, want string
	}{
		{"", "image: ghcr.io/fluxcd/source-controller:v1.9.6"},
		{"ghcr.io/fluxcd/", "image: ghcr.io/fluxcd/source-controller:v1.9.6"},
		{"registry.lab:5000/fluxcd", "image: registry.lab:5000/fluxcd/source-controller:v1.9.6"},
		{"registry.lab:5000/mirror/", "image: registry.lab:5000/mirror/source-controller:v1.9.6"},
	} {
		got := string(Components(tc.registry))
		if !strings.Contains(got, tc.want) {
			t.Errorf("Components(%q) lacks %q", tc.registry, tc.want)
		}
		if n := strings.Count(got, "\n        image: "); n != 4 {
			t.Errorf("Components(%q): %d images, want 4", tc.registry, n)
		}
		if tc.registry != "" && !strings.HasPrefix(tc.registry, "ghcr.io") && strings.Contains(got, "image: ghcr.io") {
			t.Errorf("Components(%q) still pulls from ghcr.io", tc.registry)
		}
	}
}
