package gitserver

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func start(t *testing.T, opts Options) *Server {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	s, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := outputGit(context.Background(), dir, nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

func TestCloneAndPush(t *testing.T) {
	s := start(t, Options{})
	if _, err := s.NewRepo("ops/cluster", "main"); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.URL("ops/cluster"), "http://127.0.0.1:") || !strings.HasSuffix(s.URL("ops/cluster"), "/ops/cluster.git") {
		t.Fatalf("URL = %s", s.URL("ops/cluster"))
	}

	// Push a first commit from a fresh clone of the empty repository with the git CLI.
	a := t.TempDir()
	git(t, "", "clone", "--quiet", s.URL("ops/cluster"), a)
	os.WriteFile(filepath.Join(a, "README"), []byte("hello\n"), 0o644)
	git(t, a, "checkout", "--quiet", "-b", "main")
	git(t, a, "add", "README")
	git(t, a, "commit", "--quiet", "-m", "first")
	git(t, a, "push", "--quiet", "origin", "main")

	// A second clone sees it, HEAD points at main, and Commit adds to it over HTTP.
	sha, err := s.Commit(context.Background(), "ops/cluster", "main", "second", map[string][]byte{
		"deploy/cm.yaml": []byte("kind: ConfigMap\n"), "README": nil,
	})
	if err != nil {
		t.Fatal(err)
	}
	b := t.TempDir()
	git(t, "", "clone", "--quiet", s.URL("ops/cluster"), b)
	if got := git(t, b, "rev-parse", "HEAD"); got != sha {
		t.Fatalf("clone HEAD = %s, pushed %s", got, sha)
	}
	if got := git(t, b, "symbolic-ref", "HEAD"); got != "refs/heads/main" {
		t.Fatalf("HEAD = %s", got)
	}
	if _, err := os.Stat(filepath.Join(b, "README")); !os.IsNotExist(err) {
		t.Fatalf("README not deleted: %v", err)
	}
	if data, _ := os.ReadFile(filepath.Join(b, "deploy", "cm.yaml")); string(data) != "kind: ConfigMap\n" {
		t.Fatalf("deploy/cm.yaml = %q", data)
	}
	if got := git(t, b, "log", "--format=%s"); got != "second\nfirst" {
		t.Fatalf("log = %q", got)
	}
}

func TestCommitOtherBranch(t *testing.T) {
	s := start(t, Options{})
	s.NewRepo("r", "main")
	ctx := context.Background()
	if _, err := s.Commit(ctx, "r", "main", "m1", map[string][]byte{"a": []byte("1")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit(ctx, "r", "dev", "d1", map[string][]byte{"b": []byte("2")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit(ctx, "r", "dev", "d2", map[string][]byte{"c": []byte("3")}); err != nil {
		t.Fatal(err)
	}
	refs := git(t, "", "ls-remote", s.URL("r"))
	if !strings.Contains(refs, "refs/heads/main") || !strings.Contains(refs, "refs/heads/dev") {
		t.Fatalf("ls-remote:\n%s", refs)
	}
	d := t.TempDir()
	git(t, "", "clone", "--quiet", "--branch", "dev", s.URL("r"), d)
	if got := git(t, d, "log", "--format=%s"); got != "d2\nd1\nm1" {
		t.Fatalf("dev log = %q", got)
	}
}

func TestAuth(t *testing.T) {
	s := start(t, Options{Token: "s3cret-token"})
	s.NewRepo("private", "main")

	// Raw HTTP: no credentials and a wrong token are refused with 401, the token is accepted.
	get := func(user, pass string) int {
		req, _ := http.NewRequest("GET", s.URL("private")+"/info/refs?service=git-upload-pack", nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("", ""); code != http.StatusUnauthorized {
		t.Errorf("no credentials: %d, want 401", code)
	}
	if code := get("git", "wrong"); code != http.StatusUnauthorized {
		t.Errorf("wrong token: %d, want 401", code)
	}
	if code := get("git", "s3cret-token"); code != http.StatusOK {
		t.Errorf("right token: %d, want 200", code)
	}

	// The git CLI: pushing with a wrong token fails with 401, with the right one it works.
	w := t.TempDir()
	git(t, w, "init", "--quiet", "-b", "main")
	os.WriteFile(filepath.Join(w, "f"), []byte("x"), 0o644)
	git(t, w, "add", "f")
	git(t, w, "commit", "--quiet", "-m", "x")
	bad := strings.Replace(s.AuthURL("private"), "s3cret-token", "wrong", 1)
	cmd := exec.Command("git", "push", bad, "main")
	cmd.Dir, cmd.Env = w, gitEnv()
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "401") && !strings.Contains(string(out), "Authentication failed") {
		t.Fatalf("push with wrong token: err=%v\n%s", err, out)
	}
	git(t, w, "push", "--quiet", s.AuthURL("private"), "main")
	if _, err := s.Commit(context.Background(), "private", "main", "y", map[string][]byte{"g": []byte("y")}); err != nil {
		t.Fatal(err)
	}
	c := t.TempDir()
	git(t, "", "clone", "--quiet", s.AuthURL("private"), c)
	if got := git(t, c, "log", "--format=%s"); got != "y\nx" {
		t.Fatalf("log = %q", got)
	}
	if _, denied := s.Stats(); denied < 3 {
		t.Fatalf("denied = %d, want >= 3", denied)
	}
	// Errors never show the token.
	if _, err := s.Commit(context.Background(), "missing", "main", "z", nil); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("commit to a missing repo: %v", err)
	}
}

func TestUserRestriction(t *testing.T) {
	s := start(t, Options{Token: "tok", User: "flux"})
	s.NewRepo("r", "main")
	req, _ := http.NewRequest("GET", s.URL("r")+"/info/refs?service=git-upload-pack", nil)
	req.SetBasicAuth("someone", "tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("other user: %d", resp.StatusCode)
	}
	if u, tok := s.Credentials(); u != "flux" || tok != "tok" {
		t.Fatalf("Credentials = %s %s", u, tok)
	}
	if _, err := s.Commit(context.Background(), "r", "main", "m", map[string][]byte{"a": []byte("1")}); err != nil {
		t.Fatal(err)
	}
}

func TestRepoNames(t *testing.T) {
	s := start(t, Options{})
	for _, bad := range []string{"", "../x", "a/../b", ".hidden", "a//b"} {
		if _, err := s.NewRepo(bad, "main"); err == nil {
			t.Errorf("NewRepo(%q) accepted", bad)
		}
	}
	if _, err := s.NewRepo("x.git", "main"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.NewRepo("x", "main"); err == nil {
		t.Fatal("duplicate accepted")
	}
	if s.URL("x.git") != s.URL("x") {
		t.Fatal("URL differs with .git suffix")
	}
}

func TestCloseRemovesTempDir(t *testing.T) {
	s, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := s.Dir()
	s.NewRepo("r", "main")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("dir left: %v", err)
	}
	c := http.Client{Timeout: time.Second}
	if _, err := c.Get(s.BaseURL()); err == nil {
		t.Fatal("server still answers")
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"clone http://git:tok@127.0.0.1:1/r.git x": "clone http://***@127.0.0.1:1/r.git x",
		"no url":                      "no url",
		"http://127.0.0.1/a b":        "http://127.0.0.1/a b",
		"a https://u:p@h/x and c://y": "a https://***@h/x and c://y",
	} {
		if got := redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestRejectPushes: armed rejections decline exactly the next n pushes through the real
// receive-pack hook (the client sees the message and "pre-receive hook declined", the ref does
// not move); then pushes go through again.
func TestRejectPushes(t *testing.T) {
	s := start(t, Options{Token: "s3cret"})
	if _, err := s.NewRepo("ops", "main"); err != nil {
		t.Fatal(err)
	}
	first, err := s.Commit(context.Background(), "ops", "main", "first", map[string][]byte{"a": []byte("1\n")})
	if err != nil {
		t.Fatal(err)
	}
	const msg = "GL-HOOK-ERR: branch main is protected: pushes are frozen"
	if err := s.RejectPushes("ops", 2, msg); err != nil {
		t.Fatal(err)
	}
	for i, left := range []int{1, 0} {
		_, err := s.Commit(context.Background(), "ops", "main", fmt.Sprintf("try %d", i), map[string][]byte{"a": []byte(fmt.Sprint(i))})
		if err == nil {
			t.Fatalf("push %d went through", i)
		}
		for _, want := range []string{"remote: " + msg, "pre-receive hook declined"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("push %d: error lacks %q: %v", i, want, err)
			}
		}
		if n, err := s.PendingRejections("ops"); err != nil || n != left {
			t.Errorf("after push %d: %d rejections pending (%v), want %d", i, n, err, left)
		}
		if head := git(t, filepath.Join(s.Dir(), "ops.git"), "rev-parse", "refs/heads/main"); head != first {
			t.Errorf("push %d moved main %s -> %s", i, first, head)
		}
	}
	if _, err := s.Commit(context.Background(), "ops", "main", "after", map[string][]byte{"a": []byte("2\n")}); err != nil {
		t.Fatalf("push after the rejections: %v", err)
	}
	// Disarming with n <= 0 before they are used up.
	if err := s.RejectPushes("ops", 5, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.RejectPushes("ops", 0, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit(context.Background(), "ops", "main", "disarmed", map[string][]byte{"a": []byte("3\n")}); err != nil {
		t.Fatalf("push after disarming: %v", err)
	}
	if err := s.RejectPushes("nope", 1, "x"); err == nil || !strings.Contains(err.Error(), "no repository nope") {
		t.Errorf("RejectPushes of a missing repository: %v", err)
	}
}
