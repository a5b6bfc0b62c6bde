package ui

import (
	"encoding/json"
	"io"
	"sync"

	"github.com/opencsp/installer/internal/events"
)

// NewJSON returns a sink that writes each event as one JSON object per line
// (--output json), for scripts and CI. It is safe for concurrent use.
func NewJSON(w io.Writer) events.Sink {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // messages like "a -> b" stay readable
	return &jsonSink{enc: enc}
}

type jsonSink struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (s *jsonSink) Emit(e events.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.enc.Encode(e) // nobody to report a broken pipe to
}
