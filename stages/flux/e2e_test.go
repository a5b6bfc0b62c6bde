package flux_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/opencsp/installer/e2e/fluxstandins"
	"github.com/opencsp/installer/e2e/gitserver"
	"github.com/opencsp/installer/e2e/kubeenv"
	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/logging"
	"github.com/opencsp/installer/internal/opsrepo"
	"github.com/opencsp/installer/internal/testutil"
	"github.com/opencsp/installer/manifests"
	"github.com/opencsp/installer/stages/flux"
	"github.com/opencsp/installer/stages/flux/kube"
	"github.com/opencsp/installer/stages/rollout"
)

const e2eConfig = `apiVersion: opencsp.io/v1alpha1
kind: InstallConfig
profile: standalone
cluster:
  name: lab
  domain: lab.example.net
infrastructure:
  provider: proxmox
  proxmox:
    endpoint: https://pve1.example.net:8006
    tokenID: opencsp@pve!installer
    tokenSecret: env:OPENCSP_TEST_PVE_SECRET
    nodes: [pve1]
managementVM:
  cores: 4
  memoryMiB: 16384
  diskGiB: 100
  network:
    dhcp: false
    address: 192.0.2.10/24
    gateway: 192.0.2.1
  ssh:
    user: opencsp
    privateKeyFile: id_ed25519
k3s:
  version: v1.33.5+k3s1
opsRepo:
  url: URL
  branch: main
  auth:
    token: env:OPENCSP_TEST_OPS_TOKEN
COMPONENTS`

// valkeyOverride is a valkey chart version other than the pinned one that the stand-in's fake
// chart repository index holds.
const valkeyOverride = "0.9.5"

type harness struct {
	t      *testing.T
	env    *kubeenv.Env
	client *kube.Client
	srv    *gitserver.Server
	dir    string
	key    *opsrepo.AgeKey
	logs   *bytes.Buffer // Bootstrap's log and steps (h.bootstrap); discarded when nil
}

func newHarness(t *testing.T) *harness {
	env := kubeenv.StartForTest(t, kubeenv.Options{Flux: true})
	client, err := kube.NewFromKubeconfig(env.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := fluxstandins.InstallCRDs(ctx, client, fluxstandins.K3sCRDs); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	go (&fluxstandins.WorkloadStatus{Client: client, Log: log}).Run(ctx)
	// The fake chart index also holds valkeyOverride: a legitimate version override.
	go (&fluxstandins.HelmController{Client: client, Log: log,
		Index: map[string][]string{"valkey": {valkeyOverride}}}).Run(ctx)
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
	return &harness{t: t, env: env, client: client, srv: srv, dir: dir, key: key}
}

func (h *harness) config(components string) *config.Config {
	h.t.Helper()
	s := strings.Replace(e2eConfig, "URL", h.srv.URL("ops"), 1)
	s = strings.Replace(s, "COMPONENTS", components, 1)
	p := filepath.Join(h.dir, "opencsp.yaml")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		h.t.Fatal(err)
	}
	cfg, err := config.Load(p)
	if err != nil {
		h.t.Fatal(err)
	}
	return cfg
}

// install runs what the flux and rollout stages run.
func (h *harness) install(ctx context.Context, components string) (*flux.Result, []rollout.Layer, error) {
	cfg := h.config(components)
	red := logging.NewRedactor()
	repo, err := opsrepo.RepoOptionsFromConfig(cfg, red)
	if err != nil {
		return nil, nil, err
	}
	res, err := flux.Bootstrap(ctx, flux.Params{
		Client: h.client, Config: cfg, StateDir: h.dir, AgeKey: h.key, Repo: repo, Secrets: red,
		Timeout: 2 * time.Minute, InstallerVersion: "v0.0.0-e2e",
		Step: func(step, msg string) func(error) {
			start := time.Now()
			return func(err error) {
				h.t.Logf("flux step %s (%s): %v in %s", step, msg, err, time.Since(start).Round(time.Millisecond))
			}
		},
	})
	if err != nil {
		return nil, nil, err
	}
	layers, err := rollout.LayersFor(res.Layers)
	if err != nil {
		return res, nil, err
	}
	err = rollout.Wait(ctx, h.client, layers, rollout.Options{Timeout: 2 * time.Minute,
		Step: func(step, msg string) func(error) {
			start := time.Now()
			return func(err error) {
				if err != nil {
					h.t.Logf("rollout %s: FAILED in %s", msg, time.Since(start).Round(time.Millisecond))
					return
				}
				h.t.Logf("rollout %s: done in %s", msg, time.Since(start).Round(time.Millisecond))
			}
		}})
	return res, layers, err
}

func (h *harness) resourceVersions(ctx context.Context) map[string]string {
	h.t.Helper()
	out := map[string]string{}
	for _, gvk := range []schema.GroupVersionKind{flux.KustomizationGVK, flux.GitRepositoryGVK, flux.DeploymentGVK,
		{Version: "v1", Kind: "Secret"}, rollout.HelmReleaseGVK} {
		ri, err := h.client.Resource(gvk, "")
		if err != nil {
			h.t.Fatal(err)
		}
		list, err := ri.List(ctx, listAll())
		if err != nil {
			h.t.Fatal(err)
		}
		for _, u := range list.Items {
			out[kube.ID(&u)] = u.GetResourceVersion()
		}
	}
	return out
}

func TestFluxBootstrapAndRollout(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: real kube-apiserver + Flux e2e")
	}
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	start := time.Now()
	res, layers, err := h.install(ctx, "")
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	t.Logf("first install: commit %s, %d layers, %s", res.Commit, len(layers), time.Since(start).Round(time.Millisecond))

	// Ready in dependsOn order: every layer became Ready after each of its dependencies.
	readyAt := map[string]time.Time{}
	for _, l := range layers {
		u, err := h.client.Get(ctx, flux.KustomizationGVK, flux.Namespace, l.Name)
		if err != nil || u == nil {
			t.Fatalf("layer %s: %v", l.Name, err)
		}
		c, _ := kube.FindCondition(u, "Ready")
		readyAt[l.Name] = c.LastTransitionTime
	}
	for _, l := range layers {
		for _, d := range l.DependsOn {
			if readyAt[l.Name].Before(readyAt[d]) {
				t.Errorf("layer %s Ready at %s before its dependency %s (%s)", l.Name, readyAt[l.Name], d, readyAt[d])
			}
		}
	}

	// SOPS: the Secrets exist in the cluster with their keys; the repo holds no value.
	checkSecrets(t, ctx, h)

	// Rerun: no commit, no changed object.
	before := h.resourceVersions(ctx)
	start = time.Now()
	res2, _, err := h.install(ctx, "")
	if err != nil {
		t.Fatalf("rerun: %v", err)
	}
	t.Logf("rerun: %s", time.Since(start).Round(time.Millisecond))
	if res2.Pushed || res2.Commit != res.Commit {
		t.Errorf("rerun pushed a commit: %+v", res2)
	}
	if len(res2.Changed) > 0 {
		t.Errorf("rerun changed objects: %v", res2.Changed)
	}
	after := h.resourceVersions(ctx)
	for id, rv := range before {
		if after[id] != rv {
			t.Errorf("rerun changed %s (resourceVersion %s -> %s)", id, rv, after[id])
		}
	}

	// Disabling a component prunes its layer.
	start = time.Now()
	if _, _, err := h.install(ctx, "components:\n  semaphore:\n    enabled: false\n"); err != nil {
		t.Fatalf("disable semaphore: %v", err)
	}
	t.Logf("disable semaphore: %s", time.Since(start).Round(time.Millisecond))
	if u, _ := h.client.Get(ctx, flux.KustomizationGVK, flux.Namespace, "semaphore"); u != nil {
		t.Errorf("layer semaphore still there after disabling it")
	}
	if u, _ := h.client.Get(ctx, rollout.HelmReleaseGVK, flux.Namespace, "semaphore"); u != nil {
		t.Errorf("HelmRelease semaphore not pruned")
	}

	// A legitimate version override (in the chart repository's index) rolls out.
	start = time.Now()
	if _, _, err := h.install(ctx, "components:\n  semaphore:\n    enabled: false\n  valkey:\n    version: "+valkeyOverride+"\n"); err != nil {
		t.Fatalf("valkey version override %s: %v", valkeyOverride, err)
	}
	t.Logf("valkey override %s rolled out in %s", valkeyOverride, time.Since(start).Round(time.Millisecond))
	hr := h.helmRelease(ctx, "valkey")
	if v, _, _ := unstructured.NestedString(hr.Object, "spec", "chart", "spec", "version"); v != valkeyOverride {
		t.Errorf("HelmRelease valkey pins %q, want the override %s", v, valkeyOverride)
	}
	if rev, _, _ := unstructured.NestedString(hr.Object, "status", "lastAttemptedRevision"); rev != valkeyOverride || !kube.FluxReady(hr) {
		t.Errorf("HelmRelease valkey not Ready at %s (lastAttemptedRevision %q)", valkeyOverride, rev)
	}

	// A broken component fails the rollout naming it.
	start = time.Now()
	_, _, err = h.install(ctx, "components:\n  semaphore:\n    enabled: false\n  valkey:\n    version: 0.0.0-does-not-exist\n")
	var fe *rollout.FailedError
	if !errors.As(err, &fe) || fe.Component != "valkey" {
		t.Fatalf("broken chart version: err = %v, want a rollout failure naming valkey", err)
	}
	t.Logf("broken valkey detected in %s: %v", time.Since(start).Round(time.Millisecond), err)
	if !strings.Contains(err.Error(), "0.0.0-does-not-exist") {
		t.Errorf("failure does not show the HelmRelease condition: %v", err)
	}

	// Moving the sync to another path: refused without ForceSyncPath, done with it.
	ks0, _ := h.client.Get(ctx, flux.KustomizationGVK, flux.Namespace, flux.SyncName)
	if _, err := h.bootstrap(ctx, "clusters/moved", "", false, 2*time.Minute); !errors.Is(err, flux.ErrSyncChanged) {
		t.Fatalf("moving the sync without ForceSyncPath: err = %v, want ErrSyncChanged", err)
	}
	ks1, _ := h.client.Get(ctx, flux.KustomizationGVK, flux.Namespace, flux.SyncName)
	if ks0 == nil || ks1 == nil || ks1.GetGeneration() != ks0.GetGeneration() {
		t.Errorf("refused move changed the root Kustomization's spec")
	}
	start = time.Now()
	if _, err := h.bootstrap(ctx, "clusters/moved", "", true, 2*time.Minute); err != nil {
		t.Fatalf("moving the sync with ForceSyncPath: %v", err)
	}
	t.Logf("sync moved to clusters/moved in %s", time.Since(start).Round(time.Millisecond))
	ks2, _ := h.client.Get(ctx, flux.KustomizationGVK, flux.Namespace, flux.SyncName)
	if p, _, _ := unstructured.NestedString(ks2.Object, "spec", "path"); p != "./clusters/moved" || !kube.FluxReady(ks2) {
		t.Errorf("after the forced move: spec.path %q, Ready %v", p, kube.FluxReady(ks2))
	}
}

// helmRelease finds the HelmRelease named name in any namespace.
func (h *harness) helmRelease(ctx context.Context, name string) *unstructured.Unstructured {
	h.t.Helper()
	ri, err := h.client.Resource(rollout.HelmReleaseGVK, "")
	if err != nil {
		h.t.Fatal(err)
	}
	list, err := ri.List(ctx, listAll())
	if err != nil {
		h.t.Fatal(err)
	}
	for i := range list.Items {
		if list.Items[i].GetName() == name {
			return &list.Items[i]
		}
	}
	h.t.Fatalf("no HelmRelease %s", name)
	return nil
}

func checkSecrets(t *testing.T, ctx context.Context, h *harness) {
	t.Helper()
	plan, _, err := manifests.Plan(func(string) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	var values []string
	for _, spec := range manifests.SecretsFor(plan) {
		u, err := h.client.Get(ctx, schema.GroupVersionKind{Version: "v1", Kind: "Secret"}, manifests.SecretsNamespace, spec.Name)
		if err != nil || u == nil {
			t.Errorf("Secret %s/%s not decrypted into the cluster: %v", manifests.SecretsNamespace, spec.Name, err)
			continue
		}
		data, _, _ := unstructured.NestedStringMap(u.Object, "data")
		for _, k := range spec.Keys {
			v, ok := data[k.Name]
			if !ok {
				t.Errorf("Secret %s lacks key %s", spec.Name, k.Name)
				continue
			}
			dec, _ := decode(v)
			if len(dec) >= 8 {
				values = append(values, dec)
			}
		}
	}
	if len(values) == 0 {
		t.Fatal("no secret values to scan for")
	}
	clone := filepath.Join(t.TempDir(), "clone")
	if out, err := exec.Command("git", "clone", "-q", h.srv.AuthURL("ops"), clone).CombinedOutput(); err != nil {
		t.Fatalf("clone: %v: %s", err, out)
	}
	files := 0
	filepath.WalkDir(clone, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			if d != nil && d.Name() == ".git" {
				return filepath.SkipDir
			}
			return err
		}
		data, _ := os.ReadFile(p)
		files++
		for _, v := range values {
			if strings.Contains(string(data), v) {
				t.Errorf("%s holds a plaintext secret value", p)
			}
		}
		if strings.Contains(string(data), h.key.Secret()) {
			t.Errorf("%s holds the age private key", p)
		}
		return nil
	})
	t.Logf("scanned %d committed files for %d secret values", files, len(values))
	sort.Strings(values)
}

func decode(b64 string) (string, error) {
	b, err := base64.StdEncoding.DecodeString(b64)
	return string(b), err
}

func listAll() metav1.ListOptions { return metav1.ListOptions{} }
