package infra

import (
	"errors"
	"strings"
	"testing"
)

func node(name string, online bool, cpus int, cpuUsed float64, freeMiB int64) Node {
	return Node{
		Name: name, Online: online, CPUs: cpus, CPUUsed: cpuUsed,
		MemTotal: 64 << 30, MemUsed: 64<<30 - freeMiB<<20,
		Bridges:  []string{"vmbr0"},
		Storages: []Storage{{Name: "local-lvm", Active: true, Enabled: true, Content: []string{"images"}}},
	}
}

func TestPlace(t *testing.T) {
	three := []Node{
		node("pve1", true, 16, 0.5, 20000),
		node("pve2", true, 16, 0.1, 40000),
		node("pve3", true, 32, 0.1, 40000),
	}
	req := PlacementRequest{Cores: 4, MemoryMiB: 16384, Storage: "local-lvm", Bridge: "vmbr0"}
	for _, tc := range []struct {
		name    string
		nodes   []Node
		mutate  func(*PlacementRequest)
		want    string
		wantErr []string
	}{
		{"most free memory, then most free CPU", three, nil, "pve3", nil},
		{"allowed list", three, func(r *PlacementRequest) { r.Allowed = []string{"pve1", "pve2"} }, "pve2", nil},
		{"pinned wins over memory", three, func(r *PlacementRequest) { r.Pinned = "pve1" }, "pve1", nil},
		{"offline skipped", []Node{node("pve1", true, 16, 0, 20000), node("pve2", false, 16, 0, 60000)}, nil, "pve1", nil},
		{"stable by name on a tie", []Node{node("b", true, 8, 0, 30000), node("a", true, 8, 0, 30000)}, nil, "a", nil},
		{"none fits: reasons per node", []Node{node("pve1", true, 2, 0, 60000), node("pve2", true, 16, 0, 1000), node("pve3", false, 16, 0, 60000)}, nil, "",
			[]string{"pve1: has 2 CPUs", "pve2: 1000 MiB memory free", "pve3: offline"}},
		{"pinned node missing", three, func(r *PlacementRequest) { r.Pinned = "pve9" }, "", []string{"pve9: the pinned node does not exist"}},
		{"bridge missing", three, func(r *PlacementRequest) { r.Bridge = "vmbr9" }, "", []string{"has no bridge vmbr9"}},
		{"storage missing", three, func(r *PlacementRequest) { r.Storage = "ceph" }, "", []string{"has no storage ceph"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := req
			if tc.mutate != nil {
				tc.mutate(&r)
			}
			got, err := Place(tc.nodes, r)
			if tc.wantErr != nil {
				var nf *NoNodeFitsError
				if !errors.As(err, &nf) {
					t.Fatalf("want NoNodeFitsError, got %v (node %s)", err, got.Name)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error lacks %q:\n%v", w, err)
					}
				}
				return
			}
			if err != nil || got.Name != tc.want {
				t.Fatalf("Place = %q, %v; want %q", got.Name, err, tc.want)
			}
		})
	}
}
