package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/opencsp/installer/internal/state"
	"github.com/opencsp/installer/internal/testutil"
	"github.com/opencsp/installer/profiles"
	"github.com/opencsp/installer/stages"
	"github.com/opencsp/installer/stages/pipeline"
)

// binary is the real opencsp, built once for every test: the CLI is tested
// the way a user runs it, as a process with an exit code.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "opencsp-cli-test")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "opencsp")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build opencsp:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code           int
	stdout, stderr string
}

// opencsp runs the binary in dir with the test's environment.
func opencsp(t *testing.T, dir string, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("run opencsp %v: %v", args, err)
	}
	return result{code, out.String(), errb.String()}
}

// installInfra runs the infrastructure stages of an install (preflight,
// images, provision) one by one with --only: the tests here have the PVE
// emulator but no management VM for k3s to log in to. It stops at the
// first failure and returns the combined output.
func installInfra(t *testing.T, dir, file string, args ...string) result {
	t.Helper()
	var all result
	for _, name := range pipeline.InfrastructureNames() {
		r := opencsp(t, dir, append([]string{"install", "-c", file, "--only", name}, args...)...)
		all = result{r.code, all.stdout + r.stdout, all.stderr + r.stderr}
		if r.code != 0 {
			break
		}
	}
	return all
}

func exists(path string) bool { _, err := os.Stat(path); return err == nil }

// TestBadConfigCorpus runs every bad config through the CLI: exit code 2,
// the position, field and message on stderr, and no state dir created.
func TestBadConfigCorpus(t *testing.T) {
	const corpus = "../../internal/config/testdata/bad"
	byFile := map[string][]testutil.Expectation{}
	for _, e := range testutil.ReadExpectations(t, filepath.Join(corpus, "expect.txt")) {
		byFile[e.File] = append(byFile[e.File], e)
	}
	if len(byFile) < 30 {
		t.Fatalf("corpus has %d files, want at least 30", len(byFile))
	}
	for file, exps := range byFile {
		t.Run(file, func(t *testing.T) {
			dir := testutil.CorpusDir(t)
			t.Setenv("OPENCSP_TEST_UNSET_SECRET", "")
			os.Unsetenv("OPENCSP_TEST_UNSET_SECRET")
			testutil.CopyInto(t, dir, filepath.Join(corpus, file))
			for _, args := range [][]string{
				{"config", "validate", "-c", file},
				{"install", "-c", file, "--state-dir", "state"},
				{"plan", "-c", file, "--state-dir", "state"},
			} {
				r := opencsp(t, dir, args...)
				if r.code != 2 {
					t.Errorf("%v: exit code %d, want 2\nstderr: %s", args, r.code, r.stderr)
				}
				for _, e := range exps {
					pos := regexp.MustCompile(regexp.QuoteMeta(fmt.Sprintf("%s:%d", file, e.Line)) + `(:\d+)?: `)
					if !pos.MatchString(r.stderr) || !strings.Contains(r.stderr, e.Field) || !strings.Contains(r.stderr, e.Substring) {
						t.Errorf("%v: stderr lacks %s:%d %s %q:\n%s", args, file, e.Line, e.Field, e.Substring, r.stderr)
					}
				}
				if exists(filepath.Join(dir, "state")) || exists(filepath.Join(dir, ".opencsp")) {
					t.Fatalf("%v created a state dir for a bad config", args)
				}
			}
		})
	}
}

// writeExample runs "config init" for a profile into a fresh dir set up
// with a key and the secrets the example references.
func writeExample(t *testing.T, profile string) (dir, file string) {
	t.Helper()
	dir = testutil.CorpusDir(t)
	t.Setenv("PVE_TOKEN_SECRET", "pve-secret-value-123")
	t.Setenv("OS_APPLICATION_CREDENTIAL_SECRET", "os-secret-value-456")
	file = profile + ".yaml"
	r := opencsp(t, dir, "config", "init", "--profile", profile, "-f", file, "--ssh-key", "id_ed25519")
	if r.code != 0 {
		t.Fatalf("config init --profile %s: exit %d: %s", profile, r.code, r.stderr)
	}
	return dir, file
}

func TestConfigInitOutputValidatesForEveryProfile(t *testing.T) {
	for _, p := range profiles.Names() {
		t.Run(p, func(t *testing.T) {
			dir, file := writeExample(t, p)
			b, _ := os.ReadFile(filepath.Join(dir, file))
			if !strings.Contains(string(b), "\n#") && !strings.HasPrefix(string(b), "#") {
				t.Error("example has no comments")
			}
			r := opencsp(t, dir, "config", "validate", "-c", file)
			if r.code != 0 || !strings.Contains(r.stdout, "is valid (profile "+p) {
				t.Fatalf("validate: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
			}
			// Refuses to overwrite without --force, and leaves the file alone.
			r = opencsp(t, dir, "config", "init", "--profile", p, "-f", file)
			if r.code != 2 || !strings.Contains(r.stderr, "already exists") {
				t.Errorf("second init: exit %d: %s", r.code, r.stderr)
			}
			if after, _ := os.ReadFile(filepath.Join(dir, file)); !bytes.Equal(after, b) {
				t.Error("second init changed the file")
			}
		})
	}
	r := opencsp(t, t.TempDir(), "config", "init", "--profile", "huge", "-f", "-")
	if r.code != 2 || !strings.Contains(r.stderr, `unknown profile "huge"`) {
		t.Errorf("bad profile: exit %d: %s", r.code, r.stderr)
	}
}

func TestConfigSchemaIsValidAndAcceptsExamples(t *testing.T) {
	r := opencsp(t, t.TempDir(), "config", "schema")
	if r.code != 0 {
		t.Fatalf("schema: exit %d: %s", r.code, r.stderr)
	}
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(r.stdout))
	if err != nil {
		t.Fatalf("schema output is not JSON: %v", err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("schema.json", doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("schema.json")
	if err != nil {
		t.Fatalf("schema output is not a valid JSON Schema: %v", err)
	}
	for _, p := range profiles.Names() {
		r := opencsp(t, t.TempDir(), "config", "init", "--profile", p, "-f", "-")
		inst, err := yamlToJSONValue(r.stdout)
		if err != nil {
			t.Fatalf("%s example: %v", p, err)
		}
		if err := sch.Validate(inst); err != nil {
			t.Errorf("schema rejects the %s example: %v", p, err)
		}
	}
	if err := sch.Validate(map[string]any{"apiVersion": "opencsp.io/v1alpha1", "kind": "InstallConfig", "cluster": map[string]any{"name": "lab", "domain": "lab.example.net"}, "colour": "red"}); err == nil {
		t.Error("schema accepts an unknown top-level field")
	}
}

func TestInstallRunsResumesAndKeepsSecretsOut(t *testing.T) {
	dir, file := writeExample(t, "standalone")
	const secret = "pve-secret-value-123"
	pointAtPVE(t, dir, file)

	r := opencsp(t, dir, "plan", "-c", file)
	if r.code != 0 || !strings.Contains(r.stdout, "preflight: run") || !strings.Contains(r.stdout, "check proxmox token env:PVE_TOKEN_SECRET") {
		t.Fatalf("plan: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if exists(filepath.Join(dir, ".opencsp")) {
		t.Fatal("plan created the state dir")
	}

	r = installInfra(t, dir, file)
	if r.code != 0 || !strings.Contains(r.stdout, "Install complete") {
		t.Fatalf("install: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	st, err := state.Peek(filepath.Join(dir, ".opencsp"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range pipeline.InfrastructureNames() {
		if got := st.StatusOf(name); got != state.Done {
			t.Errorf("stage %s: status %s, want done", name, got)
		}
	}
	info, err := os.Stat(filepath.Join(dir, ".opencsp", state.FileName))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("state.json mode: %v %v", info.Mode().Perm(), err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, ".opencsp", state.FileName))

	// A rerun would skip every finished stage (each verified) and go on
	// with the first one not run (k3s needs a management VM: the full
	// rerun is e2e/sandbox's test); plan shows it without writing state.
	r = opencsp(t, dir, "plan", "-c", file)
	if r.code != 0 {
		t.Fatalf("plan after install: exit %d: %s", r.code, r.stderr)
	}
	for _, name := range pipeline.InfrastructureNames() {
		if !strings.Contains(r.stdout, name+": skip (done and verified)") {
			t.Errorf("plan after install does not skip %s:\n%s", name, r.stdout)
		}
	}
	if after, _ := os.ReadFile(filepath.Join(dir, ".opencsp", state.FileName)); !bytes.Equal(before, after) {
		t.Error("plan of a finished install rewrote state.json")
	}

	// The secret value never lands in the state dir.
	filepath.Walk(filepath.Join(dir, ".opencsp"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s contains the Proxmox token secret", p)
			}
		}
		return nil
	})

	// A vanished key fails preflight's verification: the stage reruns,
	// fails naming the stage and the cause, and says how to resume.
	os.Chmod(filepath.Join(dir, "id_ed25519"), 0o644)
	r = opencsp(t, dir, "install", "-c", file)
	if r.code != 1 || !strings.Contains(r.stderr, "stage preflight failed") ||
		!strings.Contains(r.stderr, "chmod 600") || !strings.Contains(r.stderr, "Resume with: opencsp install -c "+file) {
		t.Errorf("install with a world-readable key: exit %d\n%s", r.code, r.stderr)
	}
	os.Chmod(filepath.Join(dir, "id_ed25519"), 0o600)
	if r = installInfra(t, dir, file); r.code != 0 {
		t.Errorf("resume after fixing the key: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
}

func TestInstallRefusesSecondProcessOnSameStateDir(t *testing.T) {
	dir, file := writeExample(t, "minimal")
	store, err := state.Open(t.Context(), filepath.Join(dir, ".opencsp"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	r := opencsp(t, dir, "install", "-c", file)
	want := fmt.Sprintf("in use by another opencsp process (pid %d)", os.Getpid())
	if r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Errorf("exit %d, want 1 and %q in:\n%s", r.code, want, r.stderr)
	}
}

func TestStageFlags(t *testing.T) {
	dir, file := writeExample(t, "standalone")
	pointAtPVE(t, dir, file)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"install", "-c", file, "--from", "bogus"}, `--from: unknown stage "bogus"`},
		{[]string{"plan", "-c", file, "--only", "bogus"}, `--only: unknown stage "bogus"`},
		{[]string{"install", "-c", file, "--from", "preflight", "--only", "preflight"}, "--from and --only cannot be combined"},
		{[]string{"install", "-c", file, "--output", "yaml"}, "--output must be text or json"},
		{[]string{"install", "-c", file, "extra-arg"}, "unknown command"},
	} {
		r := opencsp(t, dir, tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, want 2 and %q in:\n%s", tc.args, r.code, tc.want, r.stderr)
		}
		if exists(filepath.Join(dir, ".opencsp")) {
			t.Fatalf("%v created the state dir", tc.args)
		}
	}
	// A stage whose earlier stages never ran is refused as bad input, and the
	// refusal leaves no state dir behind.
	for _, args := range [][]string{{"--only", "k3s"}, {"--from", "flux"}} {
		r := opencsp(t, dir, append([]string{"install", "-c", file}, args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, "stage preflight is pending") {
			t.Errorf("%v on a fresh state dir: exit %d, want 2 naming the pending preflight:\n%s%s", args, r.code, r.stdout, r.stderr)
		}
		if exists(filepath.Join(dir, ".opencsp")) {
			t.Fatalf("%v: the refusal left a state dir", args)
		}
	}
	if r := opencsp(t, dir, "install", "-c", file, "--only", "preflight"); r.code != 0 {
		t.Errorf("--only preflight: exit %d: %s", r.code, r.stderr)
	}
	// --only preflight is the readiness check: it lists the ops repo too.
	path := filepath.Join(dir, file)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	gone := filepath.Join(dir, "no-such-repo.git")
	s := strings.Replace(string(b), "url: file://"+filepath.Join(dir, "ops.git"), "url: file://"+gone, 1)
	if s == string(b) {
		t.Fatal("could not point opsRepo.url elsewhere")
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := opencsp(t, dir, "install", "-c", file, "--only", "preflight"); r.code != 1 || !strings.Contains(r.stderr, "opsRepo.url") {
		t.Errorf("--only preflight with a missing ops repo: exit %d, want 1 naming opsRepo.url:\n%s", r.code, r.stderr)
	}
}

func TestVersionAndCompletion(t *testing.T) {
	r := opencsp(t, t.TempDir(), "version", "--output", "json")
	var v map[string]string
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &v) != nil || v["version"] == "" || v["goVersion"] == "" {
		t.Errorf("version: exit %d: %q", r.code, r.stdout)
	}
	r = opencsp(t, t.TempDir(), "completion", "bash")
	if r.code != 0 || !strings.Contains(r.stdout, "__start_opencsp") {
		t.Errorf("completion bash: exit %d, %d bytes", r.code, len(r.stdout))
	}
}

func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{&stages.StageError{Stage: "k3s", Err: fmt.Errorf("wait: %w", stages.ErrInterrupted)}, exitInterrupted},
		{fmt.Errorf("x: %w", stages.ErrPrerequisite), exitBadInput},
		{fmt.Errorf("x: %w", stages.ErrClusterMismatch), exitBadInput},
		{&stages.StageError{Stage: "k3s", Err: errors.New("boom")}, exitFailed},
		{usageErrorf("bad flag"), exitBadInput},
		{reportedError{errors.New("x"), 7}, 7},
		{errors.New("other"), exitFailed},
	} {
		if got := exitCode(tc.err); got != tc.want {
			t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

func TestStateDirOfAnotherClusterIsRefused(t *testing.T) {
	dir, file := writeExample(t, "standalone")
	pointAtPVE(t, dir, file)
	if r := installInfra(t, dir, file); r.code != 0 {
		t.Fatalf("install: exit %d: %s", r.code, r.stderr)
	}
	b, _ := os.ReadFile(filepath.Join(dir, file))
	other := strings.Replace(string(b), "name: lab\n", "name: other\n", 1)
	os.WriteFile(filepath.Join(dir, "other.yaml"), []byte(other), 0o644)
	before, _ := os.ReadFile(filepath.Join(dir, ".opencsp", state.FileName))
	r := opencsp(t, dir, "install", "-c", "other.yaml")
	if r.code != 2 || !strings.Contains(r.stderr, "another cluster") {
		t.Errorf("exit %d, want 2 and a cluster mismatch message:\n%s", r.code, r.stderr)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, ".opencsp", state.FileName)); !bytes.Equal(before, after) {
		t.Error("the refused run changed state.json")
	}
}

func TestOpenStackIsRefusedBeforeAnythingRuns(t *testing.T) {
	dir, file := writeExample(t, "openstack")
	for _, cmd := range []string{"plan", "install"} {
		r := opencsp(t, dir, cmd, "-c", file)
		if r.code != 2 || !strings.Contains(r.stderr, "OpenStack provisioning is not implemented yet") {
			t.Errorf("%s: exit %d, want 2 and the not-implemented message:\n%s", cmd, r.code, r.stderr)
		}
		if exists(filepath.Join(dir, ".opencsp")) {
			t.Fatalf("%s created the state dir", cmd)
		}
	}
}

// The flux stage's refusal to move an existing sync points at --force-sync-path: it exists.
func TestForceSyncPathFlag(t *testing.T) {
	r := opencsp(t, t.TempDir(), "install", "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "--force-sync-path") {
		t.Errorf("install --help: exit %d, no --force-sync-path in:\n%s", r.code, r.stdout)
	}
}
