package manifests

import (
	"io/fs"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/manifests/kbuild"
	"go.yaml.in/yaml/v3"
)

var (
	buildOnce   sync.Once
	builds      map[string][]kbuild.Object // layer name -> objects
	compBuilds  map[string][]kbuild.Object // component folder -> objects
	buildErrors map[string]error
)

// built runs kustomize once per layer and per component folder and caches
// the results for every test.
func built(t *testing.T) map[string][]kbuild.Object {
	t.Helper()
	buildOnce.Do(func() {
		builds, compBuilds, buildErrors = map[string][]kbuild.Object{}, map[string][]kbuild.Object{}, map[string]error{}
		b, err := kbuild.Load(FS(), "/")
		if err != nil {
			buildErrors["load"] = err
			return
		}
		for _, l := range Layers() {
			objs, err := b.Build(l.Dir())
			if err != nil {
				buildErrors[l.Name] = err
				continue
			}
			builds[l.Name] = objs
		}
		for _, c := range append([]string{BaseComponent}, Components()...) {
			objs, err := b.Build(c)
			if err != nil {
				buildErrors["component "+c] = err
				continue
			}
			compBuilds[c] = objs
		}
	})
	for k, err := range buildErrors {
		t.Fatalf("build %s: %v", k, err)
	}
	return builds
}

func TestComponentsMatchConfig(t *testing.T) {
	if got, want := Components(), config.ComponentNames(); !slices.Equal(got, want) {
		t.Fatalf("layer components (rollout order) = %v\nconfig components = %v", got, want)
	}
	// Folders of FS(): exactly base + components, each with exactly its
	// layers and a kustomization listing them.
	entries, err := fs.ReadDir(FS(), ".")
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range entries {
		dirs = append(dirs, e.Name())
	}
	want := append([]string{BaseComponent}, Components()...)
	sort.Strings(want)
	if !slices.Equal(dirs, want) {
		t.Fatalf("FS() folders = %v, want %v", dirs, want)
	}
	for _, c := range want {
		var layers []string
		for _, l := range Layers() {
			if l.Component == c {
				layers = append(layers, l.Name)
			}
		}
		var sub []string
		ents, _ := fs.ReadDir(FS(), c)
		for _, e := range ents {
			if e.IsDir() {
				sub = append(sub, e.Name())
			}
		}
		sorted := slices.Sorted(slices.Values(layers))
		if !slices.Equal(sub, sorted) {
			t.Errorf("%s: layer folders %v, want %v", c, sub, sorted)
		}
		var k struct{ Resources []string }
		data, err := fs.ReadFile(FS(), c+"/kustomization.yaml")
		if err != nil {
			t.Errorf("%s: %v", c, err)
			continue
		}
		if err := yaml.Unmarshal(data, &k); err != nil {
			t.Errorf("%s/kustomization.yaml: %v", c, err)
		}
		if !slices.Equal(k.Resources, layers) {
			t.Errorf("%s/kustomization.yaml resources = %v, want the layers in rollout order %v", c, k.Resources, layers)
		}
	}
}

// expectedKinds lists kinds each layer build must contain.
var expectedKinds = map[string][]string{
	"namespaces":                {"Namespace"},
	"cluster-dns":               {"ConfigMap"},
	"cert-manager":              {"HelmRepository", "HelmRelease"},
	"cluster-issuers":           {"ClusterIssuer", "Certificate"},
	"cnpg-operator":             {"HelmRepository", "HelmRelease"},
	"postgres-cluster":          {"Secret", "Cluster", "Database"},
	"valkey":                    {"HelmRepository", "HelmRelease", "Secret"},
	"seaweedfs":                 {"HelmRepository", "HelmRelease", "Secret", "Ingress"},
	"tetragon":                  {"HelmRepository", "HelmRelease"},
	"tracing-policies":          {"TracingPolicy"},
	"system-upgrade-controller": {"CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ConfigMap", "Deployment"},
	"k3s-plans":                 {"Plan"},
	"tofu-controller":           {"HelmRepository", "HelmRelease", "Secret"},
	"zitadel":                   {"HelmRepository", "HelmRelease", "Secret"},
	"zitadel-oidc-apps":         {"Terraform", "Certificate", "Role", "RoleBinding", "ClusterRole"},
	"loki":                      {"HelmRepository", "HelmRelease", "Secret", "ConfigMap"},
	"tempo":                     {"HelmRepository", "HelmRelease", "Secret", "ConfigMap"},
	"mimir":                     {"HelmRepository", "HelmRelease", "Secret", "ConfigMap"},
	"grafana":                   {"HelmRepository", "HelmRelease", "Secret"},
	"otel-collector":            {"HelmRepository", "HelmRelease", "ConfigMap"},
	"vector":                    {"HelmRepository", "HelmRelease", "ConfigMap"},
	"lago":                      {"HelmRepository", "HelmRelease", "Secret", "Ingress"},
	"semaphore":                 {"HelmRepository", "HelmRelease", "Secret"},
	"teleport":                  {"HelmRepository", "HelmRelease", "Certificate", "IngressRouteTCP"},
	"console":                   {"Secret", "ServiceAccount", "Deployment", "Service", "Ingress"},
}

func TestEveryLayerBuilds(t *testing.T) {
	bs := built(t)
	for _, l := range Layers() {
		objs := bs[l.Name]
		want, ok := expectedKinds[l.Name]
		if !ok {
			t.Errorf("%s: no expected kinds in the test table", l.Name)
		}
		var kinds []string
		for _, o := range objs {
			kinds = append(kinds, o.Kind())
		}
		for _, k := range want {
			if !slices.Contains(kinds, k) {
				t.Errorf("%s: build has kinds %v, missing %s", l.Name, kinds, k)
			}
		}
	}
}

func TestEveryComponentFolderBuilds(t *testing.T) {
	bs := built(t)
	for c, objs := range compBuilds {
		n := 0
		for _, l := range Layers() {
			if l.Component == c {
				n += len(bs[l.Name])
			}
		}
		if len(objs) != n {
			t.Errorf("component %s builds %d objects, its layers %d", c, len(objs), n)
		}
	}
}

// allowedKinds is the known set of apiVersion -> kinds.
var allowedKinds = map[string][]string{
	"v1":                               {"Namespace", "ConfigMap", "Secret", "ServiceAccount", "Service"},
	"apps/v1":                          {"Deployment"},
	"networking.k8s.io/v1":             {"Ingress"},
	"rbac.authorization.k8s.io/v1":     {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"},
	"apiextensions.k8s.io/v1":          {"CustomResourceDefinition"},
	"source.toolkit.fluxcd.io/v1":      {"HelmRepository"},
	"helm.toolkit.fluxcd.io/v2":        {"HelmRelease"},
	"cert-manager.io/v1":               {"ClusterIssuer", "Certificate"},
	"postgresql.cnpg.io/v1":            {"Cluster", "Database"},
	"traefik.io/v1alpha1":              {"IngressRouteTCP"},
	"cilium.io/v1alpha1":               {"TracingPolicy"},
	"upgrade.cattle.io/v1":             {"Plan"},
	"infra.contrib.fluxcd.io/v1alpha2": {"Terraform"},
}

var clusterScoped = []string{"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "ClusterIssuer", "TracingPolicy"}

// platformGroups need no Core layer: Kubernetes itself, Flux, K3s Traefik.
var platformGroups = []string{"", "apps", "networking.k8s.io", "rbac.authorization.k8s.io", "apiextensions.k8s.io",
	"source.toolkit.fluxcd.io", "helm.toolkit.fluxcd.io", "kustomize.toolkit.fluxcd.io", "traefik.io"}

func group(apiVersion string) string {
	if g, _, ok := strings.Cut(apiVersion, "/"); ok {
		return g
	}
	return ""
}

func TestObjectStructure(t *testing.T) {
	seen := map[string]string{} // object id -> layer
	for name, objs := range built(t) {
		for _, o := range objs {
			kinds, ok := allowedKinds[o.APIVersion()]
			if !ok || !slices.Contains(kinds, o.Kind()) {
				t.Errorf("%s: %s %s is not in the known apiVersion/kind set", name, o.APIVersion(), o.Kind())
			}
			if o.Name() == "" {
				t.Errorf("%s: %s without metadata.name", name, o.Kind())
			}
			if slices.Contains(clusterScoped, o.Kind()) != (o.Namespace() == "") {
				t.Errorf("%s: %s: namespace %q is wrong for a %s", name, o.ID(), o.Namespace(), o.Kind())
			}
			if prev, dup := seen[o.ID()]; dup {
				t.Errorf("%s applied by two layers: %s and %s (prune would fight)", o.ID(), prev, name)
			}
			seen[o.ID()] = name
		}
	}
}

func TestNamespacesComeFirst(t *testing.T) {
	var core []string
	for _, o := range built(t)["namespaces"] {
		core = append(core, o.Name())
		if a := kbuild.Get(o.Map, "metadata", "annotations", "kustomize.toolkit.fluxcd.io/prune"); a != "disabled" {
			t.Errorf("namespace %s: pruning must be disabled", o.Name())
		}
	}
	full := map[string]Layer{}
	for _, l := range Layers() {
		full[l.Name] = l
	}
	for name, objs := range built(t) {
		for _, o := range objs {
			ns := o.Namespace()
			for _, tns := range []string{ns, str(kbuild.Get(o.Map, "spec", "targetNamespace"))} {
				if tns == "" || tns == "kube-system" || tns == "flux-system" {
					continue
				}
				if !slices.Contains(core, tns) {
					t.Errorf("%s: %s uses namespace %s, which the namespaces layer does not create", name, o.ID(), tns)
				}
				if name != "namespaces" && !requiresTransitively(full, name, "namespaces") {
					t.Errorf("%s: uses namespace %s but does not depend on the namespaces layer", name, tns)
				}
			}
		}
	}
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// requiresTransitively reports whether layer a hard-requires b, directly or
// through other layers.
func requiresTransitively(full map[string]Layer, a, b string) bool {
	seen := map[string]bool{}
	var walk func(string) bool
	walk = func(n string) bool {
		if seen[n] {
			return false
		}
		seen[n] = true
		for _, r := range full[n].Requires {
			if r == b || walk(r) {
				return true
			}
		}
		return false
	}
	return walk(a)
}

// dependsTransitively is the same over the full dependsOn graph (hard and
// soft edges).
func dependsTransitively(full map[string]Layer, a, b string) bool {
	seen := map[string]bool{}
	var walk func(string) bool
	walk = func(n string) bool {
		if seen[n] {
			return false
		}
		seen[n] = true
		for _, r := range full[n].DependsOn {
			if r == b || walk(r) {
				return true
			}
		}
		return false
	}
	return walk(a)
}

func TestCRDConsumersAfterProducers(t *testing.T) {
	full := map[string]Layer{}
	providers := map[string]string{}
	for _, l := range Layers() {
		full[l.Name] = l
		for _, g := range l.Provides {
			if p, dup := providers[g]; dup {
				t.Errorf("group %s provided by %s and %s", g, p, l.Name)
			}
			providers[g] = l.Name
		}
	}
	for name, objs := range built(t) {
		for _, o := range objs {
			g := group(o.APIVersion())
			if slices.Contains(platformGroups, g) {
				continue
			}
			p, ok := providers[g]
			switch {
			case !ok:
				t.Errorf("%s: %s uses API group %s that no layer provides", name, o.ID(), g)
			case p == name:
				t.Errorf("%s: %s is applied in the layer that installs its CRD; move it one layer later", name, o.ID())
			case !requiresTransitively(full, name, p):
				t.Errorf("%s: %s needs the CRDs of %s, which the layer does not require", name, o.ID(), p)
			}
		}
	}
}

// hasPath reports whether the YAML file at p exists in FS().
func hasPath(p string) bool {
	_, err := fs.Stat(FS(), path.Clean(p))
	return err == nil
}
