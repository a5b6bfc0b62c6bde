package flux_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/opencsp/installer/e2e/gitserver"
	"github.com/opencsp/installer/e2e/kubeenv"
	"github.com/opencsp/installer/internal/logging"
	"github.com/opencsp/installer/internal/opsrepo"
	"github.com/opencsp/installer/internal/testutil"
	"github.com/opencsp/installer/stages/flux"
	"github.com/opencsp/installer/stages/flux/kube"
	fluxmanifests "github.com/opencsp/installer/stages/flux/manifests"
)

// bootstrap runs only the flux stage's Bootstrap, opsRepo.path set to path ("" keeps the default).
func (h *harness) bootstrap(ctx context.Context, path, clusterURL string, force bool, timeout time.Duration) (*flux.Result, error) {
	cfg := h.config("")
	if path != "" {
		cfg.OpsRepo.Path = path
	}
	red := logging.NewRedactor()
	repo, err := opsrepo.RepoOptionsFromConfig(cfg, red)
	if err != nil {
		return nil, err
	}
	var log io.Writer = io.Discard
	if h.logs != nil {
		log = h.logs
	}
	return flux.Bootstrap(ctx, flux.Params{
		Client: h.client, Config: cfg, StateDir: h.dir, AgeKey: h.key, Repo: repo, Secrets: red,
		ClusterURL: clusterURL, ForceSyncPath: force, Timeout: timeout, InstallerVersion: "v0.0.0-e2e",
		Log: slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Step: func(step, msg string) func(error) {
			fmt.Fprintf(log, "step %s: %s\n", step, msg)
			return func(err error) { fmt.Fprintf(log, "step %s done: %v\n", step, err) }
		},
	})
}

// syncObjects returns resourceVersion and spec of the flux-system sync objects and Secrets.
func syncObjects(t *testing.T, ctx context.Context, c *kube.Client) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, gvk := range []schema.GroupVersionKind{flux.KustomizationGVK, flux.GitRepositoryGVK, {Version: "v1", Kind: "Secret"}} {
		ri, err := c.Resource(gvk, flux.Namespace)
		if err != nil {
			t.Fatal(err)
		}
		list, err := ri.List(ctx, listAll())
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range list.Items {
			out[kube.ID(&u)] = u.GetResourceVersion()
		}
	}
	return out
}

func lsRemote(t *testing.T, url string) string {
	t.Helper()
	out, err := exec.Command("git", "ls-remote", url).CombinedOutput()
	if err != nil {
		t.Fatalf("ls-remote: %v: %s", err, out)
	}
	return string(out)
}

// TestFluxSyncPathRefused: against a cluster whose flux-system GitRepository/Kustomization
// already sync another path or URL, Bootstrap refuses before changing anything (cluster or ops
// repo) and names both; ForceSyncPath moves the sync. Only an API server with the Flux CRDs:
// no controller runs, so nothing changes the objects behind the test's back.
func TestFluxSyncPathRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: real kube-apiserver")
	}
	env := kubeenv.StartForTest(t, kubeenv.Options{})
	client, err := kube.NewFromKubeconfig(env.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv, err := gitserver.Start(gitserver.Options{Token: "tok-e2e-123"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	if _, err := srv.NewRepo("ops", "main"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("OPENCSP_TEST_OPS_TOKEN", "tok-e2e-123")
	t.Setenv("OPENCSP_TEST_PVE_SECRET", "unused")
	dir := t.TempDir()
	testutil.WriteKeyPair(t, filepath.Join(dir, "id_ed25519"), "opencsp-e2e")
	key, _, err := opsrepo.LoadOrCreateAgeKey(filepath.Join(dir, "age.key"))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, env: env, client: client, srv: srv, dir: dir, key: key, logs: &bytes.Buffer{}}

	// An existing sync of clusters/lab from the ops repo, as a previous bootstrap left it.
	comps, err := kube.Decode(fluxmanifests.Components(""))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Apply(ctx, comps, kube.ApplyOptions{Force: true}); err != nil {
		t.Fatalf("Flux components: %v", err)
	}
	syncYAML, err := flux.RenderSync(flux.SyncOptions{URL: srv.URL("ops"), Path: "clusters/lab", SecretRef: flux.SyncName})
	if err != nil {
		t.Fatal(err)
	}
	objs, err := kube.Decode(syncYAML)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		if _, err = client.Apply(ctx, objs, kube.ApplyOptions{Force: true}); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("seed sync objects: %v", err)
	}
	before, headBefore := syncObjects(t, ctx, client), lsRemote(t, srv.AuthURL("ops"))

	start := time.Now()
	_, err = h.bootstrap(ctx, "clusters/moved", "", false, 5*time.Second)
	t.Logf("path change refused in %s: %v", time.Since(start).Round(time.Millisecond), err)
	if !errors.Is(err, flux.ErrSyncChanged) {
		t.Fatalf("path change: err = %v, want ErrSyncChanged", err)
	}
	for _, want := range []string{`"./clusters/lab"`, `"./clusters/moved"`, "--force-sync-path"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal does not name %s: %v", want, err)
		}
	}
	otherURL := strings.Replace(srv.URL("ops"), "127.0.0.1", "localhost", 1)
	if otherURL == srv.URL("ops") {
		t.Fatalf("cannot derive another URL from %s", srv.URL("ops"))
	}
	_, err = h.bootstrap(ctx, "", otherURL, false, 5*time.Second)
	if !errors.Is(err, flux.ErrSyncChanged) || !strings.Contains(err.Error(), srv.URL("ops")) || !strings.Contains(err.Error(), otherURL) {
		t.Fatalf("URL change: err = %v, want ErrSyncChanged naming both URLs", err)
	}
	if strings.Contains(err.Error(), "tok-e2e-123") {
		t.Errorf("refusal holds the token: %v", err)
	}
	after, headAfter := syncObjects(t, ctx, client), lsRemote(t, srv.AuthURL("ops"))
	for id, rv := range before {
		if after[id] != rv {
			t.Errorf("refused bootstrap changed %s (resourceVersion %s -> %s)", id, rv, after[id])
		}
	}
	if len(after) != len(before) {
		t.Errorf("refused bootstrap created objects: %v -> %v", before, after)
	}
	if headAfter != headBefore {
		t.Errorf("refused bootstrap pushed to the ops repo:\n%s->\n%s", headBefore, headAfter)
	}

	// ForceSyncPath passes the check and moves the sync (no controller here, so the health
	// wait then times out; the full success is in TestFluxBootstrapAndRollout).
	_, err = h.bootstrap(ctx, "clusters/moved", "", true, 2*time.Second)
	if errors.Is(err, flux.ErrSyncChanged) {
		t.Fatalf("ForceSyncPath still refused: %v", err)
	}
	ks, err := client.Get(ctx, flux.KustomizationGVK, flux.Namespace, flux.SyncName)
	if err != nil || ks == nil {
		t.Fatalf("Kustomization: %v", err)
	}
	if p, _, _ := unstructured.NestedString(ks.Object, "spec", "path"); p != "./clusters/moved" {
		t.Errorf("forced bootstrap left spec.path %q", p)
	}
	if lsRemote(t, srv.AuthURL("ops")) == headBefore {
		t.Errorf("forced bootstrap pushed nothing")
	}

	// The token reached the source Secret, and nowhere else: not the logs, steps or Events.
	sec, err := client.Get(ctx, schema.GroupVersionKind{Version: "v1", Kind: "Secret"}, flux.Namespace, flux.SyncName)
	if err != nil || sec == nil {
		t.Fatalf("source Secret: %v", err)
	}
	if pw, _, _ := unstructured.NestedString(sec.Object, "data", "password"); pw != base64.StdEncoding.EncodeToString([]byte("tok-e2e-123")) {
		t.Errorf("source Secret password is not the token")
	}
	if h.logs.Len() == 0 {
		t.Fatal("no log output captured")
	}
	if strings.Contains(h.logs.String(), "tok-e2e-123") {
		t.Errorf("logs hold the token:\n%s", h.logs)
	}
	evs, err := client.Resource(schema.GroupVersionKind{Version: "v1", Kind: "Event"}, "")
	if err != nil {
		t.Fatal(err)
	}
	list, err := evs.List(ctx, listAll())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range list.Items {
		if b, _ := e.MarshalJSON(); strings.Contains(string(b), "tok-e2e-123") {
			t.Errorf("Event %s holds the token", e.GetName())
		}
	}
}
