package stages

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/events"
	"github.com/opencsp/installer/internal/logging"
	"github.com/opencsp/installer/internal/state"
)

// Env is what a stage gets to work with: the config, a logger and an event
// sink bound to the stage, the secret redactor, and stage-scoped access to
// the persisted state. Its methods are safe for concurrent use, so a stage
// may work on several nodes in parallel.
type Env struct {
	Config   *config.Config
	StateDir string
	// Log carries a stage attribute already.
	Log *slog.Logger
	// Events fills in Stage and Time when unset and redacts secrets.
	Events events.Sink
	// Secrets: register every secret as soon as it is resolved, so that it
	// never reaches logs, events or state.json.
	Secrets *logging.Redactor

	stage    string
	session  *session
	readOnly bool // Verify gets a read-only Env even during Run
}

// session is the state shared by all Envs of one Run or Plan.
type session struct {
	mu       sync.Mutex
	store    *state.Store // nil when read-only
	file     *state.File
	readOnly bool
}

// saveLocked persists the file; the caller holds mu.
func (s *session) saveLocked() error {
	if s.readOnly || s.store == nil {
		return ErrReadOnly
	}
	return s.store.Save(s.file)
}

// Stage returns the name of the stage this Env belongs to.
func (e *Env) Stage() string { return e.stage }

// Outputs decodes this stage's recorded outputs into v. If there are none
// (first run) it returns nil and leaves v untouched; Run should still look
// resources up by identity, since outputs may be stale.
func (e *Env) Outputs(v any) error {
	e.session.mu.Lock()
	defer e.session.mu.Unlock()
	rec := e.session.file.Stages[e.stage]
	if rec == nil || len(rec.Outputs) == 0 {
		return nil
	}
	if err := json.Unmarshal(rec.Outputs, v); err != nil {
		return fmt.Errorf("decode outputs: %w", err)
	}
	return nil
}

// SetOutputs records v as this stage's outputs and saves the state at once,
// so that what was created is known even if the process dies next.
func (e *Env) SetOutputs(v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode outputs: %w", err)
	}
	return e.update("record outputs", func(rec *state.Stage) {
		rec.Outputs = data
	})
}

// StageOutputs decodes the outputs recorded by another (earlier) stage,
// e.g. provision reading the template ids from images. It fails with
// ErrNoOutputs if that stage recorded none.
func (e *Env) StageOutputs(stage string, v any) error {
	e.session.mu.Lock()
	defer e.session.mu.Unlock()
	rec := e.session.file.Stages[stage]
	if rec == nil || len(rec.Outputs) == 0 {
		return fmt.Errorf("stage %s: %w", stage, ErrNoOutputs)
	}
	if err := json.Unmarshal(rec.Outputs, v); err != nil {
		return fmt.Errorf("decode outputs of stage %s: %w", stage, err)
	}
	return nil
}

// TrackTask records a remote task the stage is about to wait on and saves
// the state before returning. Call it right after starting the task and
// before waiting, so a resumed run can find it with InFlight and re-attach
// instead of starting the operation again. A task with the same ID is
// replaced.
func (e *Env) TrackTask(t state.Task) error {
	if t.ID == "" {
		return errors.New("track task: empty task id")
	}
	if t.StartedAt.IsZero() {
		t.StartedAt = time.Now().UTC()
	}
	return e.update("track task "+t.ID, func(rec *state.Stage) {
		rec.InFlight = slices.DeleteFunc(rec.InFlight, func(x state.Task) bool { return x.ID == t.ID })
		rec.InFlight = append(rec.InFlight, t)
	})
}

// FinishTask forgets a tracked task once it has ended (successfully or
// not: the stage has dealt with its result) and saves the state.
func (e *Env) FinishTask(id string) error {
	return e.update("finish task "+id, func(rec *state.Stage) {
		rec.InFlight = slices.DeleteFunc(rec.InFlight, func(x state.Task) bool { return x.ID == id })
	})
}

// InFlight returns the tasks this stage tracked and has not finished,
// typically left by an interrupted run.
func (e *Env) InFlight() []state.Task {
	e.session.mu.Lock()
	defer e.session.mu.Unlock()
	if rec := e.session.file.Stages[e.stage]; rec != nil {
		return slices.Clone(rec.InFlight)
	}
	return nil
}

// update changes this stage's record and saves it, all under the lock.
func (e *Env) update(what string, change func(*state.Stage)) error {
	e.session.mu.Lock()
	defer e.session.mu.Unlock()
	if e.readOnly || e.session.readOnly {
		return fmt.Errorf("%s: %w", what, ErrReadOnly)
	}
	rec := e.session.file.Stages[e.stage]
	if rec == nil {
		rec = &state.Stage{Status: state.Pending}
		e.session.file.Stages[e.stage] = rec
	}
	change(rec)
	if err := e.session.saveLocked(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// Step announces a step (Started) and returns the function that ends it:
// Done on nil, Failed with the error's text otherwise.
//
//	done := env.Step("clone", "clone template 9000 -> vm 101")
//	err := clone(...)
//	done(err)
func (e *Env) Step(step, msg string) (done func(err error)) {
	e.Events.Emit(events.Event{Step: step, Status: events.Started, Message: msg})
	return func(err error) {
		if err != nil {
			e.Events.Emit(events.Event{Step: step, Status: events.Failed, Message: err.Error()})
			return
		}
		e.Events.Emit(events.Event{Step: step, Status: events.Done})
	}
}

// Progress reports bytes transferred by a step (total 0 if unknown).
func (e *Env) Progress(step string, done, total int64) {
	e.Events.Emit(events.Event{Step: step, Status: events.Progress, BytesDone: done, BytesTotal: total})
}

// Info emits a note for the user.
func (e *Env) Info(msg string) {
	e.Events.Emit(events.Event{Status: events.Info, Message: msg})
}

// Warn emits a warning for the user: something works but deserves a look.
func (e *Env) Warn(msg string) {
	e.Events.Emit(events.Event{Status: events.Warning, Message: msg})
}

// stageSink binds events to a stage, stamps them, scrubs secrets and also
// writes them to the log, so install.log holds the whole story.
type stageSink struct {
	stage   string
	out     events.Sink
	log     *slog.Logger
	secrets *logging.Redactor
}

func (s *stageSink) Emit(ev events.Event) {
	if ev.Stage == "" {
		ev.Stage = s.stage
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	ev.Step = s.secrets.Redact(ev.Step)
	ev.Message = s.secrets.Redact(ev.Message)
	if len(ev.Fields) > 0 {
		fields := make(map[string]string, len(ev.Fields))
		for k, v := range ev.Fields {
			fields[k] = s.secrets.Redact(v)
		}
		ev.Fields = fields
	}
	s.out.Emit(ev)
	s.logEvent(ev)
}

func (s *stageSink) logEvent(ev events.Event) {
	level := slog.LevelInfo
	switch ev.Status {
	case events.Progress:
		level = slog.LevelDebug
	case events.Warning:
		level = slog.LevelWarn
	case events.Failed:
		level = slog.LevelError
	}
	attrs := []any{"event", string(ev.Status)}
	if ev.Step != "" {
		attrs = append(attrs, "step", ev.Step)
	}
	if ev.BytesTotal > 0 || ev.BytesDone > 0 {
		attrs = append(attrs, "bytes_done", ev.BytesDone, "bytes_total", ev.BytesTotal)
	}
	for k, v := range ev.Fields {
		attrs = append(attrs, k, v)
	}
	// s.log carries the stage attribute already.
	s.log.Log(context.Background(), level, ev.Message, attrs...)
}
