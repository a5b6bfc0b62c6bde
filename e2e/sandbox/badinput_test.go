package sandbox_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/opencsp/installer/e2e/sandbox"
	"github.com/opencsp/installer/internal/remote"
)

// TestBadInput runs bad inputs through the whole CLI against a fresh sandbox, each with its own
// state dir: an ops repo that cannot be reached (a closed port, a repo the git server does not
// have) fails preflight (exit 1: a finding about a live system, like a rejected PVE token),
// naming opsRepo.url and the cause; an SSH key file that is missing or not a private key is
// refused by the config check (exit 2, naming managementVM.ssh.privateKeyFile) before the state
// dir exists. Nothing is created: no mutating PVE call, no VM or template, no commit. The
// refused-key case (a valid key the VM does not accept) needs a finished install and runs at
// the end of TestCrashCampaign (badRefusedKey).
func TestBadInput(t *testing.T) {
	requireSandbox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := buildInstaller(t)
	s := crashSandbox(t, ctx, filepath.Join(t.TempDir(), "sandbox"))
	t.Cleanup(func() { s.Close(context.Background()) })

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + ln.Addr().String() + "/ops.git"
	ln.Close()
	// A public key where the private key belongs: a common slip.
	pub, _ := os.ReadFile(filepath.Join(s.Dir, sandbox.KeyFile+".pub"))
	os.WriteFile(filepath.Join(s.Dir, "pub-as-key"), pub, 0o600)

	cfg, err := os.ReadFile(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	opsURL := s.Git.URL("ops")
	for _, tc := range []struct {
		name     string
		from, to string // config edit
		code     int
		wants    []string
	}{
		{name: "ops repo on a closed port", from: opsURL, to: closedURL, code: 1,
			wants: []string{"stage preflight failed", "ops repo: opsRepo.url: ", closedURL, "git server unreachable", "connection refused",
				"Resume with: opencsp install -c bad-ops-repo-on-a-closed-port.yaml"}},
		{name: "ops repo missing", from: opsURL, to: s.Git.URL("absent"), code: 1,
			wants: []string{"stage preflight failed", "ops repo: opsRepo.url: ", s.Git.URL("absent"), "repository not found",
				"the repository must exist on the server"}},
		{name: "ssh key file missing", from: "privateKeyFile: ./" + sandbox.KeyFile, to: "privateKeyFile: ./no-such-key", code: 2,
			wants: []string{"managementVM.ssh.privateKeyFile", "no-such-key", "cannot read"}},
		{name: "ssh key file not a private key", from: "privateKeyFile: ./" + sandbox.KeyFile, to: "privateKeyFile: ./pub-as-key", code: 2,
			wants: []string{"managementVM.ssh.privateKeyFile", "pub-as-key is not an SSH private key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			edited := strings.Replace(string(cfg), tc.from, tc.to, 1)
			if edited == string(cfg) {
				t.Fatalf("config has no %q", tc.from)
			}
			slug := strings.ReplaceAll(tc.name, " ", "-")
			file := "bad-" + slug + ".yaml"
			if err := os.WriteFile(filepath.Join(s.Dir, file), []byte(edited), 0o644); err != nil {
				t.Fatal(err)
			}
			stateDir := "state-" + slug
			before, vms, refs := len(s.PVE.MutatingRequests()), s.PVE.VMIDs(), gitRefs(t, s)
			r := run(t, ctx, bin, s.Dir, s.Env(), "install", "-c", file, "--state-dir", stateDir)
			out := r.stdout + r.stderr
			t.Logf("output:\n%s", out)
			if r.code != tc.code {
				t.Errorf("exit %d, want %d:\n%s", r.code, tc.code, out)
			}
			for _, w := range tc.wants {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if n := len(s.PVE.MutatingRequests()) - before; n != 0 || !slices.Equal(s.PVE.VMIDs(), vms) {
				t.Errorf("%d mutating PVE calls, VMs %v -> %v", n, vms, s.PVE.VMIDs())
			}
			if got := gitRefs(t, s); got != refs {
				t.Errorf("the ops repo changed: %q -> %q", refs, got)
			}
			if _, err := os.Stat(filepath.Join(s.Dir, stateDir)); tc.code == 2 && err == nil {
				t.Errorf("exit 2 but the state dir %s was created", stateDir)
			}
		})
	}
}

// badRefusedKey switches the config of a finished install in s to another valid key that the
// VM does not accept: the install fails at the k3s stage (exit 1) naming the user and the key's
// fingerprint and what to check, creates no VM, template or commit; back on the right key the
// rerun converges.
func badRefusedKey(t *testing.T, ctx context.Context, bin string, s *sandbox.Sandbox) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "not-on-the-vm")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	fp := ssh.FingerprintSHA256(signer.PublicKey())
	os.WriteFile(filepath.Join(s.Dir, "other_ed25519"), pem.EncodeToMemory(blk), 0o600)
	os.WriteFile(filepath.Join(s.Dir, "other_ed25519.pub"), []byte(remote.AuthorizedKey(signer.PublicKey())+"\n"), 0o644)
	cfg, err := os.ReadFile(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(cfg), "privateKeyFile: ./"+sandbox.KeyFile, "privateKeyFile: ./other_ed25519", 1)
	os.WriteFile(filepath.Join(s.Dir, "refused-key.yaml"), []byte(edited), 0o644)

	vms, refs := s.PVE.VMIDs(), gitRefs(t, s)
	before := len(s.PVE.MutatingRequests())
	r := install(t, ctx, bin, s.Dir, s.Env(), "-c", "refused-key.yaml")
	out := r.stdout + r.stderr
	t.Logf("output:\n%s", out)
	if r.code != 1 {
		t.Errorf("exit %d, want 1:\n%s", r.code, out)
	}
	for _, w := range []string{"stage k3s failed", "opencsp@", fp, "refused the key", "check that the VM's cloud-init installed this public key"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	if !slices.Equal(s.PVE.VMIDs(), vms) {
		t.Errorf("VMs %v -> %v", vms, s.PVE.VMIDs())
	}
	if got := gitRefs(t, s); got != refs {
		t.Errorf("the ops repo changed: %q -> %q", refs, got)
	}
	t.Logf("mutating PVE calls of the refused-key run: %+v", s.PVE.MutatingRequests()[before:])

	// Back on the key the VM accepts, the install converges.
	if r := install(t, ctx, bin, s.Dir, s.Env(), "-c", sandbox.ConfigFile); r.code != 0 {
		t.Errorf("rerun with the right key: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
