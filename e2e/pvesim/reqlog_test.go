package pvesim

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRequestLog(t *testing.T) {
	var buf syncBuffer
	s := newTestServer(t, Options{Log: &buf, Users: map[string]string{"root@pam": "topsecret"}})
	c := tokenClient(t, s)
	login(t, s, "root@pam", "topsecret")
	c.ok("GET", "/version", nil)
	c.taskOK("POST", "/nodes/pve/qemu", vals("vmid", "100", "cipassword", "hunter2", "name", "a"))
	c.ok("PUT", "/nodes/pve/qemu/100/config", vals("cipassword", "hunter3"))

	reqs := s.Requests()
	if len(reqs) < 5 {
		t.Fatalf("%d requests logged", len(reqs))
	}
	if reqs[0].Path != "/api2/json/access/ticket" || reqs[0].Params["password"] != "<redacted>" || reqs[0].Status != 200 {
		t.Errorf("ticket entry %+v", reqs[0])
	}
	if reqs[1].Method != "GET" || reqs[1].Endpoint != "GET /version" || reqs[1].User != "root@pam!pvesim" || !strings.HasPrefix(reqs[1].Client, "127.0.0.1:") {
		t.Errorf("version entry %+v", reqs[1])
	}
	create := reqs[2]
	if create.Endpoint != "POST /nodes/{node}/qemu" || create.Params["cipassword"] != "<redacted>" || create.Params["vmid"] != "100" ||
		create.Params["node"] != "pve" || !strings.HasPrefix(create.UPID, "UPID:pve:") {
		t.Errorf("create entry %+v", create)
	}
	out := buf.String()
	if !strings.Contains(out, `"password":"<redacted>"`) {
		t.Errorf("redaction marker missing:\n%s", out)
	}
	if strings.Contains(out, "hunter") || strings.Contains(out, "topsecret") || strings.Contains(out, s.TokenSecret()) {
		t.Errorf("secret in log:\n%s", out)
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	n := 0
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("not JSON: %s", sc.Text())
		}
		for _, k := range []string{"time", "method", "path", "status", "client"} {
			if _, ok := line[k]; !ok {
				t.Errorf("line without %s: %s", k, sc.Text())
			}
		}
		n++
	}
	if n != len(s.Requests()) {
		t.Errorf("%d JSON lines for %d requests", n, len(s.Requests()))
	}

	mut := s.MutatingRequests()
	if len(mut) != 2 || mut[0].Method != "POST" || mut[1].Method != "PUT" {
		t.Errorf("mutating %+v", mut)
	}
	if err := s.ValidateLog(); err != nil {
		t.Errorf("valid calls: %v", err)
	}

	// a "second run" that only reads makes no mutating call
	s.ResetRequests()
	c.ok("GET", "/nodes/pve/qemu/100/config", nil)
	c.ok("GET", "/cluster/resources", vals("type", "vm"))
	if m := s.MutatingRequests(); len(m) != 0 {
		t.Errorf("read-only run mutated: %+v", m)
	}

	// invalid calls are reported
	c.do("GET", "/nodes/pve/qemu", vals("bogus", "1"))
	c.do("GET", "/nodes/pve/snapshots", nil)
	err := s.ValidateLog()
	if err == nil {
		t.Fatal("ValidateLog must report invalid calls")
	}
	msg := err.Error()
	if !strings.Contains(msg, "bogus: property is not defined in schema") || !strings.Contains(msg, "GET /api2/json/nodes/pve/snapshots: no such API endpoint") {
		t.Errorf("ValidateLog: %v", err)
	}
}
