package pvesim

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestApplianceBoot walks the appliance flow as an installer drives it:
// upload the ISO (checksum verified), create a VM with a blank disk and the
// ISO first in the boot order, start it, see it power off with the disk
// written, switch the boot order to the disk and start it again.
func TestApplianceBoot(t *testing.T) {
	iso := []byte("CD001 fake appliance iso")
	for _, tc := range []struct {
		name      string
		opts      Options
		reboot0   bool   // create with "reboot: 0"
		installed bool   // the disk is written at the end
		console   string // a line the appliance printed
	}{
		{"default stand-in", Options{}, true, true, "opencsp-appliance: powering off"},
		{"hook fails", Options{OnApplianceBoot: func(ctx context.Context, ev ApplianceBoot) error {
			return errors.New("payload verification failed")
		}}, true, false, "opencsp-appliance: FAILED: payload verification failed"},
		{"hook sees the boot", Options{OnApplianceBoot: func(ctx context.Context, ev ApplianceBoot) error {
			if ev.ISO != "local:iso/opencsp.iso" || ev.Disk != "scsi0" || ev.Boot != "ide2" || ev.ISOFile == "" {
				return errors.New("unexpected event")
			}
			return nil
		}}, true, true, "opencsp-appliance: done"},
		{"reboot with reboot=0 stops", Options{ApplianceReboots: true}, true, true, "opencsp-appliance: rebooting"},
		// Without reboot=0 the ISO boots again and refuses the written disk.
		{"reboot loops into the ISO", Options{ApplianceReboots: true}, false, true, "opencsp-appliance: FAILED: no empty disk"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, tc.opts)
			c := tokenClient(t, s)
			sum, _ := fileHashBytes("sha256", iso)
			r := c.send(uploadRequest(t, s, "/nodes/pve/storage/local/upload",
				map[string]string{"content": "iso", "checksum": sum, "checksum-algorithm": "sha256"}, "opencsp.iso", iso))
			if st := c.wait(r.str()); st != "OK" {
				t.Fatalf("upload: %s", st)
			}
			var listed bool
			for _, e := range c.ok("GET", "/nodes/pve/storage/local/content", vals("content", "iso")).dataList() {
				m := e.(map[string]any)
				listed = listed || m["volid"] == "local:iso/opencsp.iso" && m["size"] == float64(len(iso))
			}
			if !listed {
				t.Fatal("the ISO is not listed with its size")
			}
			form := vals("vmid", "100", "name", "mgmt", "scsi0", "local-lvm:1", "ide2", "local:iso/opencsp.iso,media=cdrom",
				"boot", "order=ide2;scsi0", "agent", "enabled=1", "net0", "virtio,bridge=vmbr0")
			if tc.reboot0 {
				form.Set("reboot", "0")
			}
			c.taskOK("POST", "/nodes/pve/qemu", form)
			c.taskOK("POST", "/nodes/pve/qemu/100/status/start", nil)
			if r := c.do("POST", "/nodes/pve/qemu/100/agent/ping", nil); r.Status != 500 {
				t.Errorf("agent answered while the ISO runs: %d", r.Status)
			}
			waitStopped(t, c, 100)
			vol := strings.Split(mustVM(t, s, 100).Config["scsi0"], ",")[0]
			from, ok := s.DiskInstalled("pve", vol)
			if ok != tc.installed || ok && from != "local:iso/opencsp.iso" {
				t.Errorf("disk %s installed=%v from %q, want %v", vol, ok, from, tc.installed)
			}
			// PVE's "used" (lvs data / du) tells a written disk from a blank one.
			used := c.ok("GET", "/nodes/pve/storage/local-lvm/content/"+vol, nil).dataMap()["used"].(float64)
			if (used > 0) != tc.installed {
				t.Errorf("volume %s used=%v with installed=%v", vol, used, tc.installed)
			}
			if con := s.Console(100); !slices.Contains(con, tc.console) && !containsPrefix(con, tc.console) {
				t.Errorf("console %q lacks %q", con, tc.console)
			}

			sw := vals("ide2", "none,media=cdrom", "boot", "order=scsi0")
			if tc.reboot0 {
				sw.Set("delete", "reboot") // deleting an unset key is a task warning
			}
			c.taskOK("POST", "/nodes/pve/qemu/100/config", sw)
			c.taskOK("POST", "/nodes/pve/qemu/100/status/start", nil)
			time.Sleep(3 * s.opts.ApplianceDuration)
			info := mustVM(t, s, 100)
			if !info.Running || info.Config["reboot"] != "" || info.Config["ide2"] != "none,media=cdrom" {
				t.Errorf("after the switch: %+v", info)
			}
			// A blank disk boots nothing: no OS, no agent.
			if r := c.do("POST", "/nodes/pve/qemu/100/agent/ping", nil); (r.Status == 200) != tc.installed {
				t.Errorf("agent ping %d %s with installed=%v", r.Status, r.Reason, tc.installed)
			}
			if err := s.ValidateLog(); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestApplianceStoppedMidRun: stopping the VM ends the hook's context and
// the run leaves the disk blank; a hung appliance keeps the VM running.
func TestApplianceStoppedMidRun(t *testing.T) {
	var ended atomic.Bool
	s := newTestServer(t, Options{OnApplianceBoot: func(ctx context.Context, ev ApplianceBoot) error {
		<-ctx.Done()
		ended.Store(true)
		return nil
	}})
	c := tokenClient(t, s)
	if err := s.AddFile("pve", "local:iso/a.iso", []byte("iso")); err != nil {
		t.Fatal(err)
	}
	c.taskOK("POST", "/nodes/pve/qemu", vals("vmid", "100", "scsi0", "local-lvm:1", "ide2", "local:iso/a.iso,media=cdrom", "boot", "order=ide2;scsi0"))
	c.taskOK("POST", "/nodes/pve/qemu/100/status/start", nil)
	time.Sleep(100 * time.Millisecond)
	if !mustVM(t, s, 100).Running {
		t.Fatal("a hung appliance powered off")
	}
	c.taskOK("POST", "/nodes/pve/qemu/100/status/stop", nil)
	deadline := time.Now().Add(5 * time.Second)
	for !ended.Load() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !ended.Load() {
		t.Fatal("the hook's context did not end on stop")
	}
	if _, ok := s.DiskInstalled("pve", "local-lvm:vm-100-disk-0"); ok {
		t.Error("a stopped run wrote the disk")
	}
}

func waitStopped(t *testing.T, c *client, vmid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if mustVMRunning(c, vmid) == "stopped" {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("VM %d did not power off", vmid)
}

func mustVMRunning(c *client, vmid int) string {
	st, _ := c.ok("GET", "/nodes/pve/qemu/"+strconv.Itoa(vmid)+"/status/current", nil).dataMap()["status"].(string)
	return st
}

func mustVM(t *testing.T, s *Server, vmid int) VMInfo {
	t.Helper()
	info, ok := s.VM(vmid)
	if !ok {
		t.Fatalf("no VM %d", vmid)
	}
	return info
}

func containsPrefix(l []string, p string) bool {
	for _, s := range l {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
