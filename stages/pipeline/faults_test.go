package pipeline_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/opencsp/installer/e2e/pvesim"
	"github.com/opencsp/installer/internal/infra/proxmox"
)

const lockMsg = "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout"

// TestFaultsConverge injects each fault type at each stage: the install
// converges (retried) or fails naming the cause and converges on rerun;
// never a duplicate VM or template; every request valid.
func TestFaultsConverge(t *testing.T) {
	for _, tc := range []struct {
		name     string
		inject   func(e *env)
		failWith string // "": the first run converges
	}{
		{"http 500 on create", func(e *env) {
			e.sim.InjectHTTPError(pvesim.HTTPFault{Method: "POST", Path: `^/nodes/[^/]+/qemu$`, Status: 500, Count: 2})
		}, ""},
		{"http 503 on clone", func(e *env) {
			e.sim.InjectHTTPError(pvesim.HTTPFault{Method: "POST", Path: `/clone$`, Status: 503, Count: 2})
		}, ""},
		{"http 503 on resources", func(e *env) {
			e.sim.InjectHTTPError(pvesim.HTTPFault{Method: "GET", Path: `^/cluster/resources$`, Status: 503, Count: 3})
		}, ""},
		{"download task fails", func(e *env) { e.sim.FailTasks("download", "download failed: 404 Not Found", 1) }, "404 Not Found"},
		{"create task fails", func(e *env) { e.sim.FailTasks("qmcreate", "unable to create VM: disk import failed", 1) }, "disk import failed"},
		{"clone task fails", func(e *env) { e.sim.FailTasks("qmclone", "clone failed: storage full", 1) }, "storage full"},
		{"start task fails", func(e *env) { e.sim.FailTasks("qmstart", "start failed: kvm: error", 1) }, "kvm: error"},
		{"lock timeout on template", func(e *env) { e.sim.FailTasks("qmtemplate", lockMsg, 2) }, ""},
		{"lock timeout on clone", func(e *env) { e.sim.FailTasks("qmclone", lockMsg, 2) }, ""},
		{"nextid race", func(e *env) { e.sim.RaceNextID(3) }, ""},
		{"latency", func(e *env) { e.sim.SetLatency(15 * time.Millisecond) }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, setup{nodes: 3, shared: true})
			tc.inject(e)
			err := e.run(t.Context())
			if tc.failWith != "" {
				if err == nil || !strings.Contains(err.Error(), tc.failWith) {
					t.Fatalf("want a failure naming %q, got %v", tc.failWith, err)
				}
				e.sim.ClearFaults()
				err = e.run(t.Context())
			}
			if err != nil {
				t.Fatalf("install: %v", err)
			}
			if n := e.vmsNamed("opencsp-lab-mgmt"); n != 1 {
				t.Errorf("%d management VMs", n)
			}
			if n := e.vmsNamed("opencsp-lab-debian-12"); n != 1 {
				t.Errorf("%d templates (shared storage wants one)", n)
			}
			e.validateLog()
		})
	}
}

// TestLockHeldByAnotherTask: a lock on the template while we clone (as a
// concurrent PVE task holds it) times out; the clone is retried.
func TestLockHeldByAnotherTask(t *testing.T) {
	e := newEnv(t, setup{})
	p, _ := proxmox.New(e.cfg, fastOptions)
	// Run until the template exists, then hold its lock briefly.
	e.sim.SetTaskDuration("qmclone", 50*time.Millisecond)
	go func() {
		for ctx := t.Context(); ctx.Err() == nil; time.Sleep(2 * time.Millisecond) {
			if tmpl, ok, _ := p.FindTemplate(ctx, "opencsp-lab-debian-12", "opencsp-lab", "pve"); ok {
				unlock, err := e.sim.LockVM(tmpl.ID)
				if err == nil {
					time.Sleep(700 * time.Millisecond)
					unlock()
				}
				return
			}
		}
	}()
	if err := e.run(t.Context()); err != nil {
		t.Fatalf("install: %v", err)
	}
	if n := e.vmsNamed("opencsp-lab-mgmt"); n != 1 {
		t.Errorf("%d management VMs", n)
	}
	e.validateLog()
}

// TestKilledMidCloneReattaches: the run is cancelled while the clone task
// runs; its UPID is in state; the rerun waits on that same task instead of
// cloning again.
func TestKilledMidCloneReattaches(t *testing.T) {
	e := newEnv(t, setup{})
	e.sim.SetTaskDuration("qmclone", 1500*time.Millisecond)
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		for ctx.Err() == nil {
			for _, task := range e.sim.Tasks() {
				if task.Type == "qmclone" && task.Running {
					time.Sleep(50 * time.Millisecond)
					cancel()
					return
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	if err := e.run(ctx); err == nil {
		t.Fatal("the cancelled run succeeded")
	}
	st := e.state()
	rec := st.Stages["provision"]
	if rec == nil || len(rec.InFlight) != 1 || rec.InFlight[0].Kind != "clone opencsp-lab-mgmt" {
		t.Fatalf("in-flight tasks after the kill: %+v", rec)
	}
	upid := rec.InFlight[0].ID

	e.sim.ResetRequests()
	if err := e.run(t.Context()); err != nil {
		t.Fatalf("rerun: %v", err)
	}
	waited := false
	for _, r := range e.sim.Requests() {
		if r.Method == "POST" && strings.HasSuffix(r.Path, "/clone") {
			t.Errorf("the rerun cloned again: %s", r.Path)
		}
		if r.Method == "GET" && strings.Contains(r.Path, upid) {
			waited = true
		}
	}
	if !waited {
		t.Errorf("the rerun did not wait on the recorded task %s", upid)
	}
	if n := e.vmsNamed("opencsp-lab-mgmt"); n != 1 {
		t.Errorf("%d management VMs", n)
	}
	if len(e.state().Stages["provision"].InFlight) != 0 {
		t.Error("in-flight tasks left after the rerun")
	}
	e.validateLog()
}
