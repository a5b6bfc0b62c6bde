package proxmox

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/opencsp/installer/internal/events"
	"github.com/opencsp/installer/internal/infra"
)

var _ infra.ApplianceInstaller = (*Provider)(nil)

// EnsureISO uploads the appliance ISO to storage on node unless a volume
// with that id and size is there. PVE verifies the checksum before the file
// lands, so a listed volume of the right size is the file we sent.
func (p *Provider) EnsureISO(ctx context.Context, node, storage string, iso infra.ISO, tasks infra.Tasks, sink events.Sink) (string, error) {
	if sink == nil {
		sink = events.Discard()
	}
	volid := storage + ":iso/" + iso.FileName
	kind := "iso " + volid + "@" + node
	if err := p.reattach(ctx, tasks, kind); err != nil {
		return "", err
	}
	have, err := p.isoSize(ctx, node, storage, volid)
	if err != nil {
		return "", err
	}
	if have == iso.Size {
		return volid, nil
	}
	if have >= 0 {
		p.log.Info("ISO on storage differs in size, uploading again", "volid", volid, "have", have, "want", iso.Size)
	}
	f := uploadFile{Content: "iso", LocalPath: iso.LocalPath, FileName: iso.FileName, Checksum: iso.Checksum, ChecksumAlgorithm: iso.ChecksumAlgorithm}
	sink.Emit(events.Event{Step: "upload", Status: events.Started, Message: fmt.Sprintf("upload %s to %s on %s", iso.FileName, storage, node)})
	err = p.retry(ctx, fmt.Sprintf("upload %s to %s on %s", iso.FileName, storage, node), func() error {
		return p.runTask(ctx, tasks, kind, func() (string, error) { return p.upload(ctx, node, storage, f, sink) })
	})
	if err != nil {
		return "", err
	}
	if have, err = p.isoSize(ctx, node, storage, volid); err != nil {
		return "", err
	}
	if have != iso.Size {
		return "", fmt.Errorf("upload %s to %s on %s: the storage lists %s with %d bytes, want %d", iso.FileName, storage, node, volid, have, iso.Size)
	}
	sink.Emit(events.Event{Step: "upload", Status: events.Done})
	return volid, nil
}

// isoSize returns the size of volid in the storage's ISO content, -1 when
// it is not there.
func (p *Provider) isoSize(ctx context.Context, node, storage, volid string) (int64, error) {
	var content []struct {
		VolID string  `json:"volid"`
		Size  jsonInt `json:"size"`
	}
	path := fmt.Sprintf("/nodes/%s/storage/%s/content", node, storage)
	err := p.retry(ctx, fmt.Sprintf("list ISO content of %s on %s", storage, node), func() error {
		return p.api.get(ctx, path, map[string]string{"content": "iso"}, &content)
	})
	if err != nil {
		return 0, err
	}
	for _, c := range content {
		if c.VolID == volid {
			return int64(c.Size), nil
		}
	}
	return -1, nil
}

// installBoot is the boot order while the appliance installs; the disk
// follows the ISO so that a reboot of the appliance (appliance.after:
// reboot) would not loop — "reboot: 0" already makes it end qemu instead.
const installBoot = "order=ide2;scsi0"

// EnsureApplianceVM creates the VM that boots the appliance: an empty
// scsi0 of spec.DiskGiB, the ISO on ide2, the ISO first in the boot order
// and "reboot: 0" (a reboot ends qemu like a power-off, so the install's
// end is visible whatever appliance.after says). A VM found by name and
// tag is kept; while it has not booted yet its ISO is converged.
func (p *Provider) EnsureApplianceVM(ctx context.Context, spec infra.VMSpec, isoVolume string, tasks infra.Tasks, sink events.Sink) (infra.VM, error) {
	if sink == nil {
		sink = events.Discard()
	}
	kind := "create " + spec.Name + "@" + spec.Node
	if err := p.reattach(ctx, tasks, kind); err != nil {
		return infra.VM{}, err
	}
	var vm infra.VM
	err := p.retry(ctx, "ensure VM "+spec.Name, func() error {
		found, ok, err := p.FindVM(ctx, spec.Name, spec.Tag)
		if err != nil {
			return err
		}
		if ok {
			if err := p.waitUnlocked(ctx, found.Node, found.ID); err != nil {
				return err
			}
			vm = found
			return p.convergeISO(ctx, found, isoVolume)
		}
		sink.Emit(events.Event{Step: "create", Status: events.Info,
			Message: fmt.Sprintf("create VM %s on %s to boot %s", spec.Name, spec.Node, isoVolume)})
		vm, err = p.createApplianceVM(ctx, spec, isoVolume, tasks, kind)
		return err
	})
	return vm, err
}

func (p *Provider) createApplianceVM(ctx context.Context, spec infra.VMSpec, isoVolume string, tasks infra.Tasks, kind string) (infra.VM, error) {
	net := "virtio,bridge=" + spec.Bridge
	if spec.VLAN > 0 {
		net += ",tag=" + strconv.Itoa(spec.VLAN)
	}
	for attempt := 1; ; attempt++ {
		vmid, err := p.nextID(ctx)
		if err != nil {
			return infra.VM{}, err
		}
		params := map[string]any{
			"vmid":    vmid,
			"name":    spec.Name,
			"tags":    spec.Tag,
			"ostype":  "l26",
			"cores":   spec.Cores,
			"memory":  strconv.Itoa(spec.MemoryMiB),
			"scsihw":  "virtio-scsi-single",
			"scsi0":   fmt.Sprintf("%s:%d,discard=on", spec.Storage, spec.DiskGiB),
			"ide2":    isoVolume + ",media=cdrom",
			"boot":    installBoot,
			"reboot":  0,
			"serial0": "socket", // the appliance logs to ttyS0 as well: qm terminal
			"agent":   "enabled=1",
			"net0":    net,
		}
		err = p.runTask(ctx, tasks, kind, func() (string, error) {
			var upid string
			err := p.api.post(ctx, "/nodes/"+spec.Node+"/qemu", params, &upid)
			return upid, err
		})
		if err == nil {
			return infra.VM{ID: vmid, Node: spec.Node, Name: spec.Name}, nil
		}
		if isAlreadyExists(err) && attempt < p.opts.Attempts && ctx.Err() == nil {
			p.log.Warn("VMID taken meanwhile, retrying with a fresh one", "vmid", vmid, "err", err)
			continue
		}
		return infra.VM{}, fmt.Errorf("create VM %d (%s) on %s: %w", vmid, spec.Name, spec.Node, err)
	}
}

// convergeISO points a VM that has not booted the appliance yet at the
// current ISO (a rebuilt ISO has a new name).
func (p *Provider) convergeISO(ctx context.Context, vm infra.VM, isoVolume string) error {
	phase, err := p.InstallPhase(ctx, vm)
	if err != nil || phase != infra.InstallPending {
		return err
	}
	cfg, err := p.vmConfig(ctx, vm)
	if err != nil {
		return err
	}
	want := isoVolume + ",media=cdrom"
	if drivePart(cfg["ide2"], 0) == isoVolume && cfg["boot"] == installBoot {
		return nil
	}
	return p.retry(ctx, fmt.Sprintf("set the ISO of VM %d", vm.ID), func() error {
		return p.api.put(ctx, fmt.Sprintf("/nodes/%s/qemu/%d/config", vm.Node, vm.ID),
			map[string]any{"ide2": want, "boot": installBoot}, nil)
	})
}

// drivePart returns the i-th comma-separated part of a drive string.
func drivePart(drive string, i int) string {
	parts := strings.Split(drive, ",")
	if i < len(parts) {
		return parts[i]
	}
	return ""
}

var bootOrderRE = regexp.MustCompile(`(?:^|,)order=([^,]*)`)

// bootsISO reports whether the first device of the boot order that has
// media is a CD-ROM with an ISO volume (what the firmware would boot).
func bootsISO(cfg map[string]string) bool {
	m := bootOrderRE.FindStringSubmatch(cfg["boot"])
	if m == nil {
		return false
	}
	for _, dev := range strings.Split(m[1], ";") {
		val, ok := cfg[dev]
		if !ok || strings.HasPrefix(dev, "net") {
			continue
		}
		file := drivePart(val, 0)
		if file == "" || file == "none" || file == "cdrom" || strings.Contains(file, "cloudinit") {
			continue
		}
		return strings.Contains(file, ":iso/") && strings.Contains(val, "media=cdrom")
	}
	return false
}

// InstallPhase reads the phase from PVE: the boot order (ISO first or not),
// the run state, and — for a stopped VM still set to boot the ISO — the
// node's task list: a successful start since the VM was created means the
// appliance ran and powered off.
func (p *Provider) InstallPhase(ctx context.Context, vm infra.VM) (infra.InstallPhase, error) {
	cfg, err := p.vmConfig(ctx, vm)
	if err != nil {
		return 0, err
	}
	if !bootsISO(cfg) {
		return infra.InstallDone, nil
	}
	running, err := p.isRunning(ctx, vm)
	if err != nil {
		return 0, err
	}
	if running {
		return infra.InstallRunning, nil
	}
	q := map[string]string{"vmid": strconv.Itoa(vm.ID), "typefilter": "qmstart", "statusfilter": "ok", "limit": "1"}
	if ct := metaCtime(cfg["meta"]); ct > 0 {
		q["since"] = strconv.FormatInt(ct, 10)
	}
	var list []struct {
		UPID string `json:"upid"`
	}
	err = p.retry(ctx, fmt.Sprintf("list start tasks of VM %d", vm.ID), func() error {
		return p.api.get(ctx, "/nodes/"+vm.Node+"/tasks", q, &list)
	})
	if err != nil {
		return 0, err
	}
	if len(list) > 0 {
		return infra.InstallPoweredOff, nil
	}
	return infra.InstallPending, nil
}

var ctimeRE = regexp.MustCompile(`(?:^|,)ctime=(\d+)`)

// metaCtime is the creation time qemu-server records in "meta".
func metaCtime(meta string) int64 {
	m := ctimeRE.FindStringSubmatch(meta)
	if m == nil {
		return 0
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

func (p *Provider) isRunning(ctx context.Context, vm infra.VM) (bool, error) {
	var st struct {
		Status string `json:"status"`
	}
	err := p.retry(ctx, fmt.Sprintf("status of VM %d", vm.ID), func() error {
		return p.api.get(ctx, fmt.Sprintf("/nodes/%s/qemu/%d/status/current", vm.Node, vm.ID), nil, &st)
	})
	return st.Status == "running", err
}

// PowerOffError is an appliance that did not power its VM off in time.
type PowerOffError struct {
	VM      infra.VM
	Waited  time.Duration
	LastErr error
}

func (e *PowerOffError) Error() string {
	s := fmt.Sprintf("VM %d (%s on %s) did not power off within %s: the appliance is still installing or hangs; "+
		"look at its serial console (qm terminal %d on %s, or the VM's console in the web UI), then rerun to continue waiting",
		e.VM.ID, e.VM.Name, e.VM.Node, e.Waited.Round(time.Second), e.VM.ID, e.VM.Node)
	if e.LastErr != nil {
		s += " (last status poll: " + e.LastErr.Error() + ")"
	}
	return s
}

// WaitPowerOff polls the VM's status until it is stopped. When ctx's
// deadline passes it returns a *PowerOffError naming the VM and its
// console; a cancelled ctx is returned as is.
func (p *Provider) WaitPowerOff(ctx context.Context, vm infra.VM) error {
	begin := time.Now()
	var delay time.Duration
	var last error
	path := fmt.Sprintf("/nodes/%s/qemu/%d/status/current", vm.Node, vm.ID)
	for {
		var st struct {
			Status string `json:"status"`
		}
		err := p.api.get(ctx, path, nil, &st)
		switch {
		case err == nil && st.Status == "stopped":
			return nil
		case err == nil:
			last = nil
		case isTransient(err):
			last = err
		case ctx.Err() == nil:
			return fmt.Errorf("wait for VM %d to power off: %w", vm.ID, err)
		}
		delay = p.opts.Poll.next(delay)
		if serr := sleep(ctx, delay); serr != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return &PowerOffError{VM: vm, Waited: time.Since(begin), LastErr: last}
			}
			return fmt.Errorf("wait for VM %d to power off: %w", vm.ID, serr)
		}
	}
}

// NotInstalledError is an appliance that powered off without writing the
// disk (applinit powers off after a failure too).
type NotInstalledError struct {
	VM   infra.VM
	Disk string
}

func (e *NotInstalledError) Error() string {
	return fmt.Sprintf("VM %d (%s on %s) powered off but the appliance wrote nothing to its disk %s: it failed; "+
		"look at its serial console (qm terminal %d on %s) for the line starting \"opencsp-appliance: FAILED\", "+
		"fix the cause (e.g. rebuild the ISO), then remove the VM (qm destroy %d) and rerun",
		e.VM.ID, e.VM.Name, e.VM.Node, e.Disk, e.VM.ID, e.VM.Node, e.VM.ID)
}

// BootFromDisk checks that the appliance wrote scsi0 (PVE reports what a
// thin or sparse volume has allocated as "used"), then empties the CD-ROM,
// makes scsi0 the boot device and drops "reboot: 0". Nothing is written
// when the VM boots from disk already.
func (p *Provider) BootFromDisk(ctx context.Context, vm infra.VM, tasks infra.Tasks) error {
	cfg, err := p.vmConfig(ctx, vm)
	if err != nil {
		return err
	}
	if !bootsISO(cfg) {
		return nil
	}
	disk := drivePart(cfg["scsi0"], 0)
	sid, _, ok := strings.Cut(disk, ":")
	if !ok {
		return fmt.Errorf("VM %d has no disk on scsi0 (%q); remove the VM and rerun", vm.ID, cfg["scsi0"])
	}
	// The content list, not the volume info call: a dir volume id holds a
	// "/", which the path form would need escaped.
	var content []struct {
		VolID string  `json:"volid"`
		Used  jsonInt `json:"used"`
	}
	path := fmt.Sprintf("/nodes/%s/storage/%s/content", vm.Node, sid)
	q := map[string]string{"vmid": strconv.Itoa(vm.ID)}
	if err := p.retry(ctx, "list the volumes of VM "+strconv.Itoa(vm.ID), func() error { return p.api.get(ctx, path, q, &content) }); err != nil {
		return err
	}
	var used int64 = -1
	for _, c := range content {
		if c.VolID == disk {
			used = int64(c.Used)
		}
	}
	if used < 0 {
		return fmt.Errorf("VM %d: disk %s is not listed on storage %s; remove the VM and rerun", vm.ID, disk, sid)
	}
	if used == 0 {
		return &NotInstalledError{VM: vm, Disk: disk}
	}
	params := map[string]any{"ide2": "none,media=cdrom", "boot": "order=scsi0;net0"}
	if _, ok := cfg["reboot"]; ok {
		params["delete"] = "reboot"
	}
	return p.retry(ctx, fmt.Sprintf("switch VM %d to boot from its disk", vm.ID), func() error {
		return p.api.put(ctx, fmt.Sprintf("/nodes/%s/qemu/%d/config", vm.Node, vm.ID), params, nil)
	})
}
