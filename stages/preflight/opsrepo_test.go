package preflight

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencsp/installer/e2e/gitserver"
	"github.com/opencsp/installer/internal/infra"
	"github.com/opencsp/installer/internal/state"
	"github.com/opencsp/installer/stages"
)

// TestOpsRepoCheck runs the stage (no provider) against a real git server:
// with the check on, a missing repo or a closed port fails preflight naming
// opsRepo.url and the cause; an empty repo passes. With the check off
// (install --only) nothing is listed, so a closed port passes.
func TestOpsRepoCheck(t *testing.T) {
	srv, err := gitserver.Start(gitserver.Options{Token: "git-token-value"})
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

	for _, tc := range []struct {
		name  string
		url   string
		check bool
		want  string // substring of the problem; "" = passes
	}{
		{"empty repo", srv.URL("ops"), true, ""},
		{"missing repo", srv.URL("absent"), true, "ops repo: opsRepo.url: list branches of " + srv.URL("absent") + ": repository not found"},
		{"closed port", closed, true, "git server unreachable (check opsRepo.url's host and port"},
		{"closed port, check off", closed, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _ := loadConfig(t)
			cfg.OpsRepo.URL = tc.url
			store, err := state.Open(context.Background(), filepath.Join(t.TempDir(), "state"))
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			r := &stages.Runner{Stages: []stages.Stage{NewWith(nil, Options{OpsRepo: tc.check})}, Store: store, Config: cfg}
			err = r.Run(context.Background(), stages.Options{})
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				f, _ := store.Load()
				var out Outputs
				json.Unmarshal(f.Stages[Name].Outputs, &out)
				listed := strings.Contains(strings.Join(out.Checks, "\n"), "ops repo "+tc.url+" reachable")
				if listed != tc.check {
					t.Errorf("checks %q: ops repo listed %v, want %v", out.Checks, listed, tc.check)
				}
				return
			}
			var ps infra.Problems
			if !errors.As(err, &ps) || len(ps) != 1 || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want one problem with %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "git-token-value") {
				t.Errorf("problem leaks the token: %v", err)
			}
		})
	}
}
