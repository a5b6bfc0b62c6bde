package k3s_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/ssh"

	"github.com/opencsp/installer/e2e/k3sstandin"
	"github.com/opencsp/installer/e2e/kubeenv"
	"github.com/opencsp/installer/e2e/standin"
	"github.com/opencsp/installer/e2e/standin/seed"
	"github.com/opencsp/installer/internal/artifacts"
	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/events"
	"github.com/opencsp/installer/internal/remote"
	"github.com/opencsp/installer/internal/state"
	"github.com/opencsp/installer/stages"
	"github.com/opencsp/installer/stages/k3s"
	"github.com/opencsp/installer/stages/provision"
)

const k3sVersion = "v1.33.5+k3s1"

func TestMain(m *testing.M) { standin.RunTests(m) }

// requireStandin skips LOUDLY when the VM stand-in or the tools cannot run here.
func requireStandin(t *testing.T) {
	t.Helper()
	const suite = "K3S STAND-IN TESTS"
	standin.RequireHost(t, suite)
	if _, err := kubeenv.FindTools(""); err != nil {
		t.Skip(suite + " SKIPPED: " + err.Error())
	}
}

// fakeProvision records the stand-in VM as provision's outputs.
type fakeProvision struct{ out provision.Outputs }

func (f *fakeProvision) Name() string                              { return provision.Name }
func (f *fakeProvision) Inputs(*config.Config) any                 { return f.out }
func (f *fakeProvision) Verify(context.Context, *stages.Env) error { return nil }
func (f *fakeProvision) Plan(context.Context, *stages.Env) ([]stages.Change, error) {
	return nil, nil
}
func (f *fakeProvision) Run(_ context.Context, env *stages.Env) error { return env.SetOutputs(f.out) }

type loginKey struct {
	file  string
	authz string
}

func newLoginKey(t *testing.T, dir, name string) loginKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, name)
	if err := os.WriteFile(file, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, _ := ssh.NewSignerFromKey(priv)
	return loginKey{file: file, authz: remote.AuthorizedKey(signer.PublicKey())}
}

func startVM(t *testing.T, ctx context.Context, h *standin.Host, name string, addr string, mac net.HardwareAddr, key loginKey) *standin.Instance {
	t.Helper()
	no := false
	n := h.Network()
	files, err := seed.Render(seed.VMConfig{
		VMID: 120, Name: name, CIUser: "opencsp", SSHKeys: seed.EncodeSSHKeys(key.authz), CIUpgrade: &no,
		Nets:       map[int]string{0: "virtio=" + strings.ToUpper(mac.String()) + ",bridge=vmbr0"},
		IPConfigs:  map[int]string{0: fmt.Sprintf("ip=%s/%d,gw=%s", addr, n.Subnet().Bits(), n.Gateway())},
		Nameserver: n.Gateway().String(), Searchdomain: "standin.test",
	})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	inst, err := h.Start(ctx, standin.InstanceSpec{Name: name, Address: n.Address(20), Gateway: n.Gateway(), MAC: mac, Seed: files})
	if err != nil {
		t.Fatal(err)
	}
	if err := inst.WaitReady(ctx); err != nil {
		t.Fatalf("stand-in VM: %v (console %s)", err, inst.Console())
	}
	t.Logf("stand-in VM %s ready at %s in %s", name, addr, time.Since(start).Round(100*time.Millisecond))
	return inst
}

type harness struct {
	t      *testing.T
	cfg    *config.Config
	store  *state.Store
	rec    *events.Recorder
	prov   *fakeProvision
	stage  *k3s.Stage
	dir    string
	server *k3sstandin.Server
}

func (h *harness) run(ctx context.Context, opts stages.Options) error {
	h.rec.Reset()
	r := &stages.Runner{Stages: []stages.Stage{h.prov, h.stage}, Store: h.store, Config: h.cfg, Events: h.rec}
	start := time.Now()
	err := r.Run(ctx, opts)
	h.t.Logf("run %+v: %s, err=%v", opts, time.Since(start).Round(10*time.Millisecond), err)
	return err
}

// steps are the k3s stage's started steps of the last run.
func (h *harness) steps() []string {
	var out []string
	for _, e := range h.rec.Events() {
		if e.Stage == k3s.Name && e.Status == events.Started && e.Step != "" {
			out = append(out, e.Step)
		}
	}
	return out
}

func (h *harness) outputs() k3s.Outputs {
	h.t.Helper()
	f, err := h.store.Load()
	if err != nil {
		h.t.Fatal(err)
	}
	var out k3s.Outputs
	if rec := f.Stages[k3s.Name]; rec != nil && len(rec.Outputs) > 0 {
		if err := json.Unmarshal(rec.Outputs, &out); err != nil {
			h.t.Fatal(err)
		}
	}
	return out
}

func exec1(t *testing.T, ctx context.Context, inst *standin.Instance, args ...string) string {
	t.Helper()
	out, err := inst.Exec(ctx, args...)
	if err != nil {
		t.Fatalf("%v in VM: %v: %s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestK3sStageOnStandin drives the k3s stage through stages.Runner against a
// VM stand-in, with the K3s stand-in release served on loopback.
func TestK3sStageOnStandin(t *testing.T) {
	requireStandin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()

	begin := time.Now()
	rel, err := k3sstandin.Build(ctx, k3sstandin.BuildOptions{Version: k3sVersion})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stand-in release built in %s", time.Since(begin).Round(10*time.Millisecond))
	srv := k3sstandin.Serve(rel)
	defer srv.Close()

	host, err := standin.NewHost(ctx, standin.HostConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close(context.Background())
	dir := t.TempDir()
	key := newLoginKey(t, dir, "id_ed25519")
	mac := net.HardwareAddr{0xbc, 0x24, 0x11, 0x6b, 0x33, 0x01}
	addr := host.Network().Address(20).Addr().String()
	inst := startVM(t, ctx, host, "mgmt", addr, mac, key)

	store, err := state.Open(ctx, filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	cfg := &config.Config{
		Cluster:      config.Cluster{Name: "lab", Domain: "lab.test"},
		ManagementVM: config.ManagementVM{Name: "mgmt", SSH: config.SSH{User: "opencsp", PrivateKeyFile: key.file}},
		K3s: config.K3s{Version: k3sVersion, TLSSANs: []string{"k3s.lab.test"}, Disable: []string{"traefik"},
			Artifacts: config.K3sArtifacts{Mirror: srv.Mirror()}},
	}
	h := &harness{t: t, cfg: cfg, store: store, rec: &events.Recorder{}, dir: dir, server: srv,
		prov:  &fakeProvision{out: provision.Outputs{VMID: 120, Node: "pve1", Name: "mgmt", Address: addr, AddressConfirmed: true}},
		stage: k3s.New(k3s.Options{ConnectTimeout: time.Minute, ReadyTimeout: 3 * time.Minute})}

	// 1. A corrupted download is refused before anything is uploaded, and
	//    not kept in the cache.
	srv.Corrupt(k3sstandin.ImagesName, true)
	err = h.run(ctx, stages.Options{})
	var sumErr *artifacts.ChecksumError
	if !errors.As(err, &sumErr) {
		t.Fatalf("corrupt artifact: err = %v, want a ChecksumError", err)
	}
	t.Logf("corrupt artifact refused: %v", err)
	if slices.Contains(h.steps(), "upload") {
		t.Errorf("uploaded despite the checksum mismatch: steps %v", h.steps())
	}
	if out, err := inst.Exec(ctx, "test", "-e", "/usr/local/bin/k3s"); err == nil {
		t.Errorf("/usr/local/bin/k3s exists after a refused download: %s", out)
	}
	imagesSum, _ := srv.SHA256(k3sstandin.ImagesName)
	cacheDir := filepath.Join(store.Dir(), "cache")
	leftovers, _ := filepath.Glob(filepath.Join(cacheDir, "partial", "*"))
	if _, err := os.Stat(filepath.Join(cacheDir, "sha256", imagesSum)); err == nil || len(leftovers) > 0 {
		t.Errorf("corrupt download kept in the cache (partial: %v)", leftovers)
	}
	// The host key was pinned and recorded on first contact already.
	first := h.outputs()
	if first.HostKeyFingerprint == "" || first.Address != addr {
		t.Fatalf("host key not recorded on first contact: %+v", first)
	}

	// 2. Converge.
	srv.Corrupt(k3sstandin.ImagesName, false)
	if err := h.run(ctx, stages.Options{}); err != nil {
		t.Fatalf("install: %v", err)
	}
	out := h.outputs()
	t.Logf("outputs: %+v", out)
	if out.Version != k3sVersion || out.NodeName != "mgmt" || out.HostKeyFingerprint != first.HostKeyFingerprint ||
		out.Server != "https://"+addr+":6443" || !strings.HasPrefix(out.ConfigDigest, "sha256:") {
		t.Errorf("outputs = %+v", out)
	}
	if fi, err := os.Stat(out.Kubeconfig); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("kubeconfig %s: %v (mode %v), want 0600", out.Kubeconfig, err, fi.Mode())
	}
	client, server := kubeClient(t, out.Kubeconfig)
	if server != "https://"+addr+":6443" {
		t.Errorf("kubeconfig server = %s", server)
	}
	ns := listNames(t, ctx, client, server+"/api/v1/namespaces")
	for _, want := range []string{"default", "kube-system"} {
		if !slices.Contains(ns, want) {
			t.Errorf("namespaces through the kubeconfig = %v, missing %s", ns, want)
		}
	}
	cfgYAML := exec1(t, ctx, inst, "cat", "/etc/rancher/k3s/config.yaml")
	for _, want := range []string{"node-name: mgmt", `write-kubeconfig-mode: "0600"`, "- " + addr, "- k3s.lab.test", "- traefik"} {
		if !strings.Contains(cfgYAML, want) {
			t.Errorf("config.yaml lacks %q:\n%s", want, cfgYAML)
		}
	}
	if mode := exec1(t, ctx, inst, "stat", "-c", "%a", "/etc/rancher/k3s/k3s.yaml"); mode != "600" {
		t.Errorf("k3s.yaml mode %s, want 600", mode)
	}
	if v := exec1(t, ctx, inst, "/usr/local/bin/k3s", "--version"); !strings.Contains(v, k3sVersion) || !strings.Contains(v, k3sstandin.Marker) {
		t.Errorf("k3s --version = %q", v)
	}

	// 3. A rerun on the installed node changes nothing: no download, no
	//    upload, no restart.
	before := serviceState(t, ctx, inst)
	requests := srv.Requests(k3sstandin.BinaryName) + srv.Requests(k3sstandin.ImagesName)
	if err := h.run(ctx, stages.Options{Only: k3s.Name}); err != nil {
		t.Fatalf("rerun: %v", err)
	}
	for _, step := range h.steps() {
		if step != "connect" && step != "ready" {
			t.Errorf("rerun did %q (steps %v), want nothing but connect and ready", step, h.steps())
		}
	}
	if after := serviceState(t, ctx, inst); after != before {
		t.Errorf("rerun touched the node:\nbefore %s\nafter  %s", before, after)
	}
	if n := srv.Requests(k3sstandin.BinaryName) + srv.Requests(k3sstandin.ImagesName); n != requests {
		t.Errorf("rerun downloaded again (%d -> %d requests)", requests, n)
	}
	// Unchanged inputs: the runner skips the stage after its Verify (the
	// kubeconfig answers /readyz).
	if err := h.run(ctx, stages.Options{}); err != nil || len(h.steps()) != 0 {
		t.Errorf("resume with nothing changed: err %v, steps %v", err, h.steps())
	}

	// 4. A new tls-san is applied: config rewritten, k3s restarted, the
	//    served certificate carries the name. Nothing is uploaded.
	cfg.K3s.TLSSANs = append(cfg.K3s.TLSSANs, "api.lab.test")
	if err := h.run(ctx, stages.Options{}); err != nil {
		t.Fatalf("tls-san change: %v", err)
	}
	if s := h.steps(); !slices.Contains(s, "config") || !slices.Contains(s, "restart") || slices.Contains(s, "upload") {
		t.Errorf("tls-san change: steps %v, want config + restart without upload", s)
	}
	if after := serviceState(t, ctx, inst); after == before {
		t.Errorf("k3s was not restarted for the new tls-san")
	}
	if sans := servedDNSNames(t, out.Kubeconfig, addr, "api.lab.test"); !slices.Contains(sans, "api.lab.test") {
		t.Errorf("served certificate DNS names %v lack api.lab.test", sans)
	}
	if d := h.outputs().ConfigDigest; d == out.ConfigDigest {
		t.Errorf("config digest unchanged after the tls-san change")
	}

	// 5. A key the VM does not accept: an auth error naming user and key.
	other := newLoginKey(t, dir, "id_other")
	good := cfg.ManagementVM.SSH.PrivateKeyFile
	cfg.ManagementVM.SSH.PrivateKeyFile = other.file
	h.stage = k3s.New(k3s.Options{ConnectTimeout: 30 * time.Second, AuthRetryWindow: -1})
	err = h.run(ctx, stages.Options{Only: k3s.Name})
	var authErr *remote.AuthError
	if !errors.As(err, &authErr) || !strings.Contains(err.Error(), `"opencsp"`) || !strings.Contains(err.Error(), other.file) {
		t.Errorf("wrong key: err = %v, want an AuthError naming user opencsp and %s", err, other.file)
	}
	cfg.ManagementVM.SSH.PrivateKeyFile = good

	// 6. The VM re-created at the same address has a new host key: refused.
	if err := inst.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := inst.Destroy(); err != nil {
		t.Fatal(err)
	}
	inst = startVM(t, ctx, host, "mgmt", addr, mac, key)
	newKey := exec1(t, ctx, inst, "ssh-keygen", "-lf", "/etc/ssh/ssh_host_ed25519_key.pub")
	err = h.run(ctx, stages.Options{Only: k3s.Name})
	var mismatch *remote.HostKeyMismatchError
	if !errors.As(err, &mismatch) {
		t.Fatalf("re-created VM: err = %v, want a HostKeyMismatchError", err)
	}
	newFP := strings.Fields(newKey)[1]
	for _, want := range []string{"SECURITY", addr, out.HostKeyFingerprint, newFP} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("mismatch error lacks %q: %v", want, err)
		}
	}
	t.Logf("re-created VM refused: %v", err)
	t.Logf("total %s", time.Since(begin).Round(100*time.Millisecond))
}

// TestUnreachableVM: nothing listens at the VM's SSH port; the stage gives up
// at its deadline with the connect diagnosis. Needs no root.
func TestUnreachableVM(t *testing.T) {
	ctx := context.Background()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close() // a closed port: connection refused, as while a VM boots
	dir := t.TempDir()
	key := newLoginKey(t, dir, "id")
	store, err := state.Open(ctx, filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	cfg := &config.Config{Cluster: config.Cluster{Name: "lab"},
		ManagementVM: config.ManagementVM{SSH: config.SSH{User: "opencsp", PrivateKeyFile: key.file, Port: port}},
		K3s:          config.K3s{Version: k3sVersion}}
	h := &harness{t: t, cfg: cfg, store: store, rec: &events.Recorder{},
		prov:  &fakeProvision{out: provision.Outputs{Name: "mgmt", Address: "127.0.0.1"}},
		stage: k3s.New(k3s.Options{ConnectTimeout: 2 * time.Second})}
	start := time.Now()
	err = h.run(ctx, stages.Options{})
	var ce *remote.ConnectError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "127.0.0.1") || !strings.Contains(err.Error(), "cloud-init") {
		t.Fatalf("err = %v, want a ConnectError with the diagnosis", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("gave up after %s, want about the 2s deadline", d)
	}
}

// serviceState identifies the running k3s: when it became active, its PID,
// and the binary's and images' mtimes.
func serviceState(t *testing.T, ctx context.Context, inst *standin.Instance) string {
	t.Helper()
	show := exec1(t, ctx, inst, "systemctl", "show", "-p", "ActiveEnterTimestampMonotonic", "-p", "MainPID", "k3s")
	mtimes := exec1(t, ctx, inst, "stat", "-c", "%n %Y", "/usr/local/bin/k3s",
		"/var/lib/rancher/k3s/agent/images/"+k3sstandin.ImagesName, "/etc/rancher/k3s/config.yaml")
	return strings.ReplaceAll(show+" "+mtimes, "\n", " ")
}

func kubeClient(t *testing.T, path string) (*http.Client, string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var kc struct {
		Clusters []struct {
			Cluster struct {
				Server string `yaml:"server"`
				CA     string `yaml:"certificate-authority-data"`
			} `yaml:"cluster"`
		} `yaml:"clusters"`
		Users []struct {
			User struct {
				Cert string `yaml:"client-certificate-data"`
				Key  string `yaml:"client-key-data"`
			} `yaml:"user"`
		} `yaml:"users"`
	}
	if err := yaml.Unmarshal(data, &kc); err != nil {
		t.Fatal(err)
	}
	dec := func(s string) []byte { b, _ := base64.StdEncoding.DecodeString(s); return b }
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(dec(kc.Clusters[0].Cluster.CA))
	cert, err := tls.X509KeyPair(dec(kc.Users[0].User.Cert), dec(kc.Users[0].User.Key))
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool, Certificates: []tls.Certificate{cert}}}}, kc.Clusters[0].Cluster.Server
}

func listNames(t *testing.T, ctx context.Context, c *http.Client, url string) []string {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Items []struct {
			Metadata struct{ Name string } `json:"metadata"`
		} `json:"items"`
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, it := range list.Items {
		names = append(names, it.Metadata.Name)
	}
	return names
}

// servedDNSNames connects to the API at addr with SNI name and verifies the
// chain against the kubeconfig's CA for that name.
func servedDNSNames(t *testing.T, kubeconfig, addr, name string) []string {
	t.Helper()
	c, _ := kubeClient(t, kubeconfig)
	cfg := c.Transport.(*http.Transport).TLSClientConfig.Clone()
	cfg.ServerName = name
	conn, err := tls.Dial("tcp", net.JoinHostPort(addr, "6443"), cfg)
	if err != nil {
		t.Fatalf("TLS to %s as %s: %v", addr, name, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].DNSNames
}
