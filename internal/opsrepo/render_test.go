package opsrepo

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/getsops/sops/v3/decrypt"
	"go.yaml.in/yaml/v3"

	"github.com/opencsp/installer/clusters"
	"github.com/opencsp/installer/internal/opsrepo/sopsage"
	"github.com/opencsp/installer/manifests"
	"github.com/opencsp/installer/manifests/kbuild"
)

// writeTree writes a tree into a fresh directory and returns it.
func writeTree(t *testing.T, tree *Tree, dir string) string {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	if _, err := WriteDir(dir, tree, false); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestRenderBuilds(t *testing.T) {
	f := newFixture(t)
	tree := f.render(t, "")
	b, err := kbuild.Load(fstest.MapFS{}, "/")
	if err != nil {
		t.Fatal(err)
	}
	for p, data := range tree.Files {
		if err := b.WriteFile(p, data); err != nil {
			t.Fatal(err)
		}
	}
	// Stand-ins for the flux stage's files.
	_ = b.WriteFile("clusters/lab/flux-system/gotk-components.yaml", []byte("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: flux-system\n"))
	_ = b.WriteFile("clusters/lab/flux-system/gotk-sync.yaml", []byte("apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: flux-system\n  namespace: flux-system\nspec:\n  path: ./clusters/lab\n"))
	objs, err := b.Build("clusters/lab")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.Kind()]++
		if o.Kind() == "Secret" {
			if kbuild.Get(o.Map, "sops", "age") == nil || kbuild.Get(o.Map, "sops", "mac") == nil {
				t.Errorf("built Secret %s lost its sops metadata", o.Name())
			}
		}
	}
	if kinds["Secret"] != len(manifests.Secrets()) || kinds["ConfigMap"] != 1 || kinds["Kustomization"] != len(tree.Layers)+1 {
		t.Errorf("cluster build: %v", kinds)
	}
	for _, name := range tree.Layers {
		l, _ := manifests.LayerByName(name)
		if _, err := b.Build(strings.TrimPrefix(l.Path(), "./")); err != nil {
			t.Errorf("layer %s: %v", name, err)
		}
	}
	for _, c := range manifests.Components() {
		if _, err := b.Build(path.Join(ComponentsDir, c)); err != nil {
			t.Errorf("component %s: %v", c, err)
		}
	}
	// cluster-vars carries the config.
	var cm struct{ Data map[string]string }
	if err := yaml.Unmarshal(tree.Files["clusters/lab/cluster-vars.yaml"], &cm); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"CLUSTER_NAME": "lab", "CLUSTER_DOMAIN": "lab.example.net", "MANAGEMENT_ADDRESS": "192.0.2.10",
		"K3S_VERSION": "v1.33.5+k3s1", "STORAGE_CLASS": "local-path"} {
		if cm.Data[k] != want {
			t.Errorf("cluster-vars %s = %q, want %q", k, cm.Data[k], want)
		}
	}
	// The grafana override reaches its layer.
	if !bytes.Contains(tree.Files["clusters/lab/layers/grafana.yaml"], []byte("version: 12.12.0")) {
		t.Error("grafana version override missing")
	}
}

func TestRenderDeterministicAndStable(t *testing.T) {
	f := newFixture(t)
	first := f.render(t, "")
	dir := writeTree(t, first, "")
	second := f.render(t, dir)
	third := f.render(t, dir)
	for _, tr := range []*Tree{second, third} {
		if !slices.Equal(tr.Paths(), first.Paths()) {
			t.Fatalf("paths differ")
		}
		for p, data := range first.Files {
			if !bytes.Equal(tr.Files[p], data) {
				t.Errorf("%s differs on re-render", p)
			}
		}
	}
	if ch, err := WriteDir(dir, third, false); err != nil || len(ch) != 0 {
		t.Errorf("rewrite: %v %v", ch, err)
	}

	// A config change keeps every secret value and ciphertext.
	f.cfg.Cluster.Domain = "other.example.net"
	changed := f.render(t, dir)
	for _, s := range manifests.Secrets() {
		p := "clusters/lab/" + clusters.SecretFile(s.Name)
		if !bytes.Equal(changed.Files[p], first.Files[p]) {
			t.Errorf("%s re-encrypted after an unrelated change", p)
		}
	}
	if bytes.Equal(changed.Files["clusters/lab/cluster-vars.yaml"], first.Files["clusters/lab/cluster-vars.yaml"]) {
		t.Error("domain change not rendered")
	}

	// A key added to a Secret (here: a value removed from the file) is
	// generated; the others are kept.
	spec := manifests.Secrets()[0]
	p := "clusters/lab/" + clusters.SecretFile(spec.Name)
	vals := maps2(first.values[spec.Name])
	delete(vals, spec.Keys[0].Name)
	plain, _ := secretManifest(manifests.SecretSpec{Namespace: spec.Namespace, Name: spec.Name, Keys: spec.Keys[1:]}, vals)
	enc, err := sopsage.Encrypt(plain, f.key.Recipient(), f.input().Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, p), enc, 0o644); err != nil {
		t.Fatal(err)
	}
	fourth := f.render(t, dir)
	for _, k := range spec.Keys {
		got, was := fourth.values[spec.Name][k.Name], first.values[spec.Name][k.Name]
		if (k.Name == spec.Keys[0].Name) == (got == was) {
			t.Errorf("%s: kept %v", k.Name, got == was)
		}
	}
}

func maps2(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestSecretsDecryptAndNeverLeak(t *testing.T) {
	f := newFixture(t)
	tree := f.render(t, "")
	dir := writeTree(t, tree, "")
	secrets := append(treeSecrets(tree), f.key.Secret())
	if len(secrets) < 30 {
		t.Fatalf("only %d secrets", len(secrets))
	}
	scanDir(t, dir, secrets)
	if l := leaks(f.log.Bytes(), secrets); len(l) > 0 {
		t.Errorf("log contains secrets %v:\n%s", l, f.log.String())
	}
	if !strings.Contains(f.log.String(), "encrypted secret") {
		t.Errorf("log lacks progress:\n%s", f.log.String())
	}
	for _, s := range secrets {
		if got := f.redactor.Redact("x" + s + "x"); got != "x[REDACTED]x" {
			t.Errorf("redactor does not know a secret")
		}
	}

	kindRE := map[manifests.KeyKind]*regexp.Regexp{
		manifests.KindPassword: regexp.MustCompile(`^[A-Za-z0-9]{32}$`), manifests.KindS3AccessKey: regexp.MustCompile(`^[A-Z0-9]{20}$`),
		manifests.KindHex32: regexp.MustCompile(`^[0-9a-f]{64}$`), manifests.KindMasterkey32: regexp.MustCompile(`^[A-Za-z0-9]{32}$`),
	}
	t.Setenv("SOPS_AGE_KEY", f.key.Secret())
	for _, spec := range manifests.Secrets() {
		enc := tree.Files["clusters/lab/"+clusters.SecretFile(spec.Name)]
		var meta struct {
			Sops struct {
				Age            []struct{ Recipient string }
				EncryptedRegex string `yaml:"encrypted_regex"`
			}
		}
		if err := yaml.Unmarshal(enc, &meta); err != nil {
			t.Fatal(err)
		}
		if len(meta.Sops.Age) != 1 || meta.Sops.Age[0].Recipient != f.key.Recipient() || meta.Sops.EncryptedRegex != "^(data|stringData)$" {
			t.Errorf("%s: sops metadata %+v", spec.Name, meta.Sops)
		}
		plain, err := decrypt.Data(enc, "yaml")
		if err != nil {
			t.Fatalf("%s: %v", spec.Name, err)
		}
		var s struct {
			Metadata   struct{ Name, Namespace string }
			StringData map[string]string `yaml:"stringData"`
		}
		if err := yaml.Unmarshal(plain, &s); err != nil {
			t.Fatal(err)
		}
		if s.Metadata.Name != spec.Name || s.Metadata.Namespace != "flux-system" || len(s.StringData) != len(spec.Keys) {
			t.Errorf("%s: decrypted %+v", spec.Name, s.Metadata)
		}
		for _, k := range spec.Keys {
			v := s.StringData[k.Name]
			if v != tree.values[spec.Name][k.Name] {
				t.Errorf("%s/%s: decrypted value differs from the generated one", spec.Name, k.Name)
			}
			if re := kindRE[k.Kind]; re != nil && !re.MatchString(v) {
				t.Errorf("%s/%s: %s value has the wrong shape", spec.Name, k.Name, k.Kind)
			}
		}
	}
}

func TestDisabledComponentLeavesTheTree(t *testing.T) {
	f := newFixture(t)
	dir := writeTree(t, f.render(t, ""), "")
	if _, err := os.Stat(filepath.Join(dir, "clusters/lab/layers/zitadel.yaml")); err != nil {
		t.Fatal(err)
	}
	off := false
	f.cfg.Components["zitadel"] = configComponent(&off)
	tree := f.render(t, dir)
	changes, err := WriteDir(dir, tree, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{"zitadel", "zitadel-oidc-apps", "semaphore", "console", "teleport"} {
		p := "clusters/lab/layers/" + gone + ".yaml"
		if _, ok := tree.Files[p]; ok {
			t.Errorf("%s still rendered", p)
		}
		if _, err := os.Stat(filepath.Join(dir, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still on disk: %v", p, err)
		}
		if bytes.Contains(tree.Files["clusters/lab/layers/kustomization.yaml"], []byte(" "+gone+".yaml")) {
			t.Errorf("%s still listed", gone)
		}
	}
	if !slices.Contains(changes, Change{"clusters/lab/layers/zitadel.yaml", Removed}) {
		t.Errorf("changes %v", changes)
	}
	// The shared component folder stays (other clusters may use it).
	if _, ok := tree.Files["components/zitadel/zitadel/kustomization.yaml"]; !ok {
		t.Error("components/zitadel dropped")
	}
	msg := CommitMessage(tree, changes)
	if !strings.HasPrefix(msg, "opencsp v0.1.0: render cluster lab\n\n") || !strings.Contains(msg, "Layers removed: console, semaphore, zitadel, zitadel-oidc-apps\n") {
		t.Errorf("message:\n%s", msg)
	}
}

func TestWriteDirOwnership(t *testing.T) {
	f := newFixture(t)
	tree := f.render(t, "")
	dir := t.TempDir()
	write := func(p, s string) {
		t.Helper()
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("README.md", "mine")
	write("clusters/other/kustomization.yaml", "other cluster")
	write("clusters/lab/notes.txt", "hand-made")
	write("components/extra/x.yaml", "hand-made")
	_, err := WriteDir(dir, tree, false)
	var unknown *UnknownFilesError
	if !errors.As(err, &unknown) || !errors.Is(err, ErrUnknownFiles) ||
		!slices.Equal(unknown.Paths, []string{"clusters/lab/notes.txt", "components/extra/x.yaml"}) {
		t.Fatalf("unknown files: %v", err)
	}
	if !strings.Contains(err.Error(), "--adopt") {
		t.Errorf("error does not say how to proceed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "clusters/lab/cluster-vars.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Error("refused write changed the folder")
	}
	// A file another cluster's record lists under components/ is kept.
	write("clusters/other/.opencsp-files", "components/extra/x.yaml\n")
	_, err = WriteDir(dir, tree, false)
	if !errors.As(err, &unknown) || !slices.Equal(unknown.Paths, []string{"clusters/lab/notes.txt"}) {
		t.Fatalf("unknown files: %v", err)
	}
	changes, err := WriteDir(dir, tree, true)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(changes, Change{"clusters/lab/notes.txt", Removed}) || len(changes) != len(tree.Files)+1 {
		t.Errorf("adopt: %d changes", len(changes))
	}
	for p, want := range map[string]string{"README.md": "mine", "clusters/other/kustomization.yaml": "other cluster", "components/extra/x.yaml": "hand-made"} {
		if got, err := os.ReadFile(filepath.Join(dir, p)); err != nil || string(got) != want {
			t.Errorf("%s: %q %v", p, got, err)
		}
	}
	// A hand edit of an owned file is overwritten.
	write("clusters/lab/cluster-vars.yaml", "edited")
	changes, err = WriteDir(dir, tree, false)
	if err != nil || !slices.Equal(changes, []Change{{"clusters/lab/cluster-vars.yaml", Updated}}) {
		t.Errorf("re-write: %v %v", changes, err)
	}
	// Symlinks are never written through.
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "clusters/lab/link")); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteDir(dir, tree, false); !errors.Is(err, ErrUnknownFiles) {
		t.Errorf("symlink: %v", err)
	}
}

func TestRenderRefusesForeignSecrets(t *testing.T) {
	f := newFixture(t)
	dir := writeTree(t, f.render(t, ""), "")
	other := newFixture(t)
	in := other.input()
	in.Existing = os.DirFS(dir)
	_, err := Render(context.Background(), in)
	if !errors.Is(err, ErrSecretUnreadable) || !strings.Contains(err.Error(), other.key.Recipient()) {
		t.Errorf("foreign key: %v", err)
	}
}

func TestRenderInputErrors(t *testing.T) {
	cases := []struct {
		name  string
		edits []string
		mod   func(*RenderInput)
		want  string
	}{
		{"dhcp without address", []string{"dhcp: false\n    address: 192.0.2.10/24\n    gateway: 192.0.2.1", "dhcp: true"}, nil, "management VM address"},
		{"bad address", nil, func(in *RenderInput) { in.MgmtAddress = "vm.example" }, "not an IP address"},
		{"config var", nil, func(in *RenderInput) { in.Vars = map[string]string{"CLUSTER_DOMAIN": "x"} }, "comes from the config"},
		{"unknown var", nil, func(in *RenderInput) { in.Vars = map[string]string{"NOPE": "x"} }, "unknown cluster variable NOPE"},
		{"chart-less override", []string{"  teleport:\n", "  console:\n    version: 1.0.0\n  teleport:\n"}, nil, "has no Helm chart"},
		{"components path", []string{"branch: main", "branch: main\n  path: components/lab"}, nil, "overlaps"},
		{"extra secret", nil, func(in *RenderInput) { in.Extra = map[string][]byte{"secrets/x.sops.yaml": nil} }, "written by opsrepo"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.edits...)
			in := f.input()
			if tc.mod != nil {
				tc.mod(&in)
			}
			_, err := Render(context.Background(), in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if tc.name != "extra secret" && !errors.Is(err, ErrInvalidInput) {
				t.Errorf("not an input error: %v", err)
			}
		})
	}
}

func TestRenderExtrasAndDHCPAddress(t *testing.T) {
	f := newFixture(t, "dhcp: false\n    address: 192.0.2.10/24\n    gateway: 192.0.2.1", "dhcp: true")
	in := f.input()
	in.MgmtAddress = "198.51.100.7"
	in.Vars = map[string]string{"STORAGE_CLASS": "fast"}
	in.Extra = map[string][]byte{"flux-system/gotk-sync.yaml": []byte("sync\n")}
	tree, err := Render(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	cv := string(tree.Files["clusters/lab/cluster-vars.yaml"])
	if !strings.Contains(cv, `MANAGEMENT_ADDRESS: "198.51.100.7"`) || !strings.Contains(cv, `STORAGE_CLASS: "fast"`) {
		t.Errorf("cluster-vars:\n%s", cv)
	}
	if string(tree.Files["clusters/lab/flux-system/gotk-sync.yaml"]) != "sync\n" ||
		!bytes.Contains(tree.Files["clusters/lab/.opencsp-files"], []byte("\nclusters/lab/flux-system/gotk-sync.yaml\n")) {
		t.Error("extra file not rendered or not recorded")
	}
	if !bytes.Contains(tree.Files["clusters/lab/.sops.yaml"], []byte("age: "+f.key.Recipient())) {
		t.Error(".sops.yaml lacks the recipient")
	}
}

func TestAgeKey(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state", "age.key")
	k, created, err := LoadOrCreateAgeKey(p)
	if err != nil || !created {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v %v", st.Mode(), err)
	}
	again, created, err := LoadOrCreateAgeKey(p)
	if err != nil || created || again.Secret() != k.Secret() {
		t.Fatal("second load differs", err, created)
	}
	if err := os.WriteFile(p, []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateAgeKey(p); err == nil || strings.Contains(err.Error(), "garbage") {
		t.Errorf("bad key file: %v", err)
	}
	if got, _ := os.ReadFile(p); string(got) != "garbage\n" {
		t.Error("bad key file replaced")
	}

	var s struct {
		Kind     string
		Metadata struct{ Name, Namespace string }
		Data     map[string]string
	}
	if err := yaml.Unmarshal(AgeSecretManifest(k), &s); err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(s.Data["age.agekey"])
	back, err := sopsage.ParseKey(raw)
	if s.Kind != "Secret" || s.Metadata.Name != "sops-age" || s.Metadata.Namespace != "flux-system" || err != nil || back.Secret() != k.Secret() {
		t.Errorf("sops-age Secret: %+v %v", s, err)
	}

	cfg := sampleConfig(t)
	if got := AgeKeyPath(cfg, "/state"); got != "/state/age.key" {
		t.Errorf("default path %s", got)
	}
	cfg.Secrets.AgeKeyFile = "keys/age.txt"
	if got := AgeKeyPath(cfg, "/state"); got != filepath.Join(cfg.BaseDir(), "keys/age.txt") {
		t.Errorf("configured path %s", got)
	}
}

func TestRenderCreatesAgeKeyInStateDir(t *testing.T) {
	f := newFixture(t)
	in := f.input()
	in.AgeKey = nil
	in.StateDir = t.TempDir()
	tree, err := Render(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	k, created, err := LoadOrCreateAgeKey(filepath.Join(in.StateDir, "age.key"))
	if err != nil || created || k.Recipient() != tree.Recipient {
		t.Errorf("state key: %v %v", created, err)
	}
	if strings.Contains(f.log.String(), k.Secret()) {
		t.Error("age key logged")
	}
}
