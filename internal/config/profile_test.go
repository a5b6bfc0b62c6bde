package config

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/opencsp/installer/profiles"
)

func TestProfileMerge(t *testing.T) {
	t.Run("default profile is standalone", func(t *testing.T) {
		cfg := mustLoad(t, baseYAML)
		if cfg.Profile != "standalone" || profiles.Default != "standalone" {
			t.Errorf("profile = %q", cfg.Profile)
		}
		// Values only the profile sets.
		p := cfg.Infrastructure.Proxmox
		if cfg.Infrastructure.Provider != "proxmox" || p.Storage.Disks != "local-lvm" || p.Network.Bridge != "vmbr0" ||
			cfg.ManagementVM.Cores != 4 || cfg.ManagementVM.SSH.User != "opencsp" || !slices.Equal(cfg.K3s.Disable, []string{"servicelb"}) {
			t.Errorf("standalone profile not merged: %+v %+v", cfg.Infrastructure, cfg.ManagementVM)
		}
	})

	t.Run("every profile merges under a minimal file", func(t *testing.T) {
		for _, name := range profiles.Names() {
			doc := edit(t, baseYAML, "kind: InstallConfig\n", "kind: InstallConfig\nprofile: "+name+"\n")
			if name == "openstack" {
				doc = edit(t, doc, "  proxmox:\n    endpoint: https://pve1.example.net:8006\n    tokenID: opencsp@pve!installer\n    tokenSecret: env:OPENCSP_TEST_PVE_SECRET\n",
					"  openstack:\n    authURL: https://keystone.example.net:5000/v3\n    applicationCredentialID: id\n    applicationCredentialSecret: env:OPENCSP_TEST_PVE_SECRET\n    network: mgmt\n")
			}
			cfg := mustLoad(t, doc)
			if cfg.Profile != name {
				t.Errorf("%s: profile = %q", name, cfg.Profile)
			}
			wantCores := map[string]int{"standalone": 4, "cluster": 8, "openstack": 4, "appliance": 4, "minimal": 2}[name]
			if cfg.ManagementVM.Cores != wantCores {
				t.Errorf("%s: cores = %d, want %d from the profile", name, cfg.ManagementVM.Cores, wantCores)
			}
			if name == "openstack" && (cfg.Infrastructure.OpenStack.Flavor != "m1.xlarge" || cfg.ManagementVM.SSH.User != "ubuntu" || cfg.Infrastructure.Proxmox != nil) {
				t.Errorf("openstack profile: %+v user %q", cfg.Infrastructure, cfg.ManagementVM.SSH.User)
			}
		}
	})

	t.Run("user wins on scalars", func(t *testing.T) {
		doc := edit(t, baseYAML,
			"kind: InstallConfig\n", "kind: InstallConfig\nprofile: cluster\n",
			"managementVM:\n", "managementVM:\n  cores: 6\n  diskGiB: 60\n",
			"    tokenSecret: env:OPENCSP_TEST_PVE_SECRET\n", "    tokenSecret: env:OPENCSP_TEST_PVE_SECRET\n    storage: {disks: ceph}\n    network: {vlan: 7}\n",
		)
		cfg := mustLoad(t, doc)
		m, p := cfg.ManagementVM, cfg.Infrastructure.Proxmox
		if m.Cores != 6 || m.DiskGiB != 60 || m.MemoryMiB != 24576 {
			t.Errorf("managementVM = %+v", m)
		}
		// Nested mappings merge field by field.
		if p.Storage.Disks != "ceph" || p.Storage.Templates != "local-lvm" || p.Network.VLAN != 7 || p.Network.Bridge != "vmbr0" {
			t.Errorf("proxmox = %+v", p)
		}
	})

	t.Run("user false beats profile true", func(t *testing.T) {
		doc := edit(t, baseYAML, "managementVM:\n", "managementVM:\n  network:\n    dhcp: false\n    address: 192.0.2.9/24\n    gateway: 192.0.2.1\n")
		if cfg := mustLoad(t, doc); cfg.ManagementVM.Network.DHCP {
			t.Errorf("dhcp still true")
		}
	})

	t.Run("static address in the file replaces the profile's dhcp", func(t *testing.T) {
		doc := edit(t, baseYAML, "managementVM:\n", "managementVM:\n  network:\n    address: 192.0.2.9/24\n    gateway: 192.0.2.1\n")
		cfg := mustLoad(t, doc)
		if n := cfg.ManagementVM.Network; n.DHCP || n.Address != "192.0.2.9/24" {
			t.Errorf("network = %+v", n)
		}
	})

	t.Run("lists replace", func(t *testing.T) {
		doc := edit(t, baseYAML,
			"kind: InstallConfig\n", "kind: InstallConfig\nimages: [ubuntu-24.04]\nk3s:\n  disable: [traefik, metrics-server]\n",
		)
		cfg := mustLoad(t, doc)
		if !slices.Equal(cfg.Images, []string{"ubuntu-24.04"}) || cfg.ManagementVM.Image != "ubuntu-24.04" {
			t.Errorf("images = %v, managementVM.image %q", cfg.Images, cfg.ManagementVM.Image)
		}
		if !slices.Equal(cfg.K3s.Disable, []string{"traefik", "metrics-server"}) {
			t.Errorf("k3s.disable = %v, want the file's list only", cfg.K3s.Disable)
		}
		// An empty list in the file empties the profile's list.
		cfg = mustLoad(t, edit(t, baseYAML, "kind: InstallConfig\n", "kind: InstallConfig\nk3s:\n  disable: []\n"))
		if len(cfg.K3s.Disable) != 0 {
			t.Errorf("k3s.disable = %v, want empty", cfg.K3s.Disable)
		}
	})

	t.Run("components merge per key", func(t *testing.T) {
		doc := edit(t, baseYAML, "kind: InstallConfig\n", "kind: InstallConfig\nprofile: minimal\ncomponents:\n  lago:\n    version: 1.2.3\n  grafana:\n    version: 9.0.0\n")
		cfg := mustLoad(t, doc)
		lago := cfg.Components["lago"]
		if lago.Version != "1.2.3" || lago.Enabled == nil || *lago.Enabled {
			t.Errorf("lago = %+v: the file's version must merge with the profile's enabled: false", lago)
		}
		if cfg.ComponentEnabled("lago") || !cfg.ComponentEnabled("grafana") || cfg.Components["grafana"].Version != "9.0.0" {
			t.Errorf("components = %+v", cfg.Components)
		}
		// The profile's other entries stay.
		for _, c := range []string{"teleport", "semaphore", "tetragon", "vector", "mimir", "tempo"} {
			if cfg.ComponentEnabled(c) {
				t.Errorf("minimal: %s enabled", c)
			}
		}
		// The Console needs Zitadel's OIDC apps, which tofu-controller applies.
		for _, c := range []string{"tofu-controller", "zitadel", "console"} {
			if !cfg.ComponentEnabled(c) {
				t.Errorf("minimal: %s disabled", c)
			}
		}
	})

	t.Run("minimal disables teleport unless the file enables it", func(t *testing.T) {
		minimal := edit(t, baseYAML, "kind: InstallConfig\n", "kind: InstallConfig\nprofile: minimal\n")
		cfg := mustLoad(t, minimal)
		if cfg.ComponentEnabled("teleport") {
			t.Errorf("minimal: teleport enabled")
		}
		if !cfg.ComponentEnabled("console") || !cfg.ComponentEnabled("zitadel") || !cfg.ComponentEnabled("loki") {
			t.Errorf("minimal: core components off: %+v", cfg.Components)
		}
		cfg = mustLoad(t, edit(t, minimal, "profile: minimal\n", "profile: minimal\ncomponents:\n  teleport: {enabled: true}\n"))
		if !cfg.ComponentEnabled("teleport") {
			t.Errorf("minimal + teleport.enabled: teleport still off")
		}
		cfg = mustLoad(t, baseYAML)
		for _, c := range ComponentNames() {
			if !cfg.ComponentEnabled(c) {
				t.Errorf("standalone: %s off", c)
			}
		}
	})

	t.Run("errors point into the user's file, not the profile", func(t *testing.T) {
		doc := "apiVersion: opencsp.io/v1alpha1\nkind: InstallConfig\nprofile: openstack\ncluster: {name: lab, domain: lab.example.net}\n"
		_, errs := loadYAML(t, setupCorpusDir(t), doc)
		if len(errs) == 0 {
			t.Fatal("no errors")
		}
		for _, e := range errs {
			if !strings.HasSuffix(e.Pos.File, "opencsp.yaml") || strings.Contains(e.Error(), "profiles/") {
				t.Errorf("error points outside the file: %v", e)
			}
		}
		if e := findError(errs, "infrastructure.openstack.authURL", "required"); e == nil || e.Pos.Line != 1 {
			t.Errorf("missing authURL: %v", e)
		}
	})

	t.Run("provider in the file drops the profile's other provider", func(t *testing.T) {
		doc := edit(t, baseYAML, "kind: InstallConfig\n", "kind: InstallConfig\nprofile: openstack\n",
			"infrastructure:\n", "infrastructure:\n  provider: proxmox\n")
		_, errs := loadYAML(t, setupCorpusDir(t), doc)
		for _, e := range errs {
			if strings.HasPrefix(e.Field, "infrastructure.openstack") {
				t.Errorf("the profile's openstack section clashes with the file's provider: %v", e)
			}
		}
		// The openstack profile sets no proxmox storage, so the file must.
		if findError(errs, "infrastructure.proxmox.storage.disks", "required") == nil {
			t.Errorf("errors = %v", errs)
		}
		cfg := mustLoad(t, edit(t, doc, "    tokenSecret: env:OPENCSP_TEST_PVE_SECRET\n",
			"    tokenSecret: env:OPENCSP_TEST_PVE_SECRET\n    storage: {templates: local, disks: local, images: local, iso: local}\n    network: {bridge: vmbr0}\n"))
		if cfg.Infrastructure.OpenStack != nil || cfg.Infrastructure.Proxmox == nil {
			t.Errorf("infrastructure = %+v", cfg.Infrastructure)
		}
	})
}

// TestProfilesAreStrict decodes every embedded profile alone: profiles obey
// the same strict rules as user files.
func TestProfilesAreStrict(t *testing.T) {
	for _, name := range profiles.Names() {
		data, file, ok := profiles.Get(name)
		if !ok {
			t.Fatalf("profiles.Get(%q) failed", name)
		}
		root, errs := parseDocument(file, data)
		if errs != nil {
			t.Fatalf("%s: %v", file, errs)
		}
		d := &decoder{file: file, pos: map[string]Pos{}}
		var cfg Config
		d.decode(root, reflect.ValueOf(&cfg).Elem(), "", nil)
		if d.errs != nil {
			t.Errorf("%s: %v", file, d.errs)
		}
		if cfg.APIVersion != "" || cfg.Kind != "" || cfg.Cluster.Name != "" {
			t.Errorf("%s sets user-only fields", file)
		}
		for c := range cfg.Components {
			if !slices.Contains(ComponentNames(), c) {
				t.Errorf("%s: unknown component %q", file, c)
			}
		}
	}
	if _, _, ok := profiles.Get("../profiles"); ok {
		t.Errorf("profiles.Get accepts a path")
	}
}

func TestUnknownProfileUsesDefaultForTheRest(t *testing.T) {
	// Only the profile is wrong: no cascade of "required" errors.
	_, errs := loadYAML(t, setupCorpusDir(t), edit(t, baseYAML, "kind: InstallConfig\n", "kind: InstallConfig\nprofile: standalon\n"))
	if len(errs) != 1 || errs[0].Field != "profile" || !strings.Contains(errs[0].Msg, "use one of appliance, cluster, minimal, openstack, standalone") {
		t.Errorf("errors = %v", errs)
	}
}
