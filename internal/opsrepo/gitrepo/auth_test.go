package gitrepo

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"strings"
	"testing"

	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"golang.org/x/crypto/ssh"
)

func hostKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestHostKeyCallback(t *testing.T) {
	a, b := hostKey(t), hostKey(t)
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2222}
	const host = "127.0.0.1:2222"

	tofu := &hostKeys{}
	if err := hostKeyCallback("", "", tofu)(host, addr, a); err != nil {
		t.Fatal(err)
	}
	line := tofu.seen()
	if !strings.HasPrefix(line, "[127.0.0.1]:2222 ssh-ed25519 ") {
		t.Fatalf("recorded %q", line)
	}
	cases := []struct {
		name, fp, known string
		key             ssh.PublicKey
		ok              bool
	}{
		{"known same", "", line, a, true},
		{"known other", "", line, b, false},
		{"pinned same", ssh.FingerprintSHA256(a), "", a, true},
		{"pinned other", ssh.FingerprintSHA256(a), "", b, false},
		{"pin wins over record", ssh.FingerprintSHA256(b), line, b, true},
	}
	for _, tc := range cases {
		err := hostKeyCallback(tc.fp, tc.known, &hostKeys{})(host, addr, tc.key)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrHostKey)) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func TestAuthMethod(t *testing.T) {
	m, _, err := Auth{Token: "tok"}.method("https://git.example.net/ops.git")
	if ba, ok := m.(*githttp.BasicAuth); err != nil || !ok || ba.Username != "git" || ba.Password != "tok" {
		t.Errorf("https token: %#v %v", m, err)
	}
	if m, _, err := (Auth{}).method("file:///srv/ops.git"); err != nil || m != nil {
		t.Errorf("file: %v %v", m, err)
	}
	for name, tc := range map[string]struct {
		a   Auth
		url string
	}{
		"token on ssh":    {Auth{Token: "s3cr3t-t0k", SSHKeyFile: "k"}, "ssh://git@h/ops.git"},
		"key on https":    {Auth{SSHKeyFile: "k"}, "https://h/ops.git"},
		"ssh without key": {Auth{}, "git@h:ops.git"},
		"missing key":     {Auth{SSHKeyFile: "/nonexistent/key"}, "ssh://h/ops.git"},
	} {
		if _, _, err := tc.a.method(tc.url); err == nil || strings.Contains(err.Error(), "s3cr3t-t0k") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestSafeURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:secret@h/ops.git": "https://user@h/ops.git",
		"https://h/ops.git":             "https://h/ops.git",
		"git@h:ops.git":                 "git@h:ops.git",
	} {
		if got := SafeURL(in); got != want {
			t.Errorf("SafeURL(%s) = %s", in, got)
		}
	}
}
