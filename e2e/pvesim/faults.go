package pvesim

import (
	"fmt"
	"math/rand"
	"net/http"
	"regexp"
	"sync"
	"time"
)

// HTTPFault makes matching API calls fail with an HTTP error.
type HTTPFault struct {
	Method      string  // "" matches any method
	Path        string  // regexp matched against the path below /api2/json, e.g. `^/nodes/[^/]+/qemu$`
	Status      int     // e.g. 500 or 503 (default 500)
	Message     string  // reason phrase / message (default: the standard status text)
	Count       int     // number of failures; 0 = unlimited
	Probability float64 // chance per matching call (seeded); 0 = always
}

// LatencyFault delays matching API calls.
type LatencyFault struct {
	Method string
	Path   string
	Delay  time.Duration
}

type httpFault struct {
	HTTPFault
	re   *regexp.Regexp
	left int
}

type taskFault struct {
	typ  string
	msg  string
	left int // <0 = unlimited
}

type latencyFault struct {
	LatencyFault
	re *regexp.Regexp
}

type faults struct {
	mu      sync.Mutex
	rng     *rand.Rand
	http    []*httpFault
	tasks   []*taskFault
	latency []*latencyFault

	nextidRace  int // remaining calls answered with raceID
	nextidValue int
}

func newFaults(seed int64) *faults {
	return &faults{rng: rand.New(rand.NewSource(seed + 1))}
}

func (f *faults) httpFault(method, rel string) *apiError {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, h := range f.http {
		if h.Method != "" && h.Method != method {
			continue
		}
		if !h.re.MatchString(rel) {
			continue
		}
		if h.Count > 0 && h.left <= 0 {
			continue
		}
		if h.Probability > 0 && f.rng.Float64() >= h.Probability {
			continue
		}
		if h.Count > 0 {
			h.left--
		}
		msg := h.Message
		if msg == "" {
			msg = http.StatusText(h.Status)
		}
		return &apiError{status: h.Status, msg: msg + "\n"}
	}
	return nil
}

func (f *faults) taskFailure(typ string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, t := range f.tasks {
		if t.typ != typ && t.typ != "*" {
			continue
		}
		if t.left == 0 {
			continue
		}
		if t.left > 0 {
			t.left--
		}
		return t.msg, true
	}
	return "", false
}

func (f *faults) latencyFor(method, path string) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	var d time.Duration
	for _, l := range f.latency {
		if (l.Method == "" || l.Method == method) && l.re.MatchString(path) {
			d += l.Delay
		}
	}
	return d
}

// InjectHTTPError makes matching API calls fail (after authentication,
// before validation) with the given status and message.
func (s *Server) InjectHTTPError(f HTTPFault) error {
	re, err := regexp.Compile(f.Path)
	if err != nil {
		return fmt.Errorf("pvesim: fault path: %w", err)
	}
	if f.Status == 0 {
		f.Status = 500
	}
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.http = append(s.faults.http, &httpFault{HTTPFault: f, re: re, left: f.Count})
	return nil
}

// FailTasks makes the next count tasks of type typ ("qmclone", "qmstart",
// "download", ... or "*") fail with msg as exit status (count <= 0: all).
func (s *Server) FailTasks(typ, msg string, count int) {
	if msg == "" {
		msg = "injected task failure"
	}
	left := count
	if count <= 0 {
		left = -1
	}
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.tasks = append(s.faults.tasks, &taskFault{typ: typ, msg: msg, left: left})
}

// AddLatency delays matching calls (path regexp against the full URL path).
func (s *Server) AddLatency(f LatencyFault) error {
	re, err := regexp.Compile(f.Path)
	if err != nil {
		return fmt.Errorf("pvesim: latency path: %w", err)
	}
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.latency = append(s.faults.latency, &latencyFault{LatencyFault: f, re: re})
	return nil
}

// SetLatency sets the delay added to every request.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.Latency = d
}

// RaceNextID makes the next n calls of GET /cluster/nextid return the same
// id (the next free one at the first of those calls), emulating clients
// racing for a VMID: all but the first create will fail with
// "VM N already exists".
func (s *Server) RaceNextID(n int) {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.nextidRace = n
	s.faults.nextidValue = 0
}

// ClearFaults removes all injected faults.
func (s *Server) ClearFaults() {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.http = nil
	s.faults.tasks = nil
	s.faults.latency = nil
	s.faults.nextidRace = 0
}
