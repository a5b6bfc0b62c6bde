package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// operatorYAML is a typical operator's appliance config: the Proxmox token
// from the environment, the installer's SSH key and a git token from files
// of the installer host.
const operatorYAML = `apiVersion: opencsp.io/v1alpha1
kind: InstallConfig
profile: appliance
cluster:
  name: lab
  domain: lab.example.net
infrastructure:
  proxmox:
    endpoint: https://pve1.example.net:8006
    tokenID: opencsp@pve!installer
    tokenSecret: env:OPENCSP_NODE_TEST_PVE # the PVE token: not on the node
    tls:
      caFile: pve-ca.pem
managementVM:
  name: mgmt
  network:
    dhcp: false
    address: 192.0.2.10/24
    gateway: 192.0.2.1
  ssh:
    privateKeyFile: id_ed25519
secrets:
  ageKeyFile: age.key
k3s:
  version: v1.33.5+k3s1
  artifacts:
    airgapDir: k3s-release
opsRepo:
  url: https://git.example.net/ops/opencsp.git
  auth:
    token: file:git-token
`

// writeFiles writes name -> content into dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLoadForNode(t *testing.T) {
	// On the node the PVE token is unset and the SSH key, CA file, age key
	// and air-gap directory of the installer host are absent.
	nodeFiles := map[string]string{"git-token": "tok\n"}
	tests := []struct {
		name  string
		doc   string
		files map[string]string
		// errs are field -> message part; none means it loads.
		errs map[string]string
	}{
		{"operator config loads on the node", operatorYAML, nodeFiles, nil},
		{"no ssh user or key at all", edit(t, operatorYAML, "  ssh:\n    privateKeyFile: id_ed25519\n", ""), nodeFiles, nil},
		{"bad cluster name", edit(t, operatorYAML, "name: lab", "name: Lab"), nodeFiles,
			map[string]string{"cluster.name": "DNS label"}},
		{"bad k3s version", edit(t, operatorYAML, "version: v1.33.5+k3s1", "version: v1.33"), nodeFiles,
			map[string]string{"k3s.version": "K3s release name"}},
		{"git token file missing", operatorYAML, nil,
			map[string]string{"opsRepo.auth.token": "git-token"}},
		{"git token from an unset env", edit(t, operatorYAML, "token: file:git-token", "token: env:OPENCSP_NODE_TEST_GIT"), nil,
			map[string]string{"opsRepo.auth.token": "OPENCSP_NODE_TEST_GIT is not set"}},
		{"ops repo url bad", edit(t, operatorYAML, "url: https://git.example.net/ops/opencsp.git", "url: ftp://x/y"), nodeFiles,
			map[string]string{"opsRepo.url": "git URL"}},
		{"bad static address", edit(t, operatorYAML, "address: 192.0.2.10/24", "address: 192.0.2.10"), nodeFiles,
			map[string]string{"managementVM.network.address": "CIDR"}},
		{"bad flux registry", edit(t, operatorYAML, "secrets:", "flux:\n  registry: https://r.example.net\nsecrets:"), nodeFiles,
			map[string]string{"flux.registry": "image repository prefix"}},
		{"unknown component", edit(t, operatorYAML, "secrets:", "components:\n  nope: {}\nsecrets:"), nodeFiles,
			map[string]string{"components.nope": "unknown component"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// k3s-release is absent on the node, but the node config drops
			// airgapDir (NodeYAML); here the operator's file is loaded as is.
			doc := strings.Replace(tt.doc, "    airgapDir: k3s-release\n", "    mirror: https://mirror.example.net\n", 1)
			dir := t.TempDir()
			writeFiles(t, dir, tt.files)
			path := filepath.Join(dir, "opencsp.yaml")
			writeFiles(t, dir, map[string]string{"opencsp.yaml": doc})
			cfg, err := LoadForNode(path)
			if len(tt.errs) == 0 {
				if err != nil {
					t.Fatalf("LoadForNode: %v", err)
				}
				if cfg.Cluster.Name != "lab" || cfg.K3s.Version != "v1.33.5+k3s1" || cfg.OpsRepo.Auth.Token != "file:git-token" {
					t.Errorf("loaded %+v %+v %+v", cfg.Cluster, cfg.K3s, cfg.OpsRepo)
				}
				// The same file is refused by the installer's Load: the
				// fields the node skips are really checked there.
				_, full := Load(path)
				list, _ := full.(ErrorList)
				for _, f := range []string{"infrastructure.proxmox.tokenSecret", "infrastructure.proxmox.tls.caFile"} {
					if findError(list, f, "") == nil {
						t.Errorf("Load does not report %s: %v", f, full)
					}
				}
				return
			}
			list, ok := err.(ErrorList)
			if !ok {
				t.Fatalf("LoadForNode = %v (%T), want an ErrorList", err, err)
			}
			for field, msg := range tt.errs {
				if findError(list, field, msg) == nil {
					t.Errorf("no error for %s containing %q in:\n%v", field, msg, list)
				}
			}
			if len(list) != len(tt.errs) {
				t.Errorf("got %d errors, want %d:\n%v", len(list), len(tt.errs), list)
			}
		})
	}
}

func TestNodeYAML(t *testing.T) {
	host := t.TempDir()
	writeKeyPair(t, filepath.Join(host, "id_ed25519"), "op")
	writeFiles(t, host, map[string]string{"git-token": "tok\n", "age.key": "x", "pve-ca.pem": selfSignedPEM(t)})
	if err := os.Mkdir(filepath.Join(host, "k3s-release"), 0o755); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		doc       string
		auth      NodeAuth
		wantToken SecretRef
		wantKey   string
		wantErr   string
	}{
		{"token", operatorYAML, NodeAuth{TokenFile: "secrets/ops-repo-token"}, "file:secrets/ops-repo-token", "", ""},
		{"ssh key", edit(t, operatorYAML, "url: https://git.example.net/ops/opencsp.git", "url: ssh://git@git.example.net/ops.git",
			"token: file:git-token", "sshKeyFile: id_ed25519"), NodeAuth{SSHKeyFile: "secrets/ops-repo-ssh-key"}, "", "secrets/ops-repo-ssh-key", ""},
		{"no auth in the file", edit(t, operatorYAML, "  auth:\n    token: file:git-token\n", ""), NodeAuth{}, "", "", ""},
		{"auth section added", edit(t, operatorYAML, "  auth:\n    token: file:git-token\n", ""),
			NodeAuth{TokenFile: "secrets/ops-repo-token"}, "file:secrets/ops-repo-token", "", ""},
		{"aliased auth", edit(t, operatorYAML, "cluster:", "x-auth: &a\n  token: file:git-token\ncluster:", "  auth:\n    token: file:git-token\n", "  auth: *a\n"),
			NodeAuth{TokenFile: "secrets/ops-repo-token"}, "", "", "opsRepo.auth: YAML aliases"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if strings.Contains(tt.doc, "x-auth") {
				// Unknown top-level keys are refused by Load; build the
				// Config from the text directly to reach NodeYAML.
				c := &Config{Source: "opencsp.yaml", raw: []byte(tt.doc)}
				_, err := c.NodeYAML(tt.auth)
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("NodeYAML = %v, want %q", err, tt.wantErr)
				}
				return
			}
			t.Setenv("OPENCSP_NODE_TEST_PVE", "pve-secret-value")
			cfg, err := Parse("opencsp.yaml", host, []byte(tt.doc))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			out, err := cfg.NodeYAML(tt.auth)
			if err != nil {
				t.Fatal(err)
			}
			text := string(out)
			for _, gone := range []string{"OPENCSP_NODE_TEST_PVE", "tokenSecret", "caFile", "privateKeyFile", "ageKeyFile", "airgapDir", "git-token", "not on the node"} {
				if strings.Contains(text, gone) {
					t.Errorf("node config holds %q:\n%s", gone, text)
				}
			}
			// The node loads it from its data directory with nothing of the
			// host: only the carried credential.
			data := t.TempDir()
			writeFiles(t, data, map[string]string{"secrets/ops-repo-token": "tok\n", "secrets/ops-repo-ssh-key": "k\n"})
			os.Unsetenv("OPENCSP_NODE_TEST_PVE")
			node, err := ParseForNode("opencsp.yaml", data, out)
			if err != nil {
				t.Fatalf("ParseForNode:\n%v\n---\n%s", err, text)
			}
			if node.OpsRepo.Auth.Token != tt.wantToken || node.OpsRepo.Auth.SSHKeyFile != tt.wantKey {
				t.Errorf("node opsRepo.auth = %+v, want token %q key %q", node.OpsRepo.Auth, tt.wantToken, tt.wantKey)
			}
			if p := node.Infrastructure.Proxmox; p == nil || p.TokenSecret != "" || p.TokenID != "opencsp@pve!installer" {
				t.Errorf("node infrastructure.proxmox = %+v, want the token id without its secret", p)
			}
			if node.Profile != "appliance" || node.ManagementVM.Name != "mgmt" || node.ManagementVM.Network.Address != "192.0.2.10/24" ||
				node.K3s.Artifacts.AirgapDir != "" || node.Secrets.AgeKeyFile != "" {
				t.Errorf("node config lost or kept the wrong fields:\n%s", text)
			}
		})
	}
}

func TestSecretRefFilePath(t *testing.T) {
	tests := []struct {
		ref    SecretRef
		want   string
		isFile bool
	}{
		{"file:secrets/t", "/data/secrets/t", true},
		{"file:/abs/t", "/abs/t", true},
		{"env:TOKEN", "", false},
		{"literal", "", false},
	}
	for _, tt := range tests {
		got, ok := tt.ref.FilePath("/data")
		if got != tt.want || ok != tt.isFile {
			t.Errorf("%q.FilePath = %q, %v; want %q, %v", tt.ref, got, ok, tt.want, tt.isFile)
		}
	}
}

// selfSignedPEM is a CA certificate for tls.caFile.
func selfSignedPEM(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pve ca"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestLoadForImage(t *testing.T) {
	// The build machine of the ISO holds the installer's key, the CA file and
	// the git token, but not the PVE token: the ISO never carries it.
	files := map[string]string{"git-token": "tok\n", "pve-ca.pem": selfSignedPEM(t)}
	tests := []struct {
		name string
		doc  string
		errs map[string]string
	}{
		{"unset PVE token is fine", operatorYAML, nil},
		{"malformed PVE token reference is not", edit(t, operatorYAML, "tokenSecret: env:OPENCSP_NODE_TEST_PVE", "tokenSecret: OPENCSP_NODE_TEST_PVE"),
			map[string]string{"infrastructure.proxmox.tokenSecret": ""}},
		{"git token still resolved", edit(t, operatorYAML, "token: file:git-token", "token: env:OPENCSP_NODE_TEST_GIT"),
			map[string]string{"opsRepo.auth.token": "OPENCSP_NODE_TEST_GIT is not set"}},
		{"bad appliance.after", edit(t, operatorYAML, "secrets:", "appliance:\n  after: sleep\nsecrets:"),
			map[string]string{"appliance.after": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := strings.Replace(tt.doc, "    airgapDir: k3s-release\n", "    mirror: https://mirror.example.net\n", 1)
			dir := t.TempDir()
			writeFiles(t, dir, files)
			writeKeyPair(t, filepath.Join(dir, "id_ed25519"), "installer")
			path := filepath.Join(dir, "opencsp.yaml")
			writeFiles(t, dir, map[string]string{"opencsp.yaml": doc})
			_, err := LoadForImage(path)
			if len(tt.errs) == 0 {
				if err != nil {
					t.Fatalf("LoadForImage: %v", err)
				}
				// The installer's Load does resolve it.
				_, full := Load(path)
				list, _ := full.(ErrorList)
				if findError(list, "infrastructure.proxmox.tokenSecret", "not set") == nil {
					t.Errorf("Load does not report the unset PVE token: %v", full)
				}
				return
			}
			list, ok := err.(ErrorList)
			if !ok {
				t.Fatalf("LoadForImage = %v (%T), want an ErrorList", err, err)
			}
			for field, msg := range tt.errs {
				if findError(list, field, msg) == nil {
					t.Errorf("no error for %s containing %q in:\n%v", field, msg, list)
				}
			}
		})
	}
}
