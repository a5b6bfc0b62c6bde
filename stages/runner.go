package stages

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/events"
	"github.com/opencsp/installer/internal/logging"
	"github.com/opencsp/installer/internal/state"
)

// Runner executes stages in registration order against a locked state store.
type Runner struct {
	Stages []Stage
	// Store must be open (locked) for Run. Plan reads it if set, otherwise it
	// peeks at StateDir without locking.
	Store  *state.Store
	Config *config.Config
	// StateDir defaults to Store.Dir().
	StateDir string
	Log      *slog.Logger      // nil: discard
	Events   events.Sink       // nil: discard
	Secrets  *logging.Redactor // nil: a fresh, empty one
	// InstallerVersion is recorded in state.json.
	InstallerVersion string
	// ResumeHint returns the command that resumes after stage failed, for
	// StageError.Resume (e.g. "opencsp install -c opencsp.yaml").
	ResumeHint func(stage string) string
}

// notRunYet is the reason for a stage without a record; it needs no mention
// in the stage's Started event.
const notRunYet = "not run yet"

// Run executes the selected stages. A stage is skipped only if it is done,
// its input fingerprint is unchanged, its Verify passes, and no earlier stage
// ran in this invocation. It returns a *StageError when a stage fails or is
// interrupted (errors.Is(err, ErrInterrupted) for the latter).
func (r *Runner) Run(ctx context.Context, opts Options) error {
	if r.Store == nil {
		return errors.New("run stages: no state store")
	}
	rr := r.withDefaults()
	p, err := rr.prepare(opts, r.Store.Load)
	if err != nil {
		return err
	}
	p.file.Installer = cmp.Or(rr.InstallerVersion, p.file.Installer)
	if rr.Config != nil && rr.Config.Cluster.Name != "" {
		p.file.Cluster = rr.Config.Cluster.Name
	}
	sess := &session{store: r.Store, file: p.file}

	ran := "" // first stage that ran in this invocation
	for i, st := range rr.Stages {
		env := rr.newEnv(sess, p.names[i], false)
		if !p.selected(i) {
			rr.skipUnselected(env, p, i)
			continue
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w before stage %s: %w", ErrInterrupted, p.names[i], context.Cause(ctx))
		}
		reason := "selected by " + p.flag
		if !p.forced {
			var run bool
			run, reason = rr.needsRun(ctx, st, sess, p, i, ran)
			if ctx.Err() != nil {
				return fmt.Errorf("%w before stage %s: %w", ErrInterrupted, p.names[i], context.Cause(ctx))
			}
			if !run {
				env.Events.Emit(events.Event{Status: events.Skipped, Message: reason})
				continue
			}
		}
		ran = cmp.Or(ran, p.names[i])
		if err := rr.runStage(ctx, st, env, sess, p.fingerprints[i], reason); err != nil {
			return err
		}
	}
	return nil
}

// Plan reports for every stage whether Run would skip it (by the same rule,
// including Verify) and, for those that would run, their planned changes.
// It never writes state and never calls Run. A stage's Plan may find the
// outputs of an earlier stage missing (ErrNoOutputs) when that stage has
// not run yet, and must describe its changes without them.
func (r *Runner) Plan(ctx context.Context, opts Options) ([]StagePlan, error) {
	rr := r.withDefaults()
	if r.Store == nil && rr.StateDir == "" {
		return nil, errors.New("plan stages: no state store or state dir")
	}
	load := func() (*state.File, error) { return state.Peek(rr.StateDir) }
	if r.Store != nil {
		load = r.Store.Load
	}
	p, err := rr.prepare(opts, load)
	if err != nil {
		return nil, err
	}
	sess := &session{file: p.file, readOnly: true}

	plans := make([]StagePlan, 0, len(rr.Stages))
	ran := "" // first stage that would run
	for i, st := range rr.Stages {
		name := p.names[i]
		env := rr.newEnv(sess, name, true)
		if !p.selected(i) {
			plans = append(plans, StagePlan{Stage: name, Skip: true, Reason: rr.unselectedReason(p, i)})
			continue
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("plan: %w before stage %s: %w", ErrInterrupted, name, context.Cause(ctx))
		}
		reason := "selected by " + p.flag
		if !p.forced {
			var run bool
			run, reason = rr.needsRun(ctx, st, sess, p, i, ran)
			if ctx.Err() != nil {
				return nil, fmt.Errorf("plan: %w before stage %s: %w", ErrInterrupted, name, context.Cause(ctx))
			}
			if !run {
				plans = append(plans, StagePlan{Stage: name, Skip: true, Reason: reason})
				continue
			}
		}
		ran = cmp.Or(ran, name)
		var changes []Change
		err := rr.guard(name, "plan", func() error {
			var err error
			changes, err = st.Plan(ctx, env)
			return err
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("plan stage %s: %w: %w", name, ErrInterrupted, rr.redact(err))
			}
			return nil, fmt.Errorf("plan stage %s: %w", name, rr.redact(err))
		}
		plans = append(plans, StagePlan{Stage: name, Reason: reason, Changes: changes})
	}
	return plans, nil
}

// withDefaults returns a copy of r with nil collaborators replaced.
func (r *Runner) withDefaults() *Runner {
	rr := *r
	if rr.Log == nil {
		rr.Log = slog.New(slog.DiscardHandler)
	}
	if rr.Events == nil {
		rr.Events = events.Discard()
	}
	if rr.Secrets == nil {
		rr.Secrets = &logging.Redactor{}
	}
	if rr.StateDir == "" && rr.Store != nil {
		rr.StateDir = rr.Store.Dir()
	}
	return &rr
}

// prepared is a validated selection plus the loaded state.
type prepared struct {
	names        []string
	fingerprints []string
	first, last  int    // selected stages, inclusive
	forced       bool   // --from/--only: selected stages run regardless of state
	flag         string // "--from provision" or "--only provision", for messages
	file         *state.File
}

func (p *prepared) selected(i int) bool { return i >= p.first && i <= p.last }

func (r *Runner) prepare(opts Options, load func() (*state.File, error)) (*prepared, error) {
	p := &prepared{}
	seen := map[string]bool{}
	for i, st := range r.Stages {
		if st == nil {
			return nil, fmt.Errorf("stage list: entry %d is nil", i)
		}
		name := st.Name()
		if name == "" || seen[name] {
			return nil, fmt.Errorf("stage list: stage %d has an empty or duplicate name %q", i, name)
		}
		seen[name] = true
		p.names = append(p.names, name)
	}
	if err := p.selectStages(opts); err != nil {
		return nil, err
	}
	for i, st := range r.Stages {
		fp, err := Fingerprint(st.Inputs(r.Config))
		if err != nil {
			return nil, fmt.Errorf("stage %s: fingerprint: %w", p.names[i], err)
		}
		p.fingerprints = append(p.fingerprints, fp)
	}

	file, err := load()
	if err != nil {
		return nil, err
	}
	if r.Config != nil && r.Config.Cluster.Name != "" && file.Cluster != "" && file.Cluster != r.Config.Cluster.Name {
		return nil, fmt.Errorf("%w: state dir %s holds cluster %q but the config names %q; use a separate state dir per cluster",
			ErrClusterMismatch, r.StateDir, file.Cluster, r.Config.Cluster.Name)
	}
	p.file = file

	// --from/--only build on earlier stages; refuse before touching anything.
	for i := range p.first {
		if st := file.StatusOf(p.names[i]); st != state.Done {
			word, _, _ := strings.Cut(p.flag, " ")
			return nil, fmt.Errorf("%s: %w: stage %s is %s; rerun without %s to resume, or use --from %s",
				p.flag, ErrPrerequisite, p.names[i], st, word, p.names[i])
		}
	}
	return p, nil
}

func (p *prepared) selectStages(opts Options) error {
	p.first, p.last = 0, len(p.names)-1
	if opts.From != "" && opts.Only != "" {
		return ErrConflictingOptions
	}
	name, flag := opts.From, "--from"
	if opts.Only != "" {
		name, flag = opts.Only, "--only"
	}
	if name == "" {
		return nil
	}
	i := -1
	for j, n := range p.names {
		if n == name {
			i = j
		}
	}
	if i < 0 {
		return fmt.Errorf("%w %q; valid stages: %s", ErrUnknownStage, name, strings.Join(p.names, ", "))
	}
	p.first, p.forced, p.flag = i, true, flag+" "+name
	if opts.Only != "" {
		p.last = i
	}
	return nil
}

// needsRun applies the resume rule to stage i; ranBefore names the first
// stage that ran (or would run) earlier in this invocation.
func (r *Runner) needsRun(ctx context.Context, st Stage, sess *session, p *prepared, i int, ranBefore string) (bool, string) {
	sess.mu.Lock()
	rec := sess.file.Stages[p.names[i]]
	var status state.Status
	var fingerprint string
	if rec != nil {
		status, fingerprint = rec.Status, rec.Fingerprint
	}
	sess.mu.Unlock()

	switch status {
	case "", state.Pending:
		return true, notRunYet
	case state.Failed:
		return true, "previous run failed"
	case state.Interrupted:
		return true, "previous run was interrupted"
	case state.Running:
		return true, "previous run did not finish"
	case state.Done:
	default:
		return true, fmt.Sprintf("unknown status %q", status)
	}
	if fingerprint != p.fingerprints[i] {
		return true, "config changed"
	}
	if ranBefore != "" {
		// Later stages build on earlier ones; converging them is cheap.
		return true, "runs after stage " + ranBefore
	}
	env := r.newEnv(sess, p.names[i], true)
	if err := r.guard(p.names[i], "verify", func() error { return st.Verify(ctx, env) }); err != nil {
		return true, "verification failed: " + r.Secrets.Redact(err.Error())
	}
	return false, "done and verified"
}

func (r *Runner) unselectedReason(p *prepared, i int) string {
	if i > p.last {
		return "not selected by " + p.flag
	}
	reason := "before " + p.flag
	if rec := p.file.Stages[p.names[i]]; rec != nil && rec.Fingerprint != p.fingerprints[i] {
		reason += "; its config changed since it ran, but it is not re-run"
	}
	return reason
}

func (r *Runner) skipUnselected(env *Env, p *prepared, i int) {
	reason := r.unselectedReason(p, i)
	env.Events.Emit(events.Event{Status: events.Skipped, Message: reason})
	if rec := p.file.Stages[p.names[i]]; i < p.first && rec != nil && rec.Fingerprint != p.fingerprints[i] {
		env.Warn(fmt.Sprintf("config of stage %s changed since it ran; it is not re-run because of %s", p.names[i], p.flag))
	}
}

// runStage runs one stage and records its start and end in the state.
func (r *Runner) runStage(ctx context.Context, st Stage, env *Env, sess *session, fingerprint, reason string) error {
	name := env.stage
	start := time.Now()

	sess.mu.Lock()
	rec := sess.file.Stages[name]
	if rec == nil {
		rec = &state.Stage{}
		sess.file.Stages[name] = rec
	}
	rec.Status = state.Running
	rec.Attempts++
	rec.StartedAt = start.UTC()
	rec.FinishedAt = time.Time{}
	rec.DurationMS = 0
	rec.Error = ""
	err := sess.saveLocked()
	sess.mu.Unlock()
	if err != nil {
		return fmt.Errorf("stage %s: record start: %w", name, err)
	}

	startMsg := reason
	if reason == notRunYet {
		startMsg = ""
	}
	env.Events.Emit(events.Event{Time: start, Status: events.Started, Message: startMsg})

	runErr := r.guard(name, "run", func() error { return st.Run(ctx, env) })
	end := time.Now()
	interrupted := runErr != nil && ctx.Err() != nil

	sess.mu.Lock()
	rec.FinishedAt = end.UTC()
	rec.DurationMS = end.Sub(start).Milliseconds()
	switch {
	case runErr == nil:
		rec.Status = state.Done
		rec.Fingerprint = fingerprint
		rec.InFlight = nil // converged: nothing left to re-attach to
	case interrupted:
		rec.Status = state.Interrupted
		rec.Error = r.Secrets.Redact(runErr.Error())
	default:
		rec.Status = state.Failed
		rec.Error = r.Secrets.Redact(runErr.Error())
	}
	saveErr := sess.saveLocked()
	sess.mu.Unlock()

	if runErr == nil {
		if saveErr != nil {
			return fmt.Errorf("stage %s finished but its state could not be saved: %w", name, saveErr)
		}
		env.Events.Emit(events.Event{Time: end, Status: events.Done})
		return nil
	}

	cause := r.redact(runErr)
	if interrupted {
		cause = fmt.Errorf("%w: %w", ErrInterrupted, cause)
	}
	if saveErr != nil {
		cause = fmt.Errorf("%w (and its state could not be saved: %v)", cause, saveErr)
	}
	msg := cause.Error()
	env.Events.Emit(events.Event{Time: end, Status: events.Failed, Message: msg})
	serr := &StageError{Stage: name, Err: cause}
	if r.ResumeHint != nil {
		serr.Resume = r.ResumeHint(name)
	}
	return serr
}

// guard calls f and turns a panic into an error, so that a bug in one stage
// is recorded as that stage's failure instead of killing the process with
// the state left at "running".
func (r *Runner) guard(stage, what string, f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			r.Log.Error("stage panicked", "stage", stage, "during", what, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = fmt.Errorf("panic during %s: %v", what, p)
		}
	}()
	return f()
}

func (r *Runner) redact(err error) error {
	return &redactedError{err: err, text: r.Secrets.Redact(err.Error())}
}

func (r *Runner) newEnv(sess *session, stage string, readOnly bool) *Env {
	log := r.Log.With("stage", stage)
	return &Env{
		Config:   r.Config,
		StateDir: r.StateDir,
		Log:      log,
		Events:   &stageSink{stage: stage, out: r.Events, log: log, secrets: r.Secrets},
		Secrets:  r.Secrets,
		stage:    stage,
		session:  sess,
		readOnly: readOnly,
	}
}
