package manifests

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// docOrder is the dependency order of reference/core-components.md, in layer
// names: before -> after, checked over the full graph (transitively).
var docOrder = [][2]string{
	{"cert-manager", "cluster-issuers"},
	{"cnpg-operator", "postgres-cluster"},
	{"tetragon", "tracing-policies"},
	{"system-upgrade-controller", "k3s-plans"},
	{"postgres-cluster", "zitadel"},
	{"cluster-issuers", "zitadel"},
	{"zitadel", "zitadel-oidc-apps"},
	{"seaweedfs", "tofu-controller"},
	{"tofu-controller", "zitadel-oidc-apps"},
	{"seaweedfs", "loki"}, {"seaweedfs", "tempo"}, {"seaweedfs", "mimir"},
	{"loki", "grafana"}, {"tempo", "grafana"}, {"mimir", "grafana"}, {"zitadel-oidc-apps", "grafana"},
	{"loki", "otel-collector"}, {"tempo", "otel-collector"}, {"mimir", "otel-collector"},
	{"loki", "vector"}, {"tetragon", "vector"},
	{"postgres-cluster", "lago"}, {"valkey", "lago"}, {"seaweedfs", "lago"},
	{"postgres-cluster", "semaphore"}, {"zitadel-oidc-apps", "semaphore"},
	{"cluster-issuers", "teleport"},
	{"zitadel-oidc-apps", "console"}, {"lago", "console"}, {"postgres-cluster", "console"},
}

func fullGraph() map[string]Layer {
	full := map[string]Layer{}
	for _, l := range Layers() {
		full[l.Name] = l
	}
	return full
}

func TestGraphFollowsReference(t *testing.T) {
	full := fullGraph()
	for _, e := range docOrder {
		if _, ok := full[e[0]]; !ok {
			t.Errorf("no layer %s", e[0])
		}
		if !dependsTransitively(full, e[1], e[0]) {
			t.Errorf("%s must come after %s (core-components.md)", e[1], e[0])
		}
	}
}

func TestLayerTable(t *testing.T) {
	if err := validateTable(layerTable); err != nil {
		t.Fatal(err)
	}
	ls := Layers()
	for i, l := range ls {
		for _, d := range l.DependsOn {
			j := slices.IndexFunc(ls, func(x Layer) bool { return x.Name == d })
			if j < 0 || j >= i {
				t.Errorf("%s depends on %s, which is not earlier", l.Name, d)
			}
		}
		if !l.Wait && len(l.HealthChecks) == 0 {
			t.Errorf("%s: neither wait nor health checks", l.Name)
		}
		if l.Wait && len(l.HealthChecks) > 0 {
			t.Errorf("%s: Flux ignores healthChecks when wait is true", l.Name)
		}
		if l.Interval <= 0 || l.RetryInterval <= 0 || l.Timeout <= 0 || l.RetryInterval > l.Interval {
			t.Errorf("%s: bad intervals %v %v %v", l.Name, l.Interval, l.RetryInterval, l.Timeout)
		}
		if l.Path() != "./components/"+l.Component+"/"+l.Name {
			t.Errorf("%s: path %s", l.Name, l.Path())
		}
	}
	// Bad tables are rejected.
	cyc := []Layer{{Name: "a", Requires: []string{"b"}}, {Name: "b", Requires: []string{"a"}}}
	if err := validateTable(cyc); err == nil || !strings.Contains(err.Error(), "later") {
		t.Errorf("cycle not detected: %v", err)
	}
	if err := validateTable([]Layer{{Name: "a", After: []Optional{{Layer: "x"}}}}); err == nil || !strings.Contains(err.Error(), "unknown") {
		t.Errorf("unknown dependency not detected: %v", err)
	}
	if err := validateTable([]Layer{{Name: "a"}, {Name: "a"}}); err == nil {
		t.Errorf("duplicate not detected")
	}
}

// checkPlan verifies the invariants of any plan.
func checkPlan(t *testing.T, label string, layers []Layer, enabled func(string) bool) {
	t.Helper()
	in := map[string]int{}
	for i, l := range layers {
		in[l.Name] = i
	}
	full := Layers()
	prev := -1
	for _, l := range layers {
		if l.Component != BaseComponent && !enabled(l.Component) {
			t.Errorf("%s: layer %s of disabled component %s is planned", label, l.Name, l.Component)
		}
		for _, d := range l.DependsOn {
			j, ok := in[d]
			if !ok {
				t.Errorf("%s: %s has dangling dependsOn %s", label, l.Name, d)
			} else if j >= in[l.Name] {
				t.Errorf("%s: %s depends on later %s", label, l.Name, d)
			}
		}
		for _, r := range l.Requires {
			if !slices.Contains(l.DependsOn, r) {
				t.Errorf("%s: %s lost its requirement %s", label, l.Name, r)
			}
		}
		idx := slices.IndexFunc(full, func(x Layer) bool { return x.Name == l.Name })
		if idx <= prev {
			t.Errorf("%s: plan not in rollout order at %s", label, l.Name)
		}
		prev = idx
	}
	// Maximality: every layer left out has a reason.
	for _, l := range full {
		if _, ok := in[l.Name]; ok {
			continue
		}
		if l.Component != BaseComponent && !enabled(l.Component) {
			continue
		}
		if !slices.ContainsFunc(l.Requires, func(r string) bool { _, ok := in[r]; return !ok }) {
			t.Errorf("%s: %s left out although everything it requires is planned", label, l.Name)
		}
	}
}

func disabling(off ...string) func(string) bool {
	return func(c string) bool { return !slices.Contains(off, c) }
}

func TestPlanAllEnabled(t *testing.T) {
	layers, warnings, err := Plan(func(string) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings: %v", warnings)
	}
	if len(layers) != len(Layers()) {
		t.Errorf("%d layers planned, %d exist", len(layers), len(Layers()))
	}
	checkPlan(t, "all", layers, func(string) bool { return true })
}

// cascades: disabling the component switches off these layers of other
// components (with a warning each); every other layer stays.
var cascades = map[string][]string{
	"cert-manager":              {"zitadel", "zitadel-oidc-apps", "semaphore", "teleport", "console"},
	"cloudnative-pg":            {"zitadel", "zitadel-oidc-apps", "lago", "semaphore", "console"},
	"valkey":                    {"lago"},
	"seaweedfs":                 {"tofu-controller", "zitadel-oidc-apps", "loki", "tempo", "mimir", "vector", "lago", "semaphore", "console"},
	"tetragon":                  {"vector"},
	"system-upgrade-controller": nil,
	"zitadel":                   {"semaphore", "console"},
	"tofu-controller":           {"zitadel-oidc-apps", "semaphore", "console"},
	"loki":                      {"vector"},
	"tempo":                     nil,
	"mimir":                     nil,
	"grafana":                   nil,
	"otel-collector":            nil,
	"vector":                    nil,
	"lago":                      nil,
	"semaphore":                 nil,
	"teleport":                  nil,
	"console":                   nil,
}

func TestPlanDisableEachComponent(t *testing.T) {
	for _, c := range Components() {
		want, ok := cascades[c]
		if !ok {
			t.Errorf("no cascade expectation for %s", c)
			continue
		}
		t.Run(c, func(t *testing.T) {
			enabled := disabling(c)
			layers, warnings, err := Plan(enabled)
			if err != nil {
				t.Fatal(err)
			}
			checkPlan(t, c, layers, enabled)
			var off []string
			for _, l := range Layers() {
				if l.Component != c && !slices.ContainsFunc(layers, func(x Layer) bool { return x.Name == l.Name }) {
					off = append(off, l.Name)
				}
			}
			if !slices.Equal(off, want) {
				t.Errorf("switched off %v, want %v", off, want)
			}
			for _, name := range want {
				if !slices.ContainsFunc(warnings, func(w string) bool {
					return strings.HasPrefix(w, "layer "+name+" ") && strings.Contains(w, "is disabled: it needs")
				}) {
					t.Errorf("no warning names %s: %v", name, warnings)
				}
			}
		})
	}
}

func TestPlanCombinations(t *testing.T) {
	minimal := []string{"teleport", "lago", "semaphore", "tetragon", "vector", "mimir", "tempo", "tofu-controller"}
	cases := []struct {
		name      string
		off       []string
		planned   []string // must be planned
		unplanned []string // must not be planned
		warn      []string // substrings of some warning
	}{
		{name: "zitadel", off: []string{"zitadel"},
			planned:   []string{"grafana", "postgres-cluster", "tofu-controller"},
			unplanned: []string{"zitadel-oidc-apps", "semaphore", "console"},
			warn:      []string{"layer grafana runs without zitadel-oidc-apps", "single sign-on", "layer console (component console) is disabled: it needs zitadel-oidc-apps"}},
		{name: "zitadel+lago", off: []string{"zitadel", "lago"},
			unplanned: []string{"console", "lago", "semaphore"}},
		{name: "observability backends", off: []string{"loki", "tempo", "mimir"},
			planned:   []string{"grafana", "otel-collector"},
			unplanned: []string{"vector"},
			warn:      []string{"layer otel-collector runs without loki", "layer grafana runs without mimir"}},
		{name: "minimal profile", off: minimal,
			planned:   []string{"zitadel", "loki", "grafana", "otel-collector", "postgres-cluster"},
			unplanned: []string{"zitadel-oidc-apps", "console", "vector"},
			warn:      []string{"needs tofu-controller (component tofu-controller is disabled)"}},
		{name: "minimal profile with tofu-controller", off: slices.DeleteFunc(slices.Clone(minimal), func(s string) bool { return s == "tofu-controller" }),
			planned: []string{"zitadel-oidc-apps", "console", "grafana"},
			warn:    []string{"layer console runs without lago"}},
		{name: "everything off", off: Components(),
			planned: []string{"namespaces", "cluster-dns"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			enabled := disabling(tc.off...)
			layers, warnings, err := Plan(enabled)
			if err != nil {
				t.Fatal(err)
			}
			checkPlan(t, tc.name, layers, enabled)
			has := func(n string) bool { return slices.ContainsFunc(layers, func(l Layer) bool { return l.Name == n }) }
			for _, n := range tc.planned {
				if !has(n) {
					t.Errorf("%s not planned", n)
				}
			}
			for _, n := range tc.unplanned {
				if has(n) {
					t.Errorf("%s planned", n)
				}
			}
			for _, w := range tc.warn {
				if !slices.ContainsFunc(warnings, func(x string) bool { return strings.Contains(x, w) }) {
					t.Errorf("no warning contains %q:\n%s", w, strings.Join(warnings, "\n"))
				}
			}
			if tc.name == "everything off" && len(layers) != 2 {
				t.Errorf("everything off plans %d layers", len(layers))
			}
		})
	}
}

// README.md documents every layer, variable, secret key and pinned version.
func TestReadmeIsComplete(t *testing.T) {
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	var missing []string
	for _, l := range Layers() {
		if !strings.Contains(readme, l.Name) {
			missing = append(missing, "layer "+l.Name)
		}
	}
	for _, v := range VarNames() {
		if !strings.Contains(readme, v) {
			missing = append(missing, "variable "+v)
		}
	}
	for _, s := range Secrets() {
		for _, k := range s.Keys {
			if !strings.Contains(readme, k.Name) {
				missing = append(missing, "secret key "+k.Name)
			}
		}
	}
	for _, c := range Charts() {
		if !strings.Contains(readme, c.Version) {
			missing = append(missing, "version "+c.Component+" "+c.Version)
		}
	}
	for _, b := range Buckets() {
		if !strings.Contains(readme, b.Name) {
			missing = append(missing, "bucket "+b.Name)
		}
	}
	if len(missing) > 0 {
		t.Errorf("README.md misses: %s", strings.Join(missing, ", "))
	}
}
