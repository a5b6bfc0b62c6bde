package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/opencsp/installer/e2e/fluxstandins"
	"github.com/opencsp/installer/e2e/gitserver"
	"github.com/opencsp/installer/e2e/kubeenv"
	"github.com/opencsp/installer/internal/appliance/payload"
	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/remote"
	"github.com/opencsp/installer/internal/state"
	"github.com/opencsp/installer/internal/testutil"
	"github.com/opencsp/installer/stages"
	"github.com/opencsp/installer/stages/flux"
	"github.com/opencsp/installer/stages/flux/kube"
	"github.com/opencsp/installer/stages/k3s"
)

const nodeTestConfig = `apiVersion: opencsp.io/v1alpha1
kind: InstallConfig
profile: appliance
cluster:
  name: lab
  domain: lab.example.net
infrastructure:
  provider: proxmox
  proxmox:
    endpoint: https://pve1.example.net:8006
    tokenID: opencsp@pve!installer
    tokenSecret: file:./pve-token
    nodes: [pve1]
managementVM:
  name: mgmt
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
  url: OPSURL
  auth:
    token: file:./git-token
`

// The K3s release files node bootstrap expects in DATA/k3s for amd64.
var nodeK3sFiles = []string{"k3s", "k3s-airgap-images-amd64.tar.zst", "sha256sum-amd64.txt", "install.sh"}

// nodeDataDir lays out an appliance data directory. The K3s files are
// placeholders: these tests never install K3s on the host.
func nodeDataDir(t *testing.T, opsURL, gitToken string) string {
	t.Helper()
	dir := t.TempDir()
	testutil.WriteKeyPair(t, filepath.Join(dir, "id_ed25519"), "opencsp-node-test")
	files := map[string]string{
		"opencsp.yaml": strings.Replace(nodeTestConfig, "OPSURL", opsURL, 1),
		"git-token":    gitToken + "\n",
		"pve-token":    "pve-unused\n",
	}
	for _, f := range nodeK3sFiles {
		files[filepath.Join("k3s", f)] = "placeholder, not a K3s release\n"
	}
	listed := map[string]string{}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		listed[payload.Dir+"/"+filepath.ToSlash(name)] = p
	}
	// The appliance writes its payload manifest next to the files.
	m, err := payload.Build(listed)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(m)
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Bad input: exit 2 naming the flag or file and what to do; no state dir.
func TestNodeBootstrapBadInput(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(data string) // breaks the data dir
		args   func(data string) []string
		stderr func(data string) string
	}{
		{"no --data", nil,
			func(string) []string { return nil },
			func(string) string { return "--data: required" }},
		{"missing data dir", nil,
			func(d string) []string { return []string{"--data", d + "/nope"} },
			func(d string) string { return "--data " + d + "/nope: no such directory" }},
		{"data is a file", nil,
			func(d string) []string { return []string{"--data", d + "/git-token"} },
			func(d string) string { return d + "/git-token: not a directory" }},
		{"no config", func(d string) { os.Remove(d + "/manifest.json"); os.Remove(d + "/opencsp.yaml") },
			func(d string) []string { return []string{"--data", d} },
			func(d string) string { return d + "/opencsp.yaml: cannot read config file" }},
		{"no k3s dir", func(d string) { os.Remove(d + "/manifest.json"); os.RemoveAll(d + "/k3s") },
			func(d string) []string { return []string{"--data", d} },
			func(d string) string { return d + "/k3s: no such directory" }},
		{"no airgap images", func(d string) {
			os.Remove(d + "/manifest.json")
			os.Remove(d + "/k3s/k3s-airgap-images-amd64.tar.zst")
		},
			func(d string) []string { return []string{"--data", d} },
			func(d string) string { return d + "/k3s/k3s-airgap-images-amd64.tar.zst: missing" }},
		{"corrupted payload file", func(d string) { os.WriteFile(d+"/k3s/install.sh", []byte("tampered\n"), 0o600) },
			func(d string) []string { return []string{"--data", d} },
			func(d string) string { return d + "/k3s/install.sh: corrupted" }},
		{"payload file gone", func(d string) { os.Remove(d + "/k3s/k3s") },
			func(d string) []string { return []string{"--data", d} },
			func(d string) string { return d + "/k3s/k3s: listed in " + d + "/manifest.json but unreadable" }},
		{"unknown stage", nil,
			func(d string) []string { return []string{"--data", d, "--only", "rollout"} },
			func(string) string { return `--only: unknown stage "rollout"` }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := nodeDataDir(t, "https://git.example.invalid/ops.git", "tok")
			if tc.setup != nil {
				tc.setup(data)
			}
			stateDir := filepath.Join(t.TempDir(), "state")
			r := opencsp(t, t.TempDir(), append([]string{"node", "bootstrap", "--state-dir", stateDir}, tc.args(data)...)...)
			if r.code != 2 || !strings.Contains(r.stderr, tc.stderr(data)) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", r.code, r.stderr, tc.stderr(data))
			}
			if exists(stateDir) {
				t.Errorf("state dir created for bad input")
			}
		})
	}
}

// TestNodeBootstrapFlux runs the Flux half of `opencsp node bootstrap` (the
// flux stage, as the node command composes it) against a real kube-apiserver
// with Flux's source- and kustomize-controller and a real git server. The K3s
// half is recorded as done with the apiserver's kubeconfig (it is tested in a
// VM stand-in by stages/k3s TestNodeBootstrapOnStandin).
func TestNodeBootstrapFlux(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: real kube-apiserver + Flux e2e")
	}
	const token = "node-git-token-4f2a91"
	env := kubeenv.StartForTest(t, kubeenv.Options{Flux: true})
	client, err := kube.NewFromKubeconfig(env.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := fluxstandins.InstallCRDs(ctx, client, fluxstandins.K3sCRDs); err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	go (&fluxstandins.WorkloadStatus{Client: client, Log: quiet}).Run(ctx)
	go (&fluxstandins.HelmController{Client: client, Log: quiet}).Run(ctx)
	srv, err := gitserver.Start(gitserver.Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	repoDir, err := srv.NewRepo("ops", "main")
	if err != nil {
		t.Fatal(err)
	}
	data := nodeDataDir(t, srv.URL("ops"), token)
	stateDir := filepath.Join(t.TempDir(), "state")
	recordK3sDone(t, ctx, data, stateDir, env)

	bootstrap := func(args ...string) result {
		t.Helper()
		start := time.Now()
		r := opencsp(t, t.TempDir(), append([]string{"node", "bootstrap", "--data", data, "--state-dir", stateDir}, args...)...)
		t.Logf("node bootstrap %v: exit %d in %s\nstdout:\n%s", args, r.code, time.Since(start).Round(10*time.Millisecond), r.stdout)
		if r.code != 0 {
			t.Fatalf("stderr:\n%s", r.stderr)
		}
		return r
	}
	noSecret := func(r result) {
		t.Helper()
		logFile, _ := os.ReadFile(filepath.Join(stateDir, "node.log"))
		for name, text := range map[string]string{"stdout": r.stdout, "stderr": r.stderr, "node.log": string(logFile)} {
			if strings.Contains(text, token) {
				t.Errorf("%s holds the git token", name)
			}
		}
	}

	r := bootstrap("--only", flux.Name)
	noSecret(r)
	commit := gitRef(t, repoDir)
	if commit == "" {
		t.Fatal("nothing pushed to the ops repo")
	}
	ks, err := client.Get(ctx, flux.KustomizationGVK, flux.Namespace, flux.SyncName)
	if err != nil || ks == nil || !kube.FluxReady(ks) {
		t.Fatalf("Kustomization %s not Ready after bootstrap: %v", flux.SyncName, err)
	}
	if rev, _, _ := unstructured.NestedString(ks.Object, "status", "lastAppliedRevision"); !strings.HasSuffix(rev, commit) {
		t.Errorf("Kustomization at %q, want the pushed commit %s", rev, commit)
	}
	gens := generations(t, ctx, client)

	// The appliance's rerun (no --only): both stages verified and skipped,
	// nothing pushed, no Flux object changed.
	r = bootstrap()
	noSecret(r)
	if !strings.Contains(r.stdout, "nothing to change") {
		t.Errorf("rerun does not say it changed nothing")
	}
	if c := gitRef(t, repoDir); c != commit {
		t.Errorf("rerun pushed %s (was %s)", c, commit)
	}
	if g := generations(t, ctx, client); g != gens {
		t.Errorf("rerun changed Flux objects: %s -> %s", gens, g)
	}
	// Forced through --only, the flux stage converges again without changes.
	bootstrap("--only", flux.Name)
	if c := gitRef(t, repoDir); c != commit {
		t.Errorf("forced rerun pushed %s (was %s)", c, commit)
	}
	if g := generations(t, ctx, client); g != gens {
		t.Errorf("forced rerun changed Flux objects: %s -> %s", gens, g)
	}
}

// recordK3sDone writes the state a finished k3s half leaves: stage k3s done
// with its outputs (the kubeconfig) and the fingerprint node bootstrap
// computes for it, so a plain rerun skips it after its Verify (/readyz).
func recordK3sDone(t *testing.T, ctx context.Context, data, stateDir string, env *kubeenv.Env) {
	t.Helper()
	cfg, err := config.Load(filepath.Join(data, nodeConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	cfg.K3s.Artifacts = config.K3sArtifacts{AirgapDir: filepath.Join(data, nodeK3sDir)}
	stage := nodeStages(remote.NewLocal(nil, nil), flux.Options{})[0]
	fp, err := stages.Fingerprint(stage.Inputs(cfg))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	kc := filepath.Join(stateDir, k3s.KubeconfigFile)
	if err := env.WriteKubeconfig(kc, env.Server); err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(k3s.Outputs{Version: cfg.K3s.Version, NodeName: "mgmt", Kubeconfig: kc, Server: env.Server})
	store, err := state.Open(ctx, stateDir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	f, err := store.Load()
	if err != nil {
		t.Fatal(err)
	}
	f.Cluster = cfg.Cluster.Name
	f.Stages[k3s.Name] = &state.Stage{Status: state.Done, Fingerprint: fp, Outputs: out}
	if err := store.Save(f); err != nil {
		t.Fatal(err)
	}
}

func gitRef(t *testing.T, repoDir string) string {
	t.Helper()
	out, err := exec.Command("git", "--git-dir", repoDir, "rev-parse", "--verify", "-q", "refs/heads/main").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// generations identifies the spec of the sync objects (generation) and the
// source Secret (resourceVersion: Secrets have no generation).
func generations(t *testing.T, ctx context.Context, c *kube.Client) string {
	t.Helper()
	var b strings.Builder
	for _, gvk := range []schema.GroupVersionKind{flux.GitRepositoryGVK, flux.KustomizationGVK, {Version: "v1", Kind: "Secret"}} {
		u, err := c.Get(ctx, gvk, flux.Namespace, flux.SyncName)
		if err != nil || u == nil {
			t.Fatalf("%s %s: %v", gvk.Kind, flux.SyncName, err)
		}
		v := strconv.FormatInt(u.GetGeneration(), 10)
		if gvk.Kind == "Secret" {
			v = u.GetResourceVersion()
		}
		b.WriteString(gvk.Kind + "=" + v + " ")
	}
	return b.String()
}
