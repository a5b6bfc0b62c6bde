package rollout

import (
	"slices"
	"strings"
	"testing"

	"github.com/opencsp/installer/manifests"
)

func TestOrder(t *testing.T) {
	names := func(ls []Layer) []string {
		var out []string
		for _, l := range ls {
			out = append(out, l.Name)
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		layers []Layer
		want   []string
		err    string
	}{
		{"already ordered", []Layer{{Name: "a"}, {Name: "b", DependsOn: []string{"a"}}}, []string{"a", "b"}, ""},
		{"reversed", []Layer{{Name: "c", DependsOn: []string{"b"}}, {Name: "b", DependsOn: []string{"a"}}, {Name: "a"}}, []string{"a", "b", "c"}, ""},
		{"cycle", []Layer{{Name: "a", DependsOn: []string{"b"}}, {Name: "b", DependsOn: []string{"a"}}}, nil, "cycle"},
		{"missing", []Layer{{Name: "a", DependsOn: []string{"x"}}}, nil, "not planned"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Order(tc.layers)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !slices.Equal(names(got), tc.want) {
				t.Fatalf("Order = %v, %v; want %v", names(got), err, tc.want)
			}
		})
	}
}

func TestLayersForFullPlan(t *testing.T) {
	planned, _, err := manifests.Plan(func(string) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range planned {
		names = append(names, l.Name)
	}
	layers, err := LayersFor(names)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Order(layers); err != nil {
		t.Fatal(err)
	}
	if len(layers) != len(planned) {
		t.Fatalf("%d layers, want %d", len(layers), len(planned))
	}
}
