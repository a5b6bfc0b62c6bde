package proxmox

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	goproxmox "github.com/luthermonson/go-proxmox"

	"github.com/opencsp/installer/internal/events"
	"github.com/opencsp/installer/internal/infra"
)

// EnsureVM full-clones the template to spec.Name on spec.Node (unless a VM
// with that name and tag exists, e.g. a clone that finished while an
// earlier run was killed), then converges its cloud-init settings, sizing
// and disk size. Settings already right are not written again.
func (p *Provider) EnsureVM(ctx context.Context, spec infra.VMSpec, tasks infra.Tasks, sink events.Sink) (infra.VM, error) {
	if sink == nil {
		sink = events.Discard()
	}
	cloneKind, resizeKind := "clone "+spec.Name, "resize "+spec.Name
	for _, k := range []string{cloneKind, resizeKind} {
		if err := p.reattach(ctx, tasks, k); err != nil {
			return infra.VM{}, err
		}
	}
	var vm infra.VM
	err := p.retry(ctx, "ensure VM "+spec.Name, func() error {
		found, ok, err := p.FindVM(ctx, spec.Name, spec.Tag)
		if err != nil {
			return err
		}
		if !ok {
			sink.Emit(events.Event{Step: "clone", Status: events.Info,
				Message: fmt.Sprintf("clone template %d (%s) to VM %s on %s", spec.Template.ID, spec.Template.Node, spec.Name, spec.Node)})
			if found, err = p.clone(ctx, spec, tasks, cloneKind); err != nil {
				return err
			}
		}
		if err := p.waitUnlocked(ctx, found.Node, found.ID); err != nil {
			return err
		}
		if err := p.configure(ctx, found, spec); err != nil {
			return err
		}
		if err := p.resize(ctx, found, spec.DiskGiB, tasks, resizeKind); err != nil {
			return err
		}
		vm = found
		return nil
	})
	return vm, err
}

func (p *Provider) clone(ctx context.Context, spec infra.VMSpec, tasks infra.Tasks, kind string) (infra.VM, error) {
	for attempt := 1; ; attempt++ {
		newid, err := p.nextID(ctx)
		if err != nil {
			return infra.VM{}, err
		}
		params := map[string]any{"newid": newid, "name": spec.Name, "full": 1}
		if spec.Storage != "" {
			params["storage"] = spec.Storage
		}
		if spec.Node != spec.Template.Node {
			params["target"] = spec.Node
		}
		path := fmt.Sprintf("/nodes/%s/qemu/%d/clone", spec.Template.Node, spec.Template.ID)
		err = p.runTask(ctx, tasks, kind, func() (string, error) {
			var upid string
			err := p.api.post(ctx, path, params, &upid)
			return upid, err
		})
		if err == nil {
			return infra.VM{ID: newid, Node: spec.Node, Name: spec.Name}, nil
		}
		if isAlreadyExists(err) && attempt < p.opts.Attempts && ctx.Err() == nil {
			p.log.Warn("VMID taken meanwhile, retrying the clone with a fresh one", "vmid", newid, "err", err)
			continue
		}
		return infra.VM{}, fmt.Errorf("clone template %d on %s to VM %d: %w", spec.Template.ID, spec.Template.Node, newid, err)
	}
}

// desiredConfig is the VM config the spec asks for, in PVE's string form.
func desiredConfig(spec infra.VMSpec) map[string]string {
	want := map[string]string{
		"cores":  strconv.Itoa(spec.Cores),
		"memory": strconv.Itoa(spec.MemoryMiB),
		"tags":   spec.Tag,
		"agent":  "enabled=1",
	}
	if spec.User != "" {
		want["ciuser"] = spec.User
	}
	if len(spec.SSHKeys) > 0 {
		// PVE wants the whole value URI-encoded, spaces as %20 (not "+").
		want["sshkeys"] = goproxmox.EncodeSSHKeys(spec.SSHKeys...)
	}
	if spec.DHCP {
		want["ipconfig0"] = "ip=dhcp"
	} else if spec.Address.IsValid() {
		ip := "ip=" + spec.Address.String()
		if spec.Gateway.IsValid() {
			ip += ",gw=" + spec.Gateway.String()
		}
		want["ipconfig0"] = ip
	}
	if len(spec.DNS) > 0 {
		var ns []string
		for _, a := range spec.DNS {
			ns = append(ns, a.String())
		}
		want["nameserver"] = strings.Join(ns, " ")
	}
	if spec.SearchDomain != "" {
		want["searchdomain"] = spec.SearchDomain
	}
	return want
}

// configure writes the settings that differ from the VM's config.
func (p *Provider) configure(ctx context.Context, vm infra.VM, spec infra.VMSpec) error {
	cfg, err := p.vmConfig(ctx, vm)
	if err != nil {
		return err
	}
	params := map[string]any{}
	for k, v := range desiredConfig(spec) {
		cur := cfg[k]
		if k == "sshkeys" {
			cur = normalizeEncoded(cur)
			v = normalizeEncoded(v)
		}
		if cur != v {
			params[k] = desiredConfig(spec)[k]
		}
	}
	if len(params) == 0 {
		return nil
	}
	return p.retry(ctx, fmt.Sprintf("configure VM %d", vm.ID), func() error {
		return p.api.put(ctx, fmt.Sprintf("/nodes/%s/qemu/%d/config", vm.Node, vm.ID), params, nil)
	})
}

// normalizeEncoded compares URI-encoded values case-insensitively in their
// escapes (PVE may store %2b or %2B).
func normalizeEncoded(s string) string { return strings.ToUpper(s) }

func (p *Provider) vmConfig(ctx context.Context, vm infra.VM) (map[string]string, error) {
	var raw map[string]any
	path := fmt.Sprintf("/nodes/%s/qemu/%d/config", vm.Node, vm.ID)
	if err := p.retry(ctx, fmt.Sprintf("read config of VM %d", vm.ID), func() error { return p.api.get(ctx, path, nil, &raw) }); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		switch x := v.(type) {
		case string:
			out[k] = x
		case float64:
			out[k] = strconv.FormatFloat(x, 'f', -1, 64)
		default:
			out[k] = fmt.Sprint(x)
		}
	}
	return out, nil
}

var sizeRE = regexp.MustCompile(`(?:^|,)size=(\d+(?:\.\d+)?)([KMGT]?)`)

// diskBytes parses the size= of a drive string.
func diskBytes(drive string) int64 {
	m := sizeRE.FindStringSubmatch(drive)
	if m == nil {
		return 0
	}
	f, _ := strconv.ParseFloat(m[1], 64)
	shift := map[string]uint{"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m[2]]
	return int64(f * float64(int64(1)<<shift))
}

// resize grows scsi0 to gib GiB unless it is that large already.
func (p *Provider) resize(ctx context.Context, vm infra.VM, gib int, tasks infra.Tasks, kind string) error {
	if gib <= 0 {
		return nil
	}
	cfg, err := p.vmConfig(ctx, vm)
	if err != nil {
		return err
	}
	if diskBytes(cfg["scsi0"]) >= int64(gib)<<30 {
		return nil
	}
	return p.runTask(ctx, tasks, kind, func() (string, error) {
		var upid *string
		err := p.api.put(ctx, fmt.Sprintf("/nodes/%s/qemu/%d/resize", vm.Node, vm.ID),
			map[string]any{"disk": "scsi0", "size": strconv.Itoa(gib) + "G"}, &upid)
		if err != nil || upid == nil {
			return "", err
		}
		return *upid, nil
	})
}

// StartVM starts the VM unless it runs.
func (p *Provider) StartVM(ctx context.Context, vm infra.VM, tasks infra.Tasks) error {
	kind := "start " + vm.Name
	if err := p.reattach(ctx, tasks, kind); err != nil {
		return err
	}
	return p.retry(ctx, fmt.Sprintf("start VM %d", vm.ID), func() error {
		var st struct {
			Status string `json:"status"`
		}
		if err := p.api.get(ctx, fmt.Sprintf("/nodes/%s/qemu/%d/status/current", vm.Node, vm.ID), nil, &st); err != nil {
			return err
		}
		if st.Status == "running" {
			return nil
		}
		return p.runTask(ctx, tasks, kind, func() (string, error) {
			var upid string
			err := p.api.post(ctx, fmt.Sprintf("/nodes/%s/qemu/%d/status/start", vm.Node, vm.ID), nil, &upid)
			return upid, err
		})
	})
}

// AgentError explains why the guest agent reported no address.
type AgentError struct {
	VM        infra.VM
	Running   bool
	AgentConf string
	LastErr   error
}

func (e *AgentError) Error() string {
	var hints []string
	if !e.Running {
		hints = append(hints, "the VM is not running: check its start task and console (qm terminal "+strconv.Itoa(e.VM.ID)+")")
	}
	if !strings.Contains(e.AgentConf, "enabled=1") && e.AgentConf != "1" {
		hints = append(hints, "the guest agent is not enabled in the VM config (agent: enabled=1)")
	}
	hints = append(hints, "is qemu-guest-agent installed and running in the image? (Debian genericcloud does not ship it: use a static address, or an image with the agent)",
		"did cloud-init configure the network? (check ipconfig0 and the console)")
	s := fmt.Sprintf("VM %d (%s on %s) reported no address through the guest agent", e.VM.ID, e.VM.Name, e.VM.Node)
	if e.LastErr != nil {
		s += " (last answer: " + e.LastErr.Error() + ")"
	}
	return s + ":\n    - " + strings.Join(hints, "\n    - ")
}

// WaitAddress polls the guest agent until it reports a global unicast
// address, or ctx ends; then it returns an *AgentError with a diagnosis.
func (p *Provider) WaitAddress(ctx context.Context, vm infra.VM) (netip.Addr, error) {
	var delay time.Duration
	var last error
	path := fmt.Sprintf("/nodes/%s/qemu/%d/agent/network-get-interfaces", vm.Node, vm.ID)
	for {
		var res struct {
			Result []struct {
				Name string `json:"name"`
				IPs  []struct {
					Addr string `json:"ip-address"`
				} `json:"ip-addresses"`
			} `json:"result"`
		}
		err := p.api.get(ctx, path, nil, &res)
		if err == nil {
			for _, ifc := range res.Result {
				for _, ip := range ifc.IPs {
					if a, perr := netip.ParseAddr(ip.Addr); perr == nil && a.IsGlobalUnicast() {
						return a, nil
					}
				}
			}
			last = errors.New("no global address yet")
		} else {
			last = err
		}
		delay = p.opts.Poll.next(delay)
		if serr := sleep(ctx, delay); serr != nil {
			return netip.Addr{}, p.diagnoseAgent(vm, last)
		}
	}
}

// diagnoseAgent gathers what explains a silent agent, with a fresh context
// since the caller's has ended.
func (p *Provider) diagnoseAgent(vm infra.VM, last error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e := &AgentError{VM: vm, LastErr: last}
	var st struct {
		Status string `json:"status"`
	}
	if p.api.get(ctx, fmt.Sprintf("/nodes/%s/qemu/%d/status/current", vm.Node, vm.ID), nil, &st) == nil {
		e.Running = st.Status == "running"
	}
	if cfg, err := p.vmConfig(ctx, vm); err == nil {
		e.AgentConf = cfg["agent"]
	}
	return e
}

// DeleteVM stops and destroys a VM, only if it carries the install's tag.
func (p *Provider) DeleteVM(ctx context.Context, vm infra.VM, tasks infra.Tasks) error {
	found, ok, err := p.FindVM(ctx, vm.Name, p.cfg.Tag())
	if err != nil || !ok {
		return err
	}
	if found.ID != vm.ID {
		return fmt.Errorf("delete VM %d: the VM named %s with tag %s is %d; refusing", vm.ID, vm.Name, p.cfg.Tag(), found.ID)
	}
	if found.Running {
		err := p.runTask(ctx, tasks, "stop "+vm.Name, func() (string, error) {
			var upid string
			err := p.api.post(ctx, fmt.Sprintf("/nodes/%s/qemu/%d/status/stop", found.Node, found.ID), nil, &upid)
			return upid, err
		})
		if err != nil {
			return fmt.Errorf("stop VM %d: %w", vm.ID, err)
		}
	}
	return p.runTask(ctx, tasks, "destroy "+vm.Name, func() (string, error) {
		var upid string
		err := p.api.delete(ctx, fmt.Sprintf("/nodes/%s/qemu/%d?purge=1", found.Node, found.ID), &upid)
		return upid, err
	})
}
