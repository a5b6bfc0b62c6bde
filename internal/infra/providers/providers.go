// Package providers builds the infrastructure provider a config selects.
package providers

import (
	"fmt"
	"log/slog"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/infra"
	"github.com/opencsp/installer/internal/infra/openstack"
	"github.com/opencsp/installer/internal/infra/proxmox"
)

// New returns the provider for cfg.Infrastructure.Provider. It does not
// contact the cloud.
func New(cfg *config.Config, log *slog.Logger) (infra.Provider, error) {
	switch p := cfg.Infrastructure.Provider; p {
	case "proxmox":
		return proxmox.New(cfg, proxmox.Options{Log: log})
	case "openstack":
		return openstack.New(cfg)
	default:
		return nil, fmt.Errorf("unknown infrastructure provider %q", p)
	}
}
