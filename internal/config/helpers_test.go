package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencsp/installer/internal/testutil"
)

// Fixture helpers shared with the CLI tests live in internal/testutil.
const (
	testSecretEnv   = testutil.SecretEnv
	testSecretValue = testutil.SecretValue
)

func setupCorpusDir(t testing.TB) string { return testutil.CorpusDir(t) }

func writeKeyPair(t testing.TB, path, comment string) string {
	return testutil.WriteKeyPair(t, path, comment)
}

func copyInto(t testing.TB, dir, src string) string { return testutil.CopyInto(t, dir, src) }

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
