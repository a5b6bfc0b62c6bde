package pipeline_test

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencsp/installer/internal/state"
	"github.com/opencsp/installer/stages/images"
	"github.com/opencsp/installer/stages/provision"
)

func TestInstallConverges(t *testing.T) {
	for _, tc := range []struct {
		name          string
		setup         setup
		wantTemplates int
	}{
		{"standalone", setup{}, 1},
		{"standalone upload", setup{upload: true}, 1},
		{"cluster local storage", setup{nodes: 3}, 3},
		{"cluster shared storage", setup{nodes: 3, shared: true}, 1},
		{"cluster dhcp pinned", setup{nodes: 3, dhcp: true, vmNode: "pve2"}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.setup)
			if err := e.run(t.Context()); err != nil {
				t.Fatalf("install: %v", err)
			}
			st := e.state()
			for _, name := range []string{"preflight", "images", "provision"} {
				if st.StatusOf(name) != state.Done {
					t.Fatalf("stage %s: %s (%s)", name, st.StatusOf(name), st.Stages[name].Error)
				}
			}
			var imgs images.Outputs
			decode(t, st.Stages["images"].Outputs, &imgs)
			if len(imgs.Templates) != tc.wantTemplates {
				t.Errorf("templates: %+v, want %d", imgs.Templates, tc.wantTemplates)
			}
			var vm provision.Outputs
			decode(t, st.Stages["provision"].Outputs, &vm)
			if vm.Address != staticIP || vm.VMID == 0 {
				t.Errorf("provision outputs: %+v", vm)
			}
			if tc.setup.vmNode != "" && vm.Node != tc.setup.vmNode {
				t.Errorf("VM on %s, want pinned %s", vm.Node, tc.setup.vmNode)
			}
			info, _ := e.sim.VM(vm.VMID)
			if !info.Running || !strings.Contains(info.Config["tags"], "opencsp-lab") || info.Config["cores"] != "2" {
				t.Errorf("VM: %+v", info)
			}
			// sshkeys: the whole value URI-encoded, spaces as %20, as PVE wants.
			pub, _ := os.ReadFile(filepath.Join(e.dir, "id_ed25519.pub"))
			keys, err := url.PathUnescape(info.Config["sshkeys"])
			if err != nil || strings.Contains(info.Config["sshkeys"], "+") || strings.Join(strings.Fields(keys)[:2], " ") != strings.Join(strings.Fields(string(pub))[:2], " ") {
				t.Errorf("sshkeys %q (decoded %q, %v), want %q", info.Config["sshkeys"], keys, err, pub)
			}
			if e.vmsNamed("opencsp-lab-mgmt") != 1 {
				t.Errorf("%d VMs named opencsp-lab-mgmt", e.vmsNamed("opencsp-lab-mgmt"))
			}
			e.validateLog()

			before := len(e.sim.MutatingRequests())
			if err := e.run(t.Context()); err != nil {
				t.Fatalf("rerun: %v", err)
			}
			if after := e.sim.MutatingRequests(); len(after) != before {
				t.Errorf("rerun made %d mutating calls: %+v", len(after)-before, after[before:])
			}
		})
	}
}
