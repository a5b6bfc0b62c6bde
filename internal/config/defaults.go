package config

import "github.com/opencsp/installer/profiles"

// applyDefaults fills what neither the profile nor the file set and that
// follows from other fields.
func applyDefaults(c *Config) {
	if c.Profile == "" {
		c.Profile = profiles.Default
	}
	if c.ManagementVM.Name == "" && dnsLabelRE.MatchString(c.Cluster.Name) {
		c.ManagementVM.Name = "opencsp-" + c.Cluster.Name + "-mgmt"
	}
	if c.ManagementVM.Image == "" && len(c.Images) > 0 {
		c.ManagementVM.Image = c.Images[0]
	}
	if c.ManagementVM.SSH.Port == 0 {
		c.ManagementVM.SSH.Port = 22
	}
	if c.ManagementVM.Provision.Method == "" {
		c.ManagementVM.Provision.Method = ProvisionCloudImage
	}
	if c.Appliance.ISO == "" {
		c.Appliance.ISO = DefaultApplianceISO
	}
	if c.Appliance.TargetDisk == "" {
		c.Appliance.TargetDisk = TargetDiskAuto
	}
	if c.Appliance.After == "" {
		c.Appliance.After = AfterPoweroff
	}
	if c.OpsRepo.Branch == "" {
		c.OpsRepo.Branch = "main"
	}
	if c.OpsRepo.Path == "" && c.Cluster.Name != "" {
		c.OpsRepo.Path = "clusters/" + c.Cluster.Name
	}
}

// Tag is the Proxmox tag that marks every resource of this installation.
func (c *Config) Tag() string { return "opencsp-" + c.Cluster.Name }

// ComponentEnabled reports whether a Core component is on (default: on).
func (c *Config) ComponentEnabled(name string) bool {
	cc, ok := c.Components[name]
	if !ok || cc.Enabled == nil {
		return true
	}
	return *cc.Enabled
}
