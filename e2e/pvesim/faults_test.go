package pvesim

import (
	"strings"
	"sync"
	"testing"
	"time"
)

func TestHTTPFaults(t *testing.T) {
	s := newTestServer(t, Options{})
	c := tokenClient(t, s)
	if err := s.InjectHTTPError(HTTPFault{Method: "GET", Path: `^/nodes$`, Status: 503, Count: 2}); err != nil {
		t.Fatal(err)
	}
	if err := s.InjectHTTPError(HTTPFault{Path: `^/nodes/[^/]+/qemu$`, Status: 500, Message: "got timeout"}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if r := c.do("GET", "/nodes", nil); r.Status != 503 || r.Reason != "Service Unavailable" || r.Body["data"] != nil {
			t.Fatalf("call %d: %d %q", i, r.Status, r.Reason)
		}
	}
	c.ok("GET", "/nodes", nil)
	for _, m := range []string{"GET", "POST"} {
		if r := c.do(m, "/nodes/pve/qemu", vals("vmid", "100")); r.Status != 500 || r.Reason != "got timeout" {
			t.Errorf("%s: %d %q", m, r.Status, r.Reason)
		}
	}
	if _, ok := s.VM(100); ok {
		t.Error("a failed call must not change state")
	}
	// faults come after authentication
	bad := &client{t: t, s: s, hc: s.Client(), header: map[string][]string{}}
	if r := bad.do("GET", "/nodes/pve/qemu", nil); r.Status != 401 {
		t.Errorf("unauthenticated: %d", r.Status)
	}
	s.ClearFaults()
	c.ok("GET", "/nodes/pve/qemu", nil)
}

func TestHTTPFaultProbabilityIsSeeded(t *testing.T) {
	run := func() string {
		s := newTestServer(t, Options{Seed: 42})
		c := tokenClient(t, s)
		s.InjectHTTPError(HTTPFault{Path: `^/version$`, Status: 500, Probability: 0.5})
		var b strings.Builder
		for i := 0; i < 40; i++ {
			if c.do("GET", "/version", nil).Status == 500 {
				b.WriteByte('x')
			} else {
				b.WriteByte('.')
			}
		}
		return b.String()
	}
	a, b := run(), run()
	if a != b {
		t.Fatalf("same seed, different faults:\n%s\n%s", a, b)
	}
	if !strings.Contains(a, "x") || !strings.Contains(a, ".") {
		t.Fatalf("probability 0.5 gave %s", a)
	}
}

func TestTaskFaults(t *testing.T) {
	s := newTestServer(t, Options{})
	c := tokenClient(t, s)
	c.taskOK("POST", "/nodes/pve/qemu", vals("vmid", "9000", "template", "1", "scsi0", "local-lvm:1"))
	s.FailTasks("qmclone", "clone failed: command 'lvcreate' failed: exit code 5", 1)
	if _, st := c.task("POST", "/nodes/pve/qemu/9000/clone", vals("newid", "101")); st != "clone failed: command 'lvcreate' failed: exit code 5" {
		t.Fatalf("injected clone failure: %q", st)
	}
	if _, ok := s.VM(101); ok {
		t.Error("failed clone must not leave the target VM")
	}
	if vols := s.Volumes("pve", "local-lvm"); len(vols) != 1 {
		t.Errorf("failed clone left volumes: %v", vols)
	}
	c.taskOK("POST", "/nodes/pve/qemu/9000/clone", vals("newid", "101"))
	s.FailTasks("qmcreate", "", 0)
	if _, st := c.task("POST", "/nodes/pve/qemu", vals("vmid", "102")); st != "unable to create VM 102 - injected task failure" {
		t.Errorf("create failure: %q", st)
	}
	if _, ok := s.VM(102); ok {
		t.Error("failed create must remove the config")
	}
}

func TestLockContentionDuringClone(t *testing.T) {
	s := newTestServer(t, Options{LockTimeout: 300 * time.Millisecond})
	c := tokenClient(t, s)
	c.taskOK("POST", "/nodes/pve/qemu", vals("vmid", "9000", "template", "1", "scsi0", "local-lvm:1"))
	s.SetTaskDuration("qmclone", 1500*time.Millisecond)
	upid := c.ok("POST", "/nodes/pve/qemu/9000/clone", vals("newid", "101")).str()

	// the target carries the config lock "clone" for the whole task
	if info, _ := s.VM(101); info.Lock != "clone" {
		t.Fatalf("target lock %q", info.Lock)
	}
	if r := find(c.ok("GET", "/cluster/resources", vals("type", "vm")).dataList(), "id", "qemu/101"); r["lock"] != "clone" {
		t.Errorf("resources lock %v", r)
	}
	if r := c.do("PUT", "/nodes/pve/qemu/101/config", vals("name", "x")); r.Status != 500 || r.Reason != "VM is locked (clone)" {
		t.Errorf("config of the target: %d %q", r.Status, r.Reason)
	}
	if _, st := c.task("POST", "/nodes/pve/qemu/101/status/start", nil); st != "can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout" {
		t.Errorf("start of the target: %q", st)
	}
	// the (stopped) source is locked shared: writes time out, other clones proceed
	start := time.Now()
	if r := c.do("PUT", "/nodes/pve/qemu/9000/config", vals("description", "x")); r.Status != 500 ||
		r.Reason != "can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout" {
		t.Errorf("config of the source: %d %q", r.Status, r.Reason)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("lock timeout returned after %s", d)
	}
	if r := c.do("POST", "/nodes/pve/qemu/9000/template", nil); r.Status != 500 || !strings.HasPrefix(r.Reason, "can't lock file") {
		t.Errorf("template of the source: %d %q", r.Status, r.Reason)
	}
	upid2 := c.ok("POST", "/nodes/pve/qemu/9000/clone", vals("newid", "102")).str()
	if st := c.wait(upid); st != "OK" {
		t.Fatalf("clone: %s", st)
	}
	if st := c.wait(upid2); st != "OK" {
		t.Fatalf("parallel clone: %s", st)
	}
	s.SetTaskDuration("qmclone", 20*time.Millisecond)
	c.ok("PUT", "/nodes/pve/qemu/101/config", vals("name", "x"))
	c.taskOK("POST", "/nodes/pve/qemu/101/status/start", nil)

	// a lock held by someone else
	unlock, err := s.LockVM(9000)
	if err != nil {
		t.Fatal(err)
	}
	if r := c.do("POST", "/nodes/pve/qemu/9000/clone", vals("newid", "103")); r.Status != 500 ||
		r.Reason != "can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout" {
		t.Errorf("clone of a locked VM: %d %q", r.Status, r.Reason)
	}
	unlock()
	c.taskOK("POST", "/nodes/pve/qemu/9000/clone", vals("newid", "103"))
	// a leftover config lock
	s.SetConfigLock(103, "backup")
	if _, st := c.task("POST", "/nodes/pve/qemu/103/status/start", nil); st != "VM is locked (backup)" {
		t.Errorf("start with config lock: %q", st)
	}
}

func TestNextIDRace(t *testing.T) {
	s := newTestServer(t, Options{})
	a, b := tokenClient(t, s), tokenClient(t, s)
	s.RaceNextID(2)
	id1 := a.ok("GET", "/cluster/nextid", nil).str()
	id2 := b.ok("GET", "/cluster/nextid", nil).str()
	if id1 != "100" || id2 != "100" {
		t.Fatalf("raced ids %s %s", id1, id2)
	}
	a.taskOK("POST", "/nodes/pve/qemu", vals("vmid", id1))
	if r := b.do("POST", "/nodes/pve/qemu", vals("vmid", id2)); r.Status != 500 || r.Reason != "unable to create VM 100 - VM 100 already exists on node 'pve'" {
		t.Fatalf("second create: %d %q", r.Status, r.Reason)
	}
	if id := b.ok("GET", "/cluster/nextid", nil).str(); id != "101" {
		t.Errorf("fresh id %s", id)
	}
	if r := b.do("GET", "/cluster/nextid", vals("vmid", "100")); r.Status != 400 || r.Body["errors"].(map[string]any)["vmid"] != "VM 100 already exists" {
		t.Errorf("nextid with taken vmid: %d %s", r.Status, r.RawBody)
	}
	if id := b.ok("GET", "/cluster/nextid", vals("vmid", "555")).str(); id != "555" {
		t.Errorf("nextid with free vmid: %s", id)
	}
}

func TestLatency(t *testing.T) {
	s := newTestServer(t, Options{})
	c := tokenClient(t, s)
	if err := s.AddLatency(LatencyFault{Method: "GET", Path: "/version$", Delay: 150 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.ok("GET", "/version", nil)
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("latency fault: %s", d)
	}
	start = time.Now()
	c.ok("GET", "/nodes", nil)
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("unrelated call delayed: %s", d)
	}
	s.SetLatency(100 * time.Millisecond)
	start = time.Now()
	c.ok("GET", "/nodes", nil)
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("global latency: %s", d)
	}
}

func TestStopTask(t *testing.T) {
	s := newTestServer(t, Options{})
	c := tokenClient(t, s)
	c.taskOK("POST", "/nodes/pve/qemu", vals("vmid", "9000", "template", "1", "scsi0", "local-lvm:1"))
	s.SetTaskDuration("qmclone", 5*time.Second)
	upid := c.ok("POST", "/nodes/pve/qemu/9000/clone", vals("newid", "101")).str()
	// the running task is listed with source=active only
	if l := c.ok("GET", "/nodes/pve/tasks", vals("source", "active")).dataList(); len(l) != 1 || l[0].(map[string]any)["upid"] != upid {
		t.Errorf("active tasks %v", l)
	}
	if st := c.ok("GET", "/nodes/pve/tasks/"+upid+"/status", nil).dataMap(); st["status"] != "running" || st["exitstatus"] != nil {
		t.Errorf("running status %v", st)
	}
	c.ok("DELETE", "/nodes/pve/tasks/"+upid, nil)
	if st := c.wait(upid); st != "received interrupt" {
		t.Fatalf("stopped task: %q", st)
	}
	if _, ok := s.VM(101); ok {
		t.Error("interrupted clone left its target")
	}
}

func TestConcurrentClients(t *testing.T) {
	s := newTestServer(t, Options{})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c := tokenClient(t, s)
			vmid := itoa(200 + i)
			c.taskOK("POST", "/nodes/pve/qemu", vals("vmid", vmid, "scsi0", "local-lvm:1", "net0", "virtio,bridge=vmbr0"))
			c.taskOK("POST", "/nodes/pve/qemu/"+vmid+"/status/start", nil)
			c.ok("GET", "/cluster/resources", nil)
			c.taskOK("POST", "/nodes/pve/qemu/"+vmid+"/status/stop", nil)
			c.taskOK("DELETE", "/nodes/pve/qemu/"+vmid, nil)
		}(i)
	}
	wg.Wait()
	if ids := s.VMIDs(); len(ids) != 0 {
		t.Errorf("VMs left %v", ids)
	}
}

func itoa(i int) string { return fmtVMID(i) }
