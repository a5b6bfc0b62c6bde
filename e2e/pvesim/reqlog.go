package pvesim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
)

// LoggedRequest is one API call as seen by the emulator.
type LoggedRequest struct {
	Time     time.Time         `json:"time"`
	Method   string            `json:"method"`
	Path     string            `json:"path"`
	Endpoint string            `json:"endpoint,omitempty"` // schema path, e.g. "POST /nodes/{node}/qemu"
	Params   map[string]string `json:"params,omitempty"`   // secrets redacted
	Status   int               `json:"status"`
	Client   string            `json:"client"`
	User     string            `json:"user,omitempty"`
	UPID     string            `json:"upid,omitempty"`
	Duration time.Duration     `json:"-"`

	raw map[string]pval
}

// redactedParams are never logged in clear.
var redactedParams = map[string]bool{
	"password": true, "cipassword": true, "otp": true, "tfa-challenge": true, "new-password": true,
}

func (e *LoggedRequest) setParams(raw map[string]pval) {
	e.raw = make(map[string]pval, len(raw))
	e.Params = make(map[string]string, len(raw))
	for k, v := range raw {
		e.raw[k] = v
		if redactedParams[k] {
			e.Params[k] = "<redacted>"
			continue
		}
		e.Params[k] = v.s
	}
}

// Mutating reports whether the call is a write (POST/PUT/DELETE), not
// counting ticket creation.
func (e *LoggedRequest) Mutating() bool {
	switch e.Method {
	case "POST", "PUT", "DELETE":
		return !strings.HasSuffix(e.Path, "/access/ticket")
	}
	return false
}

type requestLog struct {
	mu      sync.Mutex
	w       io.Writer
	entries []LoggedRequest
}

func (l *requestLog) add(e *LoggedRequest) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = append(l.entries, *e)
	if l.w != nil {
		line := struct {
			*LoggedRequest
			DurationMS float64 `json:"duration_ms"`
		}{e, float64(e.Duration.Microseconds()) / 1000}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(line); err == nil {
			l.w.Write(buf.Bytes())
		}
	}
}

// Requests returns the request log.
func (s *Server) Requests() []LoggedRequest {
	s.reqlog.mu.Lock()
	defer s.reqlog.mu.Unlock()
	return append([]LoggedRequest(nil), s.reqlog.entries...)
}

// MutatingRequests returns the logged POST/PUT/DELETE calls except ticket creation.
func (s *Server) MutatingRequests() []LoggedRequest {
	var out []LoggedRequest
	for _, e := range s.Requests() {
		if e.Mutating() {
			out = append(out, e)
		}
	}
	return out
}

// ResetRequests clears the in-memory request log.
func (s *Server) ResetRequests() {
	s.reqlog.mu.Lock()
	defer s.reqlog.mu.Unlock()
	s.reqlog.entries = nil
}

// ValidateLog re-validates every logged request (except authentication
// failures) against the schema facts and reports each one the real API
// would reject: unknown endpoints and parameter errors.
func (s *Server) ValidateLog() error {
	var errs []error
	for i, e := range s.Requests() {
		if e.Status == 401 {
			continue
		}
		rel := strings.TrimPrefix(e.Path, "/api2/json")
		ep, pp := s.schema.route(e.Method, rel)
		if ep == nil {
			errs = append(errs, fmt.Errorf("request %d: %s %s: no such API endpoint", i, e.Method, e.Path))
			continue
		}
		params := map[string]pval{}
		for k, v := range e.raw {
			params[k] = v
		}
		for k, v := range pp {
			params[k] = strVal(v)
		}
		if pe := ep.validate(params); pe != nil {
			keys := make([]string, 0, len(pe))
			for k := range pe {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			var parts []string
			for _, k := range keys {
				parts = append(parts, k+": "+strings.TrimSpace(pe[k]))
			}
			errs = append(errs, fmt.Errorf("request %d: %s %s: %s", i, e.Method, e.Path, strings.Join(parts, "; ")))
		}
	}
	return errors.Join(errs...)
}
