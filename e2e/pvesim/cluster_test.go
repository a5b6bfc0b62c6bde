package pvesim

import (
	"strings"
	"testing"
)

func find(list []any, key, val string) map[string]any {
	for _, e := range list {
		m := e.(map[string]any)
		if m[key] == val {
			return m
		}
	}
	return nil
}

func TestClusterLocalStorageOnly(t *testing.T) {
	s := newTestServer(t, Options{Nodes: 3})
	c := tokenClient(t, s)
	st := c.ok("GET", "/cluster/status", nil).dataList()
	if len(st) != 4 {
		t.Fatalf("cluster status %v", st)
	}
	cl := st[0].(map[string]any)
	if cl["type"] != "cluster" || cl["quorate"] != float64(1) || cl["nodes"] != float64(3) || cl["name"] != "pvesim" {
		t.Errorf("cluster entry %v", cl)
	}
	n2 := find(st, "name", "pve2")
	if n2["nodeid"] != float64(2) || n2["local"] != float64(0) || n2["online"] != float64(1) || n2["id"] != "node/pve2" {
		t.Errorf("pve2 entry %v", n2)
	}
	if find(st, "name", "pve1")["local"] != float64(1) {
		t.Error("pve1 must be the local node")
	}

	c.taskOK("POST", "/nodes/pve1/qemu", vals("vmid", "9000", "template", "1", "scsi0", "local-lvm:1", "name", "tmpl"))
	c.taskOK("POST", "/nodes/pve2/qemu", vals("vmid", "100"))
	if got := c.ok("GET", "/nodes/pve1/qemu/9000/config", nil).dataMap()["scsi0"]; got != "local-lvm:base-9000-disk-0,size=1G" {
		t.Errorf("template created directly as base: %v", got)
	}
	for _, tc := range []struct {
		form   []string
		reason string
	}{
		{[]string{"newid", "101", "target", "pve2"}, "can't clone VM to node 'pve2' (VM uses local storage)"},
		{[]string{"newid", "101", "target", "pve2", "full", "1"}, "can't clone VM to node 'pve2' (VM uses local storage)"},
		{[]string{"newid", "101", "target", "pve2", "full", "1", "storage", "local-lvm"}, "can't clone to non-shared storage 'local-lvm'"},
		{[]string{"newid", "101", "target", "pve9"}, "no such cluster node 'pve9'"},
		{[]string{"newid", "100"}, "unable to create VM 100: config file already exists"},
	} {
		if r := c.do("POST", "/nodes/pve1/qemu/9000/clone", vals(tc.form...)); r.Status != 500 || r.Reason != tc.reason {
			t.Errorf("clone %v: %d %q", tc.form, r.Status, r.Reason)
		}
	}
	// the template's node only
	if r := c.do("POST", "/nodes/pve2/qemu/9000/clone", vals("newid", "101")); r.Status != 500 ||
		r.Reason != "Configuration file 'nodes/pve2/qemu-server/9000.conf' does not exist" {
		t.Errorf("clone on the wrong node: %d %q", r.Status, r.Reason)
	}
	c.taskOK("POST", "/nodes/pve1/qemu/9000/clone", vals("newid", "101"))
	// each node has its own local storage
	if vols := s.Volumes("pve2", "local-lvm"); len(vols) != 0 {
		t.Errorf("pve2 local-lvm %v", vols)
	}
	if vols := s.Volumes("pve1", "local-lvm"); len(vols) != 2 {
		t.Errorf("pve1 local-lvm %v", vols)
	}
}

func TestClusterSharedStorage(t *testing.T) {
	s := newTestServer(t, Options{Nodes: 3, SharedStorage: true})
	c := tokenClient(t, s)
	c.taskOK("POST", "/nodes/pve1/qemu", vals("vmid", "9000", "scsi0", "shared-nfs:1", "ide2", "shared-nfs:cloudinit", "name", "tmpl"))
	c.taskOK("POST", "/nodes/pve1/qemu/9000/template", nil)
	c.taskOK("POST", "/nodes/pve1/qemu/9000/clone", vals("newid", "101", "target", "pve2", "name", "linked"))
	c.taskOK("POST", "/nodes/pve1/qemu/9000/clone", vals("newid", "102", "target", "pve3", "full", "1", "storage", "shared-nfs"))
	if r := c.do("GET", "/nodes/pve1/qemu/101/config", nil); r.Status != 500 {
		t.Errorf("clone must live on its target node: %d", r.Status)
	}
	conf := c.ok("GET", "/nodes/pve2/qemu/101/config", nil).dataMap()
	if conf["scsi0"] != "shared-nfs:9000/base-9000-disk-0.raw/101/vm-101-disk-0.qcow2,size=1G" ||
		conf["ide2"] != "shared-nfs:101/vm-101-cloudinit.qcow2,media=cdrom" {
		t.Errorf("linked clone on nfs %v", conf)
	}
	conf = c.ok("GET", "/nodes/pve3/qemu/102/config", nil).dataMap()
	if conf["scsi0"] != "shared-nfs:102/vm-102-disk-0.raw,size=1G" {
		t.Errorf("full clone on nfs %v", conf)
	}
	if l := c.ok("GET", "/nodes/pve2/qemu", nil).dataList(); len(l) != 1 || l[0].(map[string]any)["vmid"] != float64(101) {
		t.Errorf("pve2 VMs %v", l)
	}
	// the shared storage is the same everywhere
	t1, u1, _, _ := s.StorageUsage("pve1", "shared-nfs")
	t3, u3, _, _ := s.StorageUsage("pve3", "shared-nfs")
	if t1 != t3 || u1 != u3 || u1 == 0 {
		t.Errorf("shared usage differs: %d/%d vs %d/%d", u1, t1, u3, t3)
	}
	// storage list filters
	l := c.ok("GET", "/nodes/pve2/storage", vals("target", "pve3")).dataList()
	if len(l) != 1 || l[0].(map[string]any)["storage"] != "shared-nfs" || l[0].(map[string]any)["shared"] != float64(1) {
		t.Errorf("storages shared with pve3: %v", l)
	}
	l = c.ok("GET", "/nodes/pve2/storage", vals("content", "import")).dataList()
	if len(l) != 2 || find(l, "storage", "local") == nil || find(l, "storage", "shared-nfs") == nil {
		t.Errorf("storages for import: %v", l)
	}
	l = c.ok("GET", "/nodes/pve2/storage", vals("content", "rootdir,iso")).dataList()
	if len(l) != 3 {
		t.Errorf("storages for rootdir or iso: %v", l)
	}
	res := c.ok("GET", "/cluster/resources", vals("type", "storage")).dataList()
	if len(res) != 9 {
		t.Errorf("storage resources: %d", len(res))
	}
	vms := c.ok("GET", "/cluster/resources", vals("type", "vm")).dataList()
	if len(vms) != 3 || find(vms, "id", "qemu/9000")["template"] != float64(1) || find(vms, "id", "qemu/102")["node"] != "pve3" {
		t.Errorf("vm resources %v", vms)
	}
}

func TestNodeStatesAndQuorum(t *testing.T) {
	s := newTestServer(t, Options{Nodes: 3})
	c := tokenClient(t, s)
	if err := s.SetNodeOnline("pve3", false); err != nil {
		t.Fatal(err)
	}
	st := c.ok("GET", "/cluster/status", nil).dataList()
	if st[0].(map[string]any)["quorate"] != float64(1) || find(st, "name", "pve3")["online"] != float64(0) {
		t.Errorf("one node offline: %v", st)
	}
	nodes := c.ok("GET", "/nodes", nil).dataList()
	if n := find(nodes, "node", "pve3"); n["status"] != "offline" || n["maxmem"] != nil {
		t.Errorf("offline node %v", n)
	}
	if n := find(nodes, "node", "pve2"); n["status"] != "online" || n["maxcpu"] != float64(8) {
		t.Errorf("online node %v", n)
	}
	if r := c.do("GET", "/nodes/pve3/status", nil); r.Status != 595 {
		t.Errorf("call proxied to an offline node: %d %q", r.Status, r.Reason)
	}
	if r := c.do("GET", "/nodes/pve4/status", nil); r.Status != 500 || !strings.HasPrefix(r.Reason, "hostname lookup 'pve4' failed") {
		t.Errorf("unknown node: %d %q", r.Status, r.Reason)
	}
	res := c.ok("GET", "/cluster/resources", vals("type", "node")).dataList()
	if find(res, "node", "pve3")["status"] != "offline" {
		t.Errorf("node resources %v", res)
	}
	c.taskOK("POST", "/nodes/pve1/qemu", vals("vmid", "100"))
	s.SetNodeOnline("pve2", false)
	if st := c.ok("GET", "/cluster/status", nil).dataList(); st[0].(map[string]any)["quorate"] != float64(0) {
		t.Errorf("two of three offline must lose quorum: %v", st[0])
	}
	if r := c.do("POST", "/nodes/pve1/qemu", vals("vmid", "101")); r.Status != 500 || r.Reason != "cluster not ready - no quorum?" {
		t.Errorf("create without quorum: %d %q", r.Status, r.Reason)
	}
	s.SetNodeOnline("pve2", true)
	c.taskOK("POST", "/nodes/pve1/qemu", vals("vmid", "101"))
}

func TestNodeFacts(t *testing.T) {
	s := newTestServer(t, Options{CPUs: 16, MemoryBytes: 128 << 30, Bridges: []string{"vmbr0", "vmbr1"}})
	c := tokenClient(t, s)
	if err := s.SetNodeVersion("pve", "7.4-3"); err != nil {
		t.Fatal(err)
	}
	v := c.ok("GET", "/version", nil).dataMap()
	if v["version"] != "7.4-3" || v["release"] != "7.4" {
		t.Errorf("version %v", v)
	}
	st := c.ok("GET", "/nodes/pve/status", nil).dataMap()
	if !strings.HasPrefix(st["pveversion"].(string), "pve-manager/7.4-3/") ||
		st["cpuinfo"].(map[string]any)["cpus"] != float64(16) || st["memory"].(map[string]any)["total"] != float64(128<<30) {
		t.Errorf("node status %v", st)
	}
	l := c.ok("GET", "/nodes/pve/network", vals("type", "any_bridge")).dataList()
	if len(l) != 2 || l[0].(map[string]any)["iface"] != "vmbr0" || l[1].(map[string]any)["iface"] != "vmbr1" {
		t.Errorf("bridges %v", l)
	}
	s.SetNodeBridges("pve", "vmbr0")
	if l := c.ok("GET", "/nodes/pve/network", nil).dataList(); len(l) != 2 || find(l, "iface", "eno1") == nil {
		t.Errorf("interfaces %v", l)
	}
	s.SetNodeBridges("pve", "vmbr0", "vmbr1")
	// bridges are checked when a VM starts
	c.taskOK("POST", "/nodes/pve/qemu", vals("vmid", "100", "net0", "virtio,bridge=vmbr1"))
	c.taskOK("POST", "/nodes/pve/qemu", vals("vmid", "101", "net0", "virtio,bridge=vmbr7"))
	c.taskOK("POST", "/nodes/pve/qemu/100/status/start", nil)
	if _, st := c.task("POST", "/nodes/pve/qemu/101/status/start", nil); st != "bridge 'vmbr7' does not exist" {
		t.Errorf("start with unknown bridge: %q", st)
	}
	if mem := find(c.ok("GET", "/nodes", nil).dataList(), "node", "pve")["mem"]; mem != float64(4<<30+512<<20) {
		t.Errorf("node memory with a running VM: %v", mem)
	}
}
