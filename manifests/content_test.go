package manifests

import (
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/opencsp/installer/manifests/kbuild"
	"go.yaml.in/yaml/v3"
)

var exactVersionRE = regexp.MustCompile(`^v?\d+\.\d+\.\d+$`)

func TestHelmReleases(t *testing.T) {
	bs := built(t)
	for _, l := range Layers() {
		objs := bs[l.Name]
		repos := map[string]kbuild.Object{}
		var hrs []kbuild.Object
		for _, o := range objs {
			switch o.Kind() {
			case "HelmRepository":
				repos[o.Namespace()+"/"+o.Name()] = o
			case "HelmRelease":
				hrs = append(hrs, o)
			}
		}
		if (l.HelmRelease != "") != (len(hrs) > 0) {
			t.Errorf("%s: Layer.HelmRelease %q but the build has %d HelmReleases", l.Name, l.HelmRelease, len(hrs))
		}
		if len(hrs) > 1 {
			t.Errorf("%s: %d HelmReleases; overrides assume one", l.Name, len(hrs))
		}
		for _, hr := range hrs {
			id := l.Name + ": HelmRelease " + hr.Name()
			if hr.Name() != l.HelmRelease || hr.Namespace() != "flux-system" {
				t.Errorf("%s: want flux-system/%s", id, l.HelmRelease)
			}
			spec := hr.Map["spec"]
			chart, _ := kbuild.Get(spec, "chart", "spec").(map[string]any)
			version, _ := chart["version"].(string)
			if !exactVersionRE.MatchString(version) {
				t.Errorf("%s: chart version %q is not an exact version", id, version)
			}
			want, ok := ChartFor(l.Component)
			if !ok || want.Version != version || want.Chart != chart["chart"] {
				t.Errorf("%s: chart %v %q, Charts() says %q %q", id, chart["chart"], version, want.Chart, want.Version)
			}
			ref, _ := chart["sourceRef"].(map[string]any)
			repoID := fmt.Sprint(ref["namespace"]) + "/" + fmt.Sprint(ref["name"])
			repo, ok := repos[repoID]
			if ref["kind"] != "HelmRepository" || !ok {
				t.Errorf("%s: sourceRef %v is not a HelmRepository of the same build", id, ref)
			} else {
				url := str(kbuild.Get(repo.Map, "spec", "url"))
				if url != want.RepoURL {
					t.Errorf("%s: repository url %q, Charts() says %q", id, url, want.RepoURL)
				}
				isOCI := kbuild.Get(repo.Map, "spec", "type") == "oci"
				if isOCI != strings.HasPrefix(url, "oci://") {
					t.Errorf("%s: repository %s: type oci iff oci:// url", id, repoID)
				}
			}
			for _, p := range [][]string{{"releaseName"}, {"targetNamespace"}, {"storageNamespace"}, {"interval"}, {"timeout"}} {
				if str(kbuild.Get(spec, p...)) == "" {
					t.Errorf("%s: spec.%s must be set", id, strings.Join(p, "."))
				}
			}
			if kbuild.Get(spec, "install", "createNamespace") != true {
				t.Errorf("%s: install.createNamespace must be true", id)
			}
			if r, _ := kbuild.Get(spec, "install", "remediation", "retries").(int); r < 1 {
				t.Errorf("%s: install.remediation.retries must be >= 1", id)
			}
			if r, _ := kbuild.Get(spec, "upgrade", "remediation", "retries").(int); r < 1 {
				t.Errorf("%s: upgrade.remediation.retries must be >= 1", id)
			}
			if kbuild.Get(spec, "values") == nil {
				t.Errorf("%s: no values", id)
			}
		}
	}
}

var (
	varRefRE  = regexp.MustCompile(`\$\{([^}]*)\}`)
	bareVarRE = regexp.MustCompile(`\$[A-Za-z_]`)
	goodVarRE = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)
)

func substitutionDisabled(o kbuild.Object) bool {
	return kbuild.Get(o.Map, "metadata", "annotations", "kustomize.toolkit.fluxcd.io/substitute") == "disabled"
}

// secretKeys maps generated key -> Secret name.
func secretKeys() map[string]string {
	out := map[string]string{}
	for _, s := range Secrets() {
		for _, k := range s.Keys {
			out[k.Name] = s.Name
		}
	}
	return out
}

func TestVariables(t *testing.T) {
	keys := secretKeys()
	vars := VarNames()
	usedKeys := map[string]bool{}
	for _, l := range Layers() {
		usedSecrets := map[string]bool{}
		for _, o := range built(t)[l.Name] {
			text := string(o.YAML)
			if substitutionDisabled(o) {
				if strings.Contains(text, "${") {
					t.Errorf("%s: %s has substitution disabled but uses ${...}", l.Name, o.ID())
				}
				continue
			}
			if m := bareVarRE.FindString(text); m != "" {
				t.Errorf("%s: %s contains %q: Flux may substitute it; write ${VAR} or disable substitution", l.Name, o.ID(), m)
			}
			for _, m := range varRefRE.FindAllStringSubmatch(text, -1) {
				name := m[1]
				switch {
				case !goodVarRE.MatchString(name):
					t.Errorf("%s: %s: malformed variable ${%s}", l.Name, o.ID(), name)
				case slices.Contains(vars, name):
				case keys[name] != "":
					usedKeys[name] = true
					usedSecrets[keys[name]] = true
					if !slices.Contains(l.Secrets, keys[name]) {
						t.Errorf("%s: %s uses ${%s} of Secret %s, which the layer does not list in Secrets", l.Name, o.ID(), name, keys[name])
					}
				default:
					t.Errorf("%s: %s uses ${%s}, which is neither a cluster variable nor a generated secret key", l.Name, o.ID(), name)
				}
			}
			// valuesFrom Secrets are generated secrets too.
			if o.Kind() == "HelmRelease" {
				vf, _ := kbuild.Get(o.Map, "spec", "valuesFrom").([]any)
				for _, v := range vf {
					ref, _ := v.(map[string]any)
					if ref["kind"] != "Secret" {
						continue
					}
					name, key := str(ref["name"]), str(ref["valuesKey"])
					if keys[key] != name {
						t.Errorf("%s: valuesFrom Secret %s key %s is not a generated secret key", l.Name, name, key)
					}
					usedKeys[key] = true
					usedSecrets[name] = true
					if !slices.Contains(l.Secrets, name) {
						t.Errorf("%s: valuesFrom Secret %s not in the layer's Secrets", l.Name, name)
					}
				}
			}
		}
		for _, s := range l.Secrets {
			if !usedSecrets[s] {
				t.Errorf("%s: lists Secret %s but uses none of its keys", l.Name, s)
			}
		}
	}
	for k := range keys {
		if !usedKeys[k] {
			t.Errorf("generated secret key %s is used by no layer", k)
		}
	}
}

func TestValuesFromConfigMapsExist(t *testing.T) {
	cms := map[string]string{}
	for name, objs := range built(t) {
		for _, o := range objs {
			if o.Kind() == "ConfigMap" {
				cms[o.Namespace()+"/"+o.Name()] = name
			}
		}
	}
	for name, objs := range built(t) {
		for _, o := range objs {
			if o.Kind() != "HelmRelease" {
				continue
			}
			vf, _ := kbuild.Get(o.Map, "spec", "valuesFrom").([]any)
			for _, v := range vf {
				ref, _ := v.(map[string]any)
				if ref["kind"] != "ConfigMap" {
					continue
				}
				id := o.Namespace() + "/" + str(ref["name"])
				owner, ok := cms[id]
				switch {
				case !ok:
					t.Errorf("%s: valuesFrom ConfigMap %s is defined by no layer", name, id)
				case owner != name && ref["optional"] != true:
					t.Errorf("%s: valuesFrom ConfigMap %s comes from layer %s and must be optional", name, id, owner)
				}
				if ok && owner != name {
					l, _ := LayerByName(name)
					if !slices.ContainsFunc(l.After, func(x Optional) bool { return x.Layer == owner }) {
						t.Errorf("%s: reads ConfigMap %s of %s but is not ordered after it", name, id, owner)
					}
				}
			}
		}
	}
}

// Literal secrets: every Secret value is a ${VAR}, empty or a known
// non-secret field; every other field whose name looks secret holds a
// ${VAR} or names/points to a secret; no credential hides in strings.
var (
	sensitiveKeyRE = regexp.MustCompile(`(?i)(passw|secret|token|api.?key|access.?key|master.?key|private.?key|session.?key|encryption|salt|cookie|credential)`)
	referenceKeyRE = regexp.MustCompile(`(?i)(name|ref|file|path|_url|url|existing\w*secret|envvarssecret|configsecret|configstoragetype)$|^(passwordkey|userkey|valueskey|key|keys)$`)
	// "key": "value" JSON, key = "value" HCL, and user:password@ URLs.
	embeddedCredRE = regexp.MustCompile(`(?i)"(secretkey|accesskey|password|secret_key|access_key|client_secret|token)"\s*:\s*"([^"]*)"|(?m)^\s*(password|secret_key|access_key|client_secret|token)\s*=\s*"([^"]*)"|://[^/\s:@]+:([^@\s/]+)@`)
)

var nonSecretSecretKeys = []string{"username", "admin-user", "fullname", "email", "host", "port", "dbname"}

func literal(v string) bool { return v != "" && !strings.Contains(v, "${") }

func scanLiteralSecrets(where string, v any, path string, report func(string)) {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			p := path + "." + k
			if s, ok := val.(string); ok && sensitiveKeyRE.MatchString(k) && !referenceKeyRE.MatchString(k) && literal(s) {
				report(fmt.Sprintf("%s: %s = %q looks like a literal secret", where, p, s))
			}
			scanLiteralSecrets(where, val, p, report)
		}
	case []any:
		for i, val := range x {
			scanLiteralSecrets(where, val, fmt.Sprintf("%s[%d]", path, i), report)
		}
	case string:
		for _, m := range embeddedCredRE.FindAllStringSubmatch(x, -1) {
			for _, val := range []string{m[2], m[4], m[5]} {
				if literal(val) {
					report(fmt.Sprintf("%s: %s embeds a literal credential %q", where, path, m[0]))
				}
			}
		}
	}
}

func TestNoLiteralSecrets(t *testing.T) {
	report := func(s string) { t.Error(s) }
	for name, objs := range built(t) {
		for _, o := range objs {
			where := name + ": " + o.ID()
			if o.Kind() == "Secret" {
				if o.Map["data"] != nil {
					t.Errorf("%s: use stringData with ${VAR}s, not data", where)
				}
				sd, _ := o.Map["stringData"].(map[string]any)
				for k, v := range sd {
					s, _ := v.(string)
					if literal(s) && !slices.Contains(nonSecretSecretKeys, k) {
						t.Errorf("%s: stringData.%s is a literal", where, k)
					}
				}
			}
			scanLiteralSecrets(where, o.Map, "", report)
		}
	}
	// Files outside the builds (Terraform modules, READMEs).
	err := fs.WalkDir(FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(FS(), p)
		if err != nil {
			return err
		}
		scanLiteralSecrets(p, string(data), "", report)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The scanner itself must catch what it is meant to catch.
func TestLiteralSecretScanner(t *testing.T) {
	bad := []string{
		"stringData:\n  password: hunter2\n",
		"values:\n  adminPassword: hunter2\n",
		"env:\n  LAGO_API_KEY: abc\n",
		"config: |\n  {\"secretKey\": \"abc\"}\n",
		"url: postgresql://lago:hunter2@db:5432/lago\n",
		"hcl: |\n  secret_key = \"abc\"\n",
	}
	good := []string{
		"stringData:\n  password: \"${PW}\"\n",
		"existingSecret: grafana-admin\npasswordKey: admin-password\nsecretName: x-tls\n",
		"url: postgresql://lago:${PW}@db:5432/lago\n",
		"token_url: https://zitadel.example/oauth/v2/token\n",
		"clientSecretFile: /etc/x/client_secret\n",
	}
	count := func(doc string) int {
		var v any
		if err := yaml.Unmarshal([]byte(doc), &v); err != nil {
			t.Fatal(err)
		}
		n := 0
		scanLiteralSecrets("t", v, "", func(string) { n++ })
		return n
	}
	for _, d := range bad {
		if count(d) == 0 {
			t.Errorf("scanner misses %q", d)
		}
	}
	for _, d := range good {
		if n := count(d); n != 0 {
			t.Errorf("scanner flags %q", d)
		}
	}
}

func TestSecretSpecs(t *testing.T) {
	kinds := []KeyKind{KindPassword, KindStrongPassword, KindMasterkey32, KindHex32, KindHex64, KindBase64_32,
		KindS3AccessKey, KindS3SecretKey, KindRSA2048PEMBase64}
	names := map[string]bool{}
	keys := map[string]bool{}
	for _, s := range Secrets() {
		if s.Namespace != "flux-system" || s.Name == "" || names[s.Name] {
			t.Errorf("secret %s/%s: bad or duplicate", s.Namespace, s.Name)
		}
		names[s.Name] = true
		for _, k := range s.Keys {
			if !goodVarRE.MatchString(k.Name) || keys[k.Name] || slices.Contains(VarNames(), k.Name) {
				t.Errorf("secret %s: key %s is malformed, duplicate or clashes with a cluster variable", s.Name, k.Name)
			}
			keys[k.Name] = true
			if !slices.Contains(kinds, k.Kind) {
				t.Errorf("secret %s: key %s has unknown kind %q", s.Name, k.Name, k.Kind)
			}
			if k.Description == "" {
				t.Errorf("secret %s: key %s has no description", s.Name, k.Name)
			}
		}
	}
	for _, l := range Layers() {
		for _, s := range l.Secrets {
			if !names[s] {
				t.Errorf("layer %s lists unknown Secret %s", l.Name, s)
			}
		}
	}
	got := SecretsFor([]Layer{mustLayer(t, "lago")})
	var gotNames []string
	for _, s := range got {
		gotNames = append(gotNames, s.Name)
	}
	if want := []string{"postgres-credentials", "valkey-credentials", "s3-credentials", "lago-secrets"}; !slices.Equal(gotNames, want) {
		t.Errorf("SecretsFor(lago) = %v, want %v", gotNames, want)
	}
}

func mustLayer(t *testing.T, name string) Layer {
	t.Helper()
	l, ok := LayerByName(name)
	if !ok {
		t.Fatalf("no layer %s", name)
	}
	return l
}

func TestBuckets(t *testing.T) {
	want := map[string]bool{"management": false, "terraform-state": true, "cloud-images": false, "monitoring-logs": false}
	have := map[string]Bucket{}
	for _, b := range Buckets() {
		have[b.Name] = b
	}
	for name, versioned := range want {
		b, ok := have[name]
		if !ok || b.Versioned != versioned {
			t.Errorf("bucket %s: present=%v versioned=%v, want present, versioned=%v", name, ok, b.Versioned, versioned)
		}
	}
	for _, prefix := range []string{"loki-", "tempo-", "mimir-"} {
		if !slices.ContainsFunc(Buckets(), func(b Bucket) bool { return strings.HasPrefix(b.Name, prefix) }) {
			t.Errorf("no %s* telemetry bucket", prefix)
		}
	}
	// The seaweedfs HelmRelease creates exactly Buckets().
	var created []Bucket
	for _, o := range built(t)["seaweedfs"] {
		if o.Kind() != "HelmRelease" {
			continue
		}
		list, _ := kbuild.Get(o.Map, "spec", "values", "allInOne", "s3", "createBuckets").([]any)
		for _, e := range list {
			m, _ := e.(map[string]any)
			created = append(created, Bucket{Name: str(m["name"]), Versioned: m["versioning"] == "Enabled"})
		}
	}
	var wantList []Bucket
	for _, b := range Buckets() {
		wantList = append(wantList, Bucket{Name: b.Name, Versioned: b.Versioned})
	}
	if !slices.Equal(created, wantList) {
		t.Errorf("seaweedfs createBuckets = %v\nBuckets() = %v", created, wantList)
	}
	// Every bucket some manifest names exists (storage config, identities).
	for _, l := range Layers() {
		for _, o := range built(t)[l.Name] {
			for _, m := range regexp.MustCompile(`(?:bucket(?:_name)?|chunks|ruler|admin):\s*"?([a-z0-9-]+)"?\s*$|(?:Read|Write|List|Tagging):([a-z0-9-]+)`).FindAllStringSubmatch(string(o.YAML), -1) {
				name := m[1] + m[2]
				if strings.Contains(name, "-") && have[name].Name == "" && (strings.HasPrefix(name, "loki") || strings.HasPrefix(name, "tempo") || strings.HasPrefix(name, "mimir") || name == "terraform-state") {
					t.Errorf("%s: %s names bucket %s, which is not created", l.Name, o.ID(), name)
				}
			}
		}
	}
}

func TestVars(t *testing.T) {
	got, err := ResolveVars(ExampleVars())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(Vars()) {
		t.Errorf("ResolveVars returned %d values for %d variables", len(got), len(Vars()))
	}
	for _, v := range Vars() {
		if got[v.Name] != v.Example {
			t.Errorf("%s = %q, example %q", v.Name, got[v.Name], v.Example)
		}
		if v.Description == "" {
			t.Errorf("%s has no description", v.Name)
		}
	}
	bad := map[string]string{"CLUSTER_DOMAIN": "x", "NOPE": "1", "S3_HOST": "x:1", "S3_ENDPOINT": "ftp://x", "MANAGEMENT_ADDRESS": "a\"b"}
	_, err = ResolveVars(bad)
	for _, want := range []string{"unknown cluster variable NOPE", "S3_HOST is derived", "CLUSTER_NAME is required", "K3S_VERSION is required", "S3_ENDPOINT", "MANAGEMENT_ADDRESS contains"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ResolveVars(bad) error %v, want it to mention %q", err, want)
		}
	}
	defaults, err := ResolveVars(map[string]string{"CLUSTER_NAME": "a", "CLUSTER_DOMAIN": "a.b", "MANAGEMENT_ADDRESS": "192.0.2.1", "K3S_VERSION": "v1.33.5+k3s1"})
	if err != nil {
		t.Fatal(err)
	}
	if defaults["STORAGE_CLASS"] != "local-path" || defaults["S3_INSECURE"] != "true" || defaults["CLUSTER_DOMAIN_REGEX"] != `a\.b` {
		t.Errorf("defaults/derived wrong: %v", defaults)
	}
}

func TestTerraformPathsExist(t *testing.T) {
	for name, objs := range built(t) {
		for _, o := range objs {
			if o.Kind() != "Terraform" {
				continue
			}
			p := str(kbuild.Get(o.Map, "spec", "path"))
			rel, ok := strings.CutPrefix(p, "./"+RepoComponentsDir+"/")
			if !ok || !hasPath(rel+"/main.tf") {
				t.Errorf("%s: Terraform path %s is not a module folder of FS() under ./%s", name, p, RepoComponentsDir)
			}
		}
	}
}
