package sandbox_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencsp/installer/e2e/kubeenv"
	"github.com/opencsp/installer/e2e/sandbox"
	"github.com/opencsp/installer/e2e/standin"
	"github.com/opencsp/installer/internal/state"
	"github.com/opencsp/installer/stages/pipeline"
)

func TestMain(m *testing.M) { standin.RunTests(m) }

// requireSandbox skips LOUDLY when the sandbox cannot run here, and fails
// when only the e2e tools are missing (unless OPENCSP_SKIP_KUBE_E2E=1).
func requireSandbox(t *testing.T) {
	t.Helper()
	const suite = "SANDBOX E2E TESTS"
	standin.RequireHost(t, suite, "git")
	if _, err := kubeenv.FindTools(""); err != nil {
		if os.Getenv("OPENCSP_SKIP_KUBE_E2E") == "1" {
			t.Skip(suite + " SKIPPED: " + err.Error())
		}
		t.Fatalf("%v: run `make tools` (or set OPENCSP_SKIP_KUBE_E2E=1 to skip)", err)
	}
}

// buildInstaller builds the real opencsp binary.
func buildInstaller(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "opencsp")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/opencsp/installer/cmd/installer")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build opencsp: %v\n%s", err, out)
	}
	return bin
}

type result struct {
	code           int
	stdout, stderr string
	took           time.Duration
}

func run(t *testing.T, ctx context.Context, bin, dir string, env []string, args ...string) result {
	t.Helper()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		r.code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("opencsp %v: %v", args, err)
	}
	t.Logf("opencsp %s: exit %d in %s", strings.Join(args, " "), r.code, r.took.Round(100*time.Millisecond))
	return r
}

// install runs a plain `opencsp install` (every stage: the sandbox serves flux and rollout too).
func install(t *testing.T, ctx context.Context, bin, dir string, env []string, args ...string) result {
	t.Helper()
	return run(t, ctx, bin, dir, env, append([]string{"install"}, args...)...)
}

func gitRefs(t *testing.T, s *sandbox.Sandbox) string {
	t.Helper()
	out, err := exec.Command("git", "-C", filepath.Join(s.Git.Dir(), "ops.git"), "for-each-ref").CombinedOutput()
	if err != nil {
		t.Fatalf("git for-each-ref: %v: %s", err, out)
	}
	return string(out)
}

func k3sUnit(t *testing.T, ctx context.Context, s *sandbox.Sandbox, vmid int) string {
	t.Helper()
	inst := s.Instance(vmid)
	if inst == nil {
		t.Fatalf("no stand-in for VM %d", vmid)
	}
	out, err := inst.Exec(ctx, "systemctl", "show", "k3s", "-p", "MainPID,ActiveEnterTimestamp,NRestarts")
	if err != nil {
		t.Fatalf("systemctl show k3s: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestStandaloneInstall runs the real binary from empty through every wired
// stage against the sandbox, then reruns it: zero mutating PVE calls, no
// new git commit, no K3s restart, every stage skipped, state unchanged.
// Then bad inputs through the whole CLI: exit code, message, nothing created.
func TestStandaloneInstall(t *testing.T) {
	requireSandbox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bin := buildInstaller(t)

	begin := time.Now()
	s, err := sandbox.Up(ctx, sandbox.Options{Dir: filepath.Join(t.TempDir(), "sandbox"), Log: tlog{t}})
	if err != nil {
		t.Fatal(err)
	}
	prefix := s.Host.Prefix()
	t.Cleanup(func() {
		if err := s.Close(context.Background()); err != nil {
			t.Errorf("close: %v", err)
		}
		if out, _ := exec.Command("ip", "-o", "link").Output(); strings.Contains(string(out), prefix+"-") {
			t.Errorf("links of %s left after Close:\n%s", prefix, out)
		}
	})
	t.Logf("sandbox up in %s", time.Since(begin).Round(100*time.Millisecond))
	env := s.Env()

	r := install(t, ctx, bin, s.Dir, env, "-c", sandbox.ConfigFile)
	if r.code != 0 || !strings.Contains(r.stdout, "Install complete") {
		t.Fatalf("install: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"Management VM: opencsp-sandbox-mgmt", "address " + s.VMAddress.Addr().String(),
		"Kubernetes API: https://" + s.VMAddress.Addr().String() + ":6443", "Kubeconfig: "} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, r.stdout)
		}
	}
	stateDir := filepath.Join(s.Dir, ".opencsp")
	st, err := state.Peek(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	stages := pipeline.Names()
	if len(stages) != 6 {
		t.Fatalf("pipeline stages %v, want six", stages)
	}
	for _, name := range stages {
		if got := st.StatusOf(name); got != state.Done {
			t.Errorf("stage %s: %s, want done", name, got)
		}
	}
	if err := s.PVE.ValidateLog(); err != nil {
		t.Errorf("requests the real PVE API would reject:\n%v", err)
	}
	ids := s.PVE.VMIDs()
	var mgmt int
	for _, id := range ids {
		if vm, ok := s.PVE.VM(id); ok && vm.Config["name"] == "opencsp-sandbox-mgmt" {
			mgmt = id
		}
	}
	if mgmt == 0 {
		t.Fatalf("no management VM among %v", ids)
	}
	unit := k3sUnit(t, ctx, s, mgmt)
	mutating := len(s.PVE.MutatingRequests())
	refsBefore := gitRefs(t, s)
	if !strings.Contains(refsBefore, "refs/heads/main") {
		t.Errorf("the flux stage pushed no main branch: %q", refsBefore)
	}

	// The plain rerun skips every stage and changes nothing anywhere.
	r = install(t, ctx, bin, s.Dir, env, "-c", sandbox.ConfigFile)
	if r.code != 0 {
		t.Fatalf("rerun: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, name := range stages {
		if !strings.Contains(r.stdout, "["+name+"] skipped") {
			t.Errorf("rerun did not skip stage %s:\n%s", name, r.stdout)
		}
	}
	for _, step := range []string{"upload k3s", "run the k3s install script", "clone template", "downloads"} {
		if strings.Contains(r.stdout, step) {
			t.Errorf("rerun did %q:\n%s", step, r.stdout)
		}
	}
	if after := s.PVE.MutatingRequests(); len(after) != mutating {
		t.Errorf("rerun made %d mutating PVE calls: %+v", len(after)-mutating, after[mutating:])
	}
	if got := gitRefs(t, s); got != refsBefore {
		t.Errorf("rerun changed the ops repo: %q -> %q", refsBefore, got)
	}
	if got := k3sUnit(t, ctx, s, mgmt); got != unit {
		t.Errorf("rerun restarted k3s:\n%s\n->\n%s", unit, got)
	}

	// Bad inputs, each with its own empty state dir: nothing is created.
	cfg, _ := os.ReadFile(s.Config)
	for _, tc := range []struct {
		name  string
		env   []string
		edit  func(string) string
		code  int
		wants []string
	}{
		{name: "wrong token", env: []string{sandbox.TokenEnv + "=wrong-secret"}, code: 1,
			wants: []string{"stage preflight failed", "token rejected"}},
		{name: "untrusted certificate", code: 1,
			edit: func(c string) string {
				return strings.Replace(c, s.PVE.Fingerprint(), strings.Repeat("AB:", 31)+"AB", 1)
			},
			wants: []string{"stage preflight failed", "fingerprint"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := "opencsp.yaml"
			if tc.edit != nil {
				file = "bad-" + strings.ReplaceAll(tc.name, " ", "-") + ".yaml"
				os.WriteFile(filepath.Join(s.Dir, file), []byte(tc.edit(string(cfg))), 0o644)
			}
			before := len(s.PVE.MutatingRequests())
			vms := len(s.PVE.VMIDs())
			r := run(t, ctx, bin, s.Dir, append(append([]string{}, env...), tc.env...),
				"install", "-c", file, "--state-dir", "state-"+strings.ReplaceAll(tc.name, " ", "-"))
			out := r.stdout + r.stderr
			if r.code != tc.code {
				t.Errorf("exit %d, want %d:\n%s", r.code, tc.code, out)
			}
			for _, w := range tc.wants {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if n := len(s.PVE.MutatingRequests()) - before; n != 0 || len(s.PVE.VMIDs()) != vms {
				t.Errorf("%d mutating PVE calls, VMs %d -> %d", n, vms, len(s.PVE.VMIDs()))
			}
		})
	}
	t.Logf("whole test %s", time.Since(begin).Round(100*time.Millisecond))
}

type tlog struct{ t *testing.T }

func (l tlog) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// TestClusterInstall installs on a 3-node emulated cluster: a template per
// node on its local storage, the VM placed on one node and booted there,
// K3s on it; the rerun makes no mutating call.
func TestClusterInstall(t *testing.T) {
	requireSandbox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bin := buildInstaller(t)
	s, err := sandbox.Up(ctx, sandbox.Options{Dir: filepath.Join(t.TempDir(), "sandbox"), Nodes: 3, Log: tlog{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	r := install(t, ctx, bin, s.Dir, s.Env(), "-c", sandbox.ConfigFile)
	if r.code != 0 || !strings.Contains(r.stdout, "Kubeconfig: ") {
		t.Fatalf("install: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	var templates, mgmt []string
	for _, id := range s.PVE.VMIDs() {
		vm, _ := s.PVE.VM(id)
		if vm.Config["template"] == "1" {
			templates = append(templates, vm.Node)
			if !strings.HasPrefix(vm.Config["scsi0"], "local-lvm:") {
				t.Errorf("template %d on %s: scsi0 %q, want local-lvm", id, vm.Node, vm.Config["scsi0"])
			}
		} else {
			mgmt = append(mgmt, vm.Node)
			if !vm.Running || s.Instance(id) == nil {
				t.Errorf("VM %d on %s: running %v, stand-in %v", id, vm.Node, vm.Running, s.Instance(id) != nil)
			}
		}
	}
	if len(templates) != 3 || len(mgmt) != 1 {
		t.Errorf("templates on %v, management VM on %v: want one template per node and one VM", templates, mgmt)
	}
	if err := s.PVE.ValidateLog(); err != nil {
		t.Errorf("requests the real PVE API would reject:\n%v", err)
	}
	before := len(s.PVE.MutatingRequests())
	refs := gitRefs(t, s)
	if r = install(t, ctx, bin, s.Dir, s.Env(), "-c", sandbox.ConfigFile); r.code != 0 {
		t.Fatalf("rerun: exit %d\n%s", r.code, r.stderr)
	}
	for _, name := range pipeline.Names() {
		if !strings.Contains(r.stdout, "["+name+"] skipped") {
			t.Errorf("rerun did not skip stage %s:\n%s", name, r.stdout)
		}
	}
	if got := gitRefs(t, s); got != refs {
		t.Errorf("rerun changed the ops repo: %q -> %q", refs, got)
	}
	if after := s.PVE.MutatingRequests(); len(after) != before {
		t.Errorf("rerun made %d mutating PVE calls: %+v", len(after)-before, after[before:])
	}
}
