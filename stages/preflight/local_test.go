package preflight

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/logging"
	"github.com/opencsp/installer/internal/testutil"
)

const configYAML = `apiVersion: opencsp.io/v1alpha1
kind: InstallConfig
cluster: {name: lab, domain: lab.example.net}
infrastructure:
  proxmox:
    endpoint: https://pve1.example.net:8006
    tokenID: opencsp@pve!installer
    tokenSecret: env:OPENCSP_TEST_PVE_SECRET
managementVM:
  ssh: {privateKeyFile: id_ed25519}
opsRepo:
  url: https://git.example.net/ops.git
  auth: {token: file:git-token}
`

// loadConfig writes the config and its git token next to a fresh key pair.
func loadConfig(t *testing.T) (*config.Config, string) {
	t.Helper()
	dir := testutil.CorpusDir(t)
	if err := os.WriteFile(filepath.Join(dir, "git-token"), []byte("git-token-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "opencsp.yaml")
	if err := os.WriteFile(path, []byte(configYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, dir
}

func TestLocalChecks(t *testing.T) {
	for _, tc := range []struct {
		name    string
		breakIt func(t *testing.T, dir string)
		count   int      // expected number of problems
		want    []string // substrings of the report
	}{
		{"all good", func(*testing.T, string) {}, 0, nil},
		{"secret env var gone", func(t *testing.T, _ string) { os.Unsetenv(testutil.SecretEnv) },
			1, []string{"proxmox token: env:OPENCSP_TEST_PVE_SECRET: environment variable OPENCSP_TEST_PVE_SECRET is not set"}},
		{"git token file gone", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "git-token")) },
			1, []string{"ops repo token: file:git-token: read secret file"}},
		{"key readable by others", func(t *testing.T, dir string) { os.Chmod(filepath.Join(dir, "id_ed25519"), 0o644) },
			1, []string{"ssh key: ", "chmod 600"}},
		{"key is not a key", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "id_ed25519"), []byte("hello"), 0o600)
		}, 1, []string{"is not an SSH private key"}},
		{"key and pub gone", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "id_ed25519"))
			os.Remove(filepath.Join(dir, "id_ed25519.pub"))
		}, 2, []string{"ssh key: cannot read", "ssh public key: read SSH key"}},
		{"two problems at once", func(t *testing.T, dir string) {
			os.Unsetenv(testutil.SecretEnv)
			os.Chmod(filepath.Join(dir, "id_ed25519"), 0o640)
		}, 2, []string{"proxmox token:", "ssh key:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, dir := loadConfig(t)
			tc.breakIt(t, dir)
			red := logging.NewRedactor()
			ps := localChecks(cfg, red)
			if len(ps) != tc.count {
				t.Fatalf("got %d problems, want %d:\n%v", len(ps), tc.count, ps)
			}
			text := ""
			if len(ps) > 0 {
				text = ps.Error()
			}
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("problems lack %q:\n%s", w, text)
				}
			}
			if len(ps) == 0 {
				// Resolved secrets are registered for redaction.
				for _, s := range []string{testutil.SecretValue, "git-token-value"} {
					if got := red.Redact("x " + s + " y"); strings.Contains(got, s) {
						t.Errorf("secret %q not registered for redaction", s)
					}
				}
			}
		})
	}
}

func TestAgentRequiredWithoutKeyFile(t *testing.T) {
	cfg, _ := loadConfig(t)
	cfg.ManagementVM.SSH.PrivateKeyFile = ""
	cfg.ManagementVM.SSH.PublicKeys = []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBqvXd0f0zQ8gdj5DXu0m0m1CqD3UwwQw3w7N1FvXyZf x"}
	t.Setenv("SSH_AUTH_SOCK", "")
	ps := localChecks(cfg, logging.NewRedactor())
	if len(ps) != 1 || !strings.Contains(ps[0].Msg, "SSH_AUTH_SOCK is empty") {
		t.Fatalf("want the ssh-agent problem, got %v", ps)
	}
	t.Setenv("SSH_AUTH_SOCK", filepath.Join(t.TempDir(), "no-agent.sock"))
	ps = localChecks(cfg, logging.NewRedactor())
	if len(ps) != 1 || !strings.Contains(ps[0].Msg, "ssh-agent at") {
		t.Fatalf("want the unreachable agent problem, got %v", ps)
	}
}
