package config

import (
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
