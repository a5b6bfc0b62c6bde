package kubeenv

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/opencsp/installer/e2e/gitserver"
)

const cmTemplate = `apiVersion: v1
kind: ConfigMap
metadata:
  name: from-git
  namespace: default
data:
  greeting: %s
`

// TestFluxGitOps: the real source-controller clones a repository from the real git server
// (HTTP basic auth with a token, as the product's ops repo will be), the real
// kustomize-controller applies ./deploy, and a pushed change is rolled out after a
// reconcile request.
func TestFluxGitOps(t *testing.T) {
	t.Parallel()
	begin := time.Now()
	env := StartForTest(t, Options{Flux: true})
	t.Logf("cold start with Flux: %s", env.Timings)

	git, err := gitserver.Start(gitserver.Options{Token: "flux-token", Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer git.Close()
	if _, err := git.NewRepo("ops", "main"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if _, err := git.Commit(ctx, "ops", "main", "first", map[string][]byte{
		"deploy/cm.yaml": fmt.Appendf(nil, cmTemplate, "hello-1"),
	}); err != nil {
		t.Fatal(err)
	}

	user, token := git.Credentials()
	objs := fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata:
  name: ops-auth
  namespace: flux-system
stringData:
  username: %s
  password: %s
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata:
  name: ops
  namespace: flux-system
spec:
  interval: 1m
  url: %s
  ref:
    branch: main
  secretRef:
    name: ops-auth
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: ops
  namespace: flux-system
spec:
  interval: 1m
  path: ./deploy
  prune: true
  sourceRef:
    kind: GitRepository
    name: ops
`, user, token, git.URL("ops"))
	applied := time.Now()
	if err := env.Apply(ctx, objs); err != nil {
		t.Fatal(err)
	}

	wctx, wcancel := context.WithTimeout(ctx, 120*time.Second)
	defer wcancel()
	if _, err := env.WaitReady(wctx, "gitrepositories.source.toolkit.fluxcd.io", "flux-system", "ops"); err != nil {
		t.Fatal(err)
	}
	if _, err := env.WaitReady(wctx, "kustomizations.kustomize.toolkit.fluxcd.io", "flux-system", "ops"); err != nil {
		t.Fatal(err)
	}
	cm, err := env.WaitFor(wctx, "configmap", "default", "from-git", func(o Object) (bool, error) {
		return o.String("data", "greeting") == "hello-1", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := cm.String("metadata", "labels", "kustomize.toolkit.fluxcd.io/name"); got != "ops" {
		t.Errorf("ConfigMap not labelled by kustomize-controller: %q", got)
	}
	t.Logf("TIMING: first rollout %s after apply, %s after the start of the test",
		time.Since(applied).Round(10*time.Millisecond), time.Since(begin).Round(10*time.Millisecond))

	// Push a change and a new file; ask for a reconcile instead of waiting for the 1m interval.
	sha, err := git.Commit(ctx, "ops", "main", "second", map[string][]byte{
		"deploy/cm.yaml":     fmt.Appendf(nil, cmTemplate, "hello-2"),
		"deploy/extra.yaml":  []byte(strings.Replace(fmt.Sprintf(cmTemplate, "x"), "from-git", "extra", 1)),
		"deploy/ignored.txt": []byte("not a manifest"),
	})
	if err != nil {
		t.Fatal(err)
	}
	pushed := time.Now()
	if _, err := env.RequestReconcile(ctx, "gitrepositories.source.toolkit.fluxcd.io", "flux-system", "ops"); err != nil {
		t.Fatal(err)
	}
	wctx2, wcancel2 := context.WithTimeout(ctx, 120*time.Second)
	defer wcancel2()
	if _, err := env.WaitFor(wctx2, "gitrepositories.source.toolkit.fluxcd.io", "flux-system", "ops", func(o Object) (bool, error) {
		return strings.HasSuffix(o.String("status", "artifact", "revision"), sha), nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.RequestReconcile(ctx, "kustomizations.kustomize.toolkit.fluxcd.io", "flux-system", "ops"); err != nil {
		t.Fatal(err)
	}
	if _, err := env.WaitFor(wctx2, "configmap", "default", "from-git", func(o Object) (bool, error) {
		return o.String("data", "greeting") == "hello-2", nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.WaitFor(wctx2, "configmap", "default", "extra", func(Object) (bool, error) { return true, nil }); err != nil {
		t.Fatal(err)
	}
	ks, err := env.WaitFor(wctx2, "kustomizations.kustomize.toolkit.fluxcd.io", "flux-system", "ops", func(o Object) (bool, error) {
		st, _, _ := o.Condition("Ready")
		return st == "True" && strings.HasSuffix(o.String("status", "lastAppliedRevision"), sha), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING: change rolled out %s after the push (%s)", time.Since(pushed).Round(10*time.Millisecond), ks.Summary())

	// Prune: removing a file from git deletes its object.
	if _, err := git.Commit(ctx, "ops", "main", "third", map[string][]byte{"deploy/extra.yaml": nil}); err != nil {
		t.Fatal(err)
	}
	env.RequestReconcile(ctx, "gitrepositories.source.toolkit.fluxcd.io", "flux-system", "ops")
	deadline := time.Now().Add(120 * time.Second)
	for {
		env.RequestReconcile(ctx, "kustomizations.kustomize.toolkit.fluxcd.io", "flux-system", "ops")
		if _, err := env.Get(ctx, "configmap", "default", "extra"); err != nil {
			if !strings.Contains(err.Error(), "not found") {
				t.Fatal(err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("ConfigMap extra not pruned after it was removed from git")
		}
		time.Sleep(time.Second)
	}
	if req, denied := git.Stats(); req == 0 {
		t.Errorf("git server saw no requests (denied %d)", denied)
	}
}
