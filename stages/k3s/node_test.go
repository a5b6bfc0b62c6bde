package k3s_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/opencsp/installer/e2e/gitserver"
	"github.com/opencsp/installer/e2e/k3sstandin"
	"github.com/opencsp/installer/e2e/standin"
	"github.com/opencsp/installer/e2e/standin/seed"
	"github.com/opencsp/installer/internal/appliance"
	"github.com/opencsp/installer/internal/appliance/payload"
	applianceseed "github.com/opencsp/installer/internal/appliance/seed"
	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/stages/flux"
	"github.com/opencsp/installer/stages/flux/kube"
)

// Where the appliance puts things on the installed system: the data
// partition mounted at applianceseed.DataMount with the opencsp binary at
// payload.BinaryPath inside it; state on the node's own disk.
const (
	nodeData     = applianceseed.DataMount
	nodeState    = "/var/lib/opencsp/state"
	nodeLog      = "/var/log/opencsp-node.log"
	nodeReady    = nodeData + "/.ready"
	nodeGitToken = "git-token-never-logged-5d1c"
	nodePVEEnv   = "OPENCSP_NODE_TEST_PVE_TOKEN"
	nodePVEToken = "pve-token-never-on-the-node-81e2"
)

const nodeConfig = `apiVersion: opencsp.io/v1alpha1
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
    tokenSecret: env:OPENCSP_NODE_TEST_PVE_TOKEN
    nodes: [pve1]
managementVM:
  name: mgmt
  network:
    dhcp: false
    address: ADDRESS
    gateway: GATEWAY
  ssh:
    user: opencsp
    privateKeyFile: id_ed25519
k3s:
  version: ` + k3sVersion + `
  tlsSANs: [k3s.lab.example.net]
opsRepo:
  url: OPSURL
  auth:
    token: file:./git-token
`

// TestNodeBootstrapOnStandin runs `opencsp node bootstrap` the way the
// appliance's first boot does: from cloud-init's runcmd inside a VM stand-in,
// as root, with the data directory the ISO build stages from an operator's
// config (appliance.StageNodeData: binary, node config, ops-repo token under
// secrets/, K3s stand-in release) plus the payload manifest. The operator's
// PVE token (env:) and login key exist only on the test host. The ops repo is on the
// e2e git server (on the bridge, which the VM reaches); Flux's real source-
// and kustomize-controller run on the host against the node's API, as in
// e2e/sandbox.
func TestNodeBootstrapOnStandin(t *testing.T) {
	requireStandin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	begin := time.Now()

	rel, err := k3sstandin.Build(ctx, k3sstandin.BuildOptions{Version: k3sVersion})
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	bin := filepath.Join(work, "opencsp")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/installer")
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build opencsp: %v\n%s", err, out)
	}
	t.Logf("stand-in release and opencsp built in %s", time.Since(begin).Round(100*time.Millisecond))

	host, err := standin.NewHost(ctx, standin.HostConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close(context.Background())
	n := host.Network()
	addr := n.Address(30)
	git, err := gitserver.Start(gitserver.Options{Token: nodeGitToken, Addr: net.JoinHostPort(n.Gateway().String(), "0")})
	if err != nil {
		t.Fatal(err)
	}
	defer git.Close()
	repo, err := git.NewRepo("ops", "main")
	if err != nil {
		t.Fatal(err)
	}
	mac := net.HardwareAddr{0xbc, 0x24, 0x11, 0x6b, 0x33, 0x02}

	// The operator's side: the install config with the PVE token from the
	// environment and the git token and login key from files of this host.
	key := newLoginKey(t, work, "id_ed25519")
	cfgText := strings.NewReplacer("ADDRESS", addr.String(), "GATEWAY", n.Gateway().String(), "OPSURL", git.URL("ops")).Replace(nodeConfig)
	for name, content := range map[string]string{"opencsp.yaml": cfgText, "git-token": nodeGitToken + "\n"} {
		if err := os.WriteFile(filepath.Join(work, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv(nodePVEEnv, nodePVEToken)
	cfg, err := config.Load(filepath.Join(work, "opencsp.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	os.Unsetenv(nodePVEEnv) // the build does not need it; nothing may carry it
	// The data directory, staged as the ISO build does, by ISO path
	// (payload/<x>), with the payload manifest node bootstrap checks.
	staged, err := appliance.StageNodeData(filepath.Join(work, "stage"), appliance.NodeData{Binary: bin, Config: cfg, K3sDir: rel.Dir})
	if err != nil {
		t.Fatal(err)
	}
	m, err := payload.Build(staged)
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := json.Marshal(m)
	files := map[string]string{payload.ManifestFile: filepath.Join(work, payload.ManifestFile)}
	if err := os.WriteFile(files[payload.ManifestFile], mb, 0o600); err != nil {
		t.Fatal(err)
	}
	for iso, src := range staged {
		name, ok := payload.DataPath(iso)
		if !ok {
			t.Fatalf("staged %s is not on the data partition", iso)
		}
		files[name] = src
	}
	for name, src := range files {
		if b, _ := os.ReadFile(src); strings.Contains(string(b), nodePVEToken) || strings.Contains(string(b), nodePVEEnv) {
			t.Fatalf("data file %s holds the PVE token or its reference", name)
		}
	}

	// cloud-init's runcmd waits for the data (copied in once the container
	// exists), then runs the appliance seed's first-boot command.
	script := fmt.Sprintf("i=0; while [ ! -e %s ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i+1)); done; %s >%s 2>&1",
		nodeReady, strings.Join(applianceseed.Command(), " "), nodeLog)
	no := false
	sf, err := seed.Render(seed.VMConfig{
		VMID: 130, Name: "mgmt", CIUser: "opencsp", SSHKeys: seed.EncodeSSHKeys(key.authz), CIUpgrade: &no,
		Nets:       map[int]string{0: "virtio=" + strings.ToUpper(mac.String()) + ",bridge=vmbr0"},
		IPConfigs:  map[int]string{0: fmt.Sprintf("ip=%s,gw=%s", addr, n.Gateway())},
		Nameserver: n.Gateway().String(), Searchdomain: "standin.test",
	})
	if err != nil {
		t.Fatal(err)
	}
	// The seed's user with the login key stays, as in the appliance seed:
	// the installer host logs in as it to adopt the node (adoptOnStandin).
	sf.UserData = append(sf.UserData, "runcmd:\n  - [sh, -c, "+strconvQuote(script)+"]\n"...)
	inst, err := host.Start(ctx, standin.InstanceSpec{Name: "mgmt", Address: addr, Gateway: n.Gateway(), MAC: mac, Seed: sf})
	if err != nil {
		t.Fatal(err)
	}
	fluxSide := serveFlux(t, ctx, inst)
	defer fluxSide.stop()
	root := inst.RootDir()
	for name, src := range files {
		// FAT has no modes: the data partition shows every file readable.
		mode := os.FileMode(0o644)
		if name == binInData {
			mode = 0o755
		}
		copyFile(t, src, filepath.Join(root, nodeData, name), mode)
	}
	if err := os.WriteFile(filepath.Join(root, nodeReady), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	bootStart := time.Now()
	ready := make(chan error, 1)
	go func() { ready <- inst.WaitReady(ctx) }()
	select {
	case err = <-ready:
	case <-fluxSide.done:
		err = fmt.Errorf("the Flux side stopped before the bootstrap finished")
	}
	logText, _ := os.ReadFile(filepath.Join(root, nodeLog))
	if err != nil {
		t.Fatalf("first boot: %v\n%s:\n%s\n%s", err, nodeLog, logText, fluxSide.report())
	}
	t.Logf("first boot with node bootstrap done in %s; %s:\n%s", time.Since(bootStart).Round(100*time.Millisecond), nodeLog, logText)
	if !strings.Contains(string(logText), "Node bootstrap complete") {
		t.Errorf("%s does not report completion", nodeLog)
	}

	// K3s runs from the data directory's release, the kubeconfig is 0600.
	if v := exec1(t, ctx, inst, "/usr/local/bin/k3s", "--version"); !strings.Contains(v, k3sVersion) || !strings.Contains(v, k3sstandin.Marker) {
		t.Errorf("k3s --version = %q", v)
	}
	if s := exec1(t, ctx, inst, "systemctl", "is-active", "k3s"); s != "active" {
		t.Errorf("k3s is %s", s)
	}
	kubeconfig := nodeState + "/kubeconfig"
	if mode := exec1(t, ctx, inst, "stat", "-c", "%a %U", kubeconfig); mode != "600 root" {
		t.Errorf("%s: mode and owner %q, want 600 root", kubeconfig, mode)
	}
	cfgYAML := exec1(t, ctx, inst, "cat", "/etc/rancher/k3s/config.yaml")
	for _, want := range []string{"node-name: mgmt", "- " + addr.Addr().String(), "- k3s.lab.example.net"} {
		if !strings.Contains(cfgYAML, want) {
			t.Errorf("config.yaml lacks %q:\n%s", want, cfgYAML)
		}
	}
	// The API answers through the written kubeconfig (its server is the
	// node's 127.0.0.1; from here the same API is at the VM's address, which
	// the serving certificate covers as the configured static address).
	client, server := kubeClient(t, filepath.Join(root, kubeconfig))
	if server != "https://127.0.0.1:6443" {
		t.Errorf("kubeconfig server %s, want https://127.0.0.1:6443", server)
	}
	api := "https://" + net.JoinHostPort(addr.Addr().String(), "6443")
	if nodes := listNames(t, ctx, client, api+"/api/v1/nodes"); !slices.Equal(nodes, []string{"mgmt"}) {
		t.Errorf("nodes %v, want [mgmt]", nodes)
	}
	// Flux: the ops repo was pushed and the cluster syncs it.
	// (Waited for: the controller may be in a reconcile right now, which
	// makes Ready Unknown for a moment.)
	commit := gitHead(t, repo)
	var rev string
	err = fluxSide.Client().WaitFor(ctx, flux.KustomizationGVK, flux.Namespace, flux.SyncName, 30*time.Second,
		func(u *unstructured.Unstructured) (bool, error) {
			rev, _, _ = unstructured.NestedString(u.Object, "status", "lastAppliedRevision")
			return kube.FluxReady(u) && commit != "" && strings.HasSuffix(rev, commit), nil
		})
	if err != nil {
		t.Fatalf("Kustomization %s/%s not Ready at the pushed commit %q (at %q): %v", flux.Namespace, flux.SyncName, commit, rev, err)
	}
	for _, p := range []string{nodeLog, nodeState + "/node.log"} {
		if b, err := os.ReadFile(filepath.Join(root, p)); err != nil || strings.Contains(string(b), nodeGitToken) {
			t.Errorf("%s: %v, or it holds the git token", p, err)
		}
	}
	// The token from the data partition was used from a 0600 copy in the
	// state dir.
	tokenCopy := nodeState + "/" + payload.OpsRepoTokenFile
	if mode := exec1(t, ctx, inst, "stat", "-c", "%a %U", tokenCopy, filepath.Dir(tokenCopy)); mode != "600 root\n700 root" {
		t.Errorf("%s and its dir: mode and owner %q, want 600 root and 700 root", tokenCopy, mode)
	}

	// A second run changes nothing and says so: same k3s process, files
	// untouched, nothing pushed.
	before := serviceState(t, ctx, inst)
	fluxBefore := fluxObjects(t, ctx, fluxSide.Client())
	start := time.Now()
	out, err := inst.Exec(ctx, nodeBinary(), "node", "bootstrap", "--data", nodeData)
	if err != nil {
		t.Fatalf("second run: %v\n%s", err, out)
	}
	t.Logf("second run in %s:\n%s", time.Since(start).Round(10*time.Millisecond), out)
	if !strings.Contains(string(out), "nothing to change") {
		t.Errorf("second run does not say it changed nothing")
	}
	if after := serviceState(t, ctx, inst); after != before {
		t.Errorf("second run touched the node:\nbefore %s\nafter  %s", before, after)
	}
	if c := gitHead(t, repo); c != commit {
		t.Errorf("second run pushed %s (was %s)", c, commit)
	}
	// Forced past the runner's skip, the k3s stage itself finds nothing to do.
	out, err = inst.Exec(ctx, nodeBinary(), "node", "bootstrap", "--data", nodeData, "--only", "k3s")
	if err != nil || !strings.Contains(string(out), "nothing to change") {
		t.Errorf("forced k3s rerun: %v, output:\n%s", err, out)
	}
	if after := serviceState(t, ctx, inst); after != before {
		t.Errorf("forced k3s rerun touched the node:\nbefore %s\nafter  %s", before, after)
	}
	// Likewise the flux stage: no push, no Flux object changed.
	out, err = inst.Exec(ctx, nodeBinary(), "node", "bootstrap", "--data", nodeData, "--only", "flux")
	if err != nil {
		t.Errorf("forced flux rerun: %v, output:\n%s", err, out)
	}
	if c := gitHead(t, repo); c != commit {
		t.Errorf("forced flux rerun pushed %s (was %s)", c, commit)
	}
	if after := fluxObjects(t, ctx, fluxSide.Client()); after != fluxBefore {
		t.Errorf("forced flux rerun changed Flux objects: %s -> %s", fluxBefore, after)
	}

	// The installer host adopts what the node did (provision method appliance).
	adoptOnStandin(t, ctx, inst, cfg, fluxSide, repo, addr.Addr().String(), commit)

	// A data directory whose K3s images went missing: exit 2 naming the
	// file, nothing touched.
	if _, err := inst.Exec(ctx, "mv", nodeData+"/k3s/"+k3sstandin.ImagesName, "/root/"); err != nil {
		t.Fatal(err)
	}
	out, err = inst.Exec(ctx, nodeBinary(), "node", "bootstrap", "--data", nodeData)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), nodeData+"/k3s/"+k3sstandin.ImagesName+": listed in") {
		t.Errorf("missing images: err %v, output %s; want exit 2 naming the file", err, out)
	}
	if after := serviceState(t, ctx, inst); after != before {
		t.Errorf("refused run touched the node")
	}
	t.Logf("total %s", time.Since(begin).Round(100*time.Millisecond))
}

// fluxObjects identifies the spec of the sync objects (generation) and the
// source Secret (resourceVersion: Secrets have no generation).
func fluxObjects(t *testing.T, ctx context.Context, c *kube.Client) string {
	t.Helper()
	var b strings.Builder
	for _, gvk := range []schema.GroupVersionKind{flux.GitRepositoryGVK, flux.KustomizationGVK, {Version: "v1", Kind: "Secret"}} {
		u, err := c.Get(ctx, gvk, flux.Namespace, flux.SyncName)
		if err != nil || u == nil {
			t.Fatalf("%s %s/%s: %v", gvk.Kind, flux.Namespace, flux.SyncName, err)
		}
		v := strconv.FormatInt(u.GetGeneration(), 10)
		if gvk.Kind == "Secret" {
			v = u.GetResourceVersion()
		}
		b.WriteString(gvk.Kind + "=" + v + " ")
	}
	return b.String()
}

// nodeBinary is the opencsp binary the appliance seed runs.
func nodeBinary() string { return applianceseed.Command()[0] }

// binInData is the binary's path inside the data directory.
var binInData, _ = payload.DataPath(payload.BinaryPath)

func gitHead(t *testing.T, repo string) string {
	t.Helper()
	out, err := exec.Command("git", "--git-dir", repo, "rev-parse", "--verify", "-q", "refs/heads/main").Output()
	if err != nil {
		t.Errorf("ops repo has no main branch: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// strconvQuote quotes s as a YAML double-quoted scalar.
func strconvQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
