package main

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/opencsp/installer/internal/opsrepo/sopsage"
	"github.com/opencsp/installer/internal/testutil"
	"github.com/opencsp/installer/manifests"
)

// opsConfig writes the opsrepo sample config into a corpus dir.
func opsConfig(t *testing.T, edits ...string) string {
	t.Helper()
	dir := testutil.CorpusDir(t)
	data, err := os.ReadFile("../../internal/opsrepo/testdata/lab.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for i := 0; i+1 < len(edits); i += 2 {
		s = strings.Replace(s, edits[i], edits[i+1], 1)
	}
	if err := os.WriteFile(filepath.Join(dir, "opencsp.yaml"), []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestOpsRender(t *testing.T) {
	dir := opsConfig(t)
	r := opencsp(t, dir, "ops", "render", "out", "-c", "opencsp.yaml")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"added    clusters/lab/cluster-vars.yaml", "added    clusters/lab/secrets/zitadel-secrets.sops.yaml",
		"added    components/zitadel/zitadel/kustomization.yaml", "out: "} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "out/clusters/lab/layers/teleport.yaml")); !os.IsNotExist(err) {
		t.Error("disabled teleport rendered")
	}

	// Every generated value, decrypted with the state dir's age key, is
	// absent from every file in plaintext and base64.
	keyData, err := os.ReadFile(filepath.Join(dir, ".opencsp", "age.key"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := sopsage.ParseKey(keyData)
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{key.Secret()}
	for _, s := range manifests.Secrets() {
		enc, err := os.ReadFile(filepath.Join(dir, "out/clusters/lab/secrets", s.Name+".sops.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		plain, _, err := sopsage.Decrypt(enc, key)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			StringData map[string]string `yaml:"stringData"`
		}
		if err := yaml.Unmarshal(plain, &doc); err != nil {
			t.Fatal(err)
		}
		for _, v := range doc.StringData {
			secrets = append(secrets, v)
		}
	}
	if len(secrets) < 30 {
		t.Fatalf("%d secrets", len(secrets))
	}
	files := 0
	err = filepath.WalkDir(filepath.Join(dir, "out"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		data, err := os.ReadFile(p)
		for _, s := range secrets {
			if strings.Contains(string(data), s) || strings.Contains(string(data), base64.StdEncoding.EncodeToString([]byte(s))) {
				t.Errorf("%s holds a secret in plaintext", p)
			}
		}
		return err
	})
	if err != nil || files < 100 {
		t.Fatalf("%d files: %v", files, err)
	}

	// A re-render changes nothing; JSON lists the files.
	r = opencsp(t, dir, "ops", "render", "out", "-c", "opencsp.yaml", "--output", "json")
	var out struct {
		Files   []string
		Changes []struct{ Path, Op string }
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &out) != nil || len(out.Changes) != 0 || len(out.Files) != files {
		t.Errorf("re-render: exit %d, %d changes, %d files\n%s", r.code, len(out.Changes), len(out.Files), r.stderr)
	}
}

func TestOpsRenderBadInput(t *testing.T) {
	cases := []struct {
		name  string
		edits []string
		args  []string
		want  string
	}{
		{"bad config", []string{"domain: lab.example.net", "domain: Not A Domain"}, nil, "cluster.domain"},
		{"dhcp without address", []string{"dhcp: false\n    address: 192.0.2.10/24\n    gateway: 192.0.2.1", "dhcp: true"}, nil, "management VM address"},
		{"bad set", nil, []string{"--set", "NOEQUALS"}, "NAME=VALUE"},
		{"unknown var", nil, []string{"--set", "NOPE=1"}, "unknown cluster variable NOPE"},
		{"no dir", nil, []string{"--mgmt-address"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := opsConfig(t, tc.edits...)
			args := append([]string{"ops", "render", "out", "-c", "opencsp.yaml"}, tc.args...)
			if tc.name == "no dir" {
				args = []string{"ops", "render", "-c", "opencsp.yaml"}
			}
			r := opencsp(t, dir, args...)
			if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("exit %d, stderr:\n%s", r.code, r.stderr)
			}
			for _, p := range []string{"out", ".opencsp"} {
				if exists(filepath.Join(dir, p)) {
					t.Errorf("%s written", p)
				}
			}
		})
	}

	// Unknown files in the owned folders: refused, nothing written.
	dir := opsConfig(t)
	if err := os.MkdirAll(filepath.Join(dir, "out/clusters/lab"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "out/clusters/lab/mine.yaml"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := opencsp(t, dir, "ops", "render", "out", "-c", "opencsp.yaml")
	if r.code != 2 || !strings.Contains(r.stderr, "clusters/lab/mine.yaml") || exists(filepath.Join(dir, "out/clusters/lab/cluster-vars.yaml")) {
		t.Errorf("unknown file: exit %d\n%s", r.code, r.stderr)
	}
	if r := opencsp(t, dir, "ops", "render", "out", "-c", "opencsp.yaml", "--adopt"); r.code != 0 || exists(filepath.Join(dir, "out/clusters/lab/mine.yaml")) {
		t.Errorf("adopt: exit %d\n%s", r.code, r.stderr)
	}
}
