package profiles_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/testutil"
	"github.com/opencsp/installer/manifests"
	"github.com/opencsp/installer/profiles"
)

// TestEveryProfileKeepsTheConsole loads each profile's example and plans its
// layers: every profile must yield the Console (the product's front door)
// without a disable cascade the user did not ask for.
func TestEveryProfileKeepsTheConsole(t *testing.T) {
	names := profiles.Names()
	if want := []string{"appliance", "cluster", "minimal", "openstack", "standalone"}; !slices.Equal(names, want) {
		t.Fatalf("profiles = %v, want %v", names, want)
	}
	for _, p := range names {
		t.Run(p, func(t *testing.T) {
			dir := testutil.CorpusDir(t)
			t.Setenv("PVE_TOKEN_SECRET", "x")
			t.Setenv("OS_APPLICATION_CREDENTIAL_SECRET", "y")
			doc, err := config.Example(config.ExampleOptions{Profile: p, PrivateKeyFile: "id_ed25519"})
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "opencsp.yaml")
			if err := os.WriteFile(path, doc, 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			layers, warnings, err := manifests.Plan(cfg.ComponentEnabled)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(layers, func(l manifests.Layer) bool { return l.Component == "console" }) {
				t.Errorf("profile %s loses the console; warnings:\n%s", p, strings.Join(warnings, "\n"))
			}
		})
	}
}
