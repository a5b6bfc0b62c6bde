package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencsp/installer/internal/appliance"
	"github.com/opencsp/installer/internal/appliance/payload"
	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/testutil"
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
    tokenSecret: env:OPENCSP_NODE_TEST_PVE
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

// nodeDataDir lays out an appliance data directory the way the ISO build
// stages it (appliance.StageNodeData) from an operator's config on the
// installer host, and the appliance copies it (payload.DataPath). The PVE
// token is set only while staging, as on the installer host. The K3s files
// are placeholders: these tests never install K3s on the host.
func nodeDataDir(t *testing.T, opsURL, gitToken string) string {
	t.Helper()
	host := t.TempDir()
	testutil.WriteKeyPair(t, filepath.Join(host, "id_ed25519"), "opencsp-node-test")
	k3sDir := filepath.Join(host, "k3s-release")
	src := map[string]string{
		"opencsp.yaml": strings.Replace(nodeTestConfig, "OPSURL", opsURL, 1),
		"git-token":    gitToken + "\n",
		"opencsp":      "placeholder, not the binary\n",
	}
	for _, f := range nodeK3sFiles {
		src[filepath.Join("k3s-release", f)] = "placeholder, not a K3s release\n"
	}
	writeTree(t, host, src)
	t.Setenv("OPENCSP_NODE_TEST_PVE", "pve-token-of-the-host")
	cfg, err := config.Load(filepath.Join(host, "opencsp.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	os.Unsetenv("OPENCSP_NODE_TEST_PVE") // not on the node
	files, err := appliance.StageNodeData(filepath.Join(host, "stage"),
		appliance.NodeData{Binary: filepath.Join(host, "opencsp"), Config: cfg, K3sDir: k3sDir})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	data := map[string]string{}
	for iso, p := range files {
		rel, ok := payload.DataPath(iso)
		if !ok {
			t.Fatalf("staged %s is not on the data partition", iso)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		data[rel] = string(b)
	}
	// The appliance writes its payload manifest next to the files.
	m, err := payload.Build(files)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(m)
	data[payload.ManifestFile] = string(b)
	writeTree(t, dir, data)
	return dir
}

// writeTree writes name -> content below dir. Modes are 0644: the data
// partition is FAT, where every file is readable.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
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
			func(d string) []string { return []string{"--data", d + "/opencsp.yaml"} },
			func(d string) string { return d + "/opencsp.yaml: not a directory" }},
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
		{"ops repo token missing", func(d string) { os.Remove(d + "/manifest.json"); os.Remove(d + "/secrets/ops-repo-token") },
			func(d string) []string { return []string{"--data", d} },
			func(d string) string { return "opsRepo.auth.token: read secret file " + d + "/secrets/ops-repo-token" }},
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

// The node config is loaded node-scoped: with the PVE token unset and no
// installer SSH key, node bootstrap gets past the config to its later
// checks. The K3s release is made incomplete so that, run as root, it
// stops there instead of installing K3s on this machine.
func TestNodeBootstrapLoadsNodeConfig(t *testing.T) {
	data := nodeDataDir(t, "https://git.example.invalid/ops.git", "tok")
	os.Remove(filepath.Join(data, payload.ManifestFile))
	os.Remove(filepath.Join(data, payload.K3sDir, "install.sh"))
	for _, f := range []string{"id_ed25519", "pve-token"} {
		if exists(filepath.Join(data, f)) {
			t.Fatalf("%s is in the data dir", f)
		}
	}
	cfg, _ := os.ReadFile(filepath.Join(data, payload.ConfigFile))
	if !strings.Contains(string(cfg), "token: file:"+payload.OpsRepoTokenFile) || strings.Contains(string(cfg), "OPENCSP_NODE_TEST_PVE") {
		t.Errorf("node config:\n%s", cfg)
	}
	r := opencsp(t, t.TempDir(), "node", "bootstrap", "--state-dir", filepath.Join(t.TempDir(), "state"), "--data", data)
	if strings.Contains(r.stderr, "problem(s)") || strings.Contains(r.stderr, "OPENCSP_NODE_TEST_PVE") || strings.Contains(r.stderr, "privateKeyFile") {
		t.Fatalf("node bootstrap refused the node config:\n%s", r.stderr)
	}
	if want := filepath.Join(data, payload.K3sDir, "install.sh") + ": missing"; r.code != 2 || !strings.Contains(r.stderr, want) {
		t.Errorf("exit %d, stderr %q; want 2 and %q from the K3s release check", r.code, r.stderr, want)
	}
}

// copyNodeSecrets moves the credential off the FAT data partition: 0600 in
// a 0700 dir, the config pointing at the copy, and a rerun is the same.
func TestCopyNodeSecrets(t *testing.T) {
	tests := []struct {
		name string
		auth config.GitAuth
		file string // the copy in the state dir
	}{
		{"token file", config.GitAuth{Token: "file:" + payload.OpsRepoTokenFile}, payload.OpsRepoTokenFile},
		{"ssh key", config.GitAuth{SSHKeyFile: payload.OpsRepoSSHKeyFile}, payload.OpsRepoSSHKeyFile},
		{"token from env: nothing to copy", config.GitAuth{Token: "env:OPENCSP_NODE_GIT"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, state := t.TempDir(), filepath.Join(t.TempDir(), "state")
			writeTree(t, data, map[string]string{payload.OpsRepoTokenFile: "tok\n", payload.OpsRepoSSHKeyFile: "key\n"})
			doc := "apiVersion: opencsp.io/v1alpha1\nkind: InstallConfig\ncluster: {name: lab, domain: lab.example.net}\n" +
				"opsRepo:\n  url: https://git.example.net/ops.git\n"
			if err := os.WriteFile(filepath.Join(data, "opencsp.yaml"), []byte(doc), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.LoadForNode(filepath.Join(data, "opencsp.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			cfg.OpsRepo.Auth = tt.auth
			for run := 0; run < 2; run++ {
				if err := copyNodeSecrets(cfg, state); err != nil {
					t.Fatal(err)
				}
			}
			if tt.file == "" {
				if cfg.OpsRepo.Auth != tt.auth || exists(filepath.Join(state, payload.SecretsDir)) {
					t.Errorf("auth %+v, secrets dir %v; want both untouched", cfg.OpsRepo.Auth, exists(filepath.Join(state, payload.SecretsDir)))
				}
				return
			}
			dst := filepath.Join(state, tt.file)
			if got := cfg.OpsRepo.Auth.SSHKeyFile + strings.TrimPrefix(string(cfg.OpsRepo.Auth.Token), "file:"); got != dst {
				t.Errorf("config points at %q, want %s", got, dst)
			}
			src, _ := os.ReadFile(filepath.Join(data, tt.file))
			if b, err := os.ReadFile(dst); err != nil || string(b) != string(src) {
				t.Errorf("%s = %q, %v; want %q", dst, b, err, src)
			}
			for p, want := range map[string]os.FileMode{dst: 0o600, filepath.Dir(dst): 0o700} {
				if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
					t.Errorf("%s: %v %v, want mode %v", p, err, fi.Mode().Perm(), want)
				}
			}
		})
	}
}
