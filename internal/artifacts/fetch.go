package artifacts

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	getter "github.com/hashicorp/go-getter/v2"

	"github.com/opencsp/installer/internal/events"
)

var (
	// errRangeIgnored: the server answered a resume request with something
	// other than the requested byte range; appending it would corrupt the file.
	errRangeIgnored = errors.New("server did not honour the Range request")
	errStalled      = errors.New("download stalled")
)

// download fills partial from loc and returns the digests (algos) of its
// content, computed while writing when possible, and its size.
func (c *Cache) download(ctx context.Context, loc location, name, partial string, algos ...string) (map[string]string, int64, error) {
	prog := c.newProgress(name, loc.raw)
	var (
		sums map[string]string
		size int64
		err  error
	)
	if loc.local != "" {
		sums, size, err = c.copyLocal(ctx, loc, partial, prog, algos)
	} else {
		sums, size, err = c.downloadHTTP(ctx, loc, partial, prog, algos)
	}
	if err != nil {
		return nil, 0, err
	}
	prog.finish(size)
	return sums, size, nil
}

func (c *Cache) downloadHTTP(ctx context.Context, loc location, partial string, prog *progress, algos []string) (map[string]string, int64, error) {
	attempts := c.Attempts
	if attempts <= 0 {
		attempts = defaultAttempts
	}
	delay := c.RetryDelay
	if delay <= 0 {
		delay = defaultRetryDelay
	}
	restarted := false
	var lastErr error
	for attempt := 1; attempt <= attempts; attempt++ {
		tr := &tracker{partial: partial, algos: algos, prog: prog}
		err := c.getOnce(ctx, loc, partial, tr)
		if err == nil {
			return tr.result(partial)
		}
		if ctx.Err() != nil {
			return nil, 0, fmt.Errorf("download %s: %w", loc.raw, ctx.Err())
		}
		if errors.Is(err, errRangeIgnored) && !restarted {
			c.logger().Info("server cannot resume, restarting download", "url", loc.raw)
			_ = os.Remove(partial)
			restarted = true
			attempt-- // not the network's fault; start over at once
			continue
		}
		lastErr = err
		if permanent(err) {
			break
		}
		if attempt < attempts {
			c.logger().Warn("download interrupted, resuming", "url", loc.raw, "attempt", attempt, "err", err, "retry_in", delay)
			select {
			case <-ctx.Done():
				return nil, 0, fmt.Errorf("download %s: %w", loc.raw, ctx.Err())
			case <-time.After(delay):
			}
			delay *= 2
		}
	}
	return nil, 0, fmt.Errorf("download %s: %w (what was received is kept and resumed next time)", loc.raw, lastErr)
}

// getOnce is one go-getter request, aborted when no data arrives for the
// stall timeout.
func (c *Cache) getOnce(ctx context.Context, loc location, partial string, tr *tracker) error {
	stall := c.StallTimeout
	if stall <= 0 {
		stall = defaultStallTimeout
	}
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watchdog := time.AfterFunc(stall, func() { cancel(errStalled) })
	defer watchdog.Stop()
	tr.onData = func() { watchdog.Reset(stall) }

	client := &getter.Client{
		Getters: []getter.Getter{&getter.HttpGetter{
			Client:                c.httpClient(),
			XTerraformGetDisabled: true,
		}},
		// Never unpack: k3s-airgap-images-amd64.tar.zst must stay as it is.
		Decompressors: map[string]getter.Decompressor{},
	}
	_, err := client.Get(actx, &getter.Request{
		Src:              loc.raw,
		Dst:              partial,
		GetMode:          getter.ModeFile,
		ProgressListener: tr,
		DisableSymlinks:  true,
	})
	if err != nil && errors.Is(context.Cause(actx), errStalled) {
		return fmt.Errorf("no data received for %s: %w", stall, errStalled)
	}
	return err
}

var badCodeRE = regexp.MustCompile(`bad response code: (\d+)`)

// permanent reports HTTP client errors that a retry cannot fix (404...).
func permanent(err error) bool {
	m := badCodeRE.FindStringSubmatch(err.Error())
	if m == nil {
		return false
	}
	code, _ := strconv.Atoi(m[1])
	return code >= 400 && code < 500 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests
}

// httpClient is the configured client with the range guard in its
// transport, built once so connections are reused.
func (c *Cache) httpClient() *http.Client {
	c.clientOnce.Do(func() {
		base := c.HTTPClient
		if base == nil {
			base = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		}
		next := base.Transport
		if next == nil {
			next = http.DefaultTransport
		}
		cl := *base
		cl.Transport = &rangeGuard{next: next}
		c.client = &cl
	})
	return c.client
}

// rangeGuard fails resume requests answered with anything but the requested
// range. go-getter has already positioned the file at its end by then, so a
// full 200 body would be appended to the partial data.
type rangeGuard struct{ next http.RoundTripper }

func (g *rangeGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := g.next.RoundTrip(req)
	rng := req.Header.Get("Range")
	if err != nil || rng == "" || req.Method != http.MethodGet || (resp.StatusCode >= 300 && resp.StatusCode < 400) {
		return resp, err
	}
	start, _ := strings.CutPrefix(rng, "bytes=")
	start, _, _ = strings.Cut(start, "-")
	ok := resp.StatusCode == http.StatusPartialContent &&
		strings.HasPrefix(resp.Header.Get("Content-Range"), "bytes "+start+"-")
	if !ok {
		_ = resp.Body.Close()
		return nil, fmt.Errorf("%w (asked for %s, got HTTP %d, Content-Range %q)", errRangeIgnored, rng, resp.StatusCode, resp.Header.Get("Content-Range"))
	}
	return resp, nil
}

// tracker is go-getter's progress listener for one attempt: it hashes the
// bytes already on disk, then every byte as it streams past, and reports
// progress.
type tracker struct {
	partial string
	algos   []string
	prog    *progress
	onData  func()

	hs        *hashSet
	hashed    int64
	prefixErr error
}

func (t *tracker) TrackProgress(_ string, current, total int64, stream io.ReadCloser) io.ReadCloser {
	t.hs, _ = newHashSet(t.algos...) // algorithms were validated by Get
	t.hashed, t.prefixErr = 0, nil
	if current > 0 {
		// Resuming: go-getter appends after the current size.
		f, err := os.Open(t.partial)
		if err == nil {
			t.hashed, err = io.CopyN(t.hs, f, current)
			_ = f.Close()
		}
		t.prefixErr = err
	}
	if total < current {
		total = 0 // no Content-Length: unknown
	}
	t.prog.update(current, total)
	return &trackedBody{t: t, rc: stream, done: current, total: total}
}

// result returns the digests from the stream when they cover the whole
// file, else (nothing streamed, or an unexpected write pattern) re-hashes it.
func (t *tracker) result(partial string) (map[string]string, int64, error) {
	fi, err := os.Stat(partial)
	if err != nil {
		return nil, 0, fmt.Errorf("artifacts: %w", err)
	}
	if t.hs != nil && t.prefixErr == nil && t.hashed == fi.Size() {
		return t.hs.sums(), fi.Size(), nil
	}
	sums, err := hashFile(partial, t.algos...)
	return sums, fi.Size(), err
}

type trackedBody struct {
	t           *tracker
	rc          io.ReadCloser
	done, total int64
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		_, _ = b.t.hs.Write(p[:n])
		b.t.hashed += int64(n)
		b.done += int64(n)
		b.t.onData()
		b.t.prog.update(b.done, b.total)
	}
	return n, err
}

func (b *trackedBody) Close() error { return b.rc.Close() }

// copyLocal copies a local file (air-gapped directory) into partial.
func (c *Cache) copyLocal(ctx context.Context, loc location, partial string, prog *progress, algos []string) (map[string]string, int64, error) {
	in, err := os.Open(loc.local)
	if err != nil {
		return nil, 0, fmt.Errorf("artifacts: %w", err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return nil, 0, fmt.Errorf("artifacts: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("artifacts: %s is not a regular file", loc.local)
	}
	out, err := os.OpenFile(partial, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, 0, fmt.Errorf("artifacts: %w", err)
	}
	hs, err := newHashSet(algos...)
	if err != nil {
		_ = out.Close()
		return nil, 0, err
	}
	total := fi.Size()
	var done int64
	prog.update(0, total)
	src := readerFunc(func(p []byte) (int, error) {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		n, err := in.Read(p)
		if n > 0 {
			_, _ = hs.Write(p[:n])
			done += int64(n)
			prog.update(done, total)
		}
		return n, err
	})
	_, err = io.CopyBuffer(out, src, make([]byte, 1<<20))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(partial)
		return nil, 0, fmt.Errorf("artifacts: copy %s: %w", loc.local, err)
	}
	return hs.sums(), done, nil
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// hashSet computes several digests in one pass.
type hashSet struct {
	algos []string
	hs    []hash.Hash
}

func newHashSet(algos ...string) (*hashSet, error) {
	s := &hashSet{}
	for _, a := range algos {
		if containsString(s.algos, a) {
			continue
		}
		h, err := newHash(a)
		if err != nil {
			return nil, err
		}
		s.algos = append(s.algos, a)
		s.hs = append(s.hs, h)
	}
	return s, nil
}

func (s *hashSet) Write(p []byte) (int, error) {
	for _, h := range s.hs {
		_, _ = h.Write(p)
	}
	return len(p), nil
}

func (s *hashSet) sums() map[string]string {
	out := make(map[string]string, len(s.hs))
	for i, h := range s.hs {
		out[s.algos[i]] = hex.EncodeToString(h.Sum(nil))
	}
	return out
}

func containsString(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

// progress emits throttled, monotonic Progress events for one file.
type progress struct {
	sink     events.Sink
	base     events.Event
	interval time.Duration
	last     time.Time
	lastDone int64
	emitted  bool
	final    bool
}

func (c *Cache) newProgress(name, rawURL string) *progress {
	interval := c.ProgressInterval
	if interval <= 0 {
		interval = defaultProgressInterval
	}
	return &progress{
		sink:     c.Events,
		interval: interval,
		base: events.Event{Stage: c.Stage, Step: "download", Status: events.Progress, Message: name,
			Fields: map[string]string{"url": rawURL}},
	}
}

// update reports done of total (0: unknown). Regressions (a restarted
// download) are not reported until they pass the last reported value.
func (p *progress) update(done, total int64) {
	if p.sink == nil || (p.emitted && done < p.lastDone) {
		return
	}
	now := time.Now()
	complete := total > 0 && done >= total
	if p.emitted && now.Sub(p.last) < p.interval && !complete {
		return
	}
	if complete && p.final {
		return
	}
	p.emit(now, done, total)
	p.final = complete
}

func (p *progress) finish(size int64) {
	if p.sink == nil || (p.final && p.lastDone == size) {
		return
	}
	p.emit(time.Now(), size, size)
	p.final = true
}

func (p *progress) emit(now time.Time, done, total int64) {
	ev := p.base
	ev.Time = now
	ev.BytesDone, ev.BytesTotal = done, total
	p.sink.Emit(ev)
	p.last, p.lastDone, p.emitted = now, done, true
}
