// Package openstack is the OpenStack provider. Only its configuration is
// supported today: provisioning fails early with a clear message so nobody
// discovers the gap halfway through an install.
package openstack

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/events"
	"github.com/opencsp/installer/internal/infra"
)

// ErrProvisioning is returned by every operation that would touch the cloud.
var ErrProvisioning = fmt.Errorf("OpenStack provisioning is %w; use infrastructure.provider: proxmox", infra.ErrNotImplemented)

// Provider is the OpenStack stub.
type Provider struct{ cfg *config.OpenStack }

// New checks that the config has an OpenStack section. Validation of its
// fields happens when the config is loaded.
func New(cfg *config.Config) (*Provider, error) {
	if cfg.Infrastructure.OpenStack == nil {
		return nil, fmt.Errorf("infrastructure.openstack is not set")
	}
	return &Provider{cfg: cfg.Infrastructure.OpenStack}, nil
}

var _ infra.Provider = (*Provider)(nil)

func (p *Provider) Preflight(context.Context) (infra.Problems, error) { return nil, ErrProvisioning }
func (p *Provider) Nodes(context.Context) ([]infra.Node, error)       { return nil, ErrProvisioning }
func (p *Provider) EnsureTemplate(context.Context, infra.TemplateSpec, infra.Tasks, events.Sink) (infra.Template, error) {
	return infra.Template{}, ErrProvisioning
}
func (p *Provider) FindTemplate(context.Context, string, string, string) (infra.Template, bool, error) {
	return infra.Template{}, false, ErrProvisioning
}
func (p *Provider) EnsureVM(context.Context, infra.VMSpec, infra.Tasks, events.Sink) (infra.VM, error) {
	return infra.VM{}, ErrProvisioning
}
func (p *Provider) FindVM(context.Context, string, string) (infra.VM, bool, error) {
	return infra.VM{}, false, ErrProvisioning
}
func (p *Provider) StartVM(context.Context, infra.VM, infra.Tasks) error { return ErrProvisioning }
func (p *Provider) WaitAddress(context.Context, infra.VM) (netip.Addr, error) {
	return netip.Addr{}, ErrProvisioning
}
func (p *Provider) DeleteVM(context.Context, infra.VM, infra.Tasks) error { return ErrProvisioning }
