package opsrepo

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/opencsp/installer/internal/opsrepo/gitrepo"
	"github.com/opencsp/installer/internal/remote/sshdtest"
)

// TestSyncSSH pushes over SSH to a real OpenSSH server (root only): trust
// on first use returns the host key, the recorded key and a pinned
// fingerprint are enforced.
func TestSyncSSH(t *testing.T) {
	sshdtest.Require(t)
	srv := sshdtest.Start(t, sshdtest.Options{})
	key := sshdtest.NewKey(t)
	srv.Authorize(t, "root", key.Public())
	bare, _ := bareRepo(t)
	url := "ssh://root@" + srv.Addr() + bare
	f := newFixture(t)
	auth := gitrepo.Auth{SSHKeyFile: key.Path}

	res := mustSync(t, f, url, func(o *RepoOptions) { o.Auth = auth })
	if !res.Pushed || commits(t, bare) != 1 {
		t.Fatalf("ssh sync: %+v", res)
	}
	if res.HostKey == "" {
		t.Fatal("no host key recorded")
	}
	fields := strings.Fields(res.HostKey)
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(strings.Join(fields[1:], " ")))
	if err != nil {
		t.Fatalf("host key line %q: %v", res.HostKey, err)
	}
	fp := ssh.FingerprintSHA256(pub)
	if fp != srv.HostKeys.Fingerprint(pub.Type()) {
		t.Fatalf("recorded %s, server has %v", fp, srv.HostKeys.Keys)
	}

	// The recorded key and the pinned fingerprint are accepted.
	for name, a := range map[string]gitrepo.Auth{
		"known":  {SSHKeyFile: key.Path, KnownHostKey: res.HostKey},
		"pinned": {SSHKeyFile: key.Path, HostKeyFingerprint: fp},
	} {
		if _, err := f.sync(t, url, func(o *RepoOptions) { o.Auth = a }); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Another key is refused before anything is sent.
	other := sshdtest.NewHostKeys(t)
	var otherKey ssh.PublicKey
	for _, k := range other.Keys {
		otherKey = k
	}
	otherLine := fields[0] + " " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(otherKey)))
	for name, a := range map[string]gitrepo.Auth{
		"known":  {SSHKeyFile: key.Path, KnownHostKey: otherLine},
		"pinned": {SSHKeyFile: key.Path, HostKeyFingerprint: ssh.FingerprintSHA256(otherKey)},
	} {
		_, err := f.sync(t, url, func(o *RepoOptions) { o.Auth = a })
		if !errors.Is(err, gitrepo.ErrHostKey) {
			t.Errorf("%s mismatch: %v", name, err)
		}
	}
	// A key the server does not know fails as authentication.
	stranger := sshdtest.NewKey(t)
	if _, err := f.sync(t, url, func(o *RepoOptions) { o.Auth = gitrepo.Auth{SSHKeyFile: stranger.Path} }); !errors.Is(err, gitrepo.ErrAuth) {
		t.Errorf("unknown client key: %v", err)
	}
	if commits(t, bare) != 1 {
		t.Error("refused syncs changed the remote")
	}
}
