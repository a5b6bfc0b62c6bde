package sandbox_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencsp/installer/e2e/sandbox"
	"github.com/opencsp/installer/internal/events"
	"github.com/opencsp/installer/internal/state"
	"github.com/opencsp/installer/stages/pipeline"
)

// CrashSeedEnv replays a crash campaign: the seed picks the stages aimed at and the delays.
const CrashSeedEnv = "OPENCSP_CRASH_SEED"

const (
	crashEpisodes = 3 // each a fresh sandbox and a fresh install (~3 min)
	crashKills    = 20
)

// crashAims are the points a kill can aim at, in pipeline order: the start of a stage's step
// (stage start when step is "") and a window for the seeded delay after it, about as long as
// the step takes in the sandbox, so the kill lands inside it: mid-download, mid-clone, during
// the VM boot, mid-upload, mid-install, mid-push, while Flux comes up, during the rollout. A
// delay longer than the step lands later; the table says where each kill really hit.
var crashAims = []crashAim{
	{"images", "download", 250 * time.Millisecond},
	{"images", "template", 400 * time.Millisecond},
	{"provision", "vm", 400 * time.Millisecond},
	{"provision", "address", 35 * time.Second},
	{"k3s", "upload", 1500 * time.Millisecond},
	{"k3s", "install", 10 * time.Second},
	{"flux", "push", 1500 * time.Millisecond},
	{"flux", "components", 2500 * time.Millisecond},
	{"flux", "health", 8 * time.Second},
	{"rollout", "", 90 * time.Second},
}

type crashAim struct {
	stage, step string
	window      time.Duration
}

func (a crashAim) String() string { return a.stage + "/" + crashOr(a.step, "-") }

// crashKill is one planned SIGKILL and, once done, where it hit.
type crashKill struct {
	episode, n int
	aim        crashAim
	delay      time.Duration // after the aimed-at step started
	hit        string        // stage/step/status of the last event before the kill
	at         time.Duration // since the run started
	landed     bool          // false: the run finished before the kill
}

// TestCrashCampaign SIGKILLs `opencsp install` (the real binary) at 20 seeded random points
// across real installs, rerunning after each kill. A few episodes, each a fresh sandbox and
// install whose successive reruns are killed progressively later (aimed at a step through the
// JSON progress events, at a random delay into it); the last rerun of each episode converges.
// After every kill: the state file parses, no VM or template exists twice, no two ops repo
// commits have the same tree and main was never rewritten. After convergence a rerun changes
// nothing. OPENCSP_CRASH_SEED=<seed> replays the plan (timing still varies a little).
func TestCrashCampaign(t *testing.T) {
	requireSandbox(t)
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv(CrashSeedEnv); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("%s=%q: want an unsigned integer", CrashSeedEnv, v)
		}
	}
	t.Logf("crash campaign seed %d (replay with %s=%d)", seed, CrashSeedEnv, seed)
	rng := rand.New(rand.NewPCG(seed, 0x0c5b))
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	bin := buildInstaller(t)
	begin := time.Now()

	var all []*crashKill
	// Kills of an episode whose install finished before them (a race with the end of the last
	// stage) move to the next one, or to one extra episode after the last.
	for ep := 1; ep <= crashEpisodes+1 && countLanded(all) < crashKills; ep++ {
		n := crashKills*min(ep, crashEpisodes)/crashEpisodes - countLanded(all)
		plan := crashPlan(rng, ep, n)
		s := crashSandbox(t, ctx, filepath.Join(t.TempDir(), fmt.Sprintf("sandbox-%d", ep)))
		crashEpisode(t, ctx, bin, s, plan)
		all = append(all, plan...)
		if countLanded(all) == crashKills && !t.Failed() {
			// The refused-key case needs a finished install: this one, instead of paying for
			// another install in CI (see badinput_test.go).
			t.Run("refused key", func(t *testing.T) { badRefusedKey(t, ctx, bin, s) })
		}
		if err := s.Close(context.Background()); err != nil {
			t.Errorf("close sandbox: %v", err)
		}
		if t.Failed() {
			break
		}
	}

	var tbl strings.Builder
	fmt.Fprintf(&tbl, "seed %d\n%-4s %-5s %-20s %-8s %-9s %s\n", seed, "ep", "kill", "aimed at", "delay", "at", "hit (last event before the kill)")
	for _, k := range all {
		hit := k.hit
		if !k.landed {
			hit = "(missed: the run finished first)"
		}
		fmt.Fprintf(&tbl, "%-4d %-5d %-20s %-8s %-9s %s\n", k.episode, k.n, k.aim,
			k.delay.Round(100*time.Millisecond), k.at.Round(100*time.Millisecond), hit)
	}
	t.Logf("kills:\n%s", tbl.String())
	if got := countLanded(all); got != crashKills && !t.Failed() {
		t.Errorf("%d kills landed, want %d", got, crashKills)
	}
	t.Logf("crash campaign: %d kills in %s", countLanded(all), time.Since(begin).Round(time.Second))
}

func countLanded(ks []*crashKill) int {
	n := 0
	for _, k := range ks {
		if k.landed {
			n++
		}
	}
	return n
}

// crashPlan picks n kills for one episode: aim points in pipeline order, each with a random
// delay within its window.
func crashPlan(rng *rand.Rand, episode, n int) []*crashKill {
	var idx []int
	for range n {
		idx = append(idx, rng.IntN(len(crashAims)))
	}
	slices.Sort(idx)
	plan := make([]*crashKill, n)
	for i, j := range idx {
		a := crashAims[j]
		plan[i] = &crashKill{episode: episode, n: i + 1, aim: a, delay: time.Duration(rng.Int64N(int64(a.window)))}
	}
	return plan
}

func crashSandbox(t *testing.T, ctx context.Context, dir string) *sandbox.Sandbox {
	t.Helper()
	begin := time.Now()
	s, err := sandbox.Up(ctx, sandbox.Options{Dir: dir, Log: tlog{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sandbox up in %s", time.Since(begin).Round(100*time.Millisecond))
	return s
}

// crashEpisode runs the install of one fresh sandbox through its planned kills, then to
// convergence, checking the invariants after every run; then a rerun that changes nothing.
func crashEpisode(t *testing.T, ctx context.Context, bin string, s *sandbox.Sandbox, plan []*crashKill) {
	t.Helper()
	c := &crashCheck{s: s, stateDir: filepath.Join(s.Dir, ".opencsp")}
	for _, k := range plan {
		r := crashInstall(t, ctx, bin, s, k)
		if !k.landed {
			if r.code != 0 {
				t.Fatalf("episode %d run %d (not killed): exit %d\n%s", k.episode, k.n, r.code, r.stderr)
			}
			break // converged before the kill: the remaining kills move to the next episode
		}
		t.Logf("episode %d kill %d: aimed at %s +%s, hit %s after %s", k.episode, k.n, k.aim,
			k.delay.Round(100*time.Millisecond), k.hit, k.at.Round(100*time.Millisecond))
		c.check(t, fmt.Sprintf("after episode %d kill %d (%s)", k.episode, k.n, k.hit))
	}
	r := crashInstall(t, ctx, bin, s, nil)
	if r.code != 0 {
		t.Fatalf("episode did not converge: exit %d\n%s", r.code, r.stderr)
	}
	c.check(t, "after convergence")
	st, err := state.Peek(c.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range pipeline.Names() {
		if got := st.StatusOf(name); got != state.Done {
			t.Errorf("after convergence stage %s is %s, want done", name, got)
		}
	}
	if err := s.PVE.ValidateLog(); err != nil {
		t.Errorf("requests the real PVE API would reject:\n%v", err)
	}

	// The rerun of a converged install changes nothing.
	mutating := len(s.PVE.MutatingRequests())
	refs := gitRefs(t, s)
	r = crashInstall(t, ctx, bin, s, nil)
	if r.code != 0 {
		t.Fatalf("rerun: exit %d\n%s", r.code, r.stderr)
	}
	for _, name := range pipeline.Names() {
		if !slices.ContainsFunc(r.events, func(e events.Event) bool {
			return e.Stage == name && e.Step == "" && e.Status == events.Skipped
		}) {
			t.Errorf("rerun did not skip stage %s", name)
		}
	}
	if after := s.PVE.MutatingRequests(); len(after) != mutating {
		t.Errorf("rerun made %d mutating PVE calls: %+v", len(after)-mutating, after[mutating:])
	}
	if got := gitRefs(t, s); got != refs {
		t.Errorf("rerun changed the ops repo: %q -> %q", refs, got)
	}
}

type crashRun struct {
	result
	events []events.Event
}

// crashInstall runs `opencsp install --output json` in the sandbox; with k it SIGKILLs the
// process group k.delay after the aimed-at step started, or any step of a later stage when this
// run does not do that step (it finished earlier), at once when the last stage reports done (so
// the kill still lands); and records where it hit.
func crashInstall(t *testing.T, ctx context.Context, bin string, s *sandbox.Sandbox, k *crashKill) crashRun {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, "install", "-c", sandbox.ConfigFile, "--output", "json")
	cmd.Dir = s.Dir
	cmd.Env = append(os.Environ(), s.Env()...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start opencsp: %v", err)
	}
	lines := make(chan events.Event)
	var text bytes.Buffer // stdout lines that are not events
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			var ev events.Event
			if json.Unmarshal(sc.Bytes(), &ev) != nil {
				text.Write(sc.Bytes())
				text.WriteByte('\n')
				continue
			}
			lines <- ev
		}
	}()

	names := pipeline.Names()
	target := len(names)
	if k != nil {
		target = slices.Index(names, k.aim.stage)
	}
	var (
		run   crashRun
		timer <-chan time.Time
		last  events.Event
		kill  = func() {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			k.landed, k.at = true, time.Since(start)
			k.hit = last.Stage + "/" + crashOr(last.Step, "-") + " " + string(last.Status)
			timer = nil
		}
	)
	for lines != nil {
		select {
		case ev, ok := <-lines:
			if !ok {
				lines = nil
				continue
			}
			run.events = append(run.events, ev)
			if ev.Status == events.Skipped || ev.Stage == "" {
				continue
			}
			last = ev
			if k == nil || k.landed {
				continue
			}
			i := slices.Index(names, ev.Stage)
			aimed := i == target && ev.Step == k.aim.step || i > target
			switch {
			case timer == nil && aimed && ev.Status == events.Started:
				timer = time.After(k.delay)
			case i == len(names)-1 && ev.Step == "" && ev.Status == events.Done:
				kill()
			}
		case <-timer:
			kill()
		}
	}
	err = cmd.Wait()
	run.result = result{stdout: text.String(), stderr: errb.String(), took: time.Since(start)}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		run.code = -int(ws.Signal())
	} else if cmd.ProcessState != nil {
		run.code = cmd.ProcessState.ExitCode()
	} else {
		t.Fatalf("opencsp install: %v", err)
	}
	if k != nil && k.landed && run.code != -int(syscall.SIGKILL) {
		// The run ended on its own between the last event and the signal.
		k.landed = false
	}
	t.Logf("opencsp install: exit %d in %s (%d events)", run.code, run.took.Round(100*time.Millisecond), len(run.events))
	return run
}

func crashOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// crashCheck holds what the invariants compare across runs of one episode.
type crashCheck struct {
	s        *sandbox.Sandbox
	stateDir string
	main     string // the ops repo's main after the previous run
}

// check asserts the crash invariants: the state parses, nothing exists twice, the ops repo's
// history has no duplicate commit and was not rewritten.
func (c *crashCheck) check(t *testing.T, when string) {
	t.Helper()
	if _, err := state.Peek(c.stateDir); err != nil {
		t.Errorf("%s: state file: %v", when, err)
	}
	names := map[string][]int{}
	for _, id := range c.s.PVE.VMIDs() {
		if vm, ok := c.s.PVE.VM(id); ok {
			names[vm.Config["name"]] = append(names[vm.Config["name"]], id)
		}
	}
	for name, ids := range names {
		if len(ids) > 1 {
			t.Errorf("%s: %d VMs/templates named %q: %v", when, len(ids), name, ids)
		}
	}
	repo := filepath.Join(c.s.Git.Dir(), "ops.git")
	git := func(args ...string) (string, error) {
		out, err := exec.Command("git", append([]string{"-C", repo}, args...)...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	log, err := git("log", "--all", "--format=%H %T")
	if err != nil && !strings.Contains(log, "does not have any commits") {
		t.Fatalf("%s: git log: %v: %s", when, err, log)
	}
	trees := map[string]string{}
	for _, line := range strings.Split(log, "\n") {
		commit, tree, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if prev, dup := trees[tree]; dup {
			t.Errorf("%s: commits %s and %s have the same tree %s", when, prev, commit, tree)
		}
		trees[tree] = commit
	}
	head, err := git("rev-parse", "--verify", "--quiet", "refs/heads/main")
	if err != nil {
		head = ""
	}
	if c.main != "" {
		if head == "" {
			t.Errorf("%s: main (was %s) is gone", when, c.main)
		} else if _, err := git("merge-base", "--is-ancestor", c.main, head); err != nil {
			t.Errorf("%s: main was rewritten: %s is not an ancestor of %s", when, c.main, head)
		}
	}
	c.main = head
}
