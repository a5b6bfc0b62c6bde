package pvesim

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestTokenAuth(t *testing.T) {
	s := newTestServer(t, Options{})
	tests := []struct {
		name   string
		header string
		status int
		reason string
	}{
		{"valid token", s.AuthHeader(), 200, "OK"},
		{"token with space separator", "PVEAPIToken " + s.TokenID() + "=" + s.TokenSecret(), 200, "OK"},
		{"wrong secret", "PVEAPIToken=" + s.TokenID() + "=00000000-0000-0000-0000-000000000000", 401, "invalid token value!"},
		{"unknown token", "PVEAPIToken=root@pam!other=" + s.TokenSecret(), 401, "no such token 'other' for user 'root@pam'"},
		{"unknown user", "PVEAPIToken=nobody@pve!pvesim=" + s.TokenSecret(), 401, "no such user ('nobody@pve')"},
		{"no authorization", "", 401, "No ticket"},
		{"bearer scheme", "Bearer abc", 401, "No ticket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &client{t: t, s: s, hc: s.Client(), header: http.Header{}}
			if tt.header != "" {
				c.header.Set("Authorization", tt.header)
			}
			r := c.do("GET", "/version", nil)
			if r.Status != tt.status || r.Reason != tt.reason {
				t.Fatalf("got %d %q, want %d %q (%s)", r.Status, r.Reason, tt.status, tt.reason, r.RawBody)
			}
			if tt.status != 200 {
				if r.Body["data"] != nil {
					t.Errorf("data = %v, want null", r.Body["data"])
				}
				if _, ok := r.Body["data"]; !ok {
					t.Errorf("body %s lacks data", r.RawBody)
				}
				if r.Header.Get("Content-Type") != "application/json;charset=UTF-8" {
					t.Errorf("content type %q", r.Header.Get("Content-Type"))
				}
			}
		})
	}
}

func login(t *testing.T, s *Server, user, password string) resp {
	c := &client{t: t, s: s, hc: s.Client(), header: http.Header{}}
	return c.do("POST", "/access/ticket", url.Values{"username": {user}, "password": {password}})
}

func TestTicketAuth(t *testing.T) {
	s := newTestServer(t, Options{Users: map[string]string{"root@pam": "secret", "ops@pve": "pw"}})
	r := login(t, s, "root@pam", "secret")
	if r.Status != 200 {
		t.Fatalf("login: %d %s", r.Status, r.RawBody)
	}
	d := r.dataMap()
	ticket, _ := d["ticket"].(string)
	csrf, _ := d["CSRFPreventionToken"].(string)
	if !strings.HasPrefix(ticket, "PVE:root@pam:") || csrf == "" || d["username"] != "root@pam" {
		t.Fatalf("ticket answer %v", d)
	}

	cookie := &client{t: t, s: s, hc: s.Client(), header: http.Header{}}
	cookie.header.Set("Cookie", "PVEAuthCookie="+url.QueryEscape(ticket))
	if r := cookie.do("GET", "/nodes", nil); r.Status != 200 {
		t.Fatalf("GET with ticket: %d %s", r.Status, r.Reason)
	}
	// writes need the CSRF token
	r = cookie.do("POST", "/nodes/pve/qemu", vals("vmid", "100"))
	if r.Status != 401 || r.Reason != "Permission denied - invalid csrf token" {
		t.Fatalf("write without CSRF: %d %q", r.Status, r.Reason)
	}
	cookie.header.Set("CSRFPreventionToken", "0000:bogus")
	if r := cookie.do("POST", "/nodes/pve/qemu", vals("vmid", "100")); r.Status != 401 {
		t.Fatalf("write with bad CSRF: %d", r.Status)
	}
	cookie.header.Set("CSRFPreventionToken", csrf)
	if r := cookie.do("POST", "/nodes/pve/qemu", vals("vmid", "100")); r.Status != 200 {
		t.Fatalf("write with CSRF: %d %s", r.Status, r.RawBody)
	}
	// the task is owned by the ticket user
	if tasks := s.Tasks(); len(tasks) == 0 || tasks[len(tasks)-1].User != "root@pam" {
		t.Fatalf("task user: %+v", tasks)
	}
	// a ticket in the Authorization header works as well
	hdr := &client{t: t, s: s, hc: s.Client(), header: http.Header{}}
	hdr.header.Set("Authorization", "PVEAuthCookie="+ticket)
	if r := hdr.do("GET", "/version", nil); r.Status != 200 {
		t.Fatalf("ticket in Authorization header: %d", r.Status)
	}
	// renew with the ticket as password, other user with realm parameter
	if r := login(t, s, "root@pam", ticket); r.Status != 200 {
		t.Fatalf("ticket renewal: %d", r.Status)
	}
	c := &client{t: t, s: s, hc: s.Client(), header: http.Header{}}
	if r := c.do("POST", "/access/ticket", vals("username", "ops", "realm", "pve", "password", "pw")); r.Status != 200 || r.dataMap()["username"] != "ops@pve" {
		t.Fatalf("realm login: %d %v", r.Status, r.data())
	}
}

func TestTicketFailures(t *testing.T) {
	s := newTestServer(t, Options{})
	for _, tc := range []struct{ user, pw string }{{"root@pam", "wrong"}, {"nobody@pam", "pvesim"}, {"root", "pvesim"}} {
		r := login(t, s, tc.user, tc.pw)
		if r.Status != 401 || r.Reason != "authentication failure" || r.Body["data"] != nil {
			t.Errorf("login %s/%s: %d %q %s", tc.user, tc.pw, r.Status, r.Reason, r.RawBody)
		}
	}
	c := &client{t: t, s: s, hc: s.Client(), header: http.Header{}}
	c.header.Set("Cookie", "PVEAuthCookie=PVE:root@pam:66000000::forged")
	if r := c.do("GET", "/version", nil); r.Status != 401 || r.Reason != "permission denied - invalid PVE ticket" {
		t.Errorf("forged ticket: %d %q", r.Status, r.Reason)
	}
	// the ticket call does not allow API tokens
	tok := tokenClient(t, s)
	if r := tok.do("POST", "/access/ticket", vals("username", "root@pam", "password", "pvesim")); r.Status != 403 ||
		!strings.HasPrefix(r.Reason, "Permission check failed (URI '/access/ticket' not available with API token") {
		t.Errorf("ticket with token: %d %q", r.Status, r.Reason)
	}
	// missing parameters are validated like any call
	if r := c.do("POST", "/access/ticket", vals("username", "root@pam")); r.Status != 400 ||
		r.Body["errors"].(map[string]any)["password"] != "property is missing and it is not optional" {
		t.Errorf("ticket without password: %d %s", r.Status, r.RawBody)
	}
}

func TestCertificate(t *testing.T) {
	s := newTestServer(t, Options{})
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.CertPEM()) {
		t.Fatal("CertPEM is not a PEM certificate")
	}
	var peer *x509.Certificate
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool,
		VerifyConnection: func(cs tls.ConnectionState) error {
			peer = cs.PeerCertificates[0]
			return nil
		},
	}}}
	for _, host := range []string{"127.0.0.1", "localhost"} {
		u := strings.Replace(s.APIURL(), "127.0.0.1", host, 1) + "/version"
		req, _ := http.NewRequest("GET", u, nil)
		req.Header.Set("Authorization", s.AuthHeader())
		res, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s: CA file verification failed: %v", host, err)
		}
		res.Body.Close()
	}
	sum := sha256.Sum256(peer.Raw)
	var parts []string
	for _, b := range sum {
		parts = append(parts, fmt.Sprintf("%02X", b))
	}
	if want := strings.Join(parts, ":"); s.Fingerprint() != want {
		t.Fatalf("Fingerprint() = %s, want %s", s.Fingerprint(), want)
	}
	if peer.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("key algorithm %v, want ECDSA", peer.PublicKeyAlgorithm)
	}
	var ips []string
	for _, ip := range peer.IPAddresses {
		ips = append(ips, ip.String())
	}
	if strings.Join(ips, ",") != "127.0.0.1,::1" {
		t.Errorf("IP SANs %v", ips)
	}
}

func TestListenLoopbackOnly(t *testing.T) {
	if _, err := New(Options{Listen: "0.0.0.0:0"}); err == nil {
		t.Fatal("listening on a non-loopback address must be refused")
	}
}
