// Package events defines the structured progress events that stages emit and
// the sinks that receive them (renderers, recorders, loggers).
package events

import (
	"sync"
	"time"
)

// Status says what an event reports about its stage or step.
type Status string

// Event statuses. A stage or step normally goes Started -> (Progress...) ->
// Done | Failed, or is Skipped; Info and Warning are free-standing notes.
const (
	Started  Status = "started"
	Progress Status = "progress"
	Done     Status = "done"
	Skipped  Status = "skipped"
	Failed   Status = "failed"
	Info     Status = "info"
	Warning  Status = "warning"
)

// Event is one thing that happened during an install. Step is empty for
// events about the stage as a whole. BytesDone/BytesTotal describe transfers
// (BytesTotal 0 means the size is unknown).
type Event struct {
	Time       time.Time         `json:"time"`
	Stage      string            `json:"stage,omitempty"`
	Step       string            `json:"step,omitempty"`
	Status     Status            `json:"status"`
	Message    string            `json:"message,omitempty"`
	BytesDone  int64             `json:"bytes_done,omitempty"`
	BytesTotal int64             `json:"bytes_total,omitempty"`
	Fields     map[string]string `json:"fields,omitempty"`
}

// Sink receives events. Implementations must be safe for concurrent use,
// because stages may emit from several goroutines.
type Sink interface {
	Emit(Event)
}

// SinkFunc adapts a function to a Sink.
type SinkFunc func(Event)

// Emit calls f(e).
func (f SinkFunc) Emit(e Event) { f(e) }

// Discard returns a sink that drops every event.
func Discard() Sink { return SinkFunc(func(Event) {}) }

// Tee returns a sink that forwards every event to each non-nil sink in order,
// e.g. the terminal renderer and the install log.
func Tee(sinks ...Sink) Sink {
	var live []Sink
	for _, s := range sinks {
		if s != nil {
			live = append(live, s)
		}
	}
	return SinkFunc(func(e Event) {
		for _, s := range live {
			s.Emit(e)
		}
	})
}

// Recorder keeps every event it receives; meant for tests.
type Recorder struct {
	mu     sync.Mutex
	events []Event
}

// Emit records e.
func (r *Recorder) Emit(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

// Events returns a copy of the events recorded so far, oldest first.
func (r *Recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// Reset forgets all recorded events.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = nil
}
