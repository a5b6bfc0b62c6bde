package pvesim

import (
	"context"
	"errors"
	"time"
)

// ApplianceBoot is the event of a VM that boots an installer ISO: the
// first device of its boot order that has media is a CD-ROM holding an ISO
// volume. The emulator then stands in for the appliance run (see
// Options.OnApplianceBoot).
type ApplianceBoot struct {
	VMEvent
	ISO     string // volid of the ISO, e.g. local:iso/opencsp-appliance.iso
	ISOFile string // the ISO's bytes on the emulator's disk
	// Disk is the config key of the disk the appliance installs to: the
	// only blank disk (never written since it was allocated), as the
	// appliance's targetDisk "auto" picks it; "" when there is none or
	// more than one.
	Disk string
}

// errNoTarget is what the default stand-in reports without a target disk,
// like applinit's pickTarget.
var errNoTarget = errors.New("no empty disk to install to (targetDisk auto needs exactly one)")

// bootDevice mirrors the firmware walking "boot: order=": the first device
// with media. It returns the config key, the ISO volid when it is a CD-ROM
// with an ISO, and whether that device is a blank disk (s.mu held).
func (s *Server) bootDevice(v *vm) (key, iso string, blank bool) {
	for _, dev := range bootOrder(v.conf) {
		val, ok := v.conf[dev]
		if !ok || !isDriveKey(dev) {
			continue // NICs (PXE) and missing devices boot nothing here
		}
		d := parseDrive(dev, val)
		if d == nil || d["file"] == "" || d["file"] == "none" || d["file"] == "cdrom" || isCloudinitDrive(val) {
			continue // an empty drive: the firmware moves on
		}
		vol, aerr := s.findVolume(v.node, d["file"])
		if aerr != nil {
			continue
		}
		if vol.content == "iso" {
			return dev, vol.volid(), false
		}
		return dev, "", vol.blank
	}
	return "", "", false
}

// blankDisk is the appliance's "auto" target: the only blank disk (s.mu held).
func (s *Server) blankDisk(v *vm) (key string, vol *volume) {
	n := 0
	for _, k := range sortedDriveKeys(v.conf) {
		if isCDROM(v.conf[k]) {
			continue
		}
		d := parseDrive(k, v.conf[k])
		if d == nil {
			continue
		}
		if cand, aerr := s.findVolume(v.node, d["file"]); aerr == nil && cand.blank {
			key, vol = k, cand
			n++
		}
	}
	if n != 1 {
		return "", nil
	}
	return key, vol
}

// afterBoot runs what the guest does once a start put v in the running
// state: an appliance boot is handed to the stand-in (s.mu held).
func (s *Server) afterBoot(v *vm) {
	_, iso, blank := s.bootDevice(v)
	// No OS runs from an ISO installer or a blank disk: no guest agent.
	v.noOS = iso != "" || blank
	if iso == "" {
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	v.guestCancel = cancel
	ev := ApplianceBoot{VMEvent: s.vmEvent(v), ISO: iso}
	if vol, aerr := s.findVolume(v.node, iso); aerr == nil {
		ev.ISOFile = vol.file
	}
	ev.Disk, _ = s.blankDisk(v)
	gen := v.bootGen
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer cancel()
		s.runAppliance(ctx, v, gen, ev)
	}()
}

// runAppliance is one appliance run: the hook (or the default stand-in)
// installs, then the guest powers off — or reboots, which with "reboot: 0"
// ends the qemu process like a power-off and otherwise boots the next
// device of the boot order.
func (s *Server) runAppliance(ctx context.Context, v *vm, gen int, ev ApplianceBoot) {
	var err error
	if s.opts.OnApplianceBoot != nil {
		err = s.opts.OnApplianceBoot(ctx, ev)
	} else {
		select {
		case <-ctx.Done():
		case <-time.After(s.opts.ApplianceDuration):
		}
		if ev.Disk == "" {
			err = errNoTarget
		}
	}
	if ctx.Err() != nil {
		return // the VM was stopped (or the server closes) meanwhile
	}
	s.mu.Lock()
	if !v.running || v.bootGen != gen {
		s.mu.Unlock()
		return
	}
	v.console = append(v.console, "opencsp-appliance: starting")
	if err == nil {
		if _, vol := s.blankDisk(v); vol != nil && ev.Disk != "" {
			vol.blank = false
			vol.installedFrom = ev.ISO
		}
		v.console = append(v.console, "opencsp-appliance: done")
	} else {
		v.console = append(v.console, "opencsp-appliance: FAILED: "+err.Error())
	}
	// applinit powers off after a failure whatever "after" says.
	reboot := err == nil && s.opts.ApplianceReboots
	if reboot && v.conf["reboot"] != "0" {
		v.console = append(v.console, "opencsp-appliance: rebooting")
		v.bootGen++
		s.afterBoot(v)
		s.mu.Unlock()
		return
	}
	v.console = append(v.console, map[bool]string{true: "opencsp-appliance: rebooting", false: "opencsp-appliance: powering off"}[reboot])
	ev2 := s.guestStopped(v)
	s.mu.Unlock()
	if s.opts.OnStop != nil {
		s.opts.OnStop(ev2)
	}
}

// guestStopped ends the qemu process from inside the guest (power-off):
// no task, no lock, pending changes apply (s.mu held).
func (s *Server) guestStopped(v *vm) VMEvent {
	v.running = false
	v.pid = 0
	v.noOS = false
	v.bootGen++
	ev := s.vmEvent(v)
	s.applyPending(v, false)
	return ev
}

// stopGuest cancels what the guest was doing (an appliance run) when the
// VM is stopped from outside (s.mu held).
func (v *vm) stopGuest() {
	v.bootGen++
	v.noOS = false
	if v.guestCancel != nil {
		v.guestCancel()
		v.guestCancel = nil
	}
}

// Console returns the appliance lines a VM printed on its serial console
// (what `qm terminal` would show), oldest first.
func (s *Server) Console(vmid int) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.vms[vmid]; v != nil {
		return append([]string(nil), v.console...)
	}
	return nil
}

// DiskInstalled reports whether a disk volume was written by an appliance
// run, and from which ISO.
func (s *Server) DiskInstalled(nodeName, volid string) (iso string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, aerr := s.findVolume(nodeName, volid)
	if aerr != nil || v.installedFrom == "" {
		return "", false
	}
	return v.installedFrom, true
}
