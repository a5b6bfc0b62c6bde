// Package clusters renders the per-cluster part of the ops repository,
// clusters/<cluster>/: the root kustomization, the flux-system placeholder,
// the cluster-vars ConfigMap, the list of SOPS-encrypted Secrets and one Flux
// Kustomization per planned layer of manifests. The layout is documented in
// manifests/README.md.
package clusters

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/opencsp/installer/manifests"
	"go.yaml.in/yaml/v3"
)

//go:embed all:templates
var templates embed.FS

// Templates returns the static files of clusters/<cluster>/ (root
// kustomization.yaml, flux-system/kustomization.yaml and README.md).
func Templates() fs.FS {
	sub, err := fs.Sub(templates, "templates")
	if err != nil {
		panic(err)
	}
	return sub
}

// Files of clusters/<cluster>/.
const (
	ClusterVarsFile = "cluster-vars.yaml"
	SecretsDir      = "secrets"
	LayersDir       = "layers"
	// SourceName is the GitRepository of the ops repo created by bootstrap.
	SourceName = "flux-system"
	// SOPSSecretName holds the age key kustomize-controller decrypts with.
	SOPSSecretName = "sops-age"
)

// SecretFile is the path (relative to clusters/<cluster>/) of the
// SOPS-encrypted manifest of a generated Secret.
func SecretFile(name string) string { return SecretsDir + "/" + name + ".sops.yaml" }

// Override changes a component's HelmRelease for one cluster (config
// components.<name>.version/values): Version replaces chart.spec.version,
// Values are merged over the release values (maps merge, lists replace,
// null deletes). Values go through the same ${VAR} substitution as the
// manifests.
type Override struct {
	Version string
	Values  map[string]any
}

// Options tune the rendering.
type Options struct {
	// Overrides by component name. Overrides of components that have no
	// planned layer (disabled) are ignored.
	Overrides map[string]Override
}

var (
	dnsLabelRE = regexp.MustCompile(`^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$`)
	versionRE  = regexp.MustCompile(`^v?\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$`)
)

// Render returns every file of clusters/<cluster>/ (paths relative to that
// folder) except flux-system/gotk-*.yaml (flux stage) and the encrypted
// Secrets (secrets/<name>.sops.yaml, opsrepo): the templates, cluster-vars,
// secrets/kustomization.yaml for manifests.Secrets() and the layers.
func Render(cluster string, layers []manifests.Layer, vars map[string]string, opts Options) (map[string][]byte, error) {
	out, err := RenderLayers(cluster, layers, opts)
	if err != nil {
		return nil, err
	}
	cv, err := RenderClusterVars(vars)
	if err != nil {
		return nil, err
	}
	out[ClusterVarsFile] = cv
	out[SecretsDir+"/kustomization.yaml"] = RenderSecretsKustomization(manifests.Secrets())
	err = fs.WalkDir(Templates(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(Templates(), p)
		out[p] = data
		return err
	})
	return out, err
}

// RenderClusterVars renders the ConfigMap flux-system/cluster-vars from the
// installer's values (see manifests.ResolveVars: defaults are applied and
// derived values computed; unknown or missing values are errors).
func RenderClusterVars(values map[string]string) ([]byte, error) {
	resolved, err := manifests.ResolveVars(values)
	if err != nil {
		return nil, fmt.Errorf("cluster-vars: %w", err)
	}
	data := yaml.Node{Kind: yaml.MappingNode}
	for _, name := range manifests.VarNames() {
		data.Content = append(data.Content,
			&yaml.Node{Kind: yaml.ScalarNode, Value: name},
			&yaml.Node{Kind: yaml.ScalarNode, Value: resolved[name], Style: yaml.DoubleQuotedStyle})
	}
	doc := struct {
		APIVersion string     `yaml:"apiVersion"`
		Kind       string     `yaml:"kind"`
		Metadata   metadata   `yaml:"metadata"`
		Data       *yaml.Node `yaml:"data"`
	}{"v1", "ConfigMap", metadata{Name: manifests.ClusterVarsName, Namespace: manifests.SecretsNamespace}, &data}
	return marshal("# Cluster values for Flux postBuild substitution (${NAME} in components/).\n"+
		"# Rendered by opencsp from the install config; see manifests/README.md.\n", doc)
}

// RenderSecretsKustomization lists the SOPS-encrypted Secret manifests.
func RenderSecretsKustomization(secrets []manifests.SecretSpec) []byte {
	var files []string
	for _, s := range secrets {
		files = append(files, strings.TrimPrefix(SecretFile(s.Name), SecretsDir+"/"))
	}
	b, err := marshal("# Generated Secrets (flux-system), SOPS-encrypted with age; decrypted by the\n"+
		"# Kustomization flux-system. Written by opencsp; never edit by hand.\n", kustomization(files))
	if err != nil {
		panic(err) // static data
	}
	return b
}

func kustomization(resources []string) map[string]any {
	return map[string]any{
		"apiVersion": "kustomize.config.k8s.io/v1beta1",
		"kind":       "Kustomization",
		"resources":  resources,
	}
}

// Flux Kustomization (kustomize.toolkit.fluxcd.io/v1), fields in the order
// they are written.
type fluxKustomization struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Metadata   metadata `yaml:"metadata"`
	Spec       spec     `yaml:"spec"`
}

type metadata struct {
	Name      string            `yaml:"name"`
	Namespace string            `yaml:"namespace"`
	Labels    map[string]string `yaml:"labels,omitempty"`
}

type spec struct {
	Interval      string        `yaml:"interval"`
	RetryInterval string        `yaml:"retryInterval"`
	Timeout       string        `yaml:"timeout"`
	DependsOn     []nameRef     `yaml:"dependsOn,omitempty"`
	SourceRef     sourceRef     `yaml:"sourceRef"`
	Path          string        `yaml:"path"`
	Prune         bool          `yaml:"prune"`
	Wait          bool          `yaml:"wait"`
	HealthChecks  []healthCheck `yaml:"healthChecks,omitempty"`
	Decryption    decryption    `yaml:"decryption"`
	PostBuild     postBuild     `yaml:"postBuild"`
	Patches       []patch       `yaml:"patches,omitempty"`
}

type nameRef struct {
	Name string `yaml:"name"`
}

type sourceRef struct {
	Kind string `yaml:"kind"`
	Name string `yaml:"name"`
}

type healthCheck struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Name       string `yaml:"name"`
	Namespace  string `yaml:"namespace,omitempty"`
}

type decryption struct {
	Provider  string  `yaml:"provider"`
	SecretRef nameRef `yaml:"secretRef"`
}

type postBuild struct {
	SubstituteFrom []substituteRef `yaml:"substituteFrom"`
}

type substituteRef struct {
	Kind string `yaml:"kind"`
	Name string `yaml:"name"`
}

type patch struct {
	Patch  string      `yaml:"patch"`
	Target patchTarget `yaml:"target"`
}

type patchTarget struct {
	Group     string `yaml:"group"`
	Kind      string `yaml:"kind"`
	Name      string `yaml:"name"`
	Namespace string `yaml:"namespace"`
}

// RenderLayers renders one Flux Kustomization per layer
// (layers/<layer>.yaml, path ./components/<component>/<layer>) and
// layers/kustomization.yaml listing them in order. layers is normally the
// result of manifests.Plan; every dependsOn must name a layer of the list.
func RenderLayers(cluster string, layers []manifests.Layer, opts Options) (map[string][]byte, error) {
	if !dnsLabelRE.MatchString(cluster) {
		return nil, fmt.Errorf("cluster name %q is not a DNS label", cluster)
	}
	planned := map[string]bool{}
	components := map[string]bool{}
	for _, l := range layers {
		if planned[l.Name] {
			return nil, fmt.Errorf("layer %s listed twice", l.Name)
		}
		planned[l.Name] = true
		components[l.Component] = true
	}
	if err := checkOverrides(opts.Overrides, components, layers); err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	var files []string
	for _, l := range layers {
		for _, d := range l.DependsOn {
			if !planned[d] {
				return nil, fmt.Errorf("layer %s depends on %s, which is not rendered", l.Name, d)
			}
		}
		k, err := layerKustomization(cluster, l, opts.Overrides[l.Component])
		if err != nil {
			return nil, err
		}
		b, err := marshal(fmt.Sprintf("# Layer %s of component %s. Rendered by opencsp; do not edit.\n", l.Name, l.Component), k)
		if err != nil {
			return nil, err
		}
		out[LayersDir+"/"+l.Name+".yaml"] = b
		files = append(files, l.Name+".yaml")
	}
	b, err := marshal("# The Core layers of this cluster (manifests.Plan). Rendered by opencsp.\n", kustomization(files))
	if err != nil {
		return nil, err
	}
	out[LayersDir+"/kustomization.yaml"] = b
	return out, nil
}

func checkOverrides(overrides map[string]Override, planned map[string]bool, layers []manifests.Layer) error {
	var errs []string
	for _, c := range slices.Sorted(maps.Keys(overrides)) {
		o := overrides[c]
		if !slices.Contains(manifests.Components(), c) {
			errs = append(errs, fmt.Sprintf("override of unknown component %s", c))
			continue
		}
		if !planned[c] {
			continue
		}
		if o.Version != "" && !versionRE.MatchString(o.Version) {
			errs = append(errs, fmt.Sprintf("component %s: version %q is not an exact chart version", c, o.Version))
		}
		if (o.Version != "" || len(o.Values) > 0) && !slices.ContainsFunc(layers, func(l manifests.Layer) bool {
			return l.Component == c && l.HelmRelease != ""
		}) {
			errs = append(errs, fmt.Sprintf("component %s has no Helm chart: version and values cannot be overridden", c))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

func layerKustomization(cluster string, l manifests.Layer, o Override) (*fluxKustomization, error) {
	k := &fluxKustomization{
		APIVersion: "kustomize.toolkit.fluxcd.io/v1",
		Kind:       "Kustomization",
		Metadata: metadata{
			Name:      l.Name,
			Namespace: manifests.SecretsNamespace,
			Labels: map[string]string{
				"app.kubernetes.io/part-of": "opencsp",
				"opencsp.io/cluster":        cluster,
				"opencsp.io/component":      l.Component,
			},
		},
		Spec: spec{
			Interval:      duration(l.Interval),
			RetryInterval: duration(l.RetryInterval),
			Timeout:       duration(l.Timeout),
			SourceRef:     sourceRef{Kind: "GitRepository", Name: SourceName},
			Path:          l.Path(),
			Prune:         true,
			Wait:          l.Wait,
			Decryption:    decryption{Provider: "sops", SecretRef: nameRef{Name: SOPSSecretName}},
		},
	}
	for _, d := range l.DependsOn {
		k.Spec.DependsOn = append(k.Spec.DependsOn, nameRef{Name: d})
	}
	for _, h := range l.HealthChecks {
		k.Spec.HealthChecks = append(k.Spec.HealthChecks, healthCheck(h))
	}
	k.Spec.PostBuild.SubstituteFrom = []substituteRef{{Kind: "ConfigMap", Name: manifests.ClusterVarsName}}
	for _, s := range l.Secrets {
		k.Spec.PostBuild.SubstituteFrom = append(k.Spec.PostBuild.SubstituteFrom, substituteRef{Kind: "Secret", Name: s})
	}
	if l.HelmRelease != "" && (o.Version != "" || len(o.Values) > 0) {
		p, err := overridePatch(l.HelmRelease, o)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", l.Name, err)
		}
		k.Spec.Patches = []patch{{Patch: p, Target: patchTarget{
			Group: "helm.toolkit.fluxcd.io", Kind: "HelmRelease", Name: l.HelmRelease, Namespace: manifests.SecretsNamespace,
		}}}
	}
	return k, nil
}

// overridePatch is a strategic-merge patch of the HelmRelease (JSON merge
// semantics for custom resources).
func overridePatch(name string, o Override) (string, error) {
	specPatch := map[string]any{}
	if o.Version != "" {
		specPatch["chart"] = map[string]any{"spec": map[string]any{"version": o.Version}}
	}
	if len(o.Values) > 0 {
		specPatch["values"] = o.Values
	}
	doc := map[string]any{
		"apiVersion": "helm.toolkit.fluxcd.io/v2",
		"kind":       "HelmRelease",
		"metadata":   map[string]any{"name": name, "namespace": manifests.SecretsNamespace},
		"spec":       specPatch,
	}
	b, err := marshal("", doc)
	return string(b), err
}

// duration writes 10m instead of 10m0s.
func duration(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	default:
		return d.String()
	}
}

func marshal(header string, v any) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString(header)
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Paths returns the keys of a rendered file map, sorted.
func Paths(files map[string][]byte) []string {
	out := slices.Collect(maps.Keys(files))
	sort.Strings(out)
	return out
}
