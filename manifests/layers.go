package manifests

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// BaseComponent is the pseudo component of the layers every cluster gets
// (namespaces, in-cluster DNS for the public names). It is not a config
// component and cannot be disabled.
const BaseComponent = "base"

// Optional is a soft dependency: the layer orders itself after Layer when
// that layer is part of the plan, and runs without it otherwise, losing what
// Note says.
type Optional struct {
	Layer string
	Note  string
}

// HealthCheck is an object a layer Kustomization waits for when the layer
// does not use `wait: true` (objects created at run time, e.g. CRDs that an
// operator registers, or when some applied objects may stay unready).
type HealthCheck struct {
	APIVersion string
	Kind       string
	Name       string
	Namespace  string // empty for cluster-scoped objects
}

// Layer is one Flux Kustomization of the Core: a folder of manifests that
// Flux applies as a unit, after the layers it depends on are ready.
type Layer struct {
	// Name is the Flux Kustomization name (flux-system/<Name>), unique.
	Name string
	// Component is the config component the layer belongs to
	// (config.ComponentNames), or BaseComponent.
	Component string
	// Namespace is where the layer's workload runs (documentation).
	Namespace string
	// Requires are hard dependencies: without them the layer cannot work
	// and is disabled too.
	Requires []string
	// After are soft dependencies, see Optional.
	After []Optional
	// DependsOn is the effective Flux dependsOn list: every Requires entry
	// and every After entry that is in the plan. Layers() sets it to the
	// full list, Plan() to the list of the planned graph. Sorted.
	DependsOn []string
	// Provides lists the API groups whose CRDs the layer installs; a layer
	// using a group must (transitively) require its provider.
	Provides []string
	// Secrets are the flux-system Secrets (see Secrets()) the layer reads:
	// through postBuild substitution and/or HelmRelease valuesFrom.
	Secrets []string
	// HelmRelease is the name of the layer's main HelmRelease in
	// flux-system, "" when the layer has none. Component version and values
	// overrides are patched into it.
	HelmRelease string
	// Wait makes Flux wait for every applied object to be ready. When false
	// HealthChecks lists what to wait for instead.
	Wait         bool
	HealthChecks []HealthCheck
	// Interval, RetryInterval and Timeout of the Flux Kustomization.
	Interval, RetryInterval, Timeout time.Duration
}

// Dir is the layer's folder inside FS().
func (l Layer) Dir() string { return l.Component + "/" + l.Name }

// Path is the layer's folder in the ops repository, as Flux wants it in
// spec.path: ./components/<component>/<layer>.
func (l Layer) Path() string { return "./" + RepoComponentsDir + "/" + l.Dir() }

// RepoComponentsDir is the ops-repo folder that holds a copy of FS().
const RepoComponentsDir = "components"

const (
	defaultInterval      = 10 * time.Minute
	defaultRetryInterval = 2 * time.Minute
	defaultTimeout       = 10 * time.Minute
)

// layerTable is the Core in rollout order (a topological order of the
// graph); see README.md for the reasons behind each edge.
var layerTable = []Layer{
	{Name: "namespaces", Component: BaseComponent, Wait: true},
	{Name: "cluster-dns", Component: BaseComponent, Namespace: "kube-system", Wait: true},

	{Name: "cert-manager", Component: "cert-manager", Namespace: "cert-manager", Requires: []string{"namespaces"},
		Provides: []string{"cert-manager.io", "acme.cert-manager.io"}, HelmRelease: "cert-manager", Wait: true},
	// ACME issuers stay unready offline, so only the CA issuer gates the layer.
	{Name: "cluster-issuers", Component: "cert-manager", Namespace: "cert-manager", Requires: []string{"cert-manager"},
		HealthChecks: []HealthCheck{
			{APIVersion: "cert-manager.io/v1", Kind: "ClusterIssuer", Name: "opencsp-ca"},
		}},

	{Name: "cnpg-operator", Component: "cloudnative-pg", Namespace: "cnpg-system", Requires: []string{"namespaces"},
		Provides: []string{"postgresql.cnpg.io"}, HelmRelease: "cnpg-operator", Wait: true},
	{Name: "postgres-cluster", Component: "cloudnative-pg", Namespace: "data", Requires: []string{"cnpg-operator"},
		Secrets: []string{"postgres-credentials"}, Wait: true, Timeout: 15 * time.Minute},

	{Name: "valkey", Component: "valkey", Namespace: "data", Requires: []string{"namespaces"},
		Secrets: []string{"valkey-credentials"}, HelmRelease: "valkey", Wait: true},

	{Name: "seaweedfs", Component: "seaweedfs", Namespace: "storage", Requires: []string{"namespaces"},
		After:   []Optional{{"cluster-issuers", "the s3.<domain> ingress has no certificate"}},
		Secrets: []string{"s3-credentials"}, HelmRelease: "seaweedfs", Wait: true, Timeout: 15 * time.Minute},

	// The operator registers the CRDs at start-up: wait for them explicitly.
	{Name: "tetragon", Component: "tetragon", Namespace: "kube-system", Requires: []string{"namespaces"},
		Provides: []string{"cilium.io"}, HelmRelease: "tetragon",
		HealthChecks: []HealthCheck{
			{APIVersion: "helm.toolkit.fluxcd.io/v2", Kind: "HelmRelease", Name: "tetragon", Namespace: "flux-system"},
			{APIVersion: "apiextensions.k8s.io/v1", Kind: "CustomResourceDefinition", Name: "tracingpolicies.cilium.io"},
		}},
	{Name: "tracing-policies", Component: "tetragon", Namespace: "kube-system", Requires: []string{"tetragon"}, Wait: true},

	{Name: "system-upgrade-controller", Component: "system-upgrade-controller", Namespace: "system-upgrade",
		Requires: []string{"namespaces"}, Provides: []string{"upgrade.cattle.io"}, Wait: true},
	{Name: "k3s-plans", Component: "system-upgrade-controller", Namespace: "system-upgrade",
		Requires: []string{"system-upgrade-controller"}, Wait: true},

	{Name: "zitadel", Component: "zitadel", Namespace: "iam", Requires: []string{"postgres-cluster", "cluster-issuers"},
		Secrets:     []string{"postgres-credentials", "zitadel-secrets"},
		HelmRelease: "zitadel", Wait: true, Timeout: 15 * time.Minute},
	{Name: "tofu-controller", Component: "tofu-controller", Namespace: "flux-system", Requires: []string{"seaweedfs"},
		Provides: []string{"infra.contrib.fluxcd.io"}, Secrets: []string{"s3-credentials"},
		HelmRelease: "tofu-controller", Wait: true},

	// The Terraform object reaches Zitadel through its public name.
	{Name: "zitadel-oidc-apps", Component: "zitadel", Namespace: "flux-system",
		Requires: []string{"zitadel", "tofu-controller", "cluster-dns"}, Wait: true, Timeout: 15 * time.Minute},

	{Name: "loki", Component: "loki", Namespace: "monitoring", Requires: []string{"seaweedfs"},
		Secrets: []string{"s3-credentials"}, HelmRelease: "loki", Wait: true, Timeout: 15 * time.Minute},
	{Name: "tempo", Component: "tempo", Namespace: "monitoring", Requires: []string{"seaweedfs"},
		Secrets: []string{"s3-credentials"}, HelmRelease: "tempo", Wait: true},
	{Name: "mimir", Component: "mimir", Namespace: "monitoring", Requires: []string{"seaweedfs"},
		Secrets: []string{"s3-credentials"}, HelmRelease: "mimir", Wait: true, Timeout: 20 * time.Minute},

	{Name: "grafana", Component: "grafana", Namespace: "monitoring", Requires: []string{"namespaces"},
		After: []Optional{
			{"cluster-issuers", "the grafana.<domain> ingress has no certificate"},
			{"loki", "no Loki datasource (logs) and no log alert rules"},
			{"tempo", "no Tempo datasource (traces)"},
			{"mimir", "no Mimir datasource (metrics) and no metric alert rules"},
			{"zitadel-oidc-apps", "no single sign-on: only the local admin can log in"},
		},
		Secrets: []string{"grafana-secrets"}, HelmRelease: "grafana", Wait: true},

	{Name: "otel-collector", Component: "otel-collector", Namespace: "monitoring", Requires: []string{"namespaces"},
		After: []Optional{
			{"loki", "logs are not exported (debug exporter only)"},
			{"tempo", "traces are not exported (debug exporter only)"},
			{"mimir", "metrics are not exported (debug exporter only)"},
		},
		HelmRelease: "otel-collector", Wait: true},

	{Name: "vector", Component: "vector", Namespace: "monitoring", Requires: []string{"loki", "tetragon"},
		HelmRelease: "vector", Wait: true},

	{Name: "lago", Component: "lago", Namespace: "billing", Requires: []string{"postgres-cluster", "valkey", "seaweedfs"},
		After:       []Optional{{"cluster-issuers", "the lago.<domain> ingresses have no certificate"}},
		Secrets:     []string{"postgres-credentials", "valkey-credentials", "s3-credentials", "lago-secrets"},
		HelmRelease: "lago", Wait: true, Timeout: 20 * time.Minute},

	{Name: "semaphore", Component: "semaphore", Namespace: "automation", Requires: []string{"postgres-cluster", "zitadel-oidc-apps"},
		After:   []Optional{{"cluster-issuers", "the semaphore.<domain> ingress has no certificate"}},
		Secrets: []string{"postgres-credentials", "semaphore-secrets"}, HelmRelease: "semaphore", Wait: true},

	{Name: "teleport", Component: "teleport", Namespace: "teleport", Requires: []string{"cluster-issuers"},
		HelmRelease: "teleport", Wait: true, Timeout: 15 * time.Minute},

	{Name: "console", Component: "console", Namespace: "opencsp", Requires: []string{"postgres-cluster", "zitadel-oidc-apps"},
		After: []Optional{
			{"cluster-issuers", "the console.<domain> ingress has no certificate"},
			{"lago", "no billing: the Console runs without usage and invoices"},
			{"seaweedfs", "no object storage: the Console cannot create user buckets"},
			{"teleport", "no privileged access: the Console cannot provision Teleport users"},
		},
		Secrets: []string{"postgres-credentials", "s3-credentials", "lago-secrets", "console-secrets"}, Wait: true},
}

// Layers returns every Core layer in rollout order, with DependsOn set to the
// full graph (every component enabled) and the interval defaults filled in.
func Layers() []Layer {
	out := make([]Layer, 0, len(layerTable))
	for _, l := range layerTable {
		out = append(out, finish(l, func(string) bool { return true }))
	}
	return out
}

// LayerByName returns the named layer (full graph).
func LayerByName(name string) (Layer, bool) {
	for _, l := range Layers() {
		if l.Name == name {
			return l, true
		}
	}
	return Layer{}, false
}

// Components returns the components that own layers, in rollout order,
// without BaseComponent. They are exactly config.ComponentNames().
func Components() []string {
	var out []string
	for _, l := range layerTable {
		if l.Component != BaseComponent && !slices.Contains(out, l.Component) {
			out = append(out, l.Component)
		}
	}
	return out
}

func finish(l Layer, planned func(string) bool) Layer {
	l.Requires = slices.Clone(l.Requires)
	l.After = slices.Clone(l.After)
	l.Provides = slices.Clone(l.Provides)
	l.Secrets = slices.Clone(l.Secrets)
	l.HealthChecks = slices.Clone(l.HealthChecks)
	deps := slices.Clone(l.Requires)
	for _, o := range l.After {
		if planned(o.Layer) {
			deps = append(deps, o.Layer)
		}
	}
	sort.Strings(deps)
	l.DependsOn = slices.Compact(deps)
	if l.Interval == 0 {
		l.Interval = defaultInterval
	}
	if l.RetryInterval == 0 {
		l.RetryInterval = defaultRetryInterval
	}
	if l.Timeout == 0 {
		l.Timeout = defaultTimeout
	}
	return l
}

// Plan returns the layers of the Core with the components for which enabled
// returns false switched off. A layer is in the plan when its component is
// enabled and every layer it Requires is in the plan; soft (After)
// dependencies are dropped from DependsOn when absent. Warnings name every
// layer switched off only because something it needs is off, and every soft
// dependency that is missing, with the consequence. The result is in rollout
// order and has no dangling dependsOn. err reports an inconsistent layer
// table (unknown dependency or cycle) and never depends on enabled.
func Plan(enabled func(component string) bool) (layers []Layer, warnings []string, err error) {
	if err := validateTable(layerTable); err != nil {
		return nil, nil, err
	}
	on := map[string]bool{}
	why := map[string]string{} // layer -> reason it is off
	for _, l := range layerTable {
		if l.Component != BaseComponent && !enabled(l.Component) {
			why[l.Name] = fmt.Sprintf("component %s is disabled", l.Component)
			continue
		}
		// layerTable is topologically sorted (validateTable checks it), so
		// every requirement has been decided already.
		var missing []string
		for _, r := range l.Requires {
			if !on[r] {
				missing = append(missing, r)
			}
		}
		if len(missing) > 0 {
			var parts []string
			for _, m := range missing {
				parts = append(parts, fmt.Sprintf("%s (%s)", m, why[m]))
			}
			why[l.Name] = "needs " + strings.Join(missing, ", ")
			warnings = append(warnings, fmt.Sprintf("layer %s (component %s) is disabled: it needs %s",
				l.Name, l.Component, strings.Join(parts, ", ")))
			continue
		}
		on[l.Name] = true
	}
	planned := func(name string) bool { return on[name] }
	for _, l := range layerTable {
		if !on[l.Name] {
			continue
		}
		for _, o := range l.After {
			if !on[o.Layer] {
				warnings = append(warnings, fmt.Sprintf("layer %s runs without %s (%s): %s",
					l.Name, o.Layer, why[o.Layer], o.Note))
			}
		}
		layers = append(layers, finish(l, planned))
	}
	return layers, warnings, nil
}

// validateTable checks that dependencies name known layers, come earlier in
// the table (so the table is a topological order and the graph is acyclic),
// and that names are unique.
func validateTable(table []Layer) error {
	seen := map[string]bool{}
	for _, l := range table {
		if seen[l.Name] {
			return fmt.Errorf("manifests: layer %s is defined twice", l.Name)
		}
		deps := slices.Clone(l.Requires)
		for _, o := range l.After {
			deps = append(deps, o.Layer)
		}
		for _, d := range deps {
			if !seen[d] {
				if slices.ContainsFunc(table, func(x Layer) bool { return x.Name == d }) {
					return fmt.Errorf("manifests: layer %s depends on %s, which comes later (cycle or wrong order)", l.Name, d)
				}
				return fmt.Errorf("manifests: layer %s depends on unknown layer %s", l.Name, d)
			}
		}
		seen[l.Name] = true
	}
	return nil
}
