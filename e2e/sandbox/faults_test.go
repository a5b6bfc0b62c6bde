package sandbox_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencsp/installer/e2e/pvesim"
	"github.com/opencsp/installer/e2e/sandbox"
	"github.com/opencsp/installer/internal/events"
	"github.com/opencsp/installer/internal/state"
	"github.com/opencsp/installer/stages/pipeline"
)

const lockTimeout = "can't lock file '/var/lock/qemu-server/lock-%d.conf' - got timeout"

// campaignFault is one injected fault of the campaign.
type campaignFault struct {
	name string
	// arm injects the fault before the run.
	arm func(t *testing.T, c *campaign)
	// onEvent, when set, is called with every progress event of the run (mid-stage faults).
	onEvent func(t *testing.T, c *campaign, ev events.Event)
	// fired checks, after the run, that the fault really hit the installer.
	fired func(t *testing.T, c *campaign, run *campaignRun) error
	// disarm removes what the fault left armed, after the run.
	disarm func(t *testing.T, c *campaign)
}

// campaignStep is one `opencsp install` of the campaign with the faults armed for it.
type campaignStep struct {
	// faults in pipeline order; when the run must fail, the last one is what fails it.
	faults []campaignFault
	// fails: the stage the run must fail at (exit 1) with a message naming it and cause;
	// "": it must converge (exit 0), every fault retried within the run.
	fails string
	cause []string
}

// campaign is the state of one walk through the pipeline.
type campaign struct {
	s     *sandbox.Sandbox
	bin   string
	mgmt  int // the management VM's id, once provisioned
	ops   string
	table []string
	tmpl  int
	// lastHead is the ops repo's main after the previous run.
	lastHead string
}

// campaignRun is what one run left to inspect.
type campaignRun struct {
	result
	events   []events.Event
	requests []pvesim.LoggedRequest // PVE calls of this run
	log      string                 // this run's part of install.log
}

// TestFaultCampaign walks one fresh install through injected faults along the pipeline,
// through the real CLI: PVE 500s, task failures, lock timeouts and a VMID race (preflight,
// images, provision), the SSH connection dropped mid-stage (k3s), the ops repo rejecting the
// push (flux) and the cluster denying what Flux applies (rollout). Each run either converges by
// retrying or fails with exit 1 naming the stage and the cause; the next run converges that
// stage. Never a duplicate VM, template or commit; history never rewritten. It ends with a
// rerun that changes nothing.
func TestFaultCampaign(t *testing.T) {
	requireSandbox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	bin := buildInstaller(t)
	begin := time.Now()
	s, err := sandbox.Up(ctx, sandbox.Options{Dir: filepath.Join(t.TempDir(), "sandbox"), Log: tlog{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(context.Background()); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	t.Logf("sandbox up in %s", time.Since(begin).Round(100*time.Millisecond))
	c := &campaign{s: s, bin: bin, ops: filepath.Join(s.Git.Dir(), "ops.git")}
	kubeconfig := filepath.Join(s.Dir, ".opencsp", "kubeconfig")
	var removePolicy func(context.Context) error
	var dropped []int
	var dropTried bool

	steps := []campaignStep{
		{faults: []campaignFault{
			httpFault("preflight: PVE 500 on GET /nodes (x2)", pvesim.HTTPFault{Method: "GET", Path: `^/nodes$`, Status: 500, Count: 2}),
			taskFault("images: download task fails", "download", "download failed: 404 Not Found", 1),
		}, fails: "images", cause: []string{"404 Not Found"}},
		{faults: []campaignFault{
			httpFault("images: PVE 500 on GET storage content (x2)", pvesim.HTTPFault{Method: "GET", Path: `/storage/[^/]+/content$`, Status: 500, Count: 2}),
			{name: "images: lock timeout converting the template (x2)",
				arm: func(t *testing.T, c *campaign) {
					c.s.PVE.FailTasks("qmtemplate", fmt.Sprintf(lockTimeout, 100), 2)
				},
				fired: logFired("got timeout")},
			{name: "provision: nextid race (the template took the VMID)",
				arm: func(t *testing.T, c *campaign) { c.s.PVE.RaceNextID(2) },
				fired: func(t *testing.T, c *campaign, run *campaignRun) error {
					for _, r := range run.requests {
						if r.Method == "POST" && strings.HasSuffix(r.Path, "/clone") && r.Status >= 400 && r.Params["newid"] == fmt.Sprint(c.tmpl) {
							return nil
						}
					}
					return fmt.Errorf("no clone to the template's VMID %d was refused", c.tmpl)
				}},
			taskFault("provision: clone task fails", "qmclone", "clone failed: storage 'local-lvm' full", 1),
		}, fails: "provision", cause: []string{"storage 'local-lvm' full"}},
		{faults: []campaignFault{
			httpFault("provision: PVE 503 on clone (x2)", pvesim.HTTPFault{Method: "POST", Path: `/clone$`, Status: 503, Count: 2}),
			{name: "provision: lock timeout on the VM config (x2)",
				arm: func(t *testing.T, c *campaign) {
					c.s.PVE.InjectHTTPError(pvesim.HTTPFault{Method: "PUT", Path: `^/nodes/[^/]+/qemu/\d+/config$`, Status: 500,
						Message: fmt.Sprintf(lockTimeout, 101), Count: 2})
				},
				fired: logFired("got timeout")},
			taskFault("provision: start task fails", "qmstart", "start failed: kvm: failed to initialize KVM", 1),
		}, fails: "provision", cause: []string{"failed to initialize KVM"}},
		{faults: []campaignFault{
			{name: "k3s: SSH connection dropped while the install script runs",
				onEvent: func(t *testing.T, c *campaign, ev events.Event) {
					if ev.Stage == "k3s" && ev.Step == "install" && ev.Status == events.Started && !dropTried {
						dropTried = true
						time.Sleep(300 * time.Millisecond) // the script is running
						pids, err := c.s.DropSSH(c.mgmtVM(t), "opencsp")
						if err != nil {
							t.Errorf("drop SSH: %v", err)
						}
						dropped = pids
						t.Logf("dropped the SSH session: killed sshd processes %v in the VM stand-in", pids)
					}
				},
				fired: func(t *testing.T, c *campaign, run *campaignRun) error {
					if len(dropped) == 0 {
						return errors.New("no SSH session was dropped")
					}
					return nil
				}},
		}, fails: "k3s", cause: []string{"install k3s on " + s.VMAddress.Addr().String(), "SSH connection lost"}},
		{faults: []campaignFault{
			{name: "flux: ops repo rejects the push (pre-receive hook)",
				arm: func(t *testing.T, c *campaign) {
					if err := c.s.Git.RejectPushes("ops", 1, "protected branch: main is frozen for maintenance"); err != nil {
						t.Fatal(err)
					}
				},
				fired: func(t *testing.T, c *campaign, run *campaignRun) error {
					if n, err := c.s.Git.PendingRejections("ops"); err != nil || n != 0 {
						return fmt.Errorf("%d rejections left (%v)", n, err)
					}
					return nil
				},
				disarm: func(t *testing.T, c *campaign) { c.s.Git.RejectPushes("ops", 0, "") }},
		}, fails: "flux", cause: []string{"ops repo", "push rejected", "protected branch: main is frozen for maintenance"}},
		{faults: []campaignFault{
			{name: "rollout: admission policy denies valkey's HelmRelease",
				arm: func(t *testing.T, c *campaign) {
					var err error
					removePolicy, err = sandbox.DenyApply(ctx, kubeconfig, "opencsp-fault-deny-valkey",
						"helm.toolkit.fluxcd.io", "helmreleases", "valkey", "valkey is frozen by the fault campaign")
					if err != nil {
						t.Fatal(err)
					}
				},
				fired: func(t *testing.T, c *campaign, run *campaignRun) error {
					for _, ev := range run.events {
						if ev.Stage == "rollout" && ev.Step == "valkey" && ev.Status == events.Failed {
							return nil
						}
					}
					return errors.New("no failed rollout step for the valkey layer")
				},
				disarm: func(t *testing.T, c *campaign) {
					if err := removePolicy(ctx); err != nil {
						t.Fatal(err)
					}
				}},
		}, fails: "rollout", cause: []string{
			// The controller's own failure, at once: not a layer timeout.
			"component valkey (layer valkey) failed: ReconciliationFailed", "valkey is frozen by the fault campaign"}},
		{}, // converges: rollout completes once the policy is gone
	}

	names := pipeline.Names()
	for i, step := range steps {
		n := i + 1
		for _, f := range step.faults {
			if f.arm != nil {
				f.arm(t, c)
			}
		}
		run := c.install(t, ctx, func(ev events.Event) {
			for _, f := range step.faults {
				if f.onEvent != nil {
					f.onEvent(t, c, ev)
				}
			}
		})
		if c.mgmt == 0 {
			c.findVMs(t)
		}
		out := run.stdout + run.stderr
		if step.fails == "" {
			if run.code != 0 {
				t.Fatalf("run %d: exit %d, want 0\n%s", n, run.code, out)
			}
		} else {
			if run.code != 1 {
				t.Fatalf("run %d: exit %d, want 1 at stage %s\n%s", n, run.code, step.fails, out)
			}
			want := append([]string{"Error: stage " + step.fails + " failed", "Resume with: opencsp install -c " + sandbox.ConfigFile}, step.cause...)
			for _, w := range want {
				if !strings.Contains(run.stderr, w) {
					t.Errorf("run %d: stderr lacks %q:\n%s", n, w, run.stderr)
				}
			}
			t.Logf("run %d: %s", n, firstLine(run.stderr))
		}
		// Every stage before the failing one (all of them when converged) is done.
		st, err := state.Peek(filepath.Join(s.Dir, ".opencsp"))
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			if name == step.fails {
				if got := st.StatusOf(name); got == state.Done {
					t.Errorf("run %d: stage %s is %s after failing", n, name, got)
				}
				break
			}
			if got := st.StatusOf(name); got != state.Done {
				t.Errorf("run %d: stage %s is %s, want done", n, name, got)
			}
		}
		for _, f := range step.faults {
			if f.fired != nil {
				if err := f.fired(t, c, run); err != nil {
					t.Errorf("run %d: fault %q did not hit: %v", n, f.name, err)
				}
			}
			if f.disarm != nil {
				f.disarm(t, c)
			}
			stage, _, _ := strings.Cut(f.name, ":")
			outcome := fmt.Sprintf("run %d: retried, stage %s went on", n, stage)
			if step.fails != "" && f.name == step.faults[len(step.faults)-1].name {
				outcome = fmt.Sprintf("run %d: exit 1 naming stage %s and %q; run %d got past it", n, step.fails, step.cause[len(step.cause)-1], n+1)
			}
			c.table = append(c.table, fmt.Sprintf("%-62s | %s", f.name, outcome))
		}
		s.PVE.ClearFaults()
		c.checkInvariants(t, n)
		if t.Failed() {
			t.Fatalf("run %d failed its checks; stopping the campaign", n)
		}
	}

	// Everything converged: exactly one management VM and one template, every request valid.
	if vms, tmpls := c.findVMs(t); vms["opencsp-sandbox-mgmt"] != 1 || tmpls != 1 {
		t.Errorf("after the campaign: VMs %v and %d templates, want one management VM and one template", vms, tmpls)
	}
	if err := s.PVE.ValidateLog(); err != nil {
		t.Errorf("requests the real PVE API would reject:\n%v", err)
	}

	// The final rerun changes nothing.
	mutating := len(s.PVE.MutatingRequests())
	refs := gitRefs(t, s)
	run := c.install(t, ctx, nil)
	if run.code != 0 {
		t.Fatalf("final rerun: exit %d\n%s", run.code, run.stderr)
	}
	skipped := map[string]bool{}
	for _, ev := range run.events {
		if ev.Step == "" && ev.Status == events.Skipped {
			skipped[ev.Stage] = true
		}
	}
	for _, name := range names {
		if !skipped[name] {
			t.Errorf("final rerun did not skip stage %s", name)
		}
	}
	if after := s.PVE.MutatingRequests(); len(after) != mutating {
		t.Errorf("final rerun made %d mutating PVE calls: %+v", len(after)-mutating, after[mutating:])
	}
	if got := gitRefs(t, s); got != refs {
		t.Errorf("final rerun changed the ops repo: %q -> %q", refs, got)
	}
	c.checkInvariants(t, len(steps)+1)
	c.table = append(c.table, fmt.Sprintf("%-62s | run %d: converged, exit 0", "(the faults disarmed)", len(steps)),
		fmt.Sprintf("%-62s | run %d: exit 0, every stage skipped, 0 mutating PVE calls, same git refs", "(none: the final rerun)", len(steps)+1))
	t.Logf("fault campaign (%s):\n%-62s | %s\n%s", time.Since(begin).Round(time.Second), "fault", "outcome", strings.Join(c.table, "\n"))
}

func httpFault(name string, f pvesim.HTTPFault) campaignFault {
	re := regexp.MustCompile(f.Path)
	return campaignFault{name: name,
		arm: func(t *testing.T, c *campaign) {
			if err := c.s.PVE.InjectHTTPError(f); err != nil {
				t.Fatal(err)
			}
		},
		fired: func(t *testing.T, c *campaign, run *campaignRun) error {
			n := 0
			for _, r := range run.requests {
				if r.Method == f.Method && r.Status == f.Status && re.MatchString(strings.TrimPrefix(r.Path, "/api2/json")) {
					n++
				}
			}
			if n != f.Count {
				return fmt.Errorf("%d calls answered %d, want %d", n, f.Status, f.Count)
			}
			return nil
		}}
}

func taskFault(name, typ, msg string, count int) campaignFault {
	return campaignFault{name: name,
		arm:   func(t *testing.T, c *campaign) { c.s.PVE.FailTasks(typ, msg, count) },
		fired: logFired(msg)}
}

// logFired checks that this run's install log mentions s (the installer saw the failure).
func logFired(s string) func(*testing.T, *campaign, *campaignRun) error {
	return func(t *testing.T, c *campaign, run *campaignRun) error {
		if !strings.Contains(run.log, s) {
			return fmt.Errorf("the install log of the run does not mention %q", s)
		}
		return nil
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// install runs `opencsp install --output json`, passing each progress event to on as it
// arrives, and collects what the run did.
func (c *campaign) install(t *testing.T, ctx context.Context, on func(events.Event)) *campaignRun {
	t.Helper()
	logPath := filepath.Join(c.s.Dir, ".opencsp", "install.log")
	var logOffset int64
	if fi, err := os.Stat(logPath); err == nil {
		logOffset = fi.Size()
	}
	reqBefore := len(c.s.PVE.Requests())

	cmd := exec.CommandContext(ctx, c.bin, "install", "-c", sandbox.ConfigFile, "--output", "json")
	cmd.Dir = c.s.Dir
	cmd.Env = append(os.Environ(), c.s.Env()...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	run := &campaignRun{}
	var out strings.Builder
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			line := sc.Text()
			out.WriteString(line + "\n")
			var ev events.Event
			if json.Unmarshal([]byte(line), &ev) != nil {
				continue
			}
			run.events = append(run.events, ev)
			if on != nil {
				on(ev)
			}
		}
	}()
	wg.Wait()
	err = cmd.Wait()
	run.result = result{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		run.code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("opencsp install: %v", err)
	}
	t.Logf("opencsp install: exit %d in %s", run.code, run.took.Round(100*time.Millisecond))
	run.requests = c.s.PVE.Requests()[reqBefore:]
	if b, err := os.ReadFile(logPath); err == nil && int64(len(b)) >= logOffset {
		run.log = string(b[logOffset:])
	}
	return run
}

// findVMs counts the VMs by name and the templates, and records the management VM and the
// template. A name used twice fails the test.
func (c *campaign) findVMs(t *testing.T) (vms map[string]int, templates int) {
	t.Helper()
	vms = map[string]int{}
	for _, id := range c.s.PVE.VMIDs() {
		vm, ok := c.s.PVE.VM(id)
		if !ok {
			continue
		}
		name := vm.Config["name"]
		vms[name]++
		if vm.Config["template"] == "1" {
			templates++
			c.tmpl = id
		} else if name == "opencsp-sandbox-mgmt" {
			c.mgmt = id
		}
	}
	for name, n := range vms {
		if n > 1 {
			t.Errorf("%d VMs named %s", n, name)
		}
	}
	if templates > 1 {
		t.Errorf("%d templates", templates)
	}
	return vms, templates
}

func (c *campaign) mgmtVM(t *testing.T) int {
	if c.mgmt == 0 {
		c.findVMs(t)
	}
	return c.mgmt
}

// checkInvariants: no duplicate VM or template in PVE; in the ops repo no two commits with the
// same tree and the branch only ever moved forward.
func (c *campaign) checkInvariants(t *testing.T, run int) {
	t.Helper()
	c.findVMs(t)
	out, err := exec.Command("git", "-C", c.ops, "log", "--all", "--format=%H %T").CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "does not have any commits") {
			return
		}
		t.Fatalf("git log: %v: %s", err, out)
	}
	trees := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		commit, tree, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if other, dup := trees[tree]; dup {
			t.Errorf("after run %d: commits %s and %s have the same tree %s (a duplicate commit)", run, other, commit, tree)
		}
		trees[tree] = commit
	}
	head, err := exec.Command("git", "-C", c.ops, "rev-parse", "--verify", "--quiet", "refs/heads/main").Output()
	if err != nil {
		return // not pushed yet
	}
	h := strings.TrimSpace(string(head))
	if prev := c.lastHead; prev != "" && prev != h {
		if err := exec.Command("git", "-C", c.ops, "merge-base", "--is-ancestor", prev, h).Run(); err != nil {
			t.Errorf("after run %d: main moved from %s to %s, which does not contain it (history rewritten)", run, prev, h)
		}
	}
	c.lastHead = h
}
