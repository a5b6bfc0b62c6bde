package pvesim

import (
	"strings"
	"testing"
)

func TestConfigDigest(t *testing.T) {
	s := newTestServer(t, Options{})
	c := tokenClient(t, s)
	c.taskOK("POST", "/nodes/pve/qemu", vals("vmid", "100", "name", "a"))
	d1 := c.ok("GET", "/nodes/pve/qemu/100/config", nil).dataMap()["digest"].(string)
	c.ok("PUT", "/nodes/pve/qemu/100/config", vals("name", "b", "digest", d1))
	d2 := c.ok("GET", "/nodes/pve/qemu/100/config", nil).dataMap()["digest"].(string)
	if d1 == d2 {
		t.Fatal("digest must change with the config")
	}
	// a stale digest is rejected, for the sync and the async API (before forking)
	for _, m := range []string{"PUT", "POST"} {
		r := c.do(m, "/nodes/pve/qemu/100/config", vals("name", "c", "digest", d1))
		if r.Status != 500 || r.Reason != "checksum mismatch (file change by other user?)" {
			t.Errorf("%s with stale digest: %d %q", m, r.Status, r.Reason)
		}
	}
	if _, st := c.task("PUT", "/nodes/pve/qemu/100/resize", vals("disk", "scsi0", "size", "+1G", "digest", d1)); st != "detected modified configuration - file changed by other user? Try again." {
		t.Errorf("resize with stale digest: %q", st)
	}
	if got := c.ok("GET", "/nodes/pve/qemu/100/config", nil).dataMap()["name"]; got != "b" {
		t.Errorf("name %v", got)
	}
	upid := c.taskOK("POST", "/nodes/pve/qemu/100/config", vals("name", "c", "digest", d2))
	if log := c.taskLog(upid); log[0] != "update VM 100: -name c" {
		t.Errorf("qmconfig log %q", log)
	}
	// background_delay returns null once the task is done
	if r := c.ok("POST", "/nodes/pve/qemu/100/config", vals("name", "d", "background_delay", "5")); r.data() != nil {
		t.Errorf("background_delay answer %v", r.data())
	}
}

func TestConfigDeleteAndPending(t *testing.T) {
	s := newTestServer(t, Options{})
	c := tokenClient(t, s)
	c.taskOK("POST", "/nodes/pve/qemu", vals("vmid", "100", "name", "a", "tags", "b;a;a", "onboot", "1",
		"cores", "1", "scsi0", "local-lvm:1", "scsi1", "local-lvm:2", "net0", "virtio,bridge=vmbr0", "agent", "1"))
	conf := c.ok("GET", "/nodes/pve/qemu/100/config", nil).dataMap()
	if conf["tags"] != "a;b" || conf["boot"] != "order=scsi0;net0" || conf["onboot"] != float64(1) {
		t.Errorf("created config %v", conf)
	}
	if !strings.HasPrefix(conf["meta"].(string), "creation-qemu=") || !strings.HasPrefix(conf["smbios1"].(string), "uuid=") || conf["vmgenid"] == nil {
		t.Errorf("generated keys %v", conf)
	}
	// delete: a disk becomes unused, the volume stays
	c.ok("PUT", "/nodes/pve/qemu/100/config", vals("delete", "scsi1,onboot,tags"))
	conf = c.ok("GET", "/nodes/pve/qemu/100/config", nil).dataMap()
	if conf["scsi1"] != nil || conf["onboot"] != nil || conf["tags"] != nil || conf["unused0"] != "local-lvm:vm-100-disk-1" {
		t.Errorf("after delete %v", conf)
	}
	// deleting what is not set warns
	upid, st := c.task("POST", "/nodes/pve/qemu/100/config", vals("delete", "onboot"))
	if st != "WARNINGS: 1" || !contains(c.taskLog(upid), "WARN: cannot delete 'onboot' - not set in current configuration!") {
		t.Errorf("delete unset: %q %q", st, c.taskLog(upid))
	}
	for _, tc := range []struct {
		form     []string
		key, msg string
	}{
		{[]string{"delete", "bogus"}, "delete", "unknown option 'bogus'"},
		{[]string{"delete", "name", "name", "x"}, "delete", "you can't use '-name' and -delete name' at the same time"},
		{[]string{"skiplock", "1", "name", "x"}, "skiplock", "Only root may use this option."},
	} {
		r := c.do("PUT", "/nodes/pve/qemu/100/config", vals(tc.form...))
		if r.Status != 400 || r.Body["errors"].(map[string]any)[tc.key] != tc.msg {
			t.Errorf("%v: %d %s", tc.form, r.Status, r.RawBody)
		}
	}
	if r := c.do("PUT", "/nodes/pve/qemu/100/config", nil); r.Status != 500 || r.Reason != "no options specified" {
		t.Errorf("empty update: %d %q", r.Status, r.Reason)
	}
	if r := c.do("PUT", "/nodes/pve/qemu/100/config", vals("boot", "order=scsi0;scsi5")); r.Status != 500 || r.Reason != "invalid bootorder: device 'scsi5' does not exist'" {
		t.Errorf("bad boot order: %d %q", r.Status, r.Reason)
	}
	// deleting the unused volume frees it
	c.ok("PUT", "/nodes/pve/qemu/100/config", vals("delete", "unused0"))
	if vols := s.Volumes("pve", "local-lvm"); len(vols) != 1 {
		t.Errorf("volumes after deleting unused0: %v", vols)
	}
	// running VM: hotplug applies, the rest is pending
	c.taskOK("POST", "/nodes/pve/qemu/100/status/start", nil)
	c.ok("PUT", "/nodes/pve/qemu/100/config", vals("cores", "4", "name", "renamed", "scsi2", "local-lvm:1"))
	cur := c.ok("GET", "/nodes/pve/qemu/100/config", vals("current", "1")).dataMap()
	eff := c.ok("GET", "/nodes/pve/qemu/100/config", nil).dataMap()
	if cur["cores"] != float64(1) || eff["cores"] != float64(4) || cur["name"] != "renamed" || cur["scsi2"] == nil {
		t.Errorf("current %v\neffective %v", cur, eff)
	}
	var cores map[string]any
	for _, e := range c.ok("GET", "/nodes/pve/qemu/100/pending", nil).dataList() {
		if m := e.(map[string]any); m["key"] == "cores" {
			cores = m
		}
	}
	if cores["value"] != float64(1) || cores["pending"] != float64(4) {
		t.Errorf("pending cores %v", cores)
	}
	// pending changes apply when the VM stops
	c.taskOK("POST", "/nodes/pve/qemu/100/status/shutdown", nil)
	if cur := c.ok("GET", "/nodes/pve/qemu/100/config", vals("current", "1")).dataMap(); cur["cores"] != float64(4) {
		t.Errorf("after shutdown cores %v", cur["cores"])
	}
	// a config lock blocks changes
	s.SetConfigLock(100, "backup")
	if r := c.do("PUT", "/nodes/pve/qemu/100/config", vals("name", "x")); r.Status != 500 || r.Reason != "VM is locked (backup)" {
		t.Errorf("locked config: %d %q", r.Status, r.Reason)
	}
	if _, st := c.task("DELETE", "/nodes/pve/qemu/100", nil); st != "VM is locked (backup)" {
		t.Errorf("destroy locked: %q", st)
	}
}

func TestTaskListAndLog(t *testing.T) {
	s := newTestServer(t, Options{})
	c := tokenClient(t, s)
	c.taskOK("POST", "/nodes/pve/qemu", vals("vmid", "100", "scsi0", "local-lvm:1"))
	c.taskOK("POST", "/nodes/pve/qemu", vals("vmid", "101"))
	c.task("POST", "/nodes/pve/qemu/101/status/start", vals("skiplock", "0"))
	s.FailTasks("qmstart", "start failed: QEMU exited with code 1", 1)
	_, st := c.task("POST", "/nodes/pve/qemu/100/status/start", nil)
	if st != "start failed: QEMU exited with code 1" {
		t.Fatalf("failed start %q", st)
	}
	r := c.ok("GET", "/nodes/pve/tasks", nil)
	if r.Body["total"] != float64(4) || len(r.dataList()) != 4 {
		t.Errorf("task list total %v: %v", r.Body["total"], r.dataList())
	}
	first := r.dataList()[0].(map[string]any)
	if first["type"] != "qmstart" || first["status"] != st || first["id"] != "100" || first["endtime"] == nil {
		t.Errorf("newest task %v", first)
	}
	if l := c.ok("GET", "/nodes/pve/tasks", vals("errors", "1")).dataList(); len(l) != 1 {
		t.Errorf("errors filter %v", l)
	}
	if l := c.ok("GET", "/nodes/pve/tasks", vals("vmid", "100", "typefilter", "qmcreate")).dataList(); len(l) != 1 {
		t.Errorf("vmid/type filter %v", l)
	}
	if l := c.ok("GET", "/nodes/pve/tasks", vals("statusfilter", "ok", "limit", "1", "start", "1")).dataList(); len(l) != 1 {
		t.Errorf("statusfilter/paging %v", l)
	}
	upid := first["upid"].(string)
	lr := c.ok("GET", "/nodes/pve/tasks/"+upid+"/log", vals("start", "0", "limit", "1"))
	lines := lr.dataList()
	if len(lines) != 1 || lines[0].(map[string]any)["n"] != float64(1) || lr.Body["total"] == nil {
		t.Errorf("log page %v total %v", lines, lr.Body["total"])
	}
	for _, tc := range []struct{ upid, msg string }{
		{"nonsense", "unable to parse worker upid"},
		{"UPID:pve:00001234:00001234:00001234:qmstart:100:root@pam:", "no such task"},
	} {
		r := c.do("GET", "/nodes/pve/tasks/"+tc.upid+"/status", nil)
		if r.Status != 400 || r.Body["errors"].(map[string]any)["upid"] != tc.msg {
			t.Errorf("%s: %d %s", tc.upid, r.Status, r.RawBody)
		}
	}
}
