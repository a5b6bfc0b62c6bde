package proxmox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"

	goproxmox "github.com/luthermonson/go-proxmox"
)

// APIError is a non-2xx answer of the PVE API. PVE puts the reason of
// most failures into the HTTP reason phrase ("500 VM 100 already exists")
// and parameter errors into {"errors": {...}}.
type APIError struct {
	Method, Path string
	Status       int
	Message      string
	Errors       map[string]string
}

func (e *APIError) Error() string {
	msg := fmt.Sprintf("%s %s: HTTP %d %s", e.Method, e.Path, e.Status, e.Message)
	if len(e.Errors) > 0 {
		keys := make([]string, 0, len(e.Errors))
		for k := range e.Errors {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + ": " + strings.TrimSpace(e.Errors[k])
		}
		msg += " (" + strings.Join(parts, "; ") + ")"
	}
	return msg
}

// statusTransport turns every non-2xx answer into an *APIError. go-proxmox
// only reports 400, 401/403, 500 and 501 and would decode a 503 or 595 body
// ({"data":null}) as success.
type statusTransport struct{ next http.RoundTripper }

func (t statusTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := t.next.RoundTrip(r)
	if err != nil || res.StatusCode < 300 {
		return res, err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	apiErr := &APIError{Method: r.Method, Path: apiPath(r.URL), Status: res.StatusCode,
		Message: strings.TrimSpace(strings.TrimPrefix(res.Status, fmt.Sprint(res.StatusCode)))}
	var doc struct {
		Errors  map[string]string `json:"errors"`
		Message string            `json:"message"`
	}
	if json.Unmarshal(body, &doc) == nil {
		apiErr.Errors = doc.Errors
		if apiErr.Message == "" {
			apiErr.Message = strings.TrimSpace(doc.Message)
		}
	}
	return nil, apiErr
}

func apiPath(u *url.URL) string {
	_, p, ok := strings.Cut(u.Path, "/api2/json")
	if !ok {
		return u.Path
	}
	return p
}

// api is the thin layer over go-proxmox's client: JSON in, {"data"} out,
// every error typed.
type api struct {
	c    *goproxmox.Client
	http *http.Client
	base string // .../api2/json
	auth string // Authorization header value
}

func newAPI(base string, hc *http.Client, tokenID, secret string) *api {
	return &api{
		c:    goproxmox.NewClient(base, goproxmox.WithHTTPClient(hc), goproxmox.WithAPIToken(tokenID, secret), goproxmox.WithUserAgent("opencsp-installer")),
		http: hc,
		base: base,
		auth: "PVEAPIToken=" + tokenID + "=" + secret,
	}
}

func (a *api) get(ctx context.Context, path string, query map[string]string, out any) error {
	if len(query) > 0 {
		v := url.Values{}
		for k, val := range query {
			v.Set(k, val)
		}
		path += "?" + v.Encode()
	}
	return wrap("GET", path, a.c.Get(ctx, path, out))
}

func (a *api) post(ctx context.Context, path string, params map[string]any, out any) error {
	return wrap("POST", path, a.c.Post(ctx, path, params, out))
}

func (a *api) put(ctx context.Context, path string, params map[string]any, out any) error {
	return wrap("PUT", path, a.c.Put(ctx, path, params, out))
}

func (a *api) delete(ctx context.Context, path string, out any) error {
	return wrap("DELETE", path, a.c.Delete(ctx, path, out))
}

// wrap gives errors the call that failed, keeping *APIError findable.
func wrap(method, path string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, goproxmox.ErrNotAuthorized) {
		return &APIError{Method: method, Path: path, Status: http.StatusUnauthorized, Message: "authentication failure"}
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr
	}
	return fmt.Errorf("%s %s: %w", method, path, err)
}

// statusOf returns the HTTP status of an API error, 0 for other errors.
func statusOf(err error) int {
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.Status
	}
	return 0
}

// Error classes the retry logic and preflight care about.

func isUnauthorized(err error) bool {
	s := statusOf(err)
	return s == http.StatusUnauthorized || s == http.StatusForbidden && strings.Contains(err.Error(), "authentication")
}

func isLockTimeout(err error) bool {
	return err != nil && strings.Contains(err.Error(), "can't lock file") && strings.Contains(err.Error(), "got timeout")
}

func isAlreadyExists(err error) bool {
	return err != nil && strings.Contains(err.Error(), "already exists")
}

// isTransient: server-side hiccups worth retrying (5xx, proxy errors to a
// node, network errors), never client errors or a cancelled context.
func isTransient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if _, ok := asUntrusted(err); ok {
		return false
	}
	if s := statusOf(err); s != 0 {
		return s >= 500 && s != http.StatusNotImplemented
	}
	var netErr net.Error
	var opErr *net.OpError
	return errors.As(err, &netErr) || errors.As(err, &opErr) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}
