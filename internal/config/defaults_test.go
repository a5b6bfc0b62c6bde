package config

import (
	"path/filepath"
	"testing"
)

func TestDefaults(t *testing.T) {
	cfg := mustLoad(t, baseYAML)
	if cfg.ManagementVM.Name != "opencsp-lab-mgmt" {
		t.Errorf("VM name = %q", cfg.ManagementVM.Name)
	}
	if cfg.OpsRepo.Path != "clusters/lab" || cfg.OpsRepo.Branch != "main" {
		t.Errorf("opsRepo = %+v", cfg.OpsRepo)
	}
	if cfg.ManagementVM.SSH.Port != 22 {
		t.Errorf("port = %d", cfg.ManagementVM.SSH.Port)
	}
	if cfg.ManagementVM.Image != "debian-12" {
		t.Errorf("image = %q", cfg.ManagementVM.Image)
	}
	if cfg.Tag() != "opencsp-lab" {
		t.Errorf("tag = %q", cfg.Tag())
	}
	if cfg.Source == "" || cfg.BaseDir() == "" {
		t.Errorf("source %q basedir %q", cfg.Source, cfg.BaseDir())
	}

	// Set values are kept.
	cfg = mustLoad(t, edit(t, baseYAML,
		"managementVM:\n", "managementVM:\n  name: core-vm\n  ssh:\n    port: 2222\n    privateKeyFile: id_ed25519\n",
		"  ssh:\n    privateKeyFile: id_ed25519\n", "",
		"  url: ssh://git@git.example.net/ops/opencsp.git\n", "  url: ssh://git@git.example.net/ops/opencsp.git\n  branch: prod\n  path: fleet/lab\n",
	))
	if cfg.ManagementVM.Name != "core-vm" || cfg.ManagementVM.SSH.Port != 2222 || cfg.OpsRepo.Path != "fleet/lab" || cfg.OpsRepo.Branch != "prod" {
		t.Errorf("set values overwritten: %+v %+v", cfg.ManagementVM, cfg.OpsRepo)
	}
}

func TestApplyDefaultsAlone(t *testing.T) {
	var c Config
	applyDefaults(&c)
	if c.Profile != "standalone" || c.ManagementVM.SSH.Port != 22 || c.OpsRepo.Branch != "main" {
		t.Errorf("defaults = profile %q port %d branch %q", c.Profile, c.ManagementVM.SSH.Port, c.OpsRepo.Branch)
	}
	if c.ManagementVM.Name != "" || c.OpsRepo.Path != "" || c.ManagementVM.Image != "" {
		t.Errorf("defaults derived from empty fields: %+v %+v", c.ManagementVM, c.OpsRepo)
	}
	// No name is derived from an invalid cluster name: the cluster.name error
	// is reported once, not again for managementVM.name.
	c = Config{Cluster: Cluster{Name: "Bad_Name"}, Images: []string{"a", "b"}}
	applyDefaults(&c)
	if c.ManagementVM.Name != "" || c.ManagementVM.Image != "a" {
		t.Errorf("name %q image %q", c.ManagementVM.Name, c.ManagementVM.Image)
	}
}

func TestComponentEnabledDefaultsOn(t *testing.T) {
	off, on := false, true
	c := Config{Components: map[string]ComponentConfig{"a": {Enabled: &off}, "b": {Enabled: &on}, "c": {Version: "1.0.0"}}}
	for name, want := range map[string]bool{"a": false, "b": true, "c": true, "d": true} {
		if got := c.ComponentEnabled(name); got != want {
			t.Errorf("ComponentEnabled(%s) = %v", name, got)
		}
	}
}

func TestApplianceDefaults(t *testing.T) {
	tests := []struct {
		name        string
		doc         string
		method, iso string
		target      string
		after       string
		wipe        bool
	}{
		{"standalone", baseYAML, ProvisionCloudImage, DefaultApplianceISO, TargetDiskAuto, AfterPoweroff, false},
		{"appliance profile", "profile: appliance\n" + baseYAML, ProvisionAppliance, DefaultApplianceISO, TargetDiskAuto, AfterPoweroff, false},
		{"file wins over profile", edit(t, "profile: appliance\n"+baseYAML,
			"managementVM:\n", "managementVM:\n  provision:\n    method: cloudimage\n"),
			ProvisionCloudImage, DefaultApplianceISO, TargetDiskAuto, AfterPoweroff, false},
		{"all set", baseYAML + "appliance:\n  iso: out/a.iso\n  targetDisk: /dev/vdb\n  wipe: true\n  after: reboot\n",
			ProvisionCloudImage, "out/a.iso", "/dev/vdb", AfterReboot, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustLoad(t, tt.doc)
			a := cfg.Appliance
			if got := cfg.ManagementVM.Provision.Method; got != tt.method {
				t.Errorf("method = %q, want %q", got, tt.method)
			}
			if a.ISO != tt.iso || a.TargetDisk != tt.target || a.After != tt.after || a.Wipe != tt.wipe {
				t.Errorf("appliance = %+v, want iso %q targetDisk %q after %q wipe %v", a, tt.iso, tt.target, tt.after, tt.wipe)
			}
			if want := filepath.Join(cfg.BaseDir(), tt.iso); cfg.ApplianceISO() != want {
				t.Errorf("ApplianceISO() = %q, want %q", cfg.ApplianceISO(), want)
			}
		})
	}
}
