package kubeenv

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const helperEnv = "KUBEENV_TEST_HELPER_DIR"

// TestHelperHarness is not a test: TestCrashedHarness runs the test binary with it as a
// harness that starts an environment and then hangs until it is SIGKILLed.
func TestHelperHarness(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("helper process for TestCrashedHarness")
	}
	env, err := Start(context.Background(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	pids, _ := json.Marshal(env.PIDs())
	os.Stdout.WriteString("READY " + string(pids) + "\n")
	select {}
}

// TestCrashedHarness: the harness is SIGKILLed (no Stop, no deferred cleanup). Its
// components must not outlive it: Pdeathsig ends them, and a later Start in the same
// directory kills whatever the pidfiles still show.
func TestCrashedHarness(t *testing.T) {
	t.Parallel()
	if os.Getenv(SkipEnv) == "1" {
		t.Skip(SkipEnv + "=1")
	}
	if _, err := FindTools(""); err != nil {
		t.Fatalf("%v\n(set %s=1 to skip these tests)", err, SkipEnv)
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHarness$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var pids map[string]int
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "READY "); ok {
			json.Unmarshal([]byte(rest), &pids)
			break
		}
	}
	if len(pids) != 2 {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper did not start an environment (pids %v)", pids)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	deadline := time.Now().Add(15 * time.Second)
	for name, pid := range pids {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if alive(pid) {
			t.Errorf("%s (pid %d) outlived the killed harness by 15 s", name, pid)
		}
	}
	env := StartForTest(t, Options{Dir: dir})
	if _, err := env.Kubectl(context.Background(), nil, "get", "ns", "default"); err != nil {
		t.Fatal(err)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "run", "*.pid")); len(files) != 2 {
		t.Errorf("pidfiles: %v", files)
	}
}
