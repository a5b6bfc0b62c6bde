package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencsp/installer/internal/appliance/payload"
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
