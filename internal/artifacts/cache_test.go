package artifacts

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestGetVerifiesAndSecondGetMakesNoRequest(t *testing.T) {
	data := randomBytes(1, 3<<20)
	sumsFile := fmt.Sprintf("%s  k3s\n%s  other\n", sha256Of(data).Hex, sha256Of([]byte("x")).Hex)
	bsd512 := fmt.Sprintf("SHA512 (./dist/k3s) = %s\n", sha512Of(data).Hex)
	srv := newFileServer(t, map[string][]byte{
		"k3s": data, "sha256sum-amd64.txt": []byte(sumsFile), "SHA512SUMS": []byte(bsd512),
	})
	tests := []struct {
		name       string
		src        Source
		wantDigest Digest
	}{
		{"inline sha256", Source{URL: srv.url("k3s"), Digest: sha256Of(data)}, sha256Of(data)},
		{"inline sha512", Source{URL: srv.url("k3s"), Digest: sha512Of(data)}, sha512Of(data)},
		{"sha256 from release checksum file", Source{URL: srv.url("k3s"), ChecksumURL: srv.url("sha256sum-amd64.txt")}, sha256Of(data)},
		{"sha512 from BSD-style SHA512SUMS", Source{URL: srv.url("k3s"), ChecksumURL: srv.url("SHA512SUMS")}, sha512Of(data)},
		{"unpinned, trusted as served", Source{URL: srv.url("k3s")}, sha256Of(data)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, rec := newCache(t)
			srv.reset()
			f, err := c.Get(context.Background(), tt.src)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			got, _ := os.ReadFile(f.Path)
			if !bytes.Equal(got, data) || f.Size != int64(len(data)) || f.Digest != tt.wantDigest ||
				f.SHA256 != sha256Of(data).Hex || f.Cached {
				t.Fatalf("file = %+v (content ok: %v)", f, bytes.Equal(got, data))
			}
			if want := filepath.Join(c.Dir, tt.wantDigest.Algo, tt.wantDigest.Hex); f.Path != want {
				t.Errorf("path = %s, want content-addressed %s", f.Path, want)
			}
			var progress []int64
			for _, e := range rec.Events() {
				if e.Message == "k3s" {
					progress = append(progress, e.BytesDone)
				}
			}
			if len(progress) == 0 || progress[len(progress)-1] != int64(len(data)) {
				t.Errorf("progress for k3s = %v", progress)
			}

			srv.reset()
			again, err := c.Get(context.Background(), tt.src)
			if err != nil {
				t.Fatalf("second Get: %v", err)
			}
			if reqs := srv.requests(); len(reqs) != 0 {
				t.Errorf("cache hit made %d requests: %v", len(reqs), reqs)
			}
			if !again.Cached || again.Path != f.Path || again.SHA256 != f.SHA256 {
				t.Errorf("second Get = %+v", again)
			}
			assertNoPartials(t, c)
		})
	}
}

func TestChecksumMismatchDiscardsDownload(t *testing.T) {
	data := randomBytes(2, 1<<20)
	wrong := sha256Of([]byte("something else"))
	srv := newFileServer(t, map[string][]byte{
		"k3s": data, "sums.txt": []byte(wrong.Hex + "  k3s\n"),
	})
	tests := []struct {
		name string
		src  Source
	}{
		{"inline", Source{URL: srv.url("k3s"), Digest: wrong}},
		{"from checksum file", Source{URL: srv.url("k3s"), ChecksumURL: srv.url("sums.txt")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := newCache(t)
			_, err := c.Get(context.Background(), tt.src)
			var ce *ChecksumError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want *ChecksumError", err)
			}
			for _, want := range []string{srv.url("k3s"), wrong.String(), sha256Of(data).String()} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q: %v", want, err)
				}
			}
			assertNoPartials(t, c)
			if _, err := os.Stat(filepath.Join(c.Dir, SHA256, wrong.Hex)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("mismatching content cached under the expected digest")
			}
			if _, err := os.Stat(filepath.Join(c.Dir, SHA256, sha256Of(data).Hex)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("mismatching content cached under its own digest")
			}
		})
	}
}

func TestCorruptCachedFileIsDetectedAndRefetched(t *testing.T) {
	data := randomBytes(3, 256<<10)
	srv := newFileServer(t, map[string][]byte{"f": data})
	src := Source{URL: srv.url("f"), Digest: sha256Of(data)}
	tests := []struct {
		name    string
		corrupt func(path string) error
		verify  bool
	}{
		{"truncated: caught by the size check", func(p string) error { return os.Truncate(p, 10) }, false},
		{"same size, other bytes: caught by VerifyCached", func(p string) error {
			return os.WriteFile(p, bytes.Repeat([]byte{0}, len(data)), 0o644)
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := newCache(t)
			c.VerifyCached = tt.verify
			f, err := c.Get(context.Background(), src)
			if err != nil {
				t.Fatal(err)
			}
			if err := tt.corrupt(f.Path); err != nil {
				t.Fatal(err)
			}
			srv.reset()
			f, err = c.Get(context.Background(), src)
			if err != nil || f.Cached {
				t.Fatalf("Get after corruption = %+v, %v; want a fresh download", f, err)
			}
			if got, _ := os.ReadFile(f.Path); !bytes.Equal(got, data) {
				t.Error("content not restored")
			}
			if len(srv.requests()) == 0 {
				t.Error("no download after corruption")
			}
		})
	}
}

func TestInterruptedDownloadResumesWithRange(t *testing.T) {
	const size = 8 << 20
	data := randomBytes(4, size)
	tests := []struct {
		name     string
		attempts int // 1: resume on the next Get call; 3: within the same call
	}{
		{"next call resumes", 1},
		{"same call resumes", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFileServer(t, map[string][]byte{"images.tar.zst": data})
			srv.dropAfter = 3 << 20
			c, rec := newCache(t)
			c.Attempts = tt.attempts
			src := Source{URL: srv.url("images.tar.zst"), Digest: sha256Of(data)}

			f, err := c.Get(context.Background(), src)
			if tt.attempts == 1 {
				if err == nil {
					t.Fatal("first Get succeeded though the server dropped the connection")
				}
				if !strings.Contains(err.Error(), "resumed next time") {
					t.Errorf("error does not say the download is kept: %v", err)
				}
				f, err = c.Get(context.Background(), src)
			}
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if got, _ := os.ReadFile(f.Path); !bytes.Equal(got, data) {
				t.Fatal("resumed file differs from the original")
			}
			var ranges []string
			for _, r := range srv.requests() {
				if r.Method == "GET" && r.Range != "" {
					ranges = append(ranges, r.Range)
				}
			}
			if len(ranges) != 1 || !strings.HasPrefix(ranges[0], "bytes=") {
				t.Fatalf("range requests = %q, want exactly one", ranges)
			}
			var from int64
			if _, err := fmt.Sscanf(ranges[0], "bytes=%d-", &from); err != nil || from <= 0 || from > 3<<20 {
				t.Fatalf("Range %q: want a resume from the received part (<= 3 MiB)", ranges[0])
			}
			t.Logf("resumed with Range %s; server sent %d bytes in total for %d", ranges[0], srv.sent.Load(), size)
			// Everything sent: the dropped part plus the rest from the resume offset.
			if sent, want := srv.sent.Load(), int64(3<<20)+size-from; sent != want {
				t.Errorf("server sent %d bytes, want %d (no restart from zero)", sent, want)
			}
			if sent := srv.sent.Load(); sent >= 2*size {
				t.Errorf("sent %d bytes for a %d byte file", sent, size)
			}
			checkProgress(t, rec.Events(), size)
			assertNoPartials(t, c)
		})
	}
}

func TestServerWithoutRangesRestartsCleanly(t *testing.T) {
	const size = 4 << 20
	data := randomBytes(5, size)
	tests := []struct {
		name        string
		noRanges    bool
		ignoreRange bool
	}{
		{"no Accept-Ranges", true, false},
		{"advertises ranges but sends the whole file", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFileServer(t, map[string][]byte{"f": data})
			srv.dropAfter, srv.noRanges, srv.ignoreRange = 1<<20, tt.noRanges, tt.ignoreRange
			c, _ := newCache(t)
			src := Source{URL: srv.url("f"), Digest: sha256Of(data)}
			if _, err := c.Get(context.Background(), src); err == nil {
				t.Fatal("first Get succeeded though the connection was dropped")
			}
			srv.reset()
			f, err := c.Get(context.Background(), src)
			if err != nil {
				t.Fatalf("second Get: %v", err)
			}
			if got, _ := os.ReadFile(f.Path); !bytes.Equal(got, data) {
				t.Fatal("content differs: the restart appended to or mixed with the partial file")
			}
			if sent := srv.sent.Load(); sent < size {
				t.Errorf("second call received %d bytes, want the whole %d", sent, size)
			}
			assertNoPartials(t, c)
		})
	}
}

func TestProgressIsThrottled(t *testing.T) {
	data := randomBytes(6, 4<<20)
	srv := newFileServer(t, map[string][]byte{"f": data})
	c, rec := newCache(t)
	c.ProgressInterval = time.Hour
	if _, err := c.Get(context.Background(), Source{URL: srv.url("f"), Digest: sha256Of(data)}); err != nil {
		t.Fatal(err)
	}
	evs := rec.Events()
	if len(evs) != 2 || evs[0].BytesDone != 0 || evs[1].BytesDone != int64(len(data)) {
		t.Errorf("events = %+v, want just the start and the end", evs)
	}
	checkProgress(t, evs, int64(len(data)))
}

func TestHTTPErrors(t *testing.T) {
	data := randomBytes(7, 1<<20)
	tests := []struct {
		name      string
		url       func(*fileServer) string
		stall     bool
		wantErr   string
		maxReqs   int
		wantFast  bool
		wantStall bool
	}{
		{name: "404 is not retried", url: func(s *fileServer) string { return s.url("missing") }, wantErr: "404", maxReqs: 2},
		{name: "stalled server is abandoned", url: func(s *fileServer) string { return s.url("f") }, stall: true, wantErr: "no data received"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFileServer(t, map[string][]byte{"f": data})
			if tt.stall {
				srv.stallAfter = 100 << 10
			}
			c, _ := newCache(t)
			c.Attempts, c.StallTimeout = 3, 200*time.Millisecond
			start := time.Now()
			_, err := c.Get(context.Background(), Source{URL: tt.url(srv), Digest: sha256Of(data)})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if tt.maxReqs > 0 && len(srv.requests()) > tt.maxReqs {
				t.Errorf("%d requests: %v", len(srv.requests()), srv.requests())
			}
			if time.Since(start) > 3*time.Second {
				t.Errorf("took %s", time.Since(start))
			}
		})
	}
}

func TestCancelStopsDownloadAndKeepsPartial(t *testing.T) {
	data := randomBytes(8, 2<<20)
	srv := newFileServer(t, map[string][]byte{"f": data})
	srv.stallAfter = 512 << 10
	c, _ := newCache(t)
	c.StallTimeout = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Get(ctx, Source{URL: srv.url("f"), Digest: sha256Of(data)})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("err = %v after %s", err, time.Since(start))
	}
	partials, _ := os.ReadDir(filepath.Join(c.Dir, "partial"))
	if len(partials) != 1 {
		t.Errorf("partial files = %v, want the interrupted download kept", partials)
	}
}

func TestLocalSources(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "v1.33.5+k3s1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data := randomBytes(9, 2<<20)
	p := filepath.Join(dir, "k3s")
	if err := os.WriteFile(p, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sha256sum-amd64.txt"), []byte(sha256Of(data).Hex+"  k3s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		src  Source
	}{
		{"plain path, inline digest", Source{URL: p, Digest: sha256Of(data)}},
		{"file URL, checksum file", Source{URL: "file://" + p, ChecksumURL: "file://" + filepath.Join(dir, "sha256sum-amd64.txt")}},
		{"file URL with escaped +", Source{URL: "file://" + strings.ReplaceAll(p, "+", "%2B"), Digest: sha256Of(data)}},
		{"unpinned local file", Source{URL: p}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, rec := newCache(t)
			f, err := c.Get(context.Background(), tt.src)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if got, _ := os.ReadFile(f.Path); !bytes.Equal(got, data) || f.SHA256 != sha256Of(data).Hex {
				t.Fatalf("content or digest wrong: %+v", f)
			}
			var evs = rec.Events()
			checkProgress(t, evs[len(evs)-1:], int64(len(data)))
			f2, err := c.Get(context.Background(), tt.src)
			if err != nil || !f2.Cached {
				t.Errorf("second Get = %+v, %v; want cached", f2, err)
			}
		})
	}
	c, _ := newCache(t)
	if _, err := c.Get(context.Background(), Source{URL: p, Digest: sha256Of([]byte("no"))}); !errors.As(err, new(*ChecksumError)) {
		t.Errorf("local mismatch err = %v", err)
	}
	if _, err := c.Get(context.Background(), Source{URL: filepath.Join(dir, "missing")}); err == nil {
		t.Error("missing local file: no error")
	}
}

func TestConcurrentGetsDownloadOnce(t *testing.T) {
	data := randomBytes(10, 4<<20)
	srv := newFileServer(t, map[string][]byte{"f": data})
	srv.delay = 100 * time.Millisecond // make the fetches overlap
	c, _ := newCache(t)
	src := Source{URL: srv.url("f"), Digest: sha256Of(data)}
	const n = 8
	var wg sync.WaitGroup
	files := make([]File, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { files[i], errs[i] = c.Get(context.Background(), src) })
	}
	wg.Wait()
	downloads := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Get %d: %v", i, errs[i])
		}
		if !files[i].Cached {
			downloads++
		}
		if files[i].Path != files[0].Path {
			t.Errorf("paths differ: %s vs %s", files[i].Path, files[0].Path)
		}
	}
	gets := 0
	for _, r := range srv.requests() {
		if r.Method == "GET" {
			gets++
		}
	}
	if downloads != 1 || gets != 1 {
		t.Errorf("%d downloads, %d GET requests; want 1 each", downloads, gets)
	}
	if got, _ := os.ReadFile(files[0].Path); !bytes.Equal(got, data) {
		t.Error("content corrupted")
	}
}

func TestSourceValidation(t *testing.T) {
	c, _ := newCache(t)
	for _, u := range []string{
		"", "ftp://host/x", "https:///nohost", "https://h/a?checksum=sha256:00", "https://h/a//b", "file://otherhost/x",
	} {
		if _, err := c.Get(context.Background(), Source{URL: u}); err == nil {
			t.Errorf("Get(%q): no error", u)
		}
	}
	if _, err := (&Cache{}).Get(context.Background(), Source{URL: "/x"}); err == nil {
		t.Error("Cache without Dir: no error")
	}
}

func assertNoPartials(t *testing.T, c *Cache) {
	t.Helper()
	entries, _ := os.ReadDir(filepath.Join(c.Dir, "partial"))
	if len(entries) != 0 {
		t.Errorf("partial files left: %v", entries)
	}
	_ = filepath.WalkDir(c.Dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ".tmp-") {
			t.Errorf("temp file left: %s", p)
		}
		return nil
	})
}
