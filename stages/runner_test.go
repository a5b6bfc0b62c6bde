package stages_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/opencsp/installer/internal/events"
	"github.com/opencsp/installer/internal/logging"
	"github.com/opencsp/installer/internal/state"
	"github.com/opencsp/installer/stages"
)

var errBoom = errors.New("boom")

func TestFreshRunRunsAllStagesInOrderAndRecordsThem(t *testing.T) {
	h := newHarness(t)
	h.mustRun(stages.Options{})

	if !slices.Equal(h.order, pipeline) {
		t.Errorf("run order %v, want %v", h.order, pipeline)
	}
	f := h.state()
	if f.Cluster != "lab" || f.Installer != "v0.0.0-test" || f.Version != state.Version {
		t.Errorf("state header = %+v", f)
	}
	for _, fk := range h.fakes {
		rec := f.Stages[fk.name]
		if rec == nil {
			t.Fatalf("no record for %s", fk.name)
		}
		want, _ := stages.Fingerprint(fk.inputs)
		if rec.Status != state.Done || rec.Attempts != 1 || rec.Fingerprint != want || rec.Error != "" ||
			rec.StartedAt.IsZero() || rec.FinishedAt.Before(rec.StartedAt) {
			t.Errorf("%s record = %+v", fk.name, rec)
		}
		if !strings.Contains(string(rec.Outputs), `"stage": "`+fk.name+`"`) {
			t.Errorf("%s outputs = %s", fk.name, rec.Outputs)
		}
	}
	// Each stage: Started (no reason on a first run) then Done, in order.
	var got []string
	for _, e := range h.events.Events() {
		got = append(got, e.Stage+":"+string(e.Status)+":"+e.Message)
		if e.Time.IsZero() {
			t.Errorf("event without time: %+v", e)
		}
	}
	var want []string
	for _, n := range pipeline {
		want = append(want, n+":started:", n+":done:")
	}
	if !slices.Equal(got, want) {
		t.Errorf("events\n got %v\nwant %v", got, want)
	}
}

func TestRerunOfFinishedInstallSkipsEverythingAndWritesNothing(t *testing.T) {
	h := newHarness(t)
	h.mustRun(stages.Options{})
	before := h.stateBytes()

	h.mustRun(stages.Options{})

	if got := h.runs(); !slices.Equal(got, countsFor(1, nil)) {
		t.Errorf("runs = %v, want all 1", got)
	}
	for _, fk := range h.fakes {
		if _, v, _ := fk.counts(); v != 1 {
			t.Errorf("%s verified %d times, want 1", fk.name, v)
		}
		e, ok := h.stageEvent(fk.name, events.Skipped)
		if !ok || e.Message != "done and verified" {
			t.Errorf("%s: skipped event %+v %v", fk.name, e, ok)
		}
	}
	if !bytes.Equal(before, h.stateBytes()) {
		t.Error("a fully skipped run rewrote state.json")
	}
}

func TestFailureAtEachStageThenRerunResumes(t *testing.T) {
	for k, failing := range pipeline {
		t.Run(failing, func(t *testing.T) {
			h := newHarness(t)
			cause := fmt.Errorf("clone template 9000 on pve1: %w", errBoom)
			h.fake(failing).set(func(f *fake) { f.failOn = map[int]error{1: cause} })

			err := h.run(context.Background(), stages.Options{})
			var serr *stages.StageError
			if !errors.As(err, &serr) {
				t.Fatalf("err = %v (%T), want *StageError", err, err)
			}
			if serr.Stage != failing || serr.Resume != "opencsp install -c opencsp.yaml" || !errors.Is(err, errBoom) {
				t.Errorf("StageError = %+v", serr)
			}
			if want := "stage " + failing + " failed: clone template 9000 on pve1: boom"; err.Error() != want {
				t.Errorf("Error() = %q, want %q", err, want)
			}
			if errors.Is(err, stages.ErrInterrupted) {
				t.Error("a failure must not read as an interrupt")
			}
			f := h.state()
			for i, name := range pipeline {
				got := f.StatusOf(name)
				want := map[bool]state.Status{true: state.Done, false: state.Pending}[i < k]
				if i == k {
					want = state.Failed
				}
				if got != want {
					t.Errorf("after failure: %s is %s, want %s", name, got, want)
				}
			}
			if rec := f.Stages[failing]; rec.Error != cause.Error() || rec.FinishedAt.IsZero() {
				t.Errorf("failed record = %+v", rec)
			}
			if e, ok := h.stageEvent(failing, events.Failed); !ok || e.Message != cause.Error() {
				t.Errorf("failed event = %+v %v", e, ok)
			}
			// Stages up to k ran once; nothing after the failure ran.
			want := make([]int, len(pipeline))
			for i := range k + 1 {
				want[i] = 1
			}
			if got := h.runs(); !slices.Equal(got, want) {
				t.Errorf("runs after failure = %v, want %v", got, want)
			}

			h.mustRun(stages.Options{})

			// Stages before k ran once, k twice, later ones once.
			want = countsFor(1, map[int]int{k: 1})
			if got := h.runs(); !slices.Equal(got, want) {
				t.Errorf("runs after resume = %v, want %v", got, want)
			}
			for _, name := range pipeline {
				if st := h.state().StatusOf(name); st != state.Done {
					t.Errorf("after resume %s is %s", name, st)
				}
			}
			if a := h.state().Stages[failing].Attempts; a != 2 {
				t.Errorf("attempts of %s = %d, want 2", failing, a)
			}
			if e, ok := h.stageEvent(failing, events.Started); !ok || e.Message != "previous run failed" {
				t.Errorf("resume reason = %+v", e)
			}
		})
	}
}

func TestChangedInputsRerunThatStageAndLaterOnes(t *testing.T) {
	for k, changed := range pipeline {
		t.Run(changed, func(t *testing.T) {
			h := newHarness(t)
			h.mustRun(stages.Options{})
			h.fake(changed).set(func(f *fake) { f.inputs = map[string]string{"stage": changed, "size": "bigger"} })

			h.mustRun(stages.Options{})

			if got, want := h.runs(), rangeCounts(1, k); !slices.Equal(got, want) {
				t.Errorf("runs = %v, want %v", got, want)
			}
			if e, _ := h.stageEvent(changed, events.Started); e.Message != "config changed" {
				t.Errorf("reason for %s = %q, want config changed", changed, e.Message)
			}
			if k+1 < len(pipeline) {
				if e, _ := h.stageEvent(pipeline[k+1], events.Started); e.Message != "runs after stage "+changed {
					t.Errorf("reason for %s = %q", pipeline[k+1], e.Message)
				}
			}
			want, _ := stages.Fingerprint(map[string]string{"stage": changed, "size": "bigger"})
			if got := h.state().Stages[changed].Fingerprint; got != want {
				t.Errorf("fingerprint not updated: %s", got)
			}
			// A third run converges to all skipped.
			h.mustRun(stages.Options{})
			if got, want := h.runs(), rangeCounts(1, k); !slices.Equal(got, want) {
				t.Errorf("third run re-ran stages: %v", got)
			}
		})
	}
}

func TestVerifyFailureRerunsThatStageAndLaterOnes(t *testing.T) {
	for k, gone := range pipeline {
		t.Run(gone, func(t *testing.T) {
			h := newHarness(t)
			h.mustRun(stages.Options{})
			h.fake(gone).set(func(f *fake) { f.verifyErr = errors.New("vm 101 not found on pve1") })

			h.mustRun(stages.Options{})

			if got, want := h.runs(), rangeCounts(1, k); !slices.Equal(got, want) {
				t.Errorf("runs = %v, want %v", got, want)
			}
			if e, _ := h.stageEvent(gone, events.Started); e.Message != "verification failed: vm 101 not found on pve1" {
				t.Errorf("reason = %q", e.Message)
			}
			// Verify is not consulted for stages after one that ran.
			for _, fk := range h.fakes[k+1:] {
				if _, v, _ := fk.counts(); v != 0 {
					t.Errorf("%s verified %d times after an earlier stage ran", fk.name, v)
				}
			}
		})
	}
}

func TestVerifyDetectsLostOutputs(t *testing.T) {
	// A stage done in state but without outputs (e.g. hand-edited state)
	// fails the fake's Verify and runs again.
	h := newHarness(t)
	h.mustRun(stages.Options{})
	store, err := state.Open(context.Background(), h.dir)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := store.Load()
	f.Stages["k3s"].Outputs = nil
	if err := store.Save(f); err != nil {
		t.Fatal(err)
	}
	store.Close()

	h.mustRun(stages.Options{})
	if got, want := h.runs(), rangeCounts(1, 3); !slices.Equal(got, want) {
		t.Errorf("runs = %v, want %v", got, want)
	}
}

func TestFromAndOnly(t *testing.T) {
	allDone := func(h *harness) { h.mustRun(stages.Options{}) }
	failAt := func(name string) func(h *harness) {
		return func(h *harness) {
			h.fake(name).set(func(f *fake) { f.failOn = map[int]error{1: errBoom} })
			if err := h.run(context.Background(), stages.Options{}); err == nil {
				h.t.Fatal("setup run did not fail")
			}
		}
	}
	tests := []struct {
		name      string
		setup     func(h *harness)
		opts      stages.Options
		wantErr   error
		errHas    []string
		wantRuns  []int // cumulative, including setup
		wantOrder []string
	}{
		{
			name: "from reruns the stage and all later ones", setup: allDone,
			opts:      stages.Options{From: "provision"},
			wantRuns:  []int{1, 1, 2, 2, 2, 2},
			wantOrder: []string{"provision", "k3s", "flux", "rollout"},
		},
		{
			name: "from first stage on a fresh dir runs everything", setup: func(*harness) {},
			opts:     stages.Options{From: "preflight"},
			wantRuns: []int{1, 1, 1, 1, 1, 1}, wantOrder: pipeline,
		},
		{
			name: "from needs earlier stages done", setup: failAt("images"),
			opts:     stages.Options{From: "provision"},
			wantErr:  stages.ErrPrerequisite,
			errHas:   []string{"--from provision", "stage images is failed", "rerun without --from to resume, or use --from images"},
			wantRuns: []int{1, 1, 0, 0, 0, 0},
		},
		{
			name: "from a failed stage is allowed", setup: failAt("images"),
			opts:     stages.Options{From: "images"},
			wantRuns: []int{1, 2, 1, 1, 1, 1}, wantOrder: pipeline[1:],
		},
		{
			name: "only runs just that stage", setup: allDone,
			opts:     stages.Options{Only: "k3s"},
			wantRuns: []int{1, 1, 1, 2, 1, 1}, wantOrder: []string{"k3s"},
		},
		{
			name: "only the first stage on a fresh dir", setup: func(*harness) {},
			opts:     stages.Options{Only: "preflight"},
			wantRuns: []int{1, 0, 0, 0, 0, 0}, wantOrder: []string{"preflight"},
		},
		{
			name: "only needs earlier stages done", setup: func(*harness) {},
			opts:     stages.Options{Only: "provision"},
			wantErr:  stages.ErrPrerequisite,
			errHas:   []string{"--only provision", "stage preflight is pending", "--from preflight"},
			wantRuns: []int{0, 0, 0, 0, 0, 0},
		},
		{
			name: "unknown from", setup: allDone,
			opts:     stages.Options{From: "provison"},
			wantErr:  stages.ErrUnknownStage,
			errHas:   []string{`unknown stage "provison"`, "valid stages: preflight, images, provision, k3s, flux, rollout"},
			wantRuns: []int{1, 1, 1, 1, 1, 1},
		},
		{
			name: "unknown only", setup: func(*harness) {},
			opts:     stages.Options{Only: "k8s"},
			wantErr:  stages.ErrUnknownStage,
			errHas:   []string{`"k8s"`, "valid stages:"},
			wantRuns: []int{0, 0, 0, 0, 0, 0},
		},
		{
			name: "from and only together", setup: func(*harness) {},
			opts:     stages.Options{From: "images", Only: "k3s"},
			wantErr:  stages.ErrConflictingOptions,
			errHas:   []string{"cannot be combined"},
			wantRuns: []int{0, 0, 0, 0, 0, 0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			tt.setup(h)
			err := h.run(context.Background(), tt.opts)
			switch {
			case tt.errHas == nil && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.errHas != nil && err == nil:
				t.Fatal("expected an error")
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			for _, s := range tt.errHas {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
			if got := h.runs(); !slices.Equal(got, tt.wantRuns) {
				t.Errorf("runs = %v, want %v", got, tt.wantRuns)
			}
			if tt.errHas == nil && !slices.Equal(h.order, tt.wantOrder) {
				t.Errorf("order = %v, want %v", h.order, tt.wantOrder)
			}
		})
	}
}

func TestFromWarnsAboutChangedEarlierStage(t *testing.T) {
	h := newHarness(t)
	h.mustRun(stages.Options{})
	h.fake("images").set(func(f *fake) { f.inputs = "changed" })

	h.mustRun(stages.Options{From: "provision"})

	if r, _, _ := h.fake("images").counts(); r != 1 {
		t.Errorf("images re-ran despite --from provision")
	}
	var warned bool
	for _, e := range h.events.Events() {
		if e.Stage == "images" && e.Status == events.Warning && strings.Contains(e.Message, "not re-run because of --from provision") {
			warned = true
		}
	}
	if !warned {
		t.Errorf("no warning about images' changed config: %+v", h.events.Events())
	}
	e, _ := h.stageEvent("images", events.Skipped)
	if !strings.HasPrefix(e.Message, "before --from provision") {
		t.Errorf("skip reason = %q", e.Message)
	}
	if e, _ := h.stageEvent("provision", events.Started); e.Message != "selected by --from provision" {
		t.Errorf("start reason = %q", e.Message)
	}
}

func TestInterruptMidStage(t *testing.T) {
	tests := []struct {
		name string
		// returned by the stage after the context is cancelled
		stageErr func(ctx context.Context) error
	}{
		{"stage returns ctx error", func(ctx context.Context) error { return fmt.Errorf("wait for task: %w", ctx.Err()) }},
		{"stage returns unrelated error", func(context.Context) error { return errors.New("connection reset") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			h.fake("provision").set(func(f *fake) {
				f.before = func(ctx context.Context, env *stages.Env, run int) error {
					if run > 1 {
						return nil
					}
					if err := env.TrackTask(state.Task{ID: "UPID:pve1:clone"}); err != nil {
						return err
					}
					cancel() // Ctrl-C while waiting on the task
					<-ctx.Done()
					return tt.stageErr(ctx)
				}
			})

			err := h.run(ctx, stages.Options{})
			if !errors.Is(err, stages.ErrInterrupted) {
				t.Fatalf("err = %v, want ErrInterrupted", err)
			}
			var serr *stages.StageError
			if !errors.As(err, &serr) || serr.Stage != "provision" || serr.Resume == "" {
				t.Errorf("StageError = %+v", serr)
			}
			if err.Error() != "stage provision interrupted" {
				t.Errorf("Error() = %q", err)
			}
			f := h.state()
			rec := f.Stages["provision"]
			if rec.Status != state.Interrupted || rec.Error == "" || len(rec.InFlight) != 1 {
				t.Errorf("provision record = %+v", rec)
			}
			if st := f.StatusOf("k3s"); st != state.Pending {
				t.Errorf("k3s started after interrupt: %s", st)
			}

			h.mustRun(stages.Options{})
			if e, _ := h.stageEvent("provision", events.Started); e.Message != "previous run was interrupted" {
				t.Errorf("resume reason = %q", e.Message)
			}
			if got, want := h.runs(), countsFor(1, map[int]int{2: 1}); !slices.Equal(got, want) {
				t.Errorf("runs = %v, want %v", got, want)
			}
		})
	}
}

func TestInterruptBetweenStages(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.fake("images").set(func(f *fake) {
		f.before = func(context.Context, *stages.Env, int) error { cancel(); return nil } // finishes anyway
	})
	err := h.run(ctx, stages.Options{})
	if !errors.Is(err, stages.ErrInterrupted) || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want ErrInterrupted wrapping context.Canceled", err)
	}
	var serr *stages.StageError
	if errors.As(err, &serr) {
		t.Errorf("no stage was running, yet got StageError %+v", serr)
	}
	if !strings.Contains(err.Error(), "before stage provision") {
		t.Errorf("err = %q", err)
	}
	f := h.state()
	if f.StatusOf("images") != state.Done || f.StatusOf("provision") != state.Pending {
		t.Errorf("images=%s provision=%s", f.StatusOf("images"), f.StatusOf("provision"))
	}
}

func TestPanicIsRecordedAsFailure(t *testing.T) {
	h := newHarness(t)
	h.fake("k3s").set(func(f *fake) {
		f.before = func(_ context.Context, _ *stages.Env, run int) error {
			if run == 1 {
				var m map[string]int
				m["kaboom"]++ // nil map write
			}
			return nil
		}
	})
	err := h.run(context.Background(), stages.Options{})
	var serr *stages.StageError
	if !errors.As(err, &serr) || serr.Stage != "k3s" {
		t.Fatalf("err = %v, want StageError for k3s", err)
	}
	if !strings.Contains(err.Error(), "stage k3s failed: panic during run: assignment to entry in nil map") {
		t.Errorf("Error() = %q", err)
	}
	if rec := h.state().Stages["k3s"]; rec.Status != state.Failed || !strings.Contains(rec.Error, "panic") {
		t.Errorf("k3s record = %+v", rec)
	}
	h.mustRun(stages.Options{})
	if got, want := h.runs(), countsFor(1, map[int]int{3: 1}); !slices.Equal(got, want) {
		t.Errorf("runs = %v, want %v", got, want)
	}
}

func TestPanicInVerifyMeansRerun(t *testing.T) {
	h := newHarness(t)
	h.mustRun(stages.Options{})
	h.fake("flux").set(func(f *fake) {
		f.verify = func(context.Context, *stages.Env) error { panic("verify bug") }
	})
	h.mustRun(stages.Options{})
	if e, _ := h.stageEvent("flux", events.Started); e.Message != "verification failed: panic during verify: verify bug" {
		t.Errorf("reason = %q", e.Message)
	}
	if got, want := h.runs(), rangeCounts(1, 4); !slices.Equal(got, want) {
		t.Errorf("runs = %v, want %v", got, want)
	}
}

func TestVerifyAndPlanGetReadOnlyEnv(t *testing.T) {
	h := newHarness(t)
	h.mustRun(stages.Options{})
	var verifyErr error
	h.fake("images").set(func(f *fake) {
		f.verify = func(_ context.Context, env *stages.Env) error {
			verifyErr = env.SetOutputs("overwritten")
			return nil
		}
	})
	h.mustRun(stages.Options{})
	if !errors.Is(verifyErr, stages.ErrReadOnly) {
		t.Errorf("SetOutputs in Verify: %v, want ErrReadOnly", verifyErr)
	}
	if strings.Contains(string(h.state().Stages["images"].Outputs), "overwritten") {
		t.Error("Verify wrote outputs")
	}
}

func TestOutputsAndTasksArePersistedForResume(t *testing.T) {
	h := newHarness(t)
	var mu sync.Mutex
	var notes []string
	note := func(s string) { mu.Lock(); notes = append(notes, s); mu.Unlock() }

	h.fake("images").set(func(f *fake) {
		f.run = func(_ context.Context, env *stages.Env, run int) error {
			var mine map[string]any
			if err := env.Outputs(&mine); err != nil {
				return err
			}
			note(fmt.Sprintf("images own outputs %v", mine["template"]))
			if err := env.SetOutputs(map[string]any{"stage": "images", "template": 9000}); err != nil {
				return err
			}
			if run == 1 {
				return errBoom // outputs recorded before the failure must survive it
			}
			return nil
		}
	})
	h.fake("provision").set(func(f *fake) {
		f.before = func(_ context.Context, env *stages.Env, run int) error {
			var img struct{ Template int }
			if err := env.StageOutputs("images", &img); err != nil {
				return err
			}
			note(fmt.Sprintf("template %d", img.Template))
			if err := env.StageOutputs("k3s", &img); !errors.Is(err, stages.ErrNoOutputs) {
				return fmt.Errorf("k3s outputs: %v, want ErrNoOutputs", err)
			}
			if run == 1 {
				if err := env.TrackTask(state.Task{ID: "UPID:pve1:0001", Kind: "qmclone", Node: "pve1"}); err != nil {
					return err
				}
				// Persisted before waiting: another reader sees it already.
				f, err := state.Peek(env.StateDir)
				if err != nil {
					return err
				}
				rec := f.Stages["provision"]
				if rec.Status != state.Running || rec.Attempts != 1 || len(rec.InFlight) != 1 || rec.InFlight[0].StartedAt.IsZero() {
					return fmt.Errorf("state during run = %+v", rec)
				}
				return errors.New("task timed out")
			}
			for _, task := range env.InFlight() {
				note("reattach " + task.ID + " on " + task.Node)
				if err := env.FinishTask(task.ID); err != nil {
					return err
				}
			}
			return nil
		}
	})
	h.fake("k3s").set(func(f *fake) {
		f.before = func(_ context.Context, env *stages.Env, _ int) error {
			// Left unfinished: a successful stage has nothing to re-attach to.
			return env.TrackTask(state.Task{ID: "forgotten"})
		}
	})

	// Run 1: images records outputs, then fails.
	if err := h.run(context.Background(), stages.Options{}); !errors.Is(err, errBoom) {
		t.Fatalf("run 1: %v", err)
	}
	if !strings.Contains(string(h.state().Stages["images"].Outputs), "9000") {
		t.Errorf("images outputs lost on failure: %s", h.state().Stages["images"].Outputs)
	}
	// Run 2: images converges; provision tracks a task and fails waiting on it.
	err := h.run(context.Background(), stages.Options{})
	if err == nil || err.Error() != "stage provision failed: task timed out" {
		t.Fatalf("run 2: %v", err)
	}
	if rec := h.state().Stages["provision"]; len(rec.InFlight) != 1 || rec.InFlight[0].ID != "UPID:pve1:0001" {
		t.Errorf("in-flight task not kept after failure: %+v", rec.InFlight)
	}
	// Run 3: provision re-attaches to the task and finishes.
	h.mustRun(stages.Options{})
	want := []string{"images own outputs <nil>", "images own outputs 9000", "template 9000", "template 9000", "reattach UPID:pve1:0001 on pve1"}
	if !slices.Equal(notes, want) {
		t.Errorf("notes\n got %q\nwant %q", notes, want)
	}
	f := h.state()
	for _, name := range []string{"provision", "k3s"} {
		if rec := f.Stages[name]; rec.Status != state.Done || len(rec.InFlight) != 0 {
			t.Errorf("%s record = %+v", name, rec)
		}
	}
}

func TestConcurrentTaskTracking(t *testing.T) {
	h := newHarness(t)
	h.fake("images").set(func(f *fake) {
		f.before = func(_ context.Context, env *stages.Env, _ int) error {
			var wg sync.WaitGroup
			errs := make(chan error, 40)
			for i := range 20 {
				wg.Go(func() {
					errs <- env.TrackTask(state.Task{ID: fmt.Sprintf("UPID:node%d", i), Node: fmt.Sprintf("node%d", i)})
				})
			}
			wg.Wait()
			if n := len(env.InFlight()); n != 20 {
				return fmt.Errorf("%d tasks in flight, want 20", n)
			}
			if f, _ := state.Peek(env.StateDir); len(f.Stages["images"].InFlight) != 20 {
				return fmt.Errorf("persisted %d tasks, want 20", len(f.Stages["images"].InFlight))
			}
			for i := range 20 {
				wg.Go(func() { errs <- env.FinishTask(fmt.Sprintf("UPID:node%d", i)) })
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					return err
				}
			}
			if n := len(env.InFlight()); n != 0 {
				return fmt.Errorf("%d tasks left", n)
			}
			return env.TrackTask(state.Task{})
		}
	})
	err := h.run(context.Background(), stages.Options{})
	if err == nil || !strings.Contains(err.Error(), "empty task id") {
		t.Fatalf("err = %v, want the empty task id error", err)
	}
}

func TestEnvEventHelpers(t *testing.T) {
	h := newHarness(t)
	h.fake("images").set(func(f *fake) {
		f.before = func(_ context.Context, env *stages.Env, _ int) error {
			done := env.Step("download", "download ubuntu-24.04")
			env.Progress("download", 50, 100)
			done(nil)
			env.Step("upload", "upload to pve1")(errors.New("no space"))
			env.Info("using storage local")
			env.Warn("storage nearly full")
			env.Events.Emit(events.Event{Status: events.Info, Message: "raw", Fields: map[string]string{"k": "v"}})
			return nil
		}
	})
	h.mustRun(stages.Options{})
	var got []string
	for _, e := range h.events.Events() {
		if e.Stage != "images" || e.Time.IsZero() {
			if e.Stage == "" || e.Time.IsZero() {
				t.Errorf("event not stamped: %+v", e)
			}
			continue
		}
		got = append(got, fmt.Sprintf("%s/%s/%s/%d/%d/%v", e.Step, e.Status, e.Message, e.BytesDone, e.BytesTotal, e.Fields))
	}
	want := []string{
		"/started//0/0/map[]",
		"download/started/download ubuntu-24.04/0/0/map[]",
		"download/progress//50/100/map[]",
		"download/done//0/0/map[]",
		"upload/started/upload to pve1/0/0/map[]",
		"upload/failed/no space/0/0/map[]",
		"/info/using storage local/0/0/map[]",
		"/warning/storage nearly full/0/0/map[]",
		"/info/raw/0/0/map[k:v]",
		"/done//0/0/map[]",
	}
	if !slices.Equal(got, want) {
		t.Errorf("events\n got %q\nwant %q", got, want)
	}
}

func TestSecretsNeverReachStateEventsLogsOrError(t *testing.T) {
	const secret = "pve-token-5ecr3t"
	errDenied := errors.New("401 unauthorized")
	h := newHarness(t)
	h.fake("preflight").set(func(f *fake) {
		f.before = func(_ context.Context, env *stages.Env, _ int) error {
			env.Secrets.Add(secret)
			env.Info("authenticating with " + secret)
			env.Step("auth", "login as root@pam!"+secret)(fmt.Errorf("token %s rejected", secret))
			env.Log.Info("raw log", "token", secret)
			return fmt.Errorf("login with %s: %w", secret, errDenied)
		}
	})
	var logBuf bytes.Buffer
	redactor := logging.NewRedactor()
	store, err := state.Open(context.Background(), h.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	r := h.runner(store)
	r.Secrets = redactor
	r.Log = slog.New(logging.NewHandler(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}), redactor))

	err = r.Run(context.Background(), stages.Options{})
	if !errors.Is(err, errDenied) {
		t.Fatalf("err = %v, want to wrap errDenied", err)
	}
	if want := "stage preflight failed: login with [REDACTED]: 401 unauthorized"; err.Error() != want {
		t.Errorf("Error() = %q, want %q", err, want)
	}
	for what, text := range map[string]string{
		"state.json": string(h.stateBytes()),
		"events":     fmt.Sprint(h.events.Events()),
		"log":        logBuf.String(),
	} {
		if strings.Contains(text, secret) {
			t.Errorf("secret leaked into %s: %s", what, text)
		}
		if !strings.Contains(text, "[REDACTED]") {
			t.Errorf("%s shows no redaction marker: %s", what, text)
		}
	}
	if !strings.Contains(logBuf.String(), "stage=preflight") {
		t.Errorf("log lacks stage attribute: %s", logBuf.String())
	}
}

func TestClusterMismatchIsRefused(t *testing.T) {
	h := newHarness(t)
	h.mustRun(stages.Options{})
	h.cfg.Cluster.Name = "prod"
	err := h.run(context.Background(), stages.Options{})
	if !errors.Is(err, stages.ErrClusterMismatch) || !strings.Contains(err.Error(), `holds cluster "lab" but the config names "prod"`) {
		t.Fatalf("err = %v", err)
	}
	if got := h.runs(); !slices.Equal(got, countsFor(1, nil)) {
		t.Errorf("stages ran: %v", got)
	}
}

func TestInvalidRunnerSetup(t *testing.T) {
	dup := &fake{name: "images"}
	tests := []struct {
		name   string
		runner *stages.Runner
		errHas string
	}{
		{"no store", &stages.Runner{Stages: []stages.Stage{dup}}, "no state store"},
		{"duplicate names", &stages.Runner{Stages: []stages.Stage{dup, &fake{name: "images"}}}, `duplicate name "images"`},
		{"empty name", &stages.Runner{Stages: []stages.Stage{&fake{}}}, `empty or duplicate name ""`},
		{"nil stage", &stages.Runner{Stages: []stages.Stage{nil}}, "entry 0 is nil"},
		{"unencodable inputs", &stages.Runner{Stages: []stages.Stage{&fake{name: "x", inputs: make(chan int)}}}, "stage x: fingerprint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.runner.Store == nil && tt.name != "no store" {
				store, err := state.Open(context.Background(), t.TempDir())
				if err != nil {
					t.Fatal(err)
				}
				defer store.Close()
				tt.runner.Store = store
			}
			err := tt.runner.Run(context.Background(), stages.Options{})
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("err = %v, want it to contain %q", err, tt.errHas)
			}
		})
	}
}
