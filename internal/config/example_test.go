package config

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencsp/installer/profiles"
)

// renderExample writes the example for profile into a fresh directory with
// its key pair and the environment its references need, and returns its path.
func renderExample(t *testing.T, o ExampleOptions) (path string, out []byte) {
	t.Helper()
	dir := t.TempDir()
	key := filepath.Join(dir, "keys", "id_ed25519")
	if err := os.MkdirAll(filepath.Dir(key), 0o700); err != nil {
		t.Fatal(err)
	}
	writeKeyPair(t, key, "example")
	if o.PrivateKeyFile == "" {
		o.PrivateKeyFile = key
	}
	t.Setenv("PVE_TOKEN_SECRET", "pve-secret")
	t.Setenv("OS_APPLICATION_CREDENTIAL_SECRET", "os-secret")
	t.Setenv("SSH_AUTH_SOCK", "")
	out, err := Example(o)
	if err != nil {
		t.Fatalf("Example(%+v): %v", o, err)
	}
	path = filepath.Join(dir, "opencsp.yaml")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, out
}

func TestExampleValidatesForEveryProfile(t *testing.T) {
	names := profiles.Names()
	if len(names) != 5 {
		t.Errorf("profiles = %v, want the five documented ones", names)
	}
	for _, p := range names {
		t.Run(p, func(t *testing.T) {
			path, out := renderExample(t, ExampleOptions{Profile: p})
			cfg, err := Load(path)
			if err != nil {
				t.Fatalf("example for %s does not validate:\n%v\n---\n%s", p, err, out)
			}
			if cfg.Profile != p {
				t.Errorf("profile round-trips as %q, want %q", cfg.Profile, p)
			}
			if !bytes.Contains(out, []byte("profile: "+p+"\n")) {
				t.Errorf("example does not name its profile")
			}
			comments := 0
			sc := bufio.NewScanner(bytes.NewReader(out))
			for sc.Scan() {
				if strings.HasPrefix(strings.TrimSpace(sc.Text()), "#") {
					comments++
				}
			}
			if comments < 5 {
				t.Errorf("example has %d comment lines, want a commented example", comments)
			}
			wantProvider := "proxmox"
			if p == "openstack" {
				wantProvider = "openstack"
			}
			if cfg.Infrastructure.Provider != wantProvider {
				t.Errorf("provider = %q, want %q", cfg.Infrastructure.Provider, wantProvider)
			}
			if cfg.Cluster.Name != "lab" || cfg.ManagementVM.Network.DHCP || cfg.ManagementVM.Network.Address == "" {
				t.Errorf("unexpected example content: cluster %q, network %+v", cfg.Cluster.Name, cfg.ManagementVM.Network)
			}
			if bytes.Contains(out, []byte("pve-secret")) || bytes.Contains(out, []byte("os-secret")) {
				t.Errorf("example contains a secret value")
			}
		})
	}
}

func TestExampleOptions(t *testing.T) {
	pubDir := t.TempDir()
	extra := writeKeyPair(t, filepath.Join(pubDir, "other"), "colleague@example")
	path, out := renderExample(t, ExampleOptions{Profile: "cluster", Cluster: "prod-1", PublicKey: extra})
	cfg, err := Load(path)
	if err != nil {
		t.Fatalf("%v\n---\n%s", err, out)
	}
	if cfg.Cluster.Name != "prod-1" || cfg.Cluster.Domain != "prod-1.example.net" || cfg.OpsRepo.Path != "clusters/prod-1" {
		t.Errorf("cluster option not applied: %+v, ops path %q", cfg.Cluster, cfg.OpsRepo.Path)
	}
	if len(cfg.Infrastructure.Proxmox.Nodes) != 3 || cfg.ManagementVM.Cores != 8 {
		t.Errorf("cluster example: nodes %v cores %d", cfg.Infrastructure.Proxmox.Nodes, cfg.ManagementVM.Cores)
	}
	keys, err := cfg.AuthorizedKeys()
	if err != nil || len(keys) != 2 || keys[0] != extra {
		t.Errorf("AuthorizedKeys = %q, %v; want the extra key and the installer's", keys, err)
	}
}

func TestExampleDefaultKeyUnderHome(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	if err := os.MkdirAll(filepath.Join(home, ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeKeyPair(t, filepath.Join(home, ".ssh", "id_ed25519"), "me")
	t.Setenv("PVE_TOKEN_SECRET", "pve-secret")
	t.Setenv("SSH_AUTH_SOCK", "")
	out, err := Example(ExampleOptions{Profile: "standalone"})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(out, []byte("privateKeyFile: ~/.ssh/id_ed25519")) {
		t.Fatalf("default key path not used:\n%s", out)
	}
	path := filepath.Join(t.TempDir(), "opencsp.yaml")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatalf("example with ~/.ssh/id_ed25519: %v", err)
	}
	if got, want := cfg.ResolvePath(cfg.ManagementVM.SSH.PrivateKeyFile), filepath.Join(home, ".ssh", "id_ed25519"); got != want {
		t.Errorf("ResolvePath = %q, want %q", got, want)
	}
}

func TestExampleUnknownProfile(t *testing.T) {
	_, err := Example(ExampleOptions{Profile: "huge"})
	if err == nil || !strings.Contains(err.Error(), "unknown profile") {
		t.Fatalf("err = %v", err)
	}
	var list ErrorList
	if errors.As(err, &list) {
		t.Errorf("Example error should not be a config ErrorList")
	}
}
