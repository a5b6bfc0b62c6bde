package k3sstandin_test

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/opencsp/installer/e2e/k3sstandin"
	"github.com/opencsp/installer/e2e/kubeenv"
	"github.com/opencsp/installer/internal/artifacts"
)

// TestReleaseServedLikeGitHub: the installer's artifact code resolves and
// verifies the stand-in release exactly as a K3s release, and refuses a
// corrupted file.
func TestReleaseServedLikeGitHub(t *testing.T) {
	if _, err := kubeenv.FindTools(""); err != nil {
		t.Skip("K3S STAND-IN TESTS SKIPPED: " + err.Error())
	}
	ctx := context.Background()
	const version = "v1.33.5+k3s1"
	rel, err := k3sstandin.Build(ctx, k3sstandin.BuildOptions{Version: version})
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(rel.Path(k3sstandin.BinaryName), "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "k3s version "+version+" ("+k3sstandin.Marker+")") {
		t.Fatalf("--version = %q, %v", out, err)
	}
	srv := k3sstandin.Serve(rel)
	defer srv.Close()
	r, err := artifacts.Resolve(version, artifacts.Mirror{Release: srv.Mirror()})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		corrupt string
		wantErr bool
	}{
		{"corrupt binary", k3sstandin.BinaryName, true},
		{"intact", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.corrupt != "" {
				srv.Corrupt(tt.corrupt, true)
				defer srv.Corrupt(tt.corrupt, false)
			}
			cache := &artifacts.Cache{Dir: t.TempDir()}
			files, err := cache.Fetch(ctx, r)
			var sumErr *artifacts.ChecksumError
			if tt.wantErr {
				if !errors.As(err, &sumErr) {
					t.Fatalf("err = %v, want a ChecksumError", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want, _ := srv.SHA256(k3sstandin.ImagesName)
			if files.Images.SHA256 != want || files.Script.Size == 0 {
				t.Errorf("fetched %+v", files)
			}
		})
	}
}
