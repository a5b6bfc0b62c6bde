package flux

import (
	"strings"
	"testing"

	"github.com/opencsp/installer/internal/opsrepo"
	"github.com/opencsp/installer/internal/opsrepo/gitrepo"
	"github.com/opencsp/installer/stages/flux/kube"
)

func TestRenderSync(t *testing.T) {
	out, err := RenderSync(SyncOptions{URL: "https://git.lab/ops.git", Branch: "main", Path: "clusters/lab", SecretRef: "flux-system"})
	if err != nil {
		t.Fatal(err)
	}
	objs, err := kube.Decode(out)
	if err != nil || len(objs) != 2 {
		t.Fatalf("decode: %v (%d objects)", err, len(objs))
	}
	for _, want := range []string{"path: ./clusters/lab", "url: https://git.lab/ops.git", "name: sops-age", "provider: sops", "branch: main"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("gotk-sync.yaml lacks %q:\n%s", want, out)
		}
	}
	again, _ := RenderSync(SyncOptions{URL: "https://git.lab/ops.git", Branch: "main", Path: "clusters/lab", SecretRef: "flux-system"})
	if string(again) != string(out) {
		t.Error("RenderSync is not deterministic")
	}
}

func TestSourceSecret(t *testing.T) {
	for _, tc := range []struct {
		name     string
		auth     gitrepo.Auth
		wantName string
		keys     []string
	}{
		{"none", gitrepo.Auth{}, "", nil},
		{"token", gitrepo.Auth{Token: "s3cret"}, "flux-system", []string{"username", "password"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, name, err := SourceSecret(opsrepo.RepoOptions{Auth: tc.auth}, "https://git.lab/ops.git")
			if err != nil || name != tc.wantName {
				t.Fatalf("SourceSecret = %q, %v", name, err)
			}
			if tc.keys == nil {
				if data != nil {
					t.Fatal("secret for an unauthenticated repo")
				}
				return
			}
			objs, err := kube.Decode(data)
			if err != nil {
				t.Fatal(err)
			}
			d := objs[0].Object["data"].(map[string]any)
			for _, k := range tc.keys {
				if d[k] == nil {
					t.Errorf("no key %s", k)
				}
			}
		})
	}
}
