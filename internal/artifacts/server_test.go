package artifacts

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencsp/installer/internal/events"
)

// fileServer serves in-memory files on loopback and records what it did.
type fileServer struct {
	*httptest.Server
	mu    sync.Mutex
	files map[string][]byte
	reqs  []request
	sent  atomic.Int64 // body bytes written

	// Faults.
	dropAfter   int64         // abort the first full GET after this many body bytes
	dropped     bool          //
	noRanges    bool          // no Accept-Ranges, Range ignored (HTTP/1.0 style)
	ignoreRange bool          // advertises ranges but answers 200 with the whole file
	delay       time.Duration // before the body
	stallAfter  int64         // send this many bytes then hang until the client gives up
}

type request struct {
	Method, Path, Range string
}

func newFileServer(t testing.TB, files map[string][]byte) *fileServer {
	s := &fileServer{files: files}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *fileServer) url(name string) string { return s.URL + "/" + name }

func (s *fileServer) requests() []request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]request(nil), s.reqs...)
}

func (s *fileServer) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = nil
	s.sent.Store(0)
}

func (s *fileServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.reqs = append(s.reqs, request{r.Method, r.URL.EscapedPath(), r.Header.Get("Range")})
	data, ok := s.files[r.URL.Path[1:]]
	drop := int64(0)
	if r.Method == http.MethodGet && r.Header.Get("Range") == "" && s.dropAfter > 0 && !s.dropped {
		s.dropped, drop = true, s.dropAfter
	}
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	time.Sleep(s.delay)
	cw := &countingWriter{ResponseWriter: w, s: s, dropAfter: drop, stallAfter: s.stallAfter, ctx: r}
	if s.noRanges || s.ignoreRange {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		if s.ignoreRange {
			w.Header().Set("Accept-Ranges", "bytes")
		}
		if r.Method == http.MethodHead {
			return
		}
		_, _ = cw.Write(data)
		return
	}
	http.ServeContent(cw, r, "", time.Time{}, bytes.NewReader(data))
}

// countingWriter counts body bytes and injects faults.
type countingWriter struct {
	http.ResponseWriter
	s                     *fileServer
	n                     int64
	dropAfter, stallAfter int64
	ctx                   *http.Request
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if w.dropAfter > 0 && w.n+int64(len(p)) > w.dropAfter {
		part := p[:w.dropAfter-w.n]
		k, _ := w.ResponseWriter.Write(part)
		w.s.sent.Add(int64(k))
		w.ResponseWriter.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the server closes the connection mid-body
	}
	if w.stallAfter > 0 && w.n+int64(len(p)) > w.stallAfter {
		part := p[:w.stallAfter-w.n]
		k, _ := w.ResponseWriter.Write(part)
		w.s.sent.Add(int64(k))
		w.ResponseWriter.(http.Flusher).Flush()
		<-w.ctx.Context().Done()
		panic(http.ErrAbortHandler)
	}
	k, err := w.ResponseWriter.Write(p)
	w.n += int64(k)
	w.s.sent.Add(int64(k))
	return k, err
}

// randomBytes is deterministic test content.
func randomBytes(seed uint64, n int) []byte {
	var s [32]byte
	s[0] = byte(seed)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

func sha256Of(b []byte) Digest {
	s := sha256.Sum256(b)
	return Digest{Algo: SHA256, Hex: hex.EncodeToString(s[:])}
}

func sha512Of(b []byte) Digest {
	s := sha512.Sum512(b)
	return Digest{Algo: SHA512, Hex: hex.EncodeToString(s[:])}
}

// newCache returns a cache in a temp dir with fast retries, recording events.
func newCache(t testing.TB) (*Cache, *events.Recorder) {
	rec := &events.Recorder{}
	return &Cache{Dir: t.TempDir(), Events: rec, Stage: "k3s", Attempts: 1, RetryDelay: 10 * time.Millisecond,
		ProgressInterval: time.Millisecond}, rec
}

// checkProgress asserts monotonic progress events that end at size.
func checkProgress(t *testing.T, evs []events.Event, size int64) {
	t.Helper()
	if len(evs) == 0 {
		t.Fatal("no progress events")
	}
	var prev int64
	for i, e := range evs {
		if e.Status != events.Progress || e.Step != "download" || e.Stage != "k3s" {
			t.Fatalf("event %d = %+v", i, e)
		}
		if e.BytesDone < prev {
			t.Fatalf("progress went back at event %d: %d after %d", i, e.BytesDone, prev)
		}
		if e.BytesTotal != 0 && e.BytesTotal != size {
			t.Fatalf("event %d total = %d, want %d", i, e.BytesTotal, size)
		}
		prev = e.BytesDone
	}
	if last := evs[len(evs)-1]; last.BytesDone != size || last.BytesTotal != size {
		t.Errorf("last event %d/%d, want %d/%d", last.BytesDone, last.BytesTotal, size, size)
	}
}
