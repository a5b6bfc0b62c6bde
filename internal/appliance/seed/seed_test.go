package seed

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/opencsp/installer/internal/appliance/applinit"
	"github.com/opencsp/installer/internal/config"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const (
	testKey    = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJIfr9iQvSzVi9ZX5GR0d6Z9BliBT0/CYFYKFE6dAAWj seed-test"
	testSecret = "pve-token-s3cr3t-never-in-the-seed"
)

// load parses an appliance config with the given managementVM.network block.
func load(t *testing.T, network string) *config.Config {
	t.Helper()
	return loadSSH(t, network, "")
}

// loadSSH is load with extra lines in managementVM.ssh.
func loadSSH(t *testing.T, network, ssh string) *config.Config {
	t.Helper()
	t.Setenv("OPENCSP_SEED_TEST_SECRET", testSecret)
	// Validation wants a private key or an agent; the seed only needs the
	// public keys, so a dummy agent socket keeps the test free of key files.
	t.Setenv("SSH_AUTH_SOCK", "/nonexistent/agent.sock")
	doc := `apiVersion: opencsp.io/v1alpha1
kind: InstallConfig
profile: appliance
cluster:
  name: lab
  domain: lab.example.net
infrastructure:
  proxmox:
    endpoint: https://pve1.example.net:8006
    tokenID: opencsp@pve!installer
    tokenSecret: env:OPENCSP_SEED_TEST_SECRET
managementVM:
  network:
` + network + `  ssh:
    user: opsadmin
` + ssh + `    publicKeys:
      - ` + testKey + `
opsRepo:
  url: ssh://git@git.example.net/ops/opencsp.git
`
	cfg, err := config.Parse("opencsp.yaml", t.TempDir(), []byte(doc))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

var networks = map[string]string{
	"dhcp":      "    dhcp: true\n",
	"static":    "    address: 192.0.2.10/24\n    gateway: 192.0.2.1\n    dns: [192.0.2.53, 192.0.2.54]\n    searchDomain: lab.example.net\n",
	"static-v6": "    address: 2001:db8::10/64\n    gateway: 2001:db8::1\n",
}

func TestRenderGolden(t *testing.T) {
	cases := map[string][2]string{"ssh-port": {networks["dhcp"], "    port: 2222\n"}}
	for name, network := range networks {
		cases[name] = [2]string{network, ""}
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			s, err := Render(loadSSH(t, c[0], c[1]))
			if err != nil {
				t.Fatal(err)
			}
			for file, got := range map[string]string{"user-data": s.UserData, "meta-data": s.MetaData, "network-config": s.NetworkConfig} {
				golden := filepath.Join("testdata", name+"."+file)
				if *update {
					if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test -update to write it)", err)
				}
				if got != string(want) {
					t.Errorf("%s differs from %s:\n%s", file, golden, got)
				}
			}
		})
	}
}

// TestUserDataParses reads the rendered user-data back as cloud-init would.
func TestUserDataParses(t *testing.T) {
	s, err := Render(load(t, networks["dhcp"]))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.UserData, "#cloud-config\n") {
		t.Fatalf("user-data does not start with #cloud-config: %q", s.UserData[:min(40, len(s.UserData))])
	}
	var ud struct {
		Hostname string `yaml:"hostname"`
		Users    []struct {
			Name string   `yaml:"name"`
			Sudo string   `yaml:"sudo"`
			Keys []string `yaml:"ssh_authorized_keys"`
			Lock bool     `yaml:"lock_passwd"`
		} `yaml:"users"`
		Mounts [][]string `yaml:"mounts"`
		Runcmd [][]string `yaml:"runcmd"`
	}
	if err := yaml.Unmarshal([]byte(s.UserData), &ud); err != nil {
		t.Fatalf("user-data is not YAML: %v", err)
	}
	if ud.Hostname != "opencsp-lab-mgmt" {
		t.Errorf("hostname = %q", ud.Hostname)
	}
	if len(ud.Users) != 1 || ud.Users[0].Name != "opsadmin" || !ud.Users[0].Lock ||
		!strings.Contains(ud.Users[0].Sudo, "NOPASSWD") || !slices.Equal(ud.Users[0].Keys, []string{testKey}) {
		t.Errorf("users = %+v", ud.Users)
	}
	if len(ud.Mounts) != 1 || ud.Mounts[0][0] != "LABEL="+applinit.DataLabel || ud.Mounts[0][1] != DataMount {
		t.Errorf("mounts = %v, want LABEL=%s on %s", ud.Mounts, applinit.DataLabel, DataMount)
	}
	want := []string{DataMount + "/bin/opencsp", "node", "bootstrap", "--data", DataMount}
	if len(ud.Runcmd) != 1 || !slices.Equal(ud.Runcmd[0], want) {
		t.Errorf("runcmd = %v, want [%v]", ud.Runcmd, want)
	}
	if strings.Contains(s.UserData, "write_files") {
		t.Errorf("port 22 needs no sshd drop-in:\n%s", s.UserData)
	}
	s, err = Render(loadSSH(t, networks["dhcp"], "    port: 2222\n"))
	if err != nil {
		t.Fatal(err)
	}
	var withPort struct {
		WriteFiles []struct{ Path, Content string } `yaml:"write_files"`
	}
	if err := yaml.Unmarshal([]byte(s.UserData), &withPort); err != nil {
		t.Fatalf("user-data is not YAML: %v", err)
	}
	if len(withPort.WriteFiles) != 1 || !strings.HasPrefix(withPort.WriteFiles[0].Path, "/etc/ssh/sshd_config.d/") ||
		withPort.WriteFiles[0].Content != "Port 2222\n" {
		t.Errorf("ssh.port 2222: write_files = %+v", withPort.WriteFiles)
	}

	var md map[string]string
	if err := yaml.Unmarshal([]byte(s.MetaData), &md); err != nil {
		t.Fatalf("meta-data is not YAML: %v", err)
	}
	if md["local-hostname"] != "opencsp-lab-mgmt" || !strings.HasPrefix(md["instance-id"], "opencsp-lab-") {
		t.Errorf("meta-data = %v", md)
	}
}

func TestNetworkConfigParses(t *testing.T) {
	type eth struct {
		DHCP4       bool     `yaml:"dhcp4"`
		Addresses   []string `yaml:"addresses"`
		Routes      []map[string]string
		Nameservers struct {
			Addresses []string `yaml:"addresses"`
			Search    []string `yaml:"search"`
		} `yaml:"nameservers"`
	}
	for name, check := range map[string]func(eth) bool{
		"dhcp": func(e eth) bool { return e.DHCP4 && len(e.Addresses) == 0 && len(e.Routes) == 0 },
		"static": func(e eth) bool {
			return !e.DHCP4 && slices.Equal(e.Addresses, []string{"192.0.2.10/24"}) &&
				len(e.Routes) == 1 && e.Routes[0]["via"] == "192.0.2.1" && e.Routes[0]["to"] == "0.0.0.0/0" &&
				slices.Equal(e.Nameservers.Addresses, []string{"192.0.2.53", "192.0.2.54"}) &&
				slices.Equal(e.Nameservers.Search, []string{"lab.example.net"})
		},
		"static-v6": func(e eth) bool {
			return slices.Equal(e.Addresses, []string{"2001:db8::10/64"}) && len(e.Routes) == 1 && e.Routes[0]["to"] == "::/0"
		},
	} {
		t.Run(name, func(t *testing.T) {
			s, err := Render(load(t, networks[name]))
			if err != nil {
				t.Fatal(err)
			}
			var nc struct {
				Version   int            `yaml:"version"`
				Ethernets map[string]eth `yaml:"ethernets"`
			}
			if err := yaml.Unmarshal([]byte(s.NetworkConfig), &nc); err != nil {
				t.Fatalf("network-config is not YAML: %v", err)
			}
			if nc.Version != 2 || len(nc.Ethernets) != 1 || !check(nc.Ethernets["primary"]) {
				t.Errorf("network-config:\n%s", s.NetworkConfig)
			}
		})
	}
}

func TestInstanceIDFollowsConfig(t *testing.T) {
	id := func(network string) string {
		s, err := Render(load(t, network))
		if err != nil {
			t.Fatal(err)
		}
		return s.MetaData
	}
	a, b, c := id(networks["static"]), id(networks["static"]), id(networks["dhcp"])
	if a != b {
		t.Errorf("same config, different meta-data:\n%s\n%s", a, b)
	}
	if a == c {
		t.Errorf("different network, same instance id: %s", a)
	}
}

// TestNoSecretInSeed: the seed is world-readable on the disk; no secret the
// config references may end up there.
func TestNoSecretInSeed(t *testing.T) {
	cfg := load(t, networks["static"])
	s, err := Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range []string{s.UserData, s.MetaData, s.NetworkConfig} {
		if strings.Contains(part, testSecret) || strings.Contains(part, "PRIVATE KEY") {
			t.Fatalf("secret material in the seed:\n%s", part)
		}
	}
}

func TestRenderRefusesNoKeys(t *testing.T) {
	cfg := load(t, networks["dhcp"])
	cfg.ManagementVM.SSH.PublicKeys = nil
	if _, err := Render(cfg); err == nil || !strings.Contains(err.Error(), "managementVM.ssh.publicKeys") {
		t.Fatalf("Render without keys: %v, want an error naming managementVM.ssh.publicKeys", err)
	}
}
