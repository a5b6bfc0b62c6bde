// Package stages is the install pipeline engine: stages run in order, each
// persisting its status, input fingerprint, outputs and in-flight tasks in the
// state dir, so that a rerun resumes where the last one stopped and skips
// stages that are done, unchanged and still verifiably in place.
package stages

import (
	"context"
	"errors"
	"fmt"

	"github.com/opencsp/installer/internal/config"
)

// Stage is one step of the pipeline (preflight, images, provision, ...).
type Stage interface {
	// Name identifies the stage in state.json, events and --from/--only.
	Name() string
	// Inputs returns the part of the config the stage depends on. Its
	// fingerprint decides whether a finished stage must run again; return
	// nil if the stage reads no config.
	Inputs(cfg *config.Config) any
	// Plan reports what Run would change, without changing anything.
	Plan(ctx context.Context, env *Env) ([]Change, error)
	// Run converges: it creates what is missing, finds again what exists
	// (by identity, never creating twice) and records outputs. It must be
	// safe to repeat after any interruption.
	Run(ctx context.Context, env *Env) error
	// Verify is a cheap, read-only live check that the outputs recorded by
	// the last successful Run still exist (e.g. the VM is still there).
	Verify(ctx context.Context, env *Env) error
}

// Change is one thing a stage would do, for plans: Action "create", Target
// "vm opencsp-lab-mgmt", Detail "clone from template 9000".
type Change struct {
	Action string `json:"action"`
	Target string `json:"target"`
	Detail string `json:"detail,omitempty"`
}

// String renders the change as "create vm opencsp-lab-mgmt (clone from template 9000)".
func (c Change) String() string {
	s := c.Action
	if c.Target != "" {
		s += " " + c.Target
	}
	if c.Detail != "" {
		s += " (" + c.Detail + ")"
	}
	return s
}

// StagePlan is what a run would do with one stage.
type StagePlan struct {
	Stage   string   `json:"stage"`
	Skip    bool     `json:"skip"`
	Reason  string   `json:"reason"`            // why it is skipped, or why it runs
	Changes []Change `json:"changes,omitempty"` // only for stages that would run
}

// Options select which stages a run covers. The zero value means "resume":
// run what is not done, changed or no longer verifiable, and everything after.
type Options struct {
	From string // run this stage and all later ones regardless of their state
	Only string // run just this stage
}

var (
	// ErrUnknownStage means --from/--only named no registered stage (a usage error).
	ErrUnknownStage = errors.New("unknown stage")
	// ErrConflictingOptions means both From and Only were set (a usage error).
	ErrConflictingOptions = errors.New("--from and --only cannot be combined")
	// ErrPrerequisite means --from/--only selected a stage whose earlier stages are not done.
	ErrPrerequisite = errors.New("earlier stage not done")
	// ErrInterrupted means the run's context was cancelled (Ctrl-C).
	ErrInterrupted = errors.New("interrupted")
	// ErrReadOnly is returned by Env methods that would write state while
	// planning or verifying.
	ErrReadOnly = errors.New("state is read-only while planning or verifying")
	// ErrNoOutputs is returned by Env.StageOutputs for a stage that recorded none.
	ErrNoOutputs = errors.New("no recorded outputs")
	// ErrClusterMismatch means the state dir belongs to a different cluster
	// than the config names.
	ErrClusterMismatch = errors.New("state dir belongs to another cluster")
)

// StageError reports a stage that failed or was interrupted. Err keeps the
// cause for errors.Is/As (errors.Is(err, ErrInterrupted) for Ctrl-C), though
// its text has secrets redacted; Resume is the command that continues the
// install (empty if the runner has no ResumeHint).
type StageError struct {
	Stage  string
	Err    error
	Resume string
}

func (e *StageError) Error() string {
	if errors.Is(e.Err, ErrInterrupted) {
		return fmt.Sprintf("stage %s interrupted", e.Stage)
	}
	return fmt.Sprintf("stage %s failed: %v", e.Stage, e.Err)
}

// Unwrap returns the cause.
func (e *StageError) Unwrap() error { return e.Err }

// redactedError shows an error's text with secrets removed while keeping the
// original in the chain for errors.Is/As.
type redactedError struct {
	err  error
	text string
}

func (e *redactedError) Error() string { return e.text }
func (e *redactedError) Unwrap() error { return e.err }
