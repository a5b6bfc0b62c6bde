package stages_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/events"
	"github.com/opencsp/installer/internal/state"
	"github.com/opencsp/installer/stages"
)

// pipeline is the real stage order; the fakes borrow its names.
var pipeline = []string{"preflight", "images", "provision", "k3s", "flux", "rollout"}

// fake is a configurable stage. Runs count from 1 across invocations of the
// same fake.
type fake struct {
	name string

	mu        sync.Mutex
	inputs    any
	runs      int
	verifies  int
	plans     int
	failOn    map[int]error // run number -> error to return
	verifyErr error
	changes   []stages.Change
	planErr   error
	planHook  func(env *stages.Env) error // called by Plan before returning changes
	// before runs at the start of Run (after counting) and before the
	// default behaviour (recording fakeOutputs); its error is returned as is.
	before func(ctx context.Context, env *stages.Env, run int) error
	// run, if set, replaces Run's default behaviour entirely.
	run func(ctx context.Context, env *stages.Env, run int) error
	// verify, if set, replaces Verify.
	verify func(ctx context.Context, env *stages.Env) error
	order  *[]string // shared record of Run calls
}

type fakeOutputs struct {
	Stage string `json:"stage"`
	Run   int    `json:"run"`
}

func (f *fake) Name() string { return f.name }

func (f *fake) Inputs(*config.Config) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inputs
}

func (f *fake) Plan(ctx context.Context, env *stages.Env) ([]stages.Change, error) {
	f.mu.Lock()
	f.plans++
	changes, planErr, hook := f.changes, f.planErr, f.planHook
	f.mu.Unlock()
	if hook != nil {
		if err := hook(env); err != nil {
			return nil, err
		}
	}
	return changes, planErr
}

func (f *fake) Run(ctx context.Context, env *stages.Env) error {
	f.mu.Lock()
	f.runs++
	n := f.runs
	failure := f.failOn[n]
	before, run := f.before, f.run
	if f.order != nil {
		*f.order = append(*f.order, f.name)
	}
	f.mu.Unlock()

	if before != nil {
		if err := before(ctx, env, n); err != nil {
			return err
		}
	}
	if failure != nil {
		return failure
	}
	if run != nil {
		return run(ctx, env, n)
	}
	return env.SetOutputs(fakeOutputs{Stage: f.name, Run: n})
}

// Verify checks the recorded outputs, like a real stage checking its VM.
func (f *fake) Verify(ctx context.Context, env *stages.Env) error {
	f.mu.Lock()
	f.verifies++
	verr, verify := f.verifyErr, f.verify
	f.mu.Unlock()
	if verify != nil {
		return verify(ctx, env)
	}
	if verr != nil {
		return verr
	}
	var out fakeOutputs
	if err := env.Outputs(&out); err != nil {
		return err
	}
	if out.Stage != f.name {
		return fmt.Errorf("no outputs recorded for %s", f.name)
	}
	return nil
}

func (f *fake) set(change func(f *fake)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f)
}

func (f *fake) counts() (runs, verifies, plans int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.runs, f.verifies, f.plans
}

// harness is a state dir plus a pipeline of fakes; each run opens and
// closes the store like a separate opencsp invocation would.
type harness struct {
	t      *testing.T
	dir    string
	fakes  []*fake
	order  []string
	events *events.Recorder
	cfg    *config.Config
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), events: &events.Recorder{}, cfg: &config.Config{}}
	h.cfg.Cluster.Name = "lab"
	for _, name := range pipeline {
		h.fakes = append(h.fakes, &fake{name: name, inputs: map[string]string{"stage": name}, order: &h.order})
	}
	return h
}

func (h *harness) fake(name string) *fake {
	for _, f := range h.fakes {
		if f.name == name {
			return f
		}
	}
	h.t.Fatalf("no fake %q", name)
	return nil
}

func (h *harness) runner(store *state.Store) *stages.Runner {
	list := make([]stages.Stage, len(h.fakes))
	for i, f := range h.fakes {
		list[i] = f
	}
	return &stages.Runner{
		Stages:           list,
		Store:            store,
		Config:           h.cfg,
		StateDir:         h.dir,
		Events:           h.events,
		InstallerVersion: "v0.0.0-test",
		ResumeHint:       func(stage string) string { return "opencsp install -c opencsp.yaml" },
	}
}

func (h *harness) run(ctx context.Context, opts stages.Options) error {
	h.t.Helper()
	store, err := state.Open(ctx, h.dir)
	if err != nil {
		h.t.Fatalf("open state: %v", err)
	}
	defer store.Close()
	h.events.Reset()
	h.order = nil
	return h.runner(store).Run(ctx, opts)
}

func (h *harness) mustRun(opts stages.Options) {
	h.t.Helper()
	if err := h.run(context.Background(), opts); err != nil {
		h.t.Fatalf("run %+v: %v", opts, err)
	}
}

func (h *harness) runs() []int {
	var n []int
	for _, f := range h.fakes {
		r, _, _ := f.counts()
		n = append(n, r)
	}
	return n
}

func (h *harness) state() *state.File {
	h.t.Helper()
	f, err := state.Peek(h.dir)
	if err != nil {
		h.t.Fatalf("peek state: %v", err)
	}
	return f
}

func (h *harness) stateBytes() []byte {
	h.t.Helper()
	b, err := os.ReadFile(h.dir + "/" + state.FileName)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		h.t.Fatal(err)
	}
	return b
}

// stageEvent returns the stage-level event of the given status for stage.
func (h *harness) stageEvent(stage string, status events.Status) (events.Event, bool) {
	for _, e := range h.events.Events() {
		if e.Stage == stage && e.Step == "" && e.Status == status {
			return e, true
		}
	}
	return events.Event{}, false
}

// countsFor builds expected run counts: base for every stage, plus extra at
// the listed indices.
func countsFor(base int, extra map[int]int) []int {
	n := slices.Repeat([]int{base}, len(pipeline))
	for i, e := range extra {
		n[i] += e
	}
	return n
}

// rangeCounts is base for stages < k and base+1 from k on.
func rangeCounts(base, k int) []int {
	n := slices.Repeat([]int{base}, len(pipeline))
	for i := k; i < len(n); i++ {
		n[i]++
	}
	return n
}
