// Package artifacts downloads release files (K3s binaries, air-gap images,
// cloud images) once into a content-addressed local cache and verifies them.
//
// Layout under Cache.Dir:
//
//	sha256/<hex>        content, named by its verified digest (sha512/<hex> for
//	sha256/<hex>.json   files pinned by sha512) + metadata: source URL, size, digests
//	urls/<key>.json     URL -> digest, for sources fetched without a pinned digest
//	partial/<key>       downloads in progress; resumed with HTTP Range next time
//	locks/<key>.lock    flock(2) per artifact: concurrent fetches download once
//
// HTTP(S) goes through go-getter's HTTP getter (HEAD, then a Range request to
// resume a partial file); local files (file:// URLs and plain paths, e.g. an
// air-gapped directory) are copied by this package.
package artifacts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/opencsp/installer/internal/events"
)

// Cache is a download cache in Dir. The zero value of every other field is a
// sensible default. A Cache is safe for concurrent use, also across processes
// sharing Dir.
type Cache struct {
	Dir string

	// HTTPClient is used for HTTP(S); default: a client honouring the
	// proxy environment variables. Its transport is wrapped, not replaced.
	HTTPClient *http.Client
	// Events receive throttled Progress events (Step "download").
	Events events.Sink
	Stage  string
	Logger *slog.Logger

	// ProgressInterval throttles progress events; default 250ms.
	ProgressInterval time.Duration
	// Attempts per Get for HTTP downloads, each resuming the last; default 3.
	Attempts int
	// RetryDelay before the second attempt, doubling after; default 1s.
	RetryDelay time.Duration
	// StallTimeout aborts an attempt that receives no data for this long;
	// default 60s.
	StallTimeout time.Duration
	// VerifyCached re-hashes a cached file on every hit instead of trusting
	// its size and recorded digest.
	VerifyCached bool

	clientOnce sync.Once
	client     *http.Client
}

// Source is one file to fetch.
type Source struct {
	// URL is http(s)://, file:// or a local path.
	URL string
	// Name is the file name shown in progress and looked up in the checksum
	// file; default the last element of URL's path.
	Name string
	// Digest pins the content. When zero, ChecksumURL is consulted.
	Digest Digest
	// ChecksumURL is a checksum file (sha256sum-amd64.txt, SHA256SUMS,
	// SHA512SUMS) listing Name. When both Digest and ChecksumURL are empty the
	// source is trusted as served on first download and its digest recorded:
	// later calls return that same content.
	ChecksumURL string
}

// File is a verified file in the cache. Treat Path as read-only.
type File struct {
	Path   string
	Size   int64
	Digest Digest // the digest it was verified against (or sha256 when unpinned)
	SHA256 string // hex; always known, e.g. to compare with a remote sha256sum
	URL    string
	Cached bool // served from the cache without fetching
}

// meta is stored next to each cached file.
type meta struct {
	URL       string    `json:"url"`
	Size      int64     `json:"size"`
	SHA256    string    `json:"sha256"`
	SHA512    string    `json:"sha512,omitempty"`
	FetchedAt time.Time `json:"fetched_at"`
}

// urlIndex maps a source fetched without a pinned digest to its content.
type urlIndex struct {
	URL    string `json:"url"`
	Digest string `json:"digest"`
}

const (
	defaultProgressInterval = 250 * time.Millisecond
	defaultAttempts         = 3
	defaultRetryDelay       = time.Second
	defaultStallTimeout     = 60 * time.Second
)

// Get returns src from the cache, downloading and verifying it first if
// needed. A cached file costs no network request.
func (c *Cache) Get(ctx context.Context, src Source) (File, error) {
	if c.Dir == "" {
		return File{}, errors.New("artifacts: cache directory not set")
	}
	loc, err := parseLocation(src.URL)
	if err != nil {
		return File{}, err
	}
	name := src.Name
	if name == "" {
		name = loc.base()
	}
	want := src.Digest
	if want.IsZero() && src.ChecksumURL != "" {
		sums, err := c.Get(ctx, Source{URL: src.ChecksumURL})
		if err != nil {
			return File{}, fmt.Errorf("checksum file for %s: %w", name, err)
		}
		f, err := os.Open(sums.Path)
		if err != nil {
			return File{}, fmt.Errorf("checksum file for %s: %w", name, err)
		}
		want, err = FindChecksum(f, name)
		_ = f.Close()
		if err != nil {
			return File{}, fmt.Errorf("checksum for %s from %s: %w", name, src.ChecksumURL, err)
		}
	}
	if !want.IsZero() {
		if _, err := newHash(want.Algo); err != nil {
			return File{}, err
		}
		return c.getPinned(ctx, loc, name, want)
	}
	return c.getUnpinned(ctx, loc, name)
}

func (c *Cache) getPinned(ctx context.Context, loc location, name string, want Digest) (File, error) {
	key := want.Algo + "-" + want.Hex
	unlock, err := c.lock(ctx, key)
	if err != nil {
		return File{}, err
	}
	defer unlock()
	if f, ok := c.lookup(want); ok {
		return f, nil
	}
	return c.fetchAndStore(ctx, loc, name, key, want)
}

func (c *Cache) getUnpinned(ctx context.Context, loc location, name string) (File, error) {
	key := "url-" + hashString(loc.raw)
	unlock, err := c.lock(ctx, key)
	if err != nil {
		return File{}, err
	}
	defer unlock()
	idxPath := filepath.Join(c.Dir, "urls", hashString(loc.raw)+".json")
	var idx urlIndex
	if readJSON(idxPath, &idx) == nil && idx.URL == loc.raw {
		if d, err := ParseDigest(idx.Digest); err == nil {
			if f, ok := c.lookup(d); ok {
				return f, nil
			}
		}
	}
	f, err := c.fetchAndStore(ctx, loc, name, key, Digest{})
	if err != nil {
		return File{}, err
	}
	if err := writeJSON(idxPath, urlIndex{URL: loc.raw, Digest: f.Digest.String()}); err != nil {
		return File{}, err
	}
	return f, nil
}

// fetchAndStore downloads into partial/<key>, verifies against want (when
// set) and moves the file into place.
func (c *Cache) fetchAndStore(ctx context.Context, loc location, name, key string, want Digest) (File, error) {
	algo := want.Algo
	if algo == "" {
		algo = SHA256
	}
	partial := filepath.Join(c.Dir, "partial", key)
	if err := os.MkdirAll(filepath.Dir(partial), 0o755); err != nil {
		return File{}, fmt.Errorf("artifacts: %w", err)
	}
	if want.IsZero() {
		// Without a digest nothing would catch a stale partial file from a
		// server whose content changed since: start over (these are small).
		_ = os.Remove(partial)
	}
	// sha256 always: callers compare it with the remote copy's sha256sum.
	sums, size, err := c.download(ctx, loc, name, partial, algo, SHA256)
	if err != nil {
		return File{}, err
	}
	got := Digest{Algo: algo, Hex: sums[algo]}
	if !want.IsZero() && got != want {
		_ = os.Remove(partial)
		return File{}, &ChecksumError{URL: loc.raw, Expected: want, Actual: got}
	}
	m := meta{URL: loc.raw, Size: size, SHA256: sums[SHA256], SHA512: sums[SHA512], FetchedAt: time.Now().UTC()}
	blob := c.blobPath(got)
	if err := c.promote(partial, blob, m); err != nil {
		return File{}, err
	}
	c.logger().Debug("artifact cached", "url", loc.raw, "digest", got.String(), "size", size)
	return File{Path: blob, Size: size, Digest: got, SHA256: m.SHA256, URL: loc.raw}, nil
}

func (c *Cache) blobPath(d Digest) string { return filepath.Join(c.Dir, d.Algo, d.Hex) }

// lookup finds d in the cache. The check is cheap (metadata + size) unless
// VerifyCached is set; a file failing it is removed.
func (c *Cache) lookup(d Digest) (File, bool) {
	blob := c.blobPath(d)
	var m meta
	if err := readJSON(blob+".json", &m); err != nil {
		return File{}, false
	}
	fi, err := os.Stat(blob)
	if err != nil || !fi.Mode().IsRegular() {
		return File{}, false
	}
	bad := fi.Size() != m.Size
	if !bad && c.VerifyCached {
		sums, err := hashFile(blob, d.Algo)
		bad = err != nil || sums[d.Algo] != d.Hex
	}
	if bad {
		c.logger().Warn("cached artifact is corrupt, discarding it", "path", blob, "url", m.URL)
		_ = os.Remove(blob)
		_ = os.Remove(blob + ".json")
		return File{}, false
	}
	return File{Path: blob, Size: m.Size, Digest: d, SHA256: m.SHA256, URL: m.URL, Cached: true}, true
}

// promote moves a verified partial file into the cache: data synced first,
// metadata written before the rename, so a file present under its digest
// always has complete content and metadata.
func (c *Cache) promote(partial, blob string, m meta) error {
	if err := os.MkdirAll(filepath.Dir(blob), 0o755); err != nil {
		return fmt.Errorf("artifacts: %w", err)
	}
	f, err := os.OpenFile(partial, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("artifacts: %w", err)
	}
	err = errors.Join(f.Chmod(0o644), f.Sync(), f.Close())
	if err != nil {
		return fmt.Errorf("artifacts: sync %s: %w", partial, err)
	}
	if err := writeJSON(blob+".json", m); err != nil {
		return err
	}
	if err := os.Rename(partial, blob); err != nil {
		return fmt.Errorf("artifacts: move into cache: %w", err)
	}
	return nil
}

// lock takes an exclusive flock on key, waiting while another goroutine or
// process holds it (it is downloading the same artifact).
func (c *Cache) lock(ctx context.Context, key string) (func(), error) {
	dir := filepath.Join(c.Dir, "locks")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("artifacts: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, key+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("artifacts: %w", err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { _ = f.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			_ = f.Close()
			return nil, fmt.Errorf("artifacts: lock %s: %w", key, err)
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("artifacts: waiting for another download of the same file: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Cache) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

// location is a parsed source URL.
type location struct {
	raw   string
	local string // file path for file:// URLs and plain paths; "" for HTTP(S)
	u     *url.URL
}

func (l location) base() string {
	if l.local != "" {
		return filepath.Base(l.local)
	}
	return path.Base(l.u.Path)
}

func parseLocation(raw string) (location, error) {
	if raw == "" {
		return location{}, errors.New("artifacts: empty source URL")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || len(u.Scheme) == 1 {
		// A plain path (a one-letter "scheme" would be a Windows drive).
		return location{raw: raw, local: filepath.Clean(raw)}, nil
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return location{}, fmt.Errorf("artifacts: %s: file URLs must be local (file:///path)", raw)
		}
		return location{raw: raw, local: filepath.Clean(u.Path), u: u}, nil
	case "http", "https":
		if u.Host == "" {
			return location{}, fmt.Errorf("artifacts: %s: URL has no host", raw)
		}
		// go-getter reads these query parameters and "//" in the path as
		// instructions (checksum, unpacking, subdirectory): refuse them
		// rather than have a URL silently mean something else.
		for _, k := range []string{"checksum", "archive", "filename"} {
			if u.Query().Has(k) {
				return location{}, fmt.Errorf("artifacts: %s: query parameter %q is not supported (reserved by the downloader)", raw, k)
			}
		}
		if strings.Contains(u.EscapedPath(), "//") {
			return location{}, fmt.Errorf("artifacts: %s: path contains \"//\"", raw)
		}
		return location{raw: raw, u: u}, nil
	}
	return location{}, fmt.Errorf("artifacts: %s: unsupported scheme %q (want https, http, file or a local path)", raw, u.Scheme)
}

func hashString(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// hashFile computes the named digests of a file in one pass.
func hashFile(p string, algos ...string) (map[string]string, error) {
	hs, err := newHashSet(algos...)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("artifacts: %w", err)
	}
	defer f.Close()
	if _, err := io.Copy(hs, f); err != nil {
		return nil, fmt.Errorf("artifacts: hash %s: %w", p, err)
	}
	return hs.sums(), nil
}

func readJSON(p string, v any) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// writeJSON writes atomically (temp file + rename).
func writeJSON(p string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("artifacts: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(p), filepath.Base(p)+".tmp-*")
	if err != nil {
		return fmt.Errorf("artifacts: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	err = errors.Join(err, f.Chmod(0o644), f.Sync(), f.Close())
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("artifacts: write %s: %w", p, err)
	}
	return nil
}
