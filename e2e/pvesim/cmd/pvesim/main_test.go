package main

import (
	"bufio"
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseFault(t *testing.T) {
	f, err := parseFault("* ^/nodes$ 503 2 0.5")
	if err != nil || f.Method != "" || f.Path != "^/nodes$" || f.Status != 503 || f.Count != 2 || f.Probability != 0.5 {
		t.Fatalf("%+v %v", f, err)
	}
	for _, bad := range []string{"GET", "GET /x abc", "GET /x 500 x"} {
		if _, err := parseFault(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if n, err := parseBytes("2G"); err != nil || n != 2<<30 {
		t.Errorf("parseBytes: %d %v", n, err)
	}
}

func TestRun(t *testing.T) {
	pr, pw := io.Pipe()
	stop := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() {
		done <- run([]string{"-listen", "127.0.0.1:0", "-nodes", "2", "-fault", "GET ^/nodes$ 503 1",
			"-fail-task", "qmstart:1:boom", "-agent-address", "100=10.0.0.9"}, pw, stop)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	var url, token string
	for (url == "" || token == "") && sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "url: "); ok {
			url = v
		}
		if v, ok := strings.CutPrefix(line, "token: "); ok {
			token = v
		}
		if strings.HasPrefix(line, "fingerprint: ") && len(line) != len("fingerprint: ")+95 {
			t.Errorf("fingerprint line %q", line)
		}
	}
	go io.Copy(io.Discard, pr)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	get := func(path string) int {
		req, _ := http.NewRequest("GET", url+"/api2/json"+path, nil)
		req.Header.Set("Authorization", "PVEAPIToken="+token)
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if st := get("/nodes"); st != 503 {
		t.Errorf("injected fault: %d", st)
	}
	if st := get("/nodes"); st != 200 {
		t.Errorf("after fault: %d", st)
	}
	stop <- os.Interrupt
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
