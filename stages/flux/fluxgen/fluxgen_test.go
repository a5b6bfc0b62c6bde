package fluxgen

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestGeneratedIsCurrent regenerates the install manifests and compares them with the committed
// ones byte for byte.
func TestGeneratedIsCurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: regenerating needs the module cache (or proxy) and controller-gen")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := Generate(ctx, Options{Logf: t.Logf})
	if err != nil {
		if os.Getenv("OPENCSP_SKIP_FLUXGEN") == "1" {
			t.Skipf("OPENCSP_SKIP_FLUXGEN=1 and the generator cannot run here: %v", err)
		}
		t.Fatalf("generate (needs `go mod download` of the pinned Flux modules; set OPENCSP_SKIP_FLUXGEN=1 to skip): %v", err)
	}
	for name, want := range out {
		got, err := os.ReadFile(filepath.Join("..", "manifests", name))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("stages/flux/manifests/%s is stale: run `go run ./stages/flux/fluxgen/cmd/fluxgen`", name)
		}
	}
}
