package kubeenv

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

// SkipEnv, set to 1, makes StartForTest skip instead of failing when the tools are missing (or
// at all): `OPENCSP_SKIP_KUBE_E2E=1 go test ./...` on a machine without `make tools`.
const SkipEnv = "OPENCSP_SKIP_KUBE_E2E"

// StartForTest starts an environment for a test in a t.TempDir() (unless opts.Dir is set),
// logging to t.Logf, and stops it when the test ends, printing the tail of every component's
// log if the test failed. Missing tools fail the test with "run make tools"; it is skipped only
// when OPENCSP_SKIP_KUBE_E2E=1.
func StartForTest(t testing.TB, opts Options) *Env {
	t.Helper()
	if os.Getenv(SkipEnv) == "1" {
		t.Skip(SkipEnv + "=1: skipping the real Kubernetes/Flux environment")
	}
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env, err := Start(ctx, opts)
	if err != nil {
		if errors.Is(err, ErrToolsMissing) {
			t.Fatalf("%v\n(set %s=1 to skip these tests)", err, SkipEnv)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, c := range []string{"etcd", "kube-apiserver", "source-controller", "kustomize-controller"} {
				if tail := env.LogTail(c, 3000); tail != "" {
					t.Logf("--- tail of %s ---\n%s", env.LogFile(c), tail)
				}
			}
		}
		if err := env.Stop(); err != nil {
			t.Errorf("kubeenv: stop: %v", err)
		}
	})
	return env
}
