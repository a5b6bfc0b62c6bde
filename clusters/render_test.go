package clusters

import (
	"bytes"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencsp/installer/manifests"
	"github.com/opencsp/installer/manifests/kbuild"
	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from the current renderer")

const sampleCluster = "lab"

var sampleOverrides = map[string]Override{
	"grafana": {Version: "12.12.0", Values: map[string]any{
		"persistence": map[string]any{"size": "10Gi"},
		"grafana.ini": map[string]any{"server": map[string]any{"root_url": "https://metrics.${CLUSTER_DOMAIN}"}},
	}},
	"loki":      {Values: map[string]any{"loki": map[string]any{"limits_config": map[string]any{"retention_period": "168h"}}}},
	"semaphore": {Version: "16.3.0"},
}

func plan(t *testing.T, off ...string) []manifests.Layer {
	t.Helper()
	layers, _, err := manifests.Plan(func(c string) bool { return !slices.Contains(off, c) })
	if err != nil {
		t.Fatal(err)
	}
	return layers
}

func sample(t *testing.T) map[string][]byte {
	t.Helper()
	files, err := Render(sampleCluster, plan(t), manifests.ExampleVars(), Options{Overrides: sampleOverrides})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestGolden compares the rendered clusters/lab/ with testdata/golden/lab;
// go test ./clusters -run TestGolden -update rewrites it.
func TestGolden(t *testing.T) {
	files := sample(t)
	dir := filepath.Join("testdata", "golden", sampleCluster)
	if *update {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		for _, p := range Paths(files) {
			f := filepath.Join(dir, filepath.FromSlash(p))
			if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f, files[p], 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	var golden []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		golden = append(golden, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatalf("%v (run with -update to create the golden files)", err)
	}
	if got := Paths(files); !slices.Equal(got, golden) {
		t.Fatalf("rendered files %v\ngolden files %v", got, golden)
	}
	for _, p := range golden {
		want, _ := os.ReadFile(filepath.Join(dir, filepath.FromSlash(p)))
		if !bytes.Equal(files[p], want) {
			t.Errorf("%s differs from the golden file (run with -update after checking):\n%s", p, files[p])
		}
	}
}

func TestRenderIsDeterministic(t *testing.T) {
	a, b := sample(t), sample(t)
	for p := range a {
		if !bytes.Equal(a[p], b[p]) {
			t.Errorf("%s differs between two renders", p)
		}
	}
}

type renderedLayer struct {
	Metadata struct {
		Name      string
		Namespace string
	}
	Spec struct {
		DependsOn  []struct{ Name string }     `yaml:"dependsOn"`
		SourceRef  struct{ Kind, Name string } `yaml:"sourceRef"`
		Path       string
		Prune      bool
		Wait       bool
		Interval   string
		Timeout    string
		Decryption struct {
			Provider  string
			SecretRef struct{ Name string } `yaml:"secretRef"`
		}
		HealthChecks []map[string]string `yaml:"healthChecks"`
		PostBuild    struct {
			SubstituteFrom []struct{ Kind, Name string } `yaml:"substituteFrom"`
		} `yaml:"postBuild"`
		Patches []struct {
			Patch  string
			Target map[string]string
		}
	}
}

func checkRenderedLayers(t *testing.T, files map[string][]byte, layers []manifests.Layer) {
	t.Helper()
	var list struct{ Resources []string }
	if err := yaml.Unmarshal(files["layers/kustomization.yaml"], &list); err != nil {
		t.Fatal(err)
	}
	var want []string
	names := map[string]bool{}
	for _, l := range layers {
		want = append(want, l.Name+".yaml")
		names[l.Name] = true
	}
	if !slices.Equal(list.Resources, want) {
		t.Errorf("layers/kustomization.yaml = %v, want %v", list.Resources, want)
	}
	for _, l := range layers {
		var r renderedLayer
		if err := yaml.Unmarshal(files["layers/"+l.Name+".yaml"], &r); err != nil {
			t.Fatalf("%s: %v", l.Name, err)
		}
		s := r.Spec
		if r.Metadata.Name != l.Name || r.Metadata.Namespace != "flux-system" {
			t.Errorf("%s: metadata %+v", l.Name, r.Metadata)
		}
		if s.Path != "./components/"+l.Component+"/"+l.Name {
			t.Errorf("%s: path %s", l.Name, s.Path)
		}
		if _, err := fs.Stat(manifests.FS(), strings.TrimPrefix(s.Path, "./components/")+"/kustomization.yaml"); err != nil {
			t.Errorf("%s: path %s has no kustomization in manifests.FS()", l.Name, s.Path)
		}
		if !s.Prune || s.SourceRef.Kind != "GitRepository" || s.SourceRef.Name != "flux-system" {
			t.Errorf("%s: prune/sourceRef wrong: %+v %+v", l.Name, s.Prune, s.SourceRef)
		}
		if s.Decryption.Provider != "sops" || s.Decryption.SecretRef.Name != "sops-age" {
			t.Errorf("%s: decryption %+v", l.Name, s.Decryption)
		}
		if s.Wait != l.Wait || (!s.Wait && len(s.HealthChecks) == 0) {
			t.Errorf("%s: wait %v, health checks %v", l.Name, s.Wait, s.HealthChecks)
		}
		var deps []string
		for _, d := range s.DependsOn {
			deps = append(deps, d.Name)
			if !names[d.Name] {
				t.Errorf("%s: dangling dependsOn %s", l.Name, d.Name)
			}
		}
		if !slices.Equal(deps, l.DependsOn) {
			t.Errorf("%s: dependsOn %v, want %v", l.Name, deps, l.DependsOn)
		}
		sub := s.PostBuild.SubstituteFrom
		if len(sub) == 0 || sub[0].Kind != "ConfigMap" || sub[0].Name != "cluster-vars" {
			t.Errorf("%s: substituteFrom must start with ConfigMap cluster-vars: %+v", l.Name, sub)
		}
		var secrets []string
		for _, x := range sub[1:] {
			if x.Kind != "Secret" {
				t.Errorf("%s: substituteFrom %+v", l.Name, x)
			}
			secrets = append(secrets, x.Name)
		}
		if !slices.Equal(secrets, l.Secrets) {
			t.Errorf("%s: substituteFrom Secrets %v, want %v", l.Name, secrets, l.Secrets)
		}
	}
}

func TestRenderedLayers(t *testing.T) {
	checkRenderedLayers(t, sample(t), plan(t))
}

func TestRenderedPlansWithDisabledComponents(t *testing.T) {
	for _, off := range [][]string{
		{"zitadel"},
		{"seaweedfs"},
		{"teleport", "lago", "semaphore", "tetragon", "vector", "mimir", "tempo", "tofu-controller"},
		manifests.Components(),
	} {
		layers := plan(t, off...)
		files, err := RenderLayers(sampleCluster, layers, Options{Overrides: sampleOverrides})
		if err != nil {
			t.Fatalf("%v: %v", off, err)
		}
		checkRenderedLayers(t, files, layers)
		for p := range files {
			if !strings.HasPrefix(p, "layers/") {
				t.Errorf("RenderLayers wrote %s", p)
			}
		}
	}
}

func TestRenderErrors(t *testing.T) {
	layers := plan(t)
	cases := []struct {
		name    string
		cluster string
		layers  []manifests.Layer
		opts    Options
		want    string
	}{
		{"bad cluster", "Lab_1", layers, Options{}, "DNS label"},
		{"dangling", sampleCluster, layers[2:], Options{}, "not rendered"},
		{"duplicate", sampleCluster, append(slices.Clone(layers), layers[0]), Options{}, "twice"},
		{"unknown component", sampleCluster, layers, Options{Overrides: map[string]Override{"nope": {Version: "1.0.0"}}}, "unknown component nope"},
		{"range version", sampleCluster, layers, Options{Overrides: map[string]Override{"loki": {Version: "18.x"}}}, "not an exact chart version"},
		{"chart-less", sampleCluster, layers, Options{Overrides: map[string]Override{"console": {Version: "1.0.0"}}}, "has no Helm chart"},
	}
	for _, tc := range cases {
		_, err := RenderLayers(tc.cluster, tc.layers, tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
	// Overrides of disabled components are ignored.
	if _, err := RenderLayers(sampleCluster, plan(t, "console"), Options{Overrides: map[string]Override{"console": {Version: "1.0.0"}}}); err != nil {
		t.Errorf("override of a disabled component: %v", err)
	}
	if _, err := Render(sampleCluster, layers, map[string]string{"CLUSTER_NAME": "lab"}, Options{}); err == nil || !strings.Contains(err.Error(), "CLUSTER_DOMAIN is required") {
		t.Errorf("missing vars: %v", err)
	}
}

func TestClusterVars(t *testing.T) {
	b, err := RenderClusterVars(manifests.ExampleVars())
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Kind     string
		Metadata struct{ Name, Namespace string }
		Data     map[string]string
	}
	if err := yaml.Unmarshal(b, &cm); err != nil {
		t.Fatal(err)
	}
	if cm.Kind != "ConfigMap" || cm.Metadata.Name != "cluster-vars" || cm.Metadata.Namespace != "flux-system" {
		t.Errorf("metadata %+v", cm)
	}
	for _, v := range manifests.Vars() {
		if cm.Data[v.Name] != v.Example {
			t.Errorf("%s = %q, want %q", v.Name, cm.Data[v.Name], v.Example)
		}
	}
}

// TestOpsRepoBuilds assembles an ops repo (components/ from manifests.FS(),
// clusters/lab/ from Render, stand-ins for the flux stage's and opsrepo's
// files) and runs kustomize on the cluster folder, like the root
// Kustomization flux-system would.
func TestOpsRepoBuilds(t *testing.T) {
	b, err := kbuild.Load(manifests.FS(), "/components")
	if err != nil {
		t.Fatal(err)
	}
	files := sample(t)
	for p, data := range files {
		if err := b.WriteFile("clusters/lab/"+p, data); err != nil {
			t.Fatal(err)
		}
	}
	stub := func(p, doc string) {
		if err := b.WriteFile("clusters/lab/"+p, []byte(doc)); err != nil {
			t.Fatal(err)
		}
	}
	stub("flux-system/gotk-components.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: flux-system\n")
	stub("flux-system/gotk-sync.yaml", `apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: flux-system
  namespace: flux-system
spec:
  interval: 10m
  path: ./clusters/lab
  prune: true
  sourceRef:
    kind: GitRepository
    name: flux-system
`)
	for _, s := range manifests.Secrets() {
		stub(SecretFile(s.Name), "apiVersion: v1\nkind: Secret\nmetadata:\n  name: "+s.Name+"\n  namespace: flux-system\nstringData:\n  sops: stand-in\n")
	}
	objs, err := b.Build("clusters/lab")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.Kind()]++
		if o.Kind() == "Kustomization" && o.Name() == "flux-system" {
			if kbuild.Get(o.Map, "spec", "decryption", "secretRef", "name") != "sops-age" {
				t.Errorf("root Kustomization flux-system has no SOPS decryption: %v", o.Map["spec"])
			}
		}
	}
	if kinds["Kustomization"] != len(plan(t))+1 || kinds["ConfigMap"] != 1 || kinds["Secret"] != len(manifests.Secrets()) {
		t.Errorf("cluster build kinds %v", kinds)
	}

	// The override patch of a layer applies to its HelmRelease: emulate
	// kustomize-controller by patching the layer folder.
	var k renderedLayer
	if err := yaml.Unmarshal(files["layers/grafana.yaml"], &k); err != nil {
		t.Fatal(err)
	}
	if len(k.Spec.Patches) != 1 {
		t.Fatalf("grafana patches: %+v", k.Spec.Patches)
	}
	patchDoc, _ := yaml.Marshal(map[string]any{
		"apiVersion": "kustomize.config.k8s.io/v1beta1",
		"kind":       "Kustomization",
		"resources":  []string{"../../components/grafana/grafana"},
		"patches":    []any{map[string]any{"patch": k.Spec.Patches[0].Patch, "target": k.Spec.Patches[0].Target}},
	})
	if err := b.WriteFile("emulate/grafana/kustomization.yaml", patchDoc); err != nil {
		t.Fatal(err)
	}
	objs, err = b.Build("emulate/grafana")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.Kind() != "HelmRelease" {
			continue
		}
		if v := kbuild.Get(o.Map, "spec", "chart", "spec", "version"); v != "12.12.0" {
			t.Errorf("patched version %v", v)
		}
		if v := kbuild.Get(o.Map, "spec", "values", "persistence", "size"); v != "10Gi" {
			t.Errorf("patched persistence.size %v", v)
		}
		if v := kbuild.Get(o.Map, "spec", "values", "persistence", "storageClassName"); v != "${STORAGE_CLASS}" {
			t.Errorf("patch dropped sibling values: storageClassName %v", v)
		}
		if v := kbuild.Get(o.Map, "spec", "values", "grafana.ini", "auth.generic_oauth", "name"); v != "Zitadel" {
			t.Errorf("patch dropped sibling values: grafana.ini auth.generic_oauth.name %v", v)
		}
	}
}

func TestDuration(t *testing.T) {
	for in, want := range map[string]string{"10m": "10m", "2h": "2h", "90s": "1m30s"} {
		d, _ := parseDuration(in)
		if got := duration(d); got != want {
			t.Errorf("duration(%s) = %s", in, got)
		}
	}
}

func parseDuration(s string) (time.Duration, error) { return time.ParseDuration(s) }
