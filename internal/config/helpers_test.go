package config

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// Test fixtures follow the conventions of testdata/: a config refers to its
// key as "privateKeyFile: id_ed25519" (next to the config) and to its secret
// as "env:OPENCSP_TEST_PVE_SECRET". Nothing else on the machine is used; in
// particular no ssh-agent.
const (
	testSecretEnv   = "OPENCSP_TEST_PVE_SECRET"
	testSecretValue = "s3cret"
)

// setupCorpusDir makes a temporary directory holding an unencrypted ed25519
// key pair (id_ed25519, id_ed25519.pub), sets OPENCSP_TEST_PVE_SECRET and
// unsets SSH_AUTH_SOCK for the test. Copy a corpus file into the directory
// and load it from there.
func setupCorpusDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	writeKeyPair(t, filepath.Join(dir, "id_ed25519"), "opencsp-test")
	t.Setenv(testSecretEnv, testSecretValue)
	t.Setenv("SSH_AUTH_SOCK", "")
	return dir
}

// writeKeyPair writes an unencrypted OpenSSH ed25519 private key at path and
// its public half at path+".pub"; it returns the authorized_keys line.
func writeKeyPair(t testing.TB, path, comment string) string {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " " + comment
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".pub", []byte(line+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return line
}

// copyInto copies a testdata file into dir and returns the new path.
func copyInto(t testing.TB, dir, src string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, filepath.Base(src))
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// baseYAML is a minimal valid config (standalone profile by default) that
// unit tests edit: it follows the testdata conventions.
const baseYAML = `apiVersion: opencsp.io/v1alpha1
kind: InstallConfig
cluster:
  name: lab
  domain: lab.example.net
infrastructure:
  proxmox:
    endpoint: https://pve1.example.net:8006
    tokenID: opencsp@pve!installer
    tokenSecret: env:OPENCSP_TEST_PVE_SECRET
managementVM:
  ssh:
    privateKeyFile: id_ed25519
opsRepo:
  url: ssh://git@git.example.net/ops/opencsp.git
`

// edit replaces each old with new in doc; each old must occur exactly once.
func edit(t testing.TB, doc string, oldNew ...string) string {
	t.Helper()
	for i := 0; i+1 < len(oldNew); i += 2 {
		if n := strings.Count(doc, oldNew[i]); n != 1 {
			t.Fatalf("edit: %q occurs %d times", oldNew[i], n)
		}
		doc = strings.Replace(doc, oldNew[i], oldNew[i+1], 1)
	}
	return doc
}

// loadYAML writes doc as opencsp.yaml into dir and loads it. A non-nil
// error is always an ErrorList.
func loadYAML(t testing.TB, dir, doc string) (*Config, ErrorList) {
	t.Helper()
	path := filepath.Join(dir, "opencsp.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err == nil {
		return cfg, nil
	}
	list, ok := err.(ErrorList)
	if !ok {
		t.Fatalf("Load returned %T (%v), want ErrorList", err, err)
	}
	return nil, list
}

// mustLoad loads doc from a fresh corpus directory and fails on any error.
func mustLoad(t testing.TB, doc string) *Config {
	t.Helper()
	cfg, errs := loadYAML(t, setupCorpusDir(t), doc)
	if errs != nil {
		t.Fatalf("Load:\n%v\n---\n%s", errs, doc)
	}
	return cfg
}

// findError returns the error for field whose text contains substr.
func findError(list ErrorList, field, substr string) *FieldError {
	for i, e := range list {
		if e.Field == field && strings.Contains(e.Error(), substr) {
			return &list[i]
		}
	}
	return nil
}
