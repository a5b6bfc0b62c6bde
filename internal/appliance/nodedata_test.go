package appliance

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/opencsp/installer/internal/appliance/payload"
	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/testutil"
)

// operatorConfig is an operator's appliance config on the installer host:
// the PVE token from the environment, the login key from a file.
const operatorConfig = `apiVersion: opencsp.io/v1alpha1
kind: InstallConfig
profile: appliance
cluster:
  name: lab
  domain: lab.example.net
infrastructure:
  proxmox:
    endpoint: https://pve1.example.net:8006
    tokenID: opencsp@pve!installer
    tokenSecret: env:OPENCSP_STAGE_TEST_PVE
managementVM:
  network:
    dhcp: false
    address: 192.0.2.10/24
    gateway: 192.0.2.1
  ssh:
    privateKeyFile: id_ed25519
k3s:
  version: v1.33.5+k3s1
opsRepo:
AUTH`

func TestStageNodeData(t *testing.T) {
	const (
		pveToken = "pve-token-value-9f3a"
		gitToken = "git-token-value-77c1"
	)
	https := "  url: https://git.example.net/ops.git\n  auth:\n"
	tests := []struct {
		name  string
		auth  string
		spoil func(host string) // makes the credential unavailable after Load
		// secret is the carried file and its content; field the refusal.
		secret, content, field, msg string
	}{
		{"token from env", https + "    token: env:OPENCSP_STAGE_TEST_GIT\n", nil,
			payload.OpsRepoTokenFile, gitToken + "\n", "", ""},
		{"token from file", https + "    token: file:git-token\n", nil,
			payload.OpsRepoTokenFile, gitToken + "\n", "", ""},
		{"ssh key", "  url: ssh://git@git.example.net/ops.git\n  auth:\n    sshKeyFile: deploy-key\n", nil,
			payload.OpsRepoSSHKeyFile, "deploy-key-bytes\n", "", ""},
		{"token env unset at build", https + "    token: env:OPENCSP_STAGE_TEST_GIT\n",
			func(string) { os.Unsetenv("OPENCSP_STAGE_TEST_GIT") }, "", "", "opsRepo.auth.token", "OPENCSP_STAGE_TEST_GIT is not set"},
		{"token file gone", https + "    token: file:git-token\n",
			func(h string) { os.Remove(filepath.Join(h, "git-token")) }, "", "", "opsRepo.auth.token", "git-token"},
		{"ssh key gone", "  url: ssh://git@git.example.net/ops.git\n  auth:\n    sshKeyFile: deploy-key\n",
			func(h string) { os.Remove(filepath.Join(h, "deploy-key")) }, "", "", "opsRepo.auth.sshKeyFile", "deploy-key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := t.TempDir()
			testutil.WriteKeyPair(t, filepath.Join(host, "id_ed25519"), "op")
			for name, content := range map[string]string{"git-token": gitToken + "\n", "deploy-key": "deploy-key-bytes\n"} {
				if err := os.WriteFile(filepath.Join(host, name), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			t.Setenv("OPENCSP_STAGE_TEST_PVE", pveToken)
			t.Setenv("OPENCSP_STAGE_TEST_GIT", gitToken)
			cfg, err := config.Parse("opencsp.yaml", host, []byte(strings.Replace(operatorConfig, "AUTH", tt.auth, 1)))
			if err != nil {
				t.Fatal(err)
			}
			if tt.spoil != nil {
				tt.spoil(host)
			}
			dir := filepath.Join(t.TempDir(), "data")
			files, err := StageNodeData(dir, NodeData{Binary: "/bin/true", Config: cfg,
				Manifests: fstest.MapFS{"base/kustomization.yaml": {Data: []byte("resources: []\n")}}})
			if tt.field != "" {
				var ie *InputError
				if !errors.As(err, &ie) || ie.Field != tt.field || !strings.Contains(err.Error(), tt.msg) {
					t.Fatalf("StageNodeData = %v; want an InputError for %s naming %q", err, tt.field, tt.msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := []string{payload.BinaryPath, payload.Dir + "/" + payload.ConfigFile, payload.Dir + "/" + tt.secret,
				payload.Dir + "/" + payload.ManifestsDir + "/base/kustomization.yaml"}
			if len(files) != len(want) {
				t.Errorf("staged %v, want %v", files, want)
			}
			for _, k := range want {
				if _, ok := files[k]; !ok {
					t.Errorf("%s not staged (%v)", k, files)
				}
			}
			sec := files[payload.Dir+"/"+tt.secret]
			if b, err := os.ReadFile(sec); err != nil || string(b) != tt.content {
				t.Errorf("%s = %q, %v; want the credential", tt.secret, b, err)
			}
			if fi, err := os.Stat(sec); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: %v, mode %v; want 0600", sec, err, fi.Mode())
			}
			node, _ := os.ReadFile(files[payload.Dir+"/"+payload.ConfigFile])
			for _, gone := range []string{pveToken, gitToken, "OPENCSP_STAGE_TEST", "privateKeyFile", "deploy-key"} {
				if strings.Contains(string(node), gone) {
					t.Errorf("node config holds %q:\n%s", gone, node)
				}
			}
			if !strings.Contains(string(node), tt.secret) {
				t.Errorf("node config does not point at %s:\n%s", tt.secret, node)
			}
		})
	}
}
