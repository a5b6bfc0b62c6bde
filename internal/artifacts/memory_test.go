package artifacts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/opencsp/installer/internal/events"
)

// streamServer serves size pseudo-random bytes generated on the fly, so the
// test itself holds nothing in memory either.
func streamServer(t testing.TB, size int64) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		if r.Method == http.MethodHead {
			return
		}
		_, _ = io.CopyBuffer(w, io.LimitReader(stream(), size), make([]byte, 256<<10))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func stream() io.Reader {
	var seed [32]byte
	seed[0] = 42
	return rand.NewChaCha8(seed)
}

func streamDigest(t testing.TB, size int64) Digest {
	h := sha256.New()
	if _, err := io.CopyBuffer(h, io.LimitReader(stream(), size), make([]byte, 256<<10)); err != nil {
		t.Fatal(err)
	}
	return Digest{Algo: SHA256, Hex: hex.EncodeToString(h.Sum(nil))}
}

func TestFetchOf1GiBKeepsMemoryFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB transfer; skipped with -short")
	}
	const size = 1 << 30
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && int64(st.Bavail)*int64(st.Bsize) < 2*size {
		t.Skipf("needs 2 GiB free in %s", dir)
	}
	want := streamDigest(t, size)
	srv := streamServer(t, size)
	c := &Cache{Dir: dir, Attempts: 1, Events: &countingSink{}}

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	peak.Store(base)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				if m.HeapInuse > peak.Load() {
					peak.Store(m.HeapInuse)
				}
			}
		}
	})
	start := time.Now()
	f, err := c.Get(context.Background(), Source{URL: srv.URL + "/big.img", Digest: want})
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if f.Size != size {
		t.Fatalf("size = %d", f.Size)
	}
	growth := int64(peak.Load()) - int64(base)
	t.Logf("fetched 1 GiB in %s (%.0f MiB/s); heap in use grew by %.1f MiB at peak",
		elapsed.Round(time.Millisecond), float64(size)/(1<<20)/elapsed.Seconds(), float64(growth)/(1<<20))
	if growth > 64<<20 {
		t.Errorf("heap grew by %d MiB during the fetch, want < 64 MiB", growth>>20)
	}
	if n := c.Events.(*countingSink).n.Load(); n > 200 {
		t.Errorf("%d progress events for one file: not throttled", n)
	}
}

type countingSink struct{ n atomic.Int64 }

func (s *countingSink) Emit(events.Event) { s.n.Add(1) }

// BenchmarkFetch compares a cache fetch (HTTP via go-getter, hashing, disk
// write, fsync, rename) with a plain io.Copy of the same body to io.Discard.
// ratio is cache time / reference time.
func BenchmarkFetch(b *testing.B) {
	const size = 256 << 20
	want := streamDigest(b, size)
	srv := streamServer(b, size)
	b.SetBytes(size)
	var fetchTime, refTime time.Duration
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		resp, err := http.Get(srv.URL + "/ref")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			b.Fatal(err)
		}
		_ = resp.Body.Close()
		refTime += time.Since(start)

		c := &Cache{Dir: b.TempDir(), Attempts: 1}
		start = time.Now()
		if _, err := c.Get(context.Background(), Source{URL: srv.URL + "/f" + strconv.Itoa(i), Digest: want}); err != nil {
			b.Fatal(err)
		}
		fetchTime += time.Since(start)
	}
	mib := func(d time.Duration) float64 { return float64(b.N) * size / (1 << 20) / d.Seconds() }
	b.ReportMetric(mib(fetchTime), "cache-MiB/s")
	b.ReportMetric(mib(refTime), "ref-MiB/s")
	b.ReportMetric(fetchTime.Seconds()/refTime.Seconds(), "ratio")
}
