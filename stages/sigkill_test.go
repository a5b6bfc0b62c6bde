package stages_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/state"
	"github.com/opencsp/installer/stages"
)

// sigkillChildEnv switches the test binary into TestHelperSigkillChild and
// names the state dir it works on.
const sigkillChildEnv = "OPENCSP_STAGES_TEST_SIGKILL_DIR"

// churnFor is how long each churning stage rewrites its state. It is long
// compared with the kill delays so that a kill still lands inside the churn
// when a loaded machine (CI runs heavy tests in parallel) delays the parent
// by hundreds of milliseconds; 100 ms was flaky under such load.
const churnFor = 1500 * time.Millisecond

// crashPipeline is the pipeline used by the killed children and by the final
// in-process rerun. images and k3s rewrite their outputs and tasks in a tight
// loop, so that kills land in the middle of saves.
func crashPipeline(announce func(string)) []*fake {
	var fakes []*fake
	for _, name := range pipeline {
		f := &fake{name: name, inputs: map[string]string{"stage": name}}
		if name == "images" || name == "k3s" {
			f.before = func(ctx context.Context, env *stages.Env, run int) error {
				announce("churning " + name)
				pad := strings.Repeat("x", 4096) // bigger writes: more time inside Save
				for i, deadline := 0, time.Now().Add(churnFor); time.Now().Before(deadline); i++ {
					if err := env.SetOutputs(map[string]any{"stage": name, "i": i, "pad": pad}); err != nil {
						return err
					}
					id := fmt.Sprintf("UPID:pve1:%d", i)
					if err := env.TrackTask(state.Task{ID: id, Kind: "churn", Node: "pve1"}); err != nil {
						return err
					}
					if err := env.FinishTask(id); err != nil {
						return err
					}
					time.Sleep(200 * time.Microsecond)
				}
				return nil // the fake then records its regular outputs
			}
		}
		fakes = append(fakes, f)
	}
	return fakes
}

func asStages(fakes []*fake) []stages.Stage {
	out := make([]stages.Stage, len(fakes))
	for i, f := range fakes {
		out[i] = f
	}
	return out
}

// TestHelperSigkillChild is not a test: run as a child process by
// TestSigkillNeverCorruptsState, it runs the crash pipeline until killed.
func TestHelperSigkillChild(t *testing.T) {
	dir := os.Getenv(sigkillChildEnv)
	if dir == "" {
		t.Skip("helper process")
	}
	ctx := context.Background()
	store, err := state.Open(ctx, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(3)
	}
	r := &stages.Runner{
		Stages: asStages(crashPipeline(func(s string) { fmt.Println(s) })),
		Store:  store,
		Config: &config.Config{},
	}
	if err := r.Run(ctx, stages.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(4)
	}
	store.Close()
	os.Exit(0)
}

func TestSigkillNeverCorruptsState(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := filepath.Join(t.TempDir(), ".opencsp")
	// Kill at different moments after a child's first churning stage starts:
	// inside images' churn, once late enough for images to finish (landing
	// in k3s), then inside k3s' churn.
	const ms = time.Millisecond
	delays := []time.Duration{0, 10 * ms, 35 * ms, 60 * ms, 85 * ms, churnFor + 30*ms, 5 * ms, 30 * ms, 55 * ms, 80 * ms}
	midStage := 0 // kills that caught a stage running
	for i, delay := range delays {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperSigkillChild$")
		cmd.Env = append(os.Environ(), sigkillChildEnv+"="+dir)
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		started := make(chan bool, 1)
		go func() {
			line, err := bufio.NewReader(stdout).ReadString('\n')
			started <- err == nil && strings.HasPrefix(line, "churning")
		}()
		var churning bool
		select {
		case churning = <-started:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("kill %d: child never started churning", i)
		}
		if churning {
			time.Sleep(delay)
		}
		killErr := cmd.Process.Kill()
		waitErr := cmd.Wait()
		var exitErr *exec.ExitError
		switch {
		case killErr == nil && errors.As(waitErr, &exitErr) && exitErr.String() == "signal: killed":
		case waitErr == nil: // finished before the kill landed
		default:
			t.Fatalf("kill %d: child ended with %v (kill: %v)", i, waitErr, killErr)
		}

		f, err := state.Peek(dir)
		if err != nil {
			t.Fatalf("kill %d (after %v): state unreadable: %v", i, delay, err)
		}
		if f.StatusOf("preflight") != state.Done {
			t.Fatalf("kill %d: preflight is %s, want done (it finished before churning began)", i, f.StatusOf("preflight"))
		}
		for name, rec := range f.Stages {
			if !slices.Contains(pipeline, name) {
				t.Errorf("kill %d: unknown stage %q in state", i, name)
			}
			if len(rec.Outputs) > 0 && !strings.Contains(string(rec.Outputs), `"`+name+`"`) {
				t.Errorf("kill %d: %s has outputs of someone else: %.80s", i, name, rec.Outputs)
			}
		}
		if _, held, err := state.LockHolder(dir); err != nil || held {
			t.Fatalf("kill %d: lock still held after SIGKILL (err %v)", i, err)
		}
		for _, rec := range f.Stages {
			if rec.Status == state.Running {
				midStage++
			}
		}
		t.Logf("kill %d after %v: %s", i, delay, statusLine(f))
	}
	if midStage < len(delays)/2 {
		t.Errorf("only %d of %d kills caught a stage running; the test is not exercising what it should", midStage, len(delays))
	}

	// A rerun converges: stages already done are skipped, the rest run once.
	before, err := state.Peek(dir)
	if err != nil {
		t.Fatal(err)
	}
	firstPending := len(pipeline)
	for i, name := range pipeline {
		if before.StatusOf(name) != state.Done {
			firstPending = i
			break
		}
	}
	store, err := state.Open(context.Background(), dir)
	if err != nil {
		t.Fatalf("open after kills: %v", err)
	}
	defer store.Close()
	if tmps, _ := filepath.Glob(filepath.Join(dir, state.FileName+".tmp-*")); len(tmps) != 0 {
		t.Errorf("Open left stale temp files: %v", tmps)
	}
	fakes := crashPipeline(func(string) {})
	if err := (&stages.Runner{Stages: asStages(fakes), Store: store, Config: &config.Config{}}).Run(context.Background(), stages.Options{}); err != nil {
		t.Fatalf("rerun: %v", err)
	}
	after, err := store.Load()
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range fakes {
		runs, _, _ := f.counts()
		want := 0
		if i >= firstPending {
			want = 1
		}
		if runs != want {
			t.Errorf("rerun ran %s %d times, want %d (state before: %s)", f.name, runs, want, statusLine(before))
		}
		if rec := after.Stages[f.name]; rec == nil || rec.Status != state.Done || len(rec.InFlight) != 0 {
			t.Errorf("after rerun %s = %+v", f.name, rec)
		}
	}
}

func statusLine(f *state.File) string {
	var parts []string
	for _, name := range pipeline {
		s := string(f.StatusOf(name))
		if rec := f.Stages[name]; rec != nil {
			s += fmt.Sprintf("/%d", rec.Attempts)
		}
		parts = append(parts, name+"="+s)
	}
	return strings.Join(parts, " ")
}
