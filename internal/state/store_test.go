package state

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func openT(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(context.Background(), dir)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestOpenCreatesDirPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", ".opencsp")
	openT(t, dir)
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o700 {
		t.Errorf("state dir mode = %o, want 700", got)
	}
	pid, err := os.ReadFile(filepath.Join(dir, LockFileName))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(pid)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("lock file holds %q, want our pid %d", pid, os.Getpid())
	}
}

func TestOpenHonoursCancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Open(ctx, t.TempDir()); !errors.Is(err, context.Canceled) {
		t.Fatalf("Open with cancelled ctx: %v, want context.Canceled", err)
	}
}

func TestLoadMissingFileIsEmptyState(t *testing.T) {
	s := openT(t, t.TempDir())
	f, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != Version || f.Stages == nil || len(f.Stages) != 0 {
		t.Errorf("empty state = %+v", f)
	}
	if got := f.StatusOf("images"); got != Pending {
		t.Errorf("StatusOf(missing) = %q, want pending", got)
	}
}

func TestSaveLoadRoundTripAtomicAndPrivate(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	// A pre-existing, too-open state.json must end up 0600 too.
	if err := os.WriteFile(s.Path(), []byte(`{"version":1,"stages":{}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	started := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	in := &File{
		Cluster:   "lab",
		Installer: "v0.1.0",
		Stages: map[string]*Stage{
			"images": {Status: Done, Fingerprint: "abc", Outputs: json.RawMessage(`{"template":9000}`),
				StartedAt: started, FinishedAt: started.Add(3 * time.Second), DurationMS: 3000, Attempts: 2},
			"provision": {Status: Failed, Error: "boom", InFlight: []Task{{ID: "UPID:pve1:1", Kind: "qmclone", Node: "pve1", StartedAt: started}}},
		},
	}
	if err := s.Save(in); err != nil {
		t.Fatal(err)
	}
	if in.Version != Version || in.UpdatedAt.IsZero() {
		t.Errorf("Save did not stamp version/updated_at: %d %v", in.Version, in.UpdatedAt)
	}
	fi, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("state.json mode = %o, want 600", got)
	}
	if tmps, _ := filepath.Glob(filepath.Join(dir, tempPrefix+"*")); len(tmps) != 0 {
		t.Errorf("temp files left behind: %v", tmps)
	}
	out, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if out.Cluster != "lab" || out.Installer != "v0.1.0" || !out.UpdatedAt.Equal(in.UpdatedAt) {
		t.Errorf("header mismatch: %+v", out)
	}
	img := out.Stages["images"]
	var outputs bytes.Buffer
	if err := json.Compact(&outputs, img.Outputs); err != nil {
		t.Fatal(err)
	}
	if img.Status != Done || img.Fingerprint != "abc" || outputs.String() != `{"template":9000}` ||
		!img.StartedAt.Equal(started) || img.DurationMS != 3000 || img.Attempts != 2 {
		t.Errorf("images stage = %+v", img)
	}
	prov := out.Stages["provision"]
	if prov.Status != Failed || prov.Error != "boom" || len(prov.InFlight) != 1 || prov.InFlight[0].ID != "UPID:pve1:1" {
		t.Errorf("provision stage = %+v", prov)
	}
}

func TestLoadRefusesCorruptFile(t *testing.T) {
	tests := []struct {
		name    string
		content string
	}{
		{"garbage", "not json at all"},
		{"truncated", `{"version":1,"stages":{"images":{"status":"do`},
		{"empty", ""},
		{"no version", `{"stages":{}}`},
		{"wrong type", `{"version":"one"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, dir)
			if err := os.WriteFile(s.Path(), []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, load := range []func() (*File, error){s.Load, func() (*File, error) { return Peek(dir) }} {
				_, err := load()
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("err = %v, want ErrCorrupt", err)
				}
				for _, want := range []string{s.Path(), "is corrupt", "move it aside", "mv " + s.Path()} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not mention %q", err, want)
					}
				}
			}
			if got, _ := os.ReadFile(s.Path()); string(got) != tt.content {
				t.Errorf("corrupt file was modified: %q", got)
			}
		})
	}
}

func TestLoadRefusesNewerFormat(t *testing.T) {
	s := openT(t, t.TempDir())
	if err := os.WriteFile(s.Path(), []byte(`{"version":99,"stages":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := s.Load()
	if err == nil || !strings.Contains(err.Error(), "format version 99") || errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v, want a newer-format error that is not ErrCorrupt", err)
	}
}

func TestSecondOpenInProcessIsRefusedWithPid(t *testing.T) {
	dir := filepath.Join(t.TempDir(), ".opencsp")
	first := openT(t, dir)

	_, err := Open(context.Background(), dir)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	want := fmt.Sprintf("state dir %s is in use by another opencsp process (pid %d); wait for it to finish or stop it", dir, os.Getpid())
	if err.Error() != want {
		t.Errorf("message\n got: %s\nwant: %s", err, want)
	}
	var le *LockedError
	if !errors.As(err, &le) || le.PID != os.Getpid() {
		t.Errorf("LockedError = %+v", le)
	}

	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := first.Save(NewFile()); err == nil {
		t.Error("Save after Close succeeded")
	}
	openT(t, dir) // free again
}

func TestLockedErrorWithoutPid(t *testing.T) {
	err := &LockedError{Dir: "./.opencsp"}
	if want := "state dir ./.opencsp is in use by another opencsp process (pid unknown); wait for it to finish or stop it"; err.Error() != want {
		t.Errorf("got %q", err)
	}
}

func TestPeekAndLockHolderWhileLocked(t *testing.T) {
	dir := t.TempDir()
	if _, held, err := LockHolder(dir); err != nil || held {
		t.Fatalf("LockHolder on fresh dir: held=%v err=%v", held, err)
	}
	s := openT(t, dir)
	f := NewFile()
	f.Stages["preflight"] = &Stage{Status: Done}
	if err := s.Save(f); err != nil {
		t.Fatal(err)
	}
	got, err := Peek(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.StatusOf("preflight") != Done {
		t.Errorf("Peek: %+v", got.Stages)
	}
	pid, held, err := LockHolder(dir)
	if err != nil || !held || pid != os.Getpid() {
		t.Errorf("LockHolder = %d %v %v, want our pid held", pid, held, err)
	}
	s.Close()
	if _, held, err := LockHolder(dir); err != nil || held {
		t.Errorf("LockHolder after Close: held=%v err=%v", held, err)
	}
}

func TestOpenRemovesStaleTempFiles(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, tempPrefix+"12345")
	if err := os.WriteFile(stale, []byte(`{"vers`), 0o600); err != nil {
		t.Fatal(err)
	}
	openT(t, dir)
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale temp file still there: %v", err)
	}
}

// lockHolderEnv switches the test binary into a child that holds a lock.
const lockHolderEnv = "OPENCSP_STATE_TEST_HOLD_LOCK"

// TestHelperHoldLock is not a test: run as a child process, it locks the dir
// named in lockHolderEnv, says so on stdout, and holds the lock until stdin
// closes or it is killed.
func TestHelperHoldLock(t *testing.T) {
	dir := os.Getenv(lockHolderEnv)
	if dir == "" {
		t.Skip("helper process")
	}
	s, err := Open(context.Background(), dir)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(3)
	}
	fmt.Println("locked")
	io.Copy(io.Discard, os.Stdin)
	s.Close()
	os.Exit(0)
}

func startLockHolder(t *testing.T, dir string) (*exec.Cmd, io.WriteCloser) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHoldLock$")
	cmd.Env = append(os.Environ(), lockHolderEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- strings.TrimSpace(l)
	}()
	select {
	case l := <-line:
		if l != "locked" {
			t.Fatalf("child said %q", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("child did not take the lock")
	}
	return cmd, stdin
}

func TestLockAcrossProcesses(t *testing.T) {
	tests := []struct {
		name    string
		release func(cmd *exec.Cmd, stdin io.WriteCloser) error
	}{
		{"holder exits normally", func(_ *exec.Cmd, stdin io.WriteCloser) error { return stdin.Close() }},
		{"holder is SIGKILLed", func(cmd *exec.Cmd, _ io.WriteCloser) error { return cmd.Process.Kill() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			cmd, stdin := startLockHolder(t, dir)

			_, err := Open(context.Background(), dir)
			if !errors.Is(err, ErrLocked) {
				t.Fatalf("Open while child holds lock: %v, want ErrLocked", err)
			}
			if want := fmt.Sprintf("is in use by another opencsp process (pid %d)", cmd.Process.Pid); !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not contain %q", err, want)
			}
			if pid, held, _ := LockHolder(dir); !held || pid != cmd.Process.Pid {
				t.Errorf("LockHolder = %d %v, want child pid %d", pid, held, cmd.Process.Pid)
			}

			if err := tt.release(cmd, stdin); err != nil {
				t.Fatal(err)
			}
			cmd.Wait()
			openT(t, dir)
		})
	}
}
