package opsrepo

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/opencsp/installer/e2e/gitserver"
	"github.com/opencsp/installer/internal/opsrepo/gitrepo"
)

// TestCheckReachable lists a real git server (git http-backend): an empty
// repo and one with branches pass; a missing repo, a closed port and a
// wrong token fail naming opsRepo.url and the cause, without the token.
func TestCheckReachable(t *testing.T) {
	const token = "tok-check-5e1f"
	srv, err := gitserver.Start(gitserver.Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	if _, err := srv.NewRepo("ops", "main"); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/ops.git"
	ln.Close()
	ctx := context.Background()
	opts := func(url, tok string) RepoOptions {
		return RepoOptions{URL: url, Branch: "main", Auth: gitrepo.Auth{Token: tok}}
	}

	branches, err := CheckReachable(ctx, opts(srv.URL("ops"), token))
	if err != nil || len(branches) != 0 {
		t.Fatalf("empty repo: %v %v", branches, err)
	}
	if got := DescribeBranches(branches, "main"); !strings.Contains(got, "empty repository") {
		t.Errorf("describe empty: %q", got)
	}
	if _, err := srv.Commit(ctx, "ops", "other", "first", map[string][]byte{"a": []byte("a\n")}); err != nil {
		t.Fatal(err)
	}
	branches, err = CheckReachable(ctx, opts(srv.URL("ops"), token))
	if err != nil || strings.Join(branches, ",") != "other" {
		t.Fatalf("repo with branch other: %v %v", branches, err)
	}
	if got := DescribeBranches(branches, "main"); !strings.Contains(got, "no branch main yet (branches: other)") {
		t.Errorf("describe: %q", got)
	}

	for _, tc := range []struct {
		name, url, token string
		cause            error
		want             string
	}{
		{"missing repo", srv.URL("nope"), token, gitrepo.ErrNotFound, "the repository must exist"},
		{"closed port", closed, token, gitrepo.ErrUnreachable, "connection refused"},
		{"wrong token", srv.URL("ops"), "wrong-tok-91c3", gitrepo.ErrAuth, "check opsRepo.auth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CheckReachable(ctx, opts(tc.url, tc.token))
			if !errors.Is(err, tc.cause) {
				t.Fatalf("got %v, want %v", err, tc.cause)
			}
			msg := err.Error()
			for _, w := range []string{"opsRepo.url: ", tc.url, tc.want} {
				if !strings.Contains(msg, w) {
					t.Errorf("error lacks %q: %s", w, msg)
				}
			}
			if strings.Contains(msg, tc.token) {
				t.Errorf("error leaks the token: %s", msg)
			}
			t.Logf("%s: %v", tc.name, err)
		})
	}
}
