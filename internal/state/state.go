// Package state persists the installer's progress in <state-dir>/state.json:
// per stage its status, input fingerprint, outputs, timings and in-flight
// tasks. The file is written atomically and guarded by an exclusive lock so
// that only one opencsp process works on a state dir at a time.
package state

import (
	"encoding/json"
	"time"
)

// Names of the files inside a state dir.
const (
	FileName     = "state.json"
	LockFileName = "state.lock"
)

// Version is the state.json format this installer writes. Files with a
// higher version were written by a newer installer and are refused.
const Version = 1

// Status is where a stage stands.
type Status string

// Stage statuses. Running on disk without a live lock holder means the
// process died mid-stage (e.g. SIGKILL); the stage simply runs again.
const (
	Pending     Status = "pending"
	Running     Status = "running"
	Done        Status = "done"
	Failed      Status = "failed"
	Interrupted Status = "interrupted"
)

// File is the whole content of state.json.
type File struct {
	Version   int               `json:"version"`
	Cluster   string            `json:"cluster,omitempty"`
	Installer string            `json:"installer,omitempty"` // version of the opencsp binary that last wrote the file
	UpdatedAt time.Time         `json:"updated_at"`
	Stages    map[string]*Stage `json:"stages"`
}

// Stage is the persisted record of one pipeline stage.
type Stage struct {
	Status      Status          `json:"status"`
	Fingerprint string          `json:"fingerprint,omitempty"` // of the inputs of the last successful run
	Outputs     json.RawMessage `json:"outputs,omitempty"`
	StartedAt   time.Time       `json:"started_at,omitzero"`
	FinishedAt  time.Time       `json:"finished_at,omitzero"`
	DurationMS  int64           `json:"duration_ms,omitempty"`
	Error       string          `json:"error,omitempty"`
	InFlight    []Task          `json:"in_flight,omitempty"`
	Attempts    int             `json:"attempts,omitempty"`
}

// Task is a long-running remote operation (e.g. a Proxmox UPID) that a stage
// started and is waiting on. It is recorded before waiting so that a resumed
// run re-attaches to it instead of starting the operation a second time.
type Task struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind,omitempty"`
	Node      string    `json:"node,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
}

// NewFile returns an empty state of the current version.
func NewFile() *File {
	return &File{Version: Version, Stages: map[string]*Stage{}}
}

// StatusOf returns the status of the named stage, Pending if it has no record.
func (f *File) StatusOf(stage string) Status {
	if f == nil {
		return Pending
	}
	if s := f.Stages[stage]; s != nil && s.Status != "" {
		return s.Status
	}
	return Pending
}
