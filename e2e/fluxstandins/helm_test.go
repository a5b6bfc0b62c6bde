package fluxstandins

import (
	"slices"
	"testing"

	"github.com/opencsp/installer/manifests"
)

func TestHelmControllerIndex(t *testing.T) {
	h := &HelmController{
		Charts: []manifests.Chart{{Chart: "valkey", Version: "0.9.4"}, {Chart: "other", Version: "1.0.0"}},
		Index:  map[string][]string{"valkey": {"0.9.5", "0.9.4"}},
	}
	if got := h.Available("valkey"); !slices.Equal(got, []string{"0.9.4", "0.9.5"}) {
		t.Errorf("valkey versions %v, want the pinned one then the declared override", got)
	}
	if got := h.Available("other"); !slices.Equal(got, []string{"1.0.0"}) {
		t.Errorf("other versions %v", got)
	}
	for _, v := range []string{"0.0.0-does-not-exist", "0.9.x", ">=0.9.0", ""} {
		if slices.Contains(h.Available("valkey"), v) {
			t.Errorf("%q available", v)
		}
	}
	// Default: manifests.Charts(), pinned versions only.
	def := &HelmController{}
	for _, c := range manifests.Charts() {
		if c.Chart != "" && !slices.Contains(def.Available(c.Chart), c.Version) {
			t.Errorf("pinned %s %s not available", c.Chart, c.Version)
		}
	}
}
