package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencsp/installer/e2e/pvesim"
	"github.com/opencsp/installer/internal/testutil/pvetest"
)

// pointAtPVE starts an emulated Proxmox VE (node pve1, the example's token,
// the agent reporting the example's static address) and an image mirror,
// and rewrites the example config in dir to use them: the endpoint, its
// pinned fingerprint, and an image definition file for the mirror.
func pointAtPVE(t *testing.T, dir, file string) *pvetest.PVE {
	t.Helper()
	pve := pvetest.Start(t, pvesim.Options{NodeNames: []string{"pve1"}, TokenID: "opencsp@pve!installer",
		TokenSecret: os.Getenv("PVE_TOKEN_SECRET"),
		AddressFor:  func(int, string) (string, bool) { return "192.0.2.10/24", true }}, nil)
	pvetest.Mirror(t, dir)
	path := filepath.Join(dir, file)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The ops repo preflight lists: an empty bare repository on disk.
	repo := filepath.Join(dir, "ops.git")
	if out, err := exec.Command("git", "init", "-q", "--bare", repo).CombinedOutput(); err != nil {
		t.Fatalf("git init: %v: %s", err, out)
	}
	s := strings.NewReplacer(
		"endpoint: https://pve1.example.net:8006", "endpoint: "+pve.URL,
		"url: ssh://git@git.example.net/ops/opencsp.git", "url: file://"+repo,
		`# fingerprint: "AB:CD:...:EF"`, `fingerprint: "`+pve.Fingerprint+`"`,
		"  - debian-12\n", "  - ./debian-12.yaml\n",
	).Replace(string(b))
	if s == string(b) || !strings.Contains(s, pve.Fingerprint) || !strings.Contains(s, "./debian-12.yaml") || !strings.Contains(s, "file://"+repo) {
		t.Fatalf("example config did not take the emulator's settings:\n%s", s)
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return pve
}

// TestInstallAgainstEmulatedPVE runs the real binary through preflight,
// images and provision (one by one with --only; the full install through
// k3s runs in e2e/sandbox) against the emulator: a wrong token fails
// preflight naming the token, the right one installs, and a rerun makes
// no mutating call.
func TestInstallAgainstEmulatedPVE(t *testing.T) {
	dir, file := writeExample(t, "standalone")
	pve := pointAtPVE(t, dir, file)

	t.Setenv("PVE_TOKEN_SECRET", "wrong-secret")
	r := opencsp(t, dir, "install", "-c", file)
	if r.code != 1 || !strings.Contains(r.stderr, "stage preflight failed") || !strings.Contains(r.stderr, "token rejected") {
		t.Fatalf("wrong token: exit %d, want 1 naming preflight and the token:\n%s%s", r.code, r.stdout, r.stderr)
	}
	if n := len(pve.Sim.MutatingRequests()); n != 0 {
		t.Fatalf("a failed preflight made %d mutating calls", n)
	}

	t.Setenv("PVE_TOKEN_SECRET", pve.Sim.TokenSecret())
	r = installInfra(t, dir, file)
	if r.code != 0 || !strings.Contains(r.stdout, "Install complete") {
		t.Fatalf("install: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "Management VM: opencsp-lab-mgmt (VM ") || !strings.Contains(r.stdout, "address 192.0.2.10") {
		t.Errorf("summary does not show the management VM and its address:\n%s", r.stdout)
	}
	for _, stage := range []string{"preflight", "images", "provision"} {
		if !strings.Contains(r.stdout, stage) {
			t.Errorf("output does not mention stage %s:\n%s", stage, r.stdout)
		}
	}
	if err := pve.Sim.ValidateLog(); err != nil {
		t.Errorf("requests the real API would reject:\n%v", err)
	}
	before := len(pve.Sim.MutatingRequests())
	if r = installInfra(t, dir, file); r.code != 0 {
		t.Fatalf("rerun: exit %d: %s", r.code, r.stderr)
	}
	if after := pve.Sim.MutatingRequests(); len(after) != before {
		t.Errorf("rerun made %d mutating calls: %+v", len(after)-before, after[before:])
	}
}
