package flux

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/opencsp/installer/internal/opsrepo"
	"github.com/opencsp/installer/internal/opsrepo/gitrepo"
	"github.com/opencsp/installer/internal/testutil"
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

func TestSourceSecretSSH(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "id_ed25519")
	pubLine := testutil.WriteKeyPair(t, keyFile, "opencsp-test")
	priv, _ := os.ReadFile(keyFile)
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	hostSigner, _ := ssh.NewSignerFromKey(hostPriv)
	hostKey := hostSigner.PublicKey()
	// As recorded by opsrepo.Sync on the first contact (gitrepo's host key callback).
	recorded := knownhosts.Line([]string{knownhosts.Normalize("git.lab:2222")}, hostKey)
	keyB64 := base64.StdEncoding.EncodeToString(hostKey.Marshal())

	for _, tc := range []struct{ url, wantHost string }{
		{"ssh://git@git.lab:2222/ops.git", "[git.lab]:2222"},
		{"ssh://git@git.lab/ops.git", "git.lab"},
		{"ssh://git@git.lab:22/ops.git", "git.lab"},
		{"git@git.lab:ops.git", "git.lab"},
		{"ssh://git@10.0.0.5:2222/ops.git", "[10.0.0.5]:2222"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			repo := opsrepo.RepoOptions{URL: "ssh://git@git.lab:2222/ops.git",
				Auth: gitrepo.Auth{SSHKeyFile: keyFile, KnownHostKey: recorded}}
			data, name, err := SourceSecret(repo, tc.url)
			if err != nil || name != "flux-system" {
				t.Fatalf("SourceSecret = %q, %v", name, err)
			}
			objs, err := kube.Decode(data)
			if err != nil || len(objs) != 1 {
				t.Fatalf("decode: %v", err)
			}
			u := objs[0]
			if u.GetKind() != "Secret" || u.GetNamespace() != "flux-system" || u.GetName() != "flux-system" {
				t.Fatalf("object %s %s/%s", u.GetKind(), u.GetNamespace(), u.GetName())
			}
			d := map[string]string{}
			for k, v := range u.Object["data"].(map[string]any) {
				b, err := base64.StdEncoding.DecodeString(v.(string))
				if err != nil {
					t.Fatalf("%s: %v", k, err)
				}
				d[k] = string(b)
			}
			if len(d) != 3 {
				t.Errorf("keys %v, want identity, identity.pub, known_hosts", d)
			}
			if d["identity"] != string(priv) {
				t.Errorf("identity is not the private key file")
			}
			if f := strings.Fields(d["identity.pub"]); len(f) < 2 || f[0]+" "+f[1] != strings.Join(strings.Fields(pubLine)[:2], " ") {
				t.Errorf("identity.pub = %q, want the key of %q", d["identity.pub"], pubLine)
			}
			want := tc.wantHost + " ssh-ed25519 " + keyB64 + "\n"
			if d["known_hosts"] != want {
				t.Errorf("known_hosts = %q, want %q", d["known_hosts"], want)
			}
			// The line parses and matches the key for that host.
			_, hosts, k, _, _, err := ssh.ParseKnownHosts([]byte(d["known_hosts"]))
			if err != nil || len(hosts) != 1 || hosts[0] != tc.wantHost || string(k.Marshal()) != string(hostKey.Marshal()) {
				t.Errorf("known_hosts does not parse to %s + the host key: %v %v", tc.wantHost, hosts, err)
			}
		})
	}

	// Errors name the problem and never hold key material.
	secretBits := []string{string(priv), strings.TrimSpace(strings.Split(string(priv), "\n")[1])}
	for name, repo := range map[string]opsrepo.RepoOptions{
		"no known host": {Auth: gitrepo.Auth{SSHKeyFile: keyFile}},
		"bad host line": {Auth: gitrepo.Auth{SSHKeyFile: keyFile, KnownHostKey: "garbage"}},
		"missing key":   {Auth: gitrepo.Auth{SSHKeyFile: filepath.Join(dir, "nope"), KnownHostKey: recorded}},
	} {
		_, _, err := SourceSecret(repo, "ssh://git@git.lab:2222/ops.git")
		if err == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		for _, s := range secretBits {
			if strings.Contains(err.Error(), s) {
				t.Errorf("%s: error holds key material: %v", name, err)
			}
		}
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END OPENSSH PRIVATE KEY-----\n"), 0o600)
	_, _, err := SourceSecret(opsrepo.RepoOptions{Auth: gitrepo.Auth{SSHKeyFile: bad, KnownHostKey: recorded}}, "ssh://git@git.lab/ops.git")
	if err == nil || strings.Contains(err.Error(), "c2VjcmV0LWtleS1ieXRlcw") {
		t.Errorf("unparsable key: %v", err)
	}
}

func TestSourceSecretToken(t *testing.T) {
	data, _, err := SourceSecret(opsrepo.RepoOptions{Auth: gitrepo.Auth{Token: "tok-123", Username: "ci"}}, "https://git.lab/ops.git")
	if err != nil {
		t.Fatal(err)
	}
	objs, _ := kube.Decode(data)
	d := objs[0].Object["data"].(map[string]any)
	for k, want := range map[string]string{"username": "ci", "password": "tok-123"} {
		if got, _ := base64.StdEncoding.DecodeString(d[k].(string)); string(got) != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if len(d) != 2 {
		t.Errorf("keys %v", d)
	}
	data, _, _ = SourceSecret(opsrepo.RepoOptions{Auth: gitrepo.Auth{Token: "tok-123"}}, "https://git.lab/ops.git")
	objs, _ = kube.Decode(data)
	if got, _ := base64.StdEncoding.DecodeString(objs[0].Object["data"].(map[string]any)["username"].(string)); string(got) != "git" {
		t.Errorf("default username = %q, want git", got)
	}
}
