package stages_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencsp/installer/internal/state"
	"github.com/opencsp/installer/stages"
)

// planWith runs Plan; with lock=false it peeks (no Store) like `opencsp plan`
// run next to a live install would.
func (h *harness) plan(t *testing.T, opts stages.Options, lock bool) ([]stages.StagePlan, error) {
	t.Helper()
	var store *state.Store
	if lock {
		var err error
		if store, err = state.Open(context.Background(), h.dir); err != nil {
			t.Fatal(err)
		}
		defer store.Close()
	}
	h.events.Reset()
	return h.runner(store).Plan(context.Background(), opts)
}

func summarize(plans []stages.StagePlan) []string {
	var out []string
	for _, p := range plans {
		s := p.Stage + ": "
		if p.Skip {
			s += "skip"
		} else {
			s += "run"
		}
		s += " (" + p.Reason + ")"
		for _, c := range p.Changes {
			s += " [" + c.String() + "]"
		}
		out = append(out, s)
	}
	return out
}

func TestPlanReportsWithoutChangingAnything(t *testing.T) {
	withChanges := func(h *harness) {
		for _, f := range h.fakes {
			f.changes = []stages.Change{{Action: "create", Target: "thing " + f.name}}
		}
	}
	tests := []struct {
		name  string
		setup func(h *harness)
		opts  stages.Options
		lock  bool
		want  []string
		// how many times each stage's Verify ran during Plan
		wantVerifies []int
	}{
		{
			name:  "fresh dir, no lock",
			setup: withChanges,
			want: []string{
				"preflight: run (not run yet) [create thing preflight]",
				"images: run (not run yet) [create thing images]",
				"provision: run (not run yet) [create thing provision]",
				"k3s: run (not run yet) [create thing k3s]",
				"flux: run (not run yet) [create thing flux]",
				"rollout: run (not run yet) [create thing rollout]",
			},
			wantVerifies: []int{0, 0, 0, 0, 0, 0},
		},
		{
			name: "finished install with changed k3s config",
			setup: func(h *harness) {
				h.mustRun(stages.Options{})
				withChanges(h)
				h.fake("k3s").inputs = "v1.31"
			},
			lock: true,
			want: []string{
				"preflight: skip (done and verified)",
				"images: skip (done and verified)",
				"provision: skip (done and verified)",
				"k3s: run (config changed) [create thing k3s]",
				"flux: run (runs after stage k3s) [create thing flux]",
				"rollout: run (runs after stage k3s) [create thing rollout]",
			},
			wantVerifies: []int{1, 1, 1, 0, 0, 0},
		},
		{
			name: "verification failure shows up",
			setup: func(h *harness) {
				h.mustRun(stages.Options{})
				h.fake("images").verifyErr = errors.New("template 9000 missing")
			},
			want: []string{
				"preflight: skip (done and verified)",
				"images: run (verification failed: template 9000 missing)",
				"provision: run (runs after stage images)",
				"k3s: run (runs after stage images)",
				"flux: run (runs after stage images)",
				"rollout: run (runs after stage images)",
			},
			wantVerifies: []int{1, 1, 0, 0, 0, 0},
		},
		{
			name:  "only",
			setup: func(h *harness) { h.mustRun(stages.Options{}) },
			opts:  stages.Options{Only: "provision"},
			want: []string{
				"preflight: skip (before --only provision)",
				"images: skip (before --only provision)",
				"provision: run (selected by --only provision)",
				"k3s: skip (not selected by --only provision)",
				"flux: skip (not selected by --only provision)",
				"rollout: skip (not selected by --only provision)",
			},
			wantVerifies: []int{0, 0, 0, 0, 0, 0},
		},
		{
			name: "from, with a changed earlier stage",
			setup: func(h *harness) {
				h.mustRun(stages.Options{})
				h.fake("preflight").inputs = "other"
			},
			opts: stages.Options{From: "flux"},
			want: []string{
				"preflight: skip (before --from flux; its config changed since it ran, but it is not re-run)",
				"images: skip (before --from flux)",
				"provision: skip (before --from flux)",
				"k3s: skip (before --from flux)",
				"flux: run (selected by --from flux)",
				"rollout: run (selected by --from flux)",
			},
			wantVerifies: []int{0, 0, 0, 0, 0, 0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			tt.setup(h)
			runsBefore := h.runs()
			var verifiesBefore []int
			for _, f := range h.fakes {
				_, v, _ := f.counts()
				verifiesBefore = append(verifiesBefore, v)
			}
			stateBefore := h.stateBytes()

			plans, err := h.plan(t, tt.opts, tt.lock)
			if err != nil {
				t.Fatal(err)
			}
			if got := summarize(plans); !slices.Equal(got, tt.want) {
				t.Errorf("plan\n got %q\nwant %q", got, tt.want)
			}
			if got := h.runs(); !slices.Equal(got, runsBefore) {
				t.Errorf("Plan called Run: runs %v -> %v", runsBefore, got)
			}
			for i, f := range h.fakes {
				_, v, p := f.counts()
				if v-verifiesBefore[i] != tt.wantVerifies[i] {
					t.Errorf("%s verified %d times during plan, want %d", f.name, v-verifiesBefore[i], tt.wantVerifies[i])
				}
				if wantPlan := !plans[i].Skip; (p > 0) != wantPlan {
					t.Errorf("%s: Plan called %d times, skip=%v", f.name, p, plans[i].Skip)
				}
			}
			if after := h.stateBytes(); string(after) != string(stateBefore) {
				t.Errorf("Plan changed state.json")
			}
			if stateBefore == nil {
				if _, err := os.Stat(filepath.Join(h.dir, state.FileName)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("Plan created state.json: %v", err)
				}
			}
		})
	}
}

func TestPlanErrors(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(h *harness)
		opts    stages.Options
		wantErr error
		errHas  string
	}{
		{"unknown stage", func(*harness) {}, stages.Options{From: "nope"}, stages.ErrUnknownStage, "valid stages: preflight"},
		{"prerequisite", func(*harness) {}, stages.Options{Only: "k3s"}, stages.ErrPrerequisite, "stage preflight is pending"},
		{"stage plan fails", func(h *harness) {
			h.fake("provision").set(func(f *fake) {
				f.planErr = errors.New("cannot reach pve1")
			})
		}, stages.Options{}, nil, "plan stage provision: cannot reach pve1"},
		{"stage plan writes state", func(h *harness) {
			h.fake("images").set(func(f *fake) {
				f.planHook = func(env *stages.Env) error { return env.SetOutputs(1) }
			})
		}, stages.Options{}, stages.ErrReadOnly, "plan stage images"},
		{"stage plan panics", func(h *harness) {
			h.fake("flux").set(func(f *fake) {
				f.planHook = func(*stages.Env) error { panic("plan bug") }
			})
		}, stages.Options{}, nil, "plan stage flux: panic during plan: plan bug"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			tt.setup(h)
			_, err := h.plan(t, tt.opts, false)
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.errHas)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestPlanInterrupted(t *testing.T) {
	h := newHarness(t)
	h.mustRun(stages.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	h.fake("images").verify = func(context.Context, *stages.Env) error { cancel(); return context.Canceled }
	_, err := h.runner(nil).Plan(ctx, stages.Options{})
	if !errors.Is(err, stages.ErrInterrupted) {
		t.Fatalf("err = %v, want ErrInterrupted", err)
	}
}

func TestPlanNeedsAStateLocation(t *testing.T) {
	r := &stages.Runner{Stages: []stages.Stage{&fake{name: "x"}}}
	if _, err := r.Plan(context.Background(), stages.Options{}); err == nil || !strings.Contains(err.Error(), "no state store or state dir") {
		t.Errorf("err = %v", err)
	}
}
