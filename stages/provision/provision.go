// Package provision is the stage that makes the management VM: a full
// clone of the image template on the chosen node, cloud-init, sizing, disk
// size, start, and its address. With managementVM.provision.method
// appliance the VM is instead installed by the appliance ISO: uploaded,
// booted on an empty disk until the appliance powers off, then switched to
// boot its disk (appliance.go).
//
// Address rule: with a static address the installer already knows it, so
// the guest agent only confirms it within a short wait (images such as
// Debian genericcloud may lack qemu-guest-agent; a silent agent is a
// warning). With DHCP the agent is the only source and is required.
package provision

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/infra"
	"github.com/opencsp/installer/stages"
	"github.com/opencsp/installer/stages/images"
)

// Name is the stage name.
const Name = "provision"

// Stage implements stages.Stage.
type Stage struct {
	provider infra.Provider
	// AgentTimeout bounds the wait for the guest agent; zero: 2 minutes
	// with a static address, 10 minutes with DHCP.
	AgentTimeoutStatic, AgentTimeoutDHCP time.Duration
	// InstallTimeout bounds the wait for the appliance to power the VM off
	// (method appliance); zero: 30 minutes.
	InstallTimeout time.Duration
}

// SetAgentTimeouts sets the guest agent waits (tests shorten them).
func (s *Stage) SetAgentTimeouts(static, dhcp time.Duration) {
	s.AgentTimeoutStatic, s.AgentTimeoutDHCP = static, dhcp
}

// SetInstallTimeout sets the wait for the appliance (tests shorten it).
func (s *Stage) SetInstallTimeout(d time.Duration) { s.InstallTimeout = d }

// New returns the provision stage working through provider.
func New(p infra.Provider) *Stage { return &Stage{provider: p} }

// Outputs is what later stages need to reach the VM.
type Outputs struct {
	VMID    int    `json:"vmid"`
	Node    string `json:"node"`
	Name    string `json:"name"`
	Address string `json:"address"`
	// AddressConfirmed is true when the guest agent reported the address.
	AddressConfirmed bool `json:"address_confirmed"`
	// Method is how the VM was made: "" (cloud image) or "appliance".
	Method string `json:"method,omitempty"`
}

func (*Stage) Name() string { return Name }

type inputs struct {
	VM      config.ManagementVM `json:"vm"`
	Storage string              `json:"storage"`
	Network config.Network      `json:"network"`
	Nodes   []string            `json:"nodes"`
	Tag     string              `json:"tag"`
	// The appliance ISO and its storage, for method appliance only.
	ISO        string `json:"iso,omitempty"`
	ISOStorage string `json:"iso_storage,omitempty"`
}

func (*Stage) Inputs(cfg *config.Config) any {
	in := inputs{VM: cfg.ManagementVM, Tag: cfg.Tag()}
	in.VM.SSH.PrivateKeyFile, in.VM.SSH.HostKeyFingerprint, in.VM.SSH.Port = "", "", 0 // not used here
	if px := cfg.Infrastructure.Proxmox; px != nil {
		in.Storage, in.Network, in.Nodes = px.Storage.Disks, px.Network, px.Nodes
		if appliance(cfg) {
			in.ISO, in.ISOStorage = cfg.ApplianceISO(), px.Storage.ISO
		}
	}
	return in
}

func (s *Stage) Plan(ctx context.Context, env *stages.Env) ([]stages.Change, error) {
	m := env.Config.ManagementVM
	vm, ok, err := s.provider.FindVM(ctx, m.Name, env.Config.Tag())
	if err != nil {
		return []stages.Change{{Action: "ensure", Target: "vm " + m.Name, Detail: "could not look at the cloud: " + err.Error()}}, nil
	}
	if ok {
		return []stages.Change{{Action: "converge", Target: "vm " + m.Name, Detail: fmt.Sprintf("exists as %d on %s", vm.ID, vm.Node)}}, nil
	}
	if appliance(env.Config) {
		return []stages.Change{{Action: "create", Target: "vm " + m.Name,
			Detail: fmt.Sprintf("boot the appliance ISO %s on an empty %d GiB disk, %d cores, %d MiB", env.Config.ApplianceISO(), m.DiskGiB, m.Cores, m.MemoryMiB)}}, nil
	}
	return []stages.Change{{Action: "create", Target: "vm " + m.Name,
		Detail: fmt.Sprintf("clone of %s, %d cores, %d MiB, %d GiB", m.Image, m.Cores, m.MemoryMiB, m.DiskGiB)}}, nil
}

func (s *Stage) Run(ctx context.Context, env *stages.Env) error {
	cfg := env.Config
	m := cfg.ManagementVM
	spec, err := vmSpec(cfg)
	if err != nil {
		return err
	}
	if appliance(cfg) {
		return s.runAppliance(ctx, env, spec)
	}
	var imgs images.Outputs
	if err := env.StageOutputs(images.Name, &imgs); err != nil {
		return err
	}
	_, node, err := s.locate(ctx, env)
	if err != nil {
		return err
	}
	t, ok := imgs.For(m.Image, node)
	if !ok {
		return fmt.Errorf("no template of image %s for node %s; rerun with --from images", m.Image, node)
	}
	spec.Node, spec.Template = node, infra.Template{ID: t.ID, Node: t.Node, Name: t.Name}

	done := env.Step("vm", fmt.Sprintf("VM %s on %s from template %d", m.Name, node, t.ID))
	vm, err := s.provider.EnsureVM(ctx, spec, env, env.Events)
	done(err)
	if err != nil {
		return err
	}
	out := Outputs{VMID: vm.ID, Node: vm.Node, Name: vm.Name}
	if err := env.SetOutputs(out); err != nil { // known even if the start fails
		return err
	}
	return s.startAndAddress(ctx, env, vm, spec, out)
}

// locate finds the VM by identity (an existing VM stays where it is) or
// places a new one; vm.ID is 0 when there is none yet.
func (s *Stage) locate(ctx context.Context, env *stages.Env) (infra.VM, string, error) {
	m := env.Config.ManagementVM
	px := env.Config.Infrastructure.Proxmox
	if vm, ok, err := s.provider.FindVM(ctx, m.Name, env.Config.Tag()); err != nil {
		return infra.VM{}, "", err
	} else if ok {
		return vm, vm.Node, nil
	}
	nodes, err := s.provider.Nodes(ctx)
	if err != nil {
		return infra.VM{}, "", fmt.Errorf("list nodes: %w", err)
	}
	req := infra.PlacementRequest{Allowed: px.Nodes, Pinned: m.Node, Cores: m.Cores, MemoryMiB: m.MemoryMiB,
		Storage: px.Storage.Disks, Bridge: px.Network.Bridge}
	if req.Pinned == "" && len(px.Nodes) == 1 {
		req.Pinned = px.Nodes[0]
	}
	n, err := infra.Place(nodes, req)
	if err != nil {
		return infra.VM{}, "", err
	}
	env.Info(fmt.Sprintf("placing %s on %s (%d MiB memory free)", m.Name, n.Name, n.MemFree()>>20))
	return infra.VM{}, n.Name, nil
}

// startAndAddress starts the VM (unless it runs) and records its address.
func (s *Stage) startAndAddress(ctx context.Context, env *stages.Env, vm infra.VM, spec infra.VMSpec, out Outputs) error {
	done := env.Step("start", fmt.Sprintf("start VM %d", vm.ID))
	err := s.provider.StartVM(ctx, vm, env)
	done(err)
	if err != nil {
		return err
	}

	done = env.Step("address", "wait for the guest agent to report an address")
	addr, confirmed, err := s.address(ctx, env, vm, spec)
	done(err)
	if err != nil {
		return err
	}
	out.Address, out.AddressConfirmed = addr.String(), confirmed
	return env.SetOutputs(out)
}

// address applies the address rule of the package doc.
func (s *Stage) address(ctx context.Context, env *stages.Env, vm infra.VM, spec infra.VMSpec) (netip.Addr, bool, error) {
	static := spec.Address.IsValid() && !spec.DHCP
	timeout := s.AgentTimeoutDHCP
	if static {
		timeout = s.AgentTimeoutStatic
	}
	if timeout == 0 {
		timeout = map[bool]time.Duration{true: 2 * time.Minute, false: 10 * time.Minute}[static]
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	got, err := s.provider.WaitAddress(wctx, vm)
	if ctx.Err() != nil {
		return netip.Addr{}, false, ctx.Err()
	}
	if !static {
		if err != nil {
			return netip.Addr{}, false, err
		}
		return got, true, nil
	}
	want := spec.Address.Addr()
	switch {
	case err != nil:
		env.Warn(fmt.Sprintf("using the configured address %s unconfirmed: %v", want, firstLine(err)))
		return want, false, nil
	case got != want:
		env.Warn(fmt.Sprintf("the guest agent reports %s, the config says %s; using the configured address", got, want))
		return want, false, nil
	}
	return want, true, nil
}

func firstLine(err error) string {
	s := err.Error()
	for i, c := range s {
		if c == '\n' {
			return s[:i]
		}
	}
	return s
}

// vmSpec builds the VM spec from the config (node and template come later).
func vmSpec(cfg *config.Config) (infra.VMSpec, error) {
	m := cfg.ManagementVM
	px := cfg.Infrastructure.Proxmox
	keys, err := cfg.AuthorizedKeys()
	if err != nil {
		return infra.VMSpec{}, err
	}
	spec := infra.VMSpec{Name: m.Name, Tag: cfg.Tag(), Storage: px.Storage.Disks, Cores: m.Cores, MemoryMiB: m.MemoryMiB,
		DiskGiB: m.DiskGiB, Bridge: px.Network.Bridge, VLAN: px.Network.VLAN, User: m.SSH.User, SSHKeys: keys,
		DHCP: m.Network.DHCP, SearchDomain: m.Network.SearchDomain}
	if !m.Network.DHCP {
		if spec.Address, err = netip.ParsePrefix(m.Network.Address); err != nil {
			return spec, fmt.Errorf("managementVM.network.address: %w", err)
		}
		if m.Network.Gateway != "" {
			if spec.Gateway, err = netip.ParseAddr(m.Network.Gateway); err != nil {
				return spec, fmt.Errorf("managementVM.network.gateway: %w", err)
			}
		}
	}
	for _, d := range m.Network.DNS {
		a, err := netip.ParseAddr(d)
		if err != nil {
			return spec, fmt.Errorf("managementVM.network.dns: %w", err)
		}
		spec.DNS = append(spec.DNS, a)
	}
	return spec, nil
}

// Verify: the recorded VM still exists with the install's tag.
func (s *Stage) Verify(ctx context.Context, env *stages.Env) error {
	var out Outputs
	if err := env.Outputs(&out); err != nil {
		return err
	}
	if out.VMID == 0 {
		return errors.New("no VM recorded")
	}
	vm, ok, err := s.provider.FindVM(ctx, out.Name, env.Config.Tag())
	if err != nil {
		return err
	}
	if !ok || vm.ID != out.VMID {
		return fmt.Errorf("VM %s (%d) with tag %s is gone", out.Name, out.VMID, env.Config.Tag())
	}
	return nil
}
