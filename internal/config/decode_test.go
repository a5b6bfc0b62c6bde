package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name      string
		edits     []string
		field     string
		substr    string
		line, col int
	}{
		{"unknown field suggests", []string{"    endpoint:", "    endpiont:"},
			"infrastructure.proxmox.endpiont", `unknown field (did you mean "endpoint"?)`, 8, 5},
		{"suggestion ignores case", []string{"    tokenID:", "    tokenid:"},
			"infrastructure.proxmox.tokenid", `did you mean "tokenID"?`, 9, 5},
		{"unknown top-level field", []string{"kind: InstallConfig\n", "kind: InstallConfig\nextras: {}\n"},
			"extras", "unknown field", 3, 1},
		{"string got number", []string{"  name: lab\n", "  name: 123\n"},
			"cluster.name", `must be a string, got a number "123" (put it in quotes to use it as text)`, 4, 3},
		{"string got boolean", []string{"  domain: lab.example.net\n", "  domain: true\n"},
			"cluster.domain", `must be a string, got a boolean "true"`, 5, 3},
		{"string got list", []string{"    tokenID: opencsp@pve!installer\n", "    tokenID: [a, b]\n"},
			"infrastructure.proxmox.tokenID", "must be a string, got a list", 9, 5},
		{"int got text", []string{"managementVM:\n", "managementVM:\n  cores: \"4\"\n"},
			"managementVM.cores", `must be a whole number, got text "4"`, 12, 3},
		{"int got decimal", []string{"managementVM:\n", "managementVM:\n  memoryMiB: 8192.5\n"},
			"managementVM.memoryMiB", "must be a whole number, got a decimal number", 12, 3},
		{"int out of range", []string{"managementVM:\n", "managementVM:\n  diskGiB: 1e99999\n"},
			"managementVM.diskGiB", "must be a whole number", 12, 3},
		{"int overflow", []string{"managementVM:\n", "managementVM:\n  diskGiB: 9223372036854775808\n"},
			"managementVM.diskGiB", "", 12, 3},
		{"bool got number", []string{"managementVM:\n", "managementVM:\n  network: {dhcp: 1}\n"},
			"managementVM.network.dhcp", "must be true or false, got a number", 12, 13},
		{"bool got yes", []string{"managementVM:\n", "managementVM:\n  network: {dhcp: yes}\n"},
			"managementVM.network.dhcp", `must be true or false, got text "yes"`, 12, 13},
		{"list got text", []string{"kind: InstallConfig\n", "kind: InstallConfig\nimages: debian-12\n"},
			"images", "must be a list, got text", 3, 1},
		{"list item wrong type", []string{"    tokenID: opencsp@pve!installer\n", "    tokenID: opencsp@pve!installer\n    nodes: [pve1, {name: pve2}]\n"},
			"infrastructure.proxmox.nodes[1]", "must be a string, got a mapping", 10, 19},
		{"struct got text", []string{"managementVM:\n  ssh:\n", "managementVM:\n  network: dhcp\n  ssh:\n"},
			"managementVM.network", "must be a mapping of fields, got text", 12, 3},
		{"map got list", []string{"kind: InstallConfig\n", "kind: InstallConfig\ncomponents: [grafana]\n"},
			"components", "must be a mapping, got a list", 3, 1},
		{"pointer struct got number", []string{"  proxmox:\n    endpoint", "  openstack: 5\n  proxmox:\n    endpoint"},
			"infrastructure.openstack", "must be a mapping of fields, got a number", 7, 3},
		{"secret got number", []string{"env:OPENCSP_TEST_PVE_SECRET", "123456"},
			"infrastructure.proxmox.tokenSecret", `must be a secret reference "env:NAME" or "file:PATH", got a number`, 10, 5},
		{"secret got mapping", []string{"env:OPENCSP_TEST_PVE_SECRET", "{env: X}"},
			"infrastructure.proxmox.tokenSecret", "got a mapping", 10, 5},
		{"duplicate key", []string{"  domain: lab.example.net\n", "  domain: lab.example.net\n  name: lab2\n"},
			"cluster.name", "duplicate key: already set at line 4", 6, 3},
		{"duplicate key in values", []string{"kind: InstallConfig\n", "kind: InstallConfig\ncomponents:\n  grafana:\n    values:\n      a: {x: 1, x: 2}\n"},
			"components.grafana.values.a", "already defined", 6, 7},
		{"bad merge key", []string{"managementVM:\n", "managementVM:\n  <<: 5\n"},
			"managementVM.<<", "merge key needs a mapping", 12, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc := edit(t, baseYAML, tc.edits...)
			dir := setupCorpusDir(t)
			_, errs := loadYAML(t, dir, doc)
			e := findError(errs, tc.field, tc.substr)
			if e == nil {
				t.Fatalf("no error for %s containing %q; got:\n%v", tc.field, tc.substr, errs)
			}
			if e.Pos.Line != tc.line || e.Pos.Col != tc.col {
				t.Errorf("error at %d:%d, want %d:%d: %v", e.Pos.Line, e.Pos.Col, tc.line, tc.col, e)
			}
			if !strings.HasSuffix(e.Pos.File, "opencsp.yaml") {
				t.Errorf("error names file %q", e.Pos.File)
			}
			// A decode error is not repeated by validation of the same field.
			for _, other := range errs {
				if other != *e && other.Field == tc.field {
					t.Errorf("second error for %s: %v", tc.field, other)
				}
			}
		})
	}
}

// TestDecodeCollectsAllErrors checks decoding goes on after an error and
// reports problems in file order.
func TestDecodeCollectsAllErrors(t *testing.T) {
	doc := edit(t, baseYAML,
		"  name: lab\n", "  name: 1\n",
		"    tokenID:", "    tokenId:",
		"managementVM:\n", "managementVM:\n  cores: many\n  memory: 4\n",
		"  url: ssh", "  branch: [main]\n  url: ssh",
	)
	_, errs := loadYAML(t, setupCorpusDir(t), doc)
	want := []string{"cluster.name", "infrastructure.proxmox.tokenID", "infrastructure.proxmox.tokenId", "managementVM.cores", "managementVM.memory", "opsRepo.branch"}
	var got []string
	for _, e := range errs {
		got = append(got, e.Field)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("fields = %v, want %v\n%v", got, want, errs)
	}
	for i := 1; i < len(errs); i++ {
		if errs[i].Pos.Line < errs[i-1].Pos.Line {
			t.Errorf("errors not in line order:\n%v", errs)
		}
	}
	if n := strings.Count(errs.Error(), "\n"); n != len(errs)-1 {
		t.Errorf("ErrorList.Error() has %d lines for %d errors", n+1, len(errs))
	}
}

func TestNullLeavesValue(t *testing.T) {
	doc := edit(t, baseYAML,
		"kind: InstallConfig\n", "kind: InstallConfig\nprofile:\nimages: ~\nk3s:\n",
		"managementVM:\n", "managementVM:\n  cores:\n  memoryMiB: null\n  network:\n",
	)
	cfg := mustLoad(t, doc)
	if cfg.Profile != "standalone" {
		t.Errorf("profile = %q", cfg.Profile)
	}
	if cfg.ManagementVM.Cores != 4 || cfg.ManagementVM.MemoryMiB != 16384 || !cfg.ManagementVM.Network.DHCP {
		t.Errorf("null did not keep the profile's values: %+v", cfg.ManagementVM)
	}
	if cfg.K3s.Version != "v1.33.5+k3s1" || !reflect.DeepEqual(cfg.Images, []string{"debian-12"}) {
		t.Errorf("k3s %+v images %v", cfg.K3s, cfg.Images)
	}
}

func TestAnchorsAndAliases(t *testing.T) {
	dir := setupCorpusDir(t)
	cfg, err := Load(copyInto(t, dir, "testdata/good/anchors.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.ManagementVM.Network.DNS; !reflect.DeepEqual(got, []string{"192.0.2.1"}) {
		t.Errorf("dns = %v, want the aliased gateway", got)
	}
	tempo := cfg.Components["tempo"]
	if tempo.Enabled == nil || !*tempo.Enabled || tempo.Version != "1.10.0" {
		t.Errorf("tempo = %+v (enabled %v): merge key must supply enabled, own key wins on version", tempo, tempo.Enabled)
	}
	if cfg.Components["loki"].Version != "6.1.0" {
		t.Errorf("loki = %+v", cfg.Components["loki"])
	}

	// Several merged mappings: earlier ones win, own keys win over all.
	doc := edit(t, baseYAML,
		"kind: InstallConfig\n", "kind: InstallConfig\ncomponents:\n  loki: &a {version: 1.0.0}\n  tempo: &b {version: 2.0.0, enabled: false}\n  mimir:\n    <<: [*a, *b]\n  grafana:\n    <<: [*a, *b]\n    enabled: true\n",
		"    endpoint: https://pve1.example.net:8006\n", "    endpoint: &ep https://pve1.example.net:8006\n",
	)
	cfg = mustLoad(t, doc)
	if m := cfg.Components["mimir"]; m.Version != "1.0.0" || m.Enabled == nil || *m.Enabled {
		t.Errorf("mimir = %+v", m)
	}
	if g := cfg.Components["grafana"]; g.Version != "1.0.0" || g.Enabled == nil || !*g.Enabled {
		t.Errorf("grafana = %+v", g)
	}
}

func TestValuesMergeFreeForm(t *testing.T) {
	base := map[string]any{"a": map[string]any{"b": 1, "c": 2}, "l": []any{1, 2}, "s": "x", "keep": true}
	over := map[string]any{"a": map[string]any{"c": 3, "d": 4}, "l": []any{3}, "s": map[string]any{"now": "map"}}
	got := mergeValues(base, over)
	want := map[string]any{"a": map[string]any{"b": 1, "c": 3, "d": 4}, "l": []any{3}, "s": map[string]any{"now": "map"}, "keep": true}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("mergeValues = %v, want %v", got, want)
	}
	if !reflect.DeepEqual(base["a"], map[string]any{"b": 1, "c": 2}) {
		t.Errorf("mergeValues modified its input: %v", base)
	}

	// Decoding two documents onto one config (profile, then file) merges
	// values per key at every depth.
	cfg := &Config{}
	for i, doc := range []string{
		"components:\n  grafana:\n    enabled: false\n    values:\n      persistence: {enabled: true, size: 10Gi}\n      replicas: 1\n      list: [a, b]\n",
		"components:\n  grafana:\n    values:\n      persistence: {size: 20Gi}\n      list: [c]\n      extra: {x: 1}\n",
	} {
		root, errs := parseDocument("doc", []byte(doc))
		if errs != nil {
			t.Fatal(errs)
		}
		d := &decoder{file: "doc", pos: map[string]Pos{}}
		d.decode(root, reflect.ValueOf(cfg).Elem(), "", nil)
		if d.errs != nil {
			t.Fatalf("doc %d: %v", i, d.errs)
		}
	}
	g := cfg.Components["grafana"]
	wantValues := map[string]any{
		"persistence": map[string]any{"enabled": true, "size": "20Gi"},
		"replicas":    1,
		"list":        []any{"c"},
		"extra":       map[string]any{"x": 1},
	}
	if !reflect.DeepEqual(g.Values, wantValues) {
		t.Errorf("values = %#v\nwant %#v", g.Values, wantValues)
	}
	if g.Enabled == nil || *g.Enabled {
		t.Errorf("enabled lost in merge: %v", g.Enabled)
	}
}

func TestSuggest(t *testing.T) {
	fields := structFields(reflect.TypeFor[ManagementVM]())
	for in, want := range map[string]string{
		"cores":     ` (did you mean "cores"?)`,
		"core":      ` (did you mean "cores"?)`,
		"memoryMB":  ` (did you mean "memoryMiB"?)`,
		"DiskGiB":   ` (did you mean "diskGiB"?)`,
		"hostname":  "",
		"networkss": ` (did you mean "network"?)`,
	} {
		if got := suggest(in, fields); got != want {
			t.Errorf("suggest(%q) = %q, want %q", in, got, want)
		}
	}
}
