package k3s

import (
	"context"
	"strings"
	"testing"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/remote"
	"github.com/opencsp/installer/stages"
)

// Local mode derives everything from the config: no provision outputs.
func TestLocalTarget(t *testing.T) {
	tests := []struct {
		name     string
		vm       config.ManagementVM
		wantNode string
		wantSANs []string
		notIn    string
	}{
		{"static address first", config.ManagementVM{Name: "Mgmt", Network: config.VMNetwork{Address: "192.0.2.10/24"}},
			"mgmt", []string{"- 192.0.2.10", "- k3s.lab.test"}, ""},
		{"dhcp: no address san", config.ManagementVM{Name: "mgmt", Network: config.VMNetwork{DHCP: true}},
			"mgmt", []string{"tls-san:\n    - k3s.lab.test\n"}, `- ""`},
		{"default node name", config.ManagementVM{Network: config.VMNetwork{DHCP: true}},
			"opencsp-lab-mgmt", []string{"node-name: opencsp-lab-mgmt"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &config.Config{Cluster: config.Cluster{Name: "lab"}, ManagementVM: tc.vm,
				K3s: config.K3s{Version: "v1.33.5+k3s1", TLSSANs: []string{"k3s.lab.test"}}}
			s := New(Options{Local: remote.NewLocal(nil, nil)})
			tg, err := s.target(&stages.Env{Config: cfg})
			if err != nil {
				t.Fatal(err)
			}
			if tg.node != tc.wantNode || tg.server != "https://127.0.0.1:6443" || tg.where != "this machine" {
				t.Errorf("target node %q server %q where %q", tg.node, tg.server, tg.where)
			}
			body := string(tg.config)
			for _, want := range append(tc.wantSANs, "node-name: "+tc.wantNode) {
				if !strings.Contains(body, want) {
					t.Errorf("config.yaml lacks %q:\n%s", want, body)
				}
			}
			if tc.notIn != "" && strings.Contains(body, tc.notIn) {
				t.Errorf("config.yaml has %q:\n%s", tc.notIn, body)
			}

			// Plan needs no provision stage either, and names this machine.
			r := &stages.Runner{Stages: []stages.Stage{s}, Config: cfg, StateDir: t.TempDir()}
			plan, err := r.Plan(context.Background(), stages.Options{})
			if err != nil || len(plan) != 1 || len(plan[0].Changes) != 1 || plan[0].Changes[0].Target != "k3s on this machine" {
				t.Errorf("plan = %+v, %v; want one install on this machine", plan, err)
			}
		})
	}
	// The local mode is part of the fingerprint: switching modes reruns the stage.
	cfg := &config.Config{K3s: config.K3s{Version: "v1.33.5+k3s1"}}
	local, _ := stages.Fingerprint(New(Options{Local: remote.NewLocal(nil, nil)}).Inputs(cfg))
	ssh, _ := stages.Fingerprint(New(Options{}).Inputs(cfg))
	if local == ssh {
		t.Error("local and SSH mode have the same fingerprint")
	}
}
