package pipeline_test

import (
	"strings"
	"testing"

	"github.com/opencsp/installer/internal/infra/proxmox"
)

// TestPreflightFindings: each misconfiguration yields its own message, and
// nothing is created.
func TestPreflightFindings(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup setup
		bad   func(t *testing.T, e *env)
		want  []string
	}{
		{"all good", setup{}, func(*testing.T, *env) {}, nil},
		{"missing storage", setup{}, func(_ *testing.T, e *env) { e.cfg.Infrastructure.Proxmox.Storage.Disks = "fast-ssd" },
			[]string{"storage fast-ssd does not exist on node pve", "infrastructure.proxmox.storage.disks"}},
		{"wrong content type", setup{}, func(_ *testing.T, e *env) { e.cfg.Infrastructure.Proxmox.Storage.Images = "local-lvm" },
			[]string{`storage local-lvm does not allow content "import"`, "pvesm set local-lvm --content"}},
		{"no space", setup{}, func(_ *testing.T, e *env) { e.sim.SetStorageCapacity("pve", "local-lvm", 10<<30) },
			[]string{"storage local-lvm on node pve has", "free, the install needs"}},
		{"wrong token", setup{}, func(t *testing.T, e *env) { t.Setenv("OPENCSP_TEST_PVE_SECRET", "wrong") },
			[]string{"token rejected", "root@pam!pvesim", "pveum user token list"}},
		{"unknown bridge", setup{}, func(_ *testing.T, e *env) { e.cfg.Infrastructure.Proxmox.Network.Bridge = "vmbr9" },
			[]string{"bridge vmbr9 does not exist on node pve (bridges: vmbr0)"}},
		{"pve 7", setup{}, func(_ *testing.T, e *env) { e.sim.SetNodeVersion("pve", "7.4-3") },
			[]string{"Proxmox VE 7.4-3 is too old", "8.0 or newer"}},
		{"offline node", setup{nodes: 3}, func(_ *testing.T, e *env) {
			e.cfg.Infrastructure.Proxmox.Nodes = []string{"pve1", "pve2"}
			e.sim.SetNodeOnline("pve2", false)
		}, []string{"node pve2 is offline"}},
		{"untrusted cert", setup{}, func(_ *testing.T, e *env) { e.cfg.Infrastructure.Proxmox.TLS.Fingerprint = "" },
			[]string{"certificate is not trusted", "presented SHA-256 fingerprint", "tls.fingerprint"}},
		{"not enough memory", setup{}, func(_ *testing.T, e *env) { e.sim.SetNodeResources("pve", 8, 8<<30, 6<<30) },
			[]string{"capacity: no node can host the VM", "2048 MiB memory free"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.setup)
			tc.bad(t, e)
			p, err := proxmox.New(e.cfg, fastOptions)
			if err != nil {
				t.Fatal(err)
			}
			ps, err := p.Preflight(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == nil {
				if len(ps) > 0 {
					t.Fatalf("unexpected problems: %v", ps)
				}
				return
			}
			if len(ps) == 0 {
				t.Fatalf("no problems found, want %q", tc.want)
			}
			text := ps.Error()
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("problems lack %q:\n%s", w, text)
				}
			}
			if strings.Contains(text, e.sim.TokenSecret()) {
				t.Error("a problem shows the token secret")
			}
			if n := len(e.sim.MutatingRequests()); n != 0 {
				t.Errorf("preflight made %d mutating calls", n)
			}
		})
	}
}
