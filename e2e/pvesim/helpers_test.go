package pvesim

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// newTestServer starts an emulator closed at the end of the test.
func newTestServer(t *testing.T, opts Options) *Server {
	t.Helper()
	if opts.LockTimeout == 0 {
		opts.LockTimeout = 2 * time.Second
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// resp is a decoded API answer.
type resp struct {
	Status  int
	Reason  string
	Body    map[string]any
	RawBody string
	Header  http.Header
}

func (r resp) data() any { return r.Body["data"] }

func (r resp) dataMap() map[string]any {
	m, _ := r.Body["data"].(map[string]any)
	return m
}

func (r resp) dataList() []any {
	l, _ := r.Body["data"].([]any)
	return l
}

func (r resp) str() string {
	s, _ := r.Body["data"].(string)
	return s
}

// client is a plain HTTP client for the emulator.
type client struct {
	t      *testing.T
	s      *Server
	hc     *http.Client
	header http.Header
}

func tokenClient(t *testing.T, s *Server) *client {
	h := http.Header{}
	h.Set("Authorization", s.AuthHeader())
	return &client{t: t, s: s, hc: s.Client(), header: h}
}

func (c *client) do(method, path string, form url.Values) resp {
	c.t.Helper()
	var body io.Reader
	u := c.s.APIURL() + path
	if form != nil {
		if method == "GET" || method == "DELETE" {
			u += "?" + form.Encode()
		} else {
			body = strings.NewReader(form.Encode())
		}
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	return c.send(req)
}

func (c *client) doJSON(method, path string, v any) resp {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	req, err := http.NewRequest(method, c.s.APIURL()+path, bytes.NewReader(b))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return c.send(req)
}

func (c *client) send(req *http.Request) resp {
	c.t.Helper()
	for k, v := range c.header {
		req.Header[k] = v
	}
	r, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer r.Body.Close()
	raw, _ := io.ReadAll(r.Body)
	out := resp{Status: r.StatusCode, Reason: strings.TrimPrefix(r.Status, http.StatusText(0)), RawBody: string(raw), Header: r.Header}
	if i := strings.IndexByte(r.Status, ' '); i >= 0 {
		out.Reason = r.Status[i+1:]
	}
	if err := json.Unmarshal(raw, &out.Body); err != nil {
		c.t.Fatalf("%s %s: body is not JSON: %q", req.Method, req.URL.Path, raw)
	}
	return out
}

// ok requires a 200 answer.
func (c *client) ok(method, path string, form url.Values) resp {
	c.t.Helper()
	r := c.do(method, path, form)
	if r.Status != 200 {
		c.t.Fatalf("%s %s %v: %d %s %s", method, path, form, r.Status, r.Reason, r.RawBody)
	}
	return r
}

// task runs a task-returning call and waits for the task; it returns the
// exit status.
func (c *client) task(method, path string, form url.Values) (string, string) {
	c.t.Helper()
	r := c.ok(method, path, form)
	upid := r.str()
	if !strings.HasPrefix(upid, "UPID:") {
		c.t.Fatalf("%s %s: not a UPID: %v", method, path, r.data())
	}
	return upid, c.wait(upid)
}

// wait polls the task status like a client does.
func (c *client) wait(upid string) string {
	c.t.Helper()
	node := strings.Split(upid, ":")[1]
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		r := c.ok("GET", "/nodes/"+node+"/tasks/"+upid+"/status", nil)
		st := r.dataMap()
		if st["status"] == "stopped" {
			return st["exitstatus"].(string)
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.t.Fatalf("task %s did not finish", upid)
	return ""
}

func (c *client) taskOK(method, path string, form url.Values) string {
	c.t.Helper()
	upid, st := c.task(method, path, form)
	if st != "OK" {
		c.t.Fatalf("%s %s: task %s failed: %s\n%s", method, path, upid, st, strings.Join(c.taskLog(upid), "\n"))
	}
	return upid
}

func (c *client) taskLog(upid string) []string {
	c.t.Helper()
	node := strings.Split(upid, ":")[1]
	r := c.ok("GET", "/nodes/"+node+"/tasks/"+upid+"/log", url.Values{"limit": {"0"}})
	var lines []string
	for _, e := range r.dataList() {
		lines = append(lines, e.(map[string]any)["t"].(string))
	}
	return lines
}

func vals(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v
}
