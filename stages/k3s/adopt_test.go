package k3s

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/opencsp/installer/internal/events"
	"github.com/opencsp/installer/internal/remote"
	"github.com/opencsp/installer/stages"
)

// nodeFiles is an executor over a few node files: ReadFile serves them,
// Output serves `tail` of the node log; anything that would change the node
// fails the test.
type nodeFiles struct {
	remote.Executor // nil: any other call panics
	t               *testing.T
	files           map[string]string
}

func (n *nodeFiles) ReadFile(_ context.Context, p string) ([]byte, error) {
	if s, ok := n.files[p]; ok {
		return []byte(s), nil
	}
	return nil, fmt.Errorf("read %s: %w", p, fs.ErrNotExist)
}

func (n *nodeFiles) Output(_ context.Context, cmd string) ([]byte, error) {
	if cmd != "tail -n 15 "+NodeLog+" 2>&1" {
		n.t.Errorf("unexpected command %q", cmd)
		return nil, errors.New("unexpected")
	}
	s, ok := n.files[NodeLog]
	if !ok {
		return []byte("tail: cannot open '" + NodeLog + "': No such file or directory\n"), nil
	}
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return []byte(strings.Join(lines[max(0, len(lines)-15):], "\n")), nil
}

// TestCheckNodeBootstrap: the adopt path refuses a node whose bootstrap did
// not finish, naming the VM, node.log with its last lines and cloud-init's
// status; a finished bootstrap passes.
func TestCheckNodeBootstrap(t *testing.T) {
	const done = `{"version":1,"stages":{"k3s":{"status":"done"},"flux":{"status":"done"}}}`
	var longLog strings.Builder
	for i := range 30 {
		fmt.Fprintf(&longLog, "line %02d\n", i)
	}
	longLog.WriteString("level=ERROR msg=\"ops repo: push refused\"\n")
	for _, tc := range []struct {
		name  string
		files map[string]string
		ci    string
		want  []string // in the error; none: no error
		not   []string
	}{
		{name: "done", files: map[string]string{NodeStateFile: done}},
		{name: "never ran", ci: "status: error",
			want: []string{"mgmt (10.0.0.5)", "never ran", NodeStateFile + " does not exist", "cloud-init: status: error", NodeLog, "No such file"}},
		{name: "flux failed",
			files: map[string]string{
				NodeStateFile: `{"version":1,"stages":{"k3s":{"status":"done"},"flux":{"status":"failed","error":"ops repo: push refused"}}}`,
				NodeLog:       longLog.String(),
			},
			ci:   "status: done",
			want: []string{"did not finish", "stage flux is failed: ops repo: push refused", "last lines of " + NodeLog, "line 29", "push refused\""},
			not:  []string{"line 10", "stage k3s"}},
		{name: "flux never ran",
			files: map[string]string{NodeStateFile: `{"version":1,"stages":{"k3s":{"status":"done"}}}`, NodeLog: "k3s done\n"},
			want:  []string{"stage flux never ran", "cloud-init: unknown", "k3s done"}},
		{name: "k3s interrupted",
			files: map[string]string{NodeStateFile: `{"version":1,"stages":{"k3s":{"status":"running"}}}`},
			want:  []string{"stage k3s is running", "stage flux never ran"}},
		{name: "garbage state",
			files: map[string]string{NodeStateFile: "{"},
			want:  []string{NodeStateFile + " is not a state file", NodeLog}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &nodeFiles{t: t, files: tc.files}
			err := checkNodeBootstrap(context.Background(), c, "mgmt (10.0.0.5)", tc.ci)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("err = %v, want none", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want one naming %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(err.Error(), w) {
					t.Errorf("error has %q:\n%v", w, err)
				}
			}
		})
	}
}

// firstBoot is an executor whose cloud-init wait ends after delay with out,
// or with err.
type firstBoot struct {
	remote.Executor
	delay time.Duration
	out   string
	err   error
}

func (f *firstBoot) Output(ctx context.Context, cmd string) ([]byte, error) {
	if !strings.HasPrefix(cmd, "cloud-init status --wait") {
		return nil, fmt.Errorf("unexpected command %q", cmd)
	}
	select {
	case <-time.After(f.delay):
		return []byte(f.out), f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// TestWaitFirstBoot: the wait for cloud-init reports progress while it
// lasts, returns cloud-init's status, and ends with the stage context.
func TestWaitFirstBoot(t *testing.T) {
	for _, tc := range []struct {
		name        string
		exec        *firstBoot
		timeout     time.Duration
		wantStatus  string
		wantErr     []string
		minProgress int
	}{
		{name: "done after a while", exec: &firstBoot{delay: 200 * time.Millisecond, out: "status: done\n"},
			timeout: 5 * time.Second, wantStatus: "status: done", minProgress: 2},
		{name: "done at once", exec: &firstBoot{out: "status: error\n"}, timeout: 5 * time.Second, wantStatus: "status: error"},
		{name: "stage deadline", exec: &firstBoot{delay: time.Hour}, timeout: 100 * time.Millisecond,
			wantErr: []string{"mgmt (10.0.0.5)", "wait for cloud-init", context.DeadlineExceeded.Error()}, minProgress: 1},
		{name: "connection lost", exec: &firstBoot{err: errors.New("ssh: connection lost")}, timeout: 5 * time.Second,
			wantErr: []string{"mgmt (10.0.0.5)", "connection lost"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &events.Recorder{}
			env := &stages.Env{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Events: rec}
			s := &Stage{poll: 20 * time.Millisecond}
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			ci, err := s.waitFirstBoot(ctx, env, tc.exec, "mgmt (10.0.0.5)")
			if len(tc.wantErr) == 0 && (err != nil || ci != tc.wantStatus) {
				t.Errorf("got %q, %v; want %q", ci, err, tc.wantStatus)
			}
			for _, w := range tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("err %v, want it to name %q", err, w)
				}
			}
			progress, last := 0, events.Status("")
			for _, e := range rec.Events() {
				if e.Step == "first-boot" && e.Status == events.Progress && strings.Contains(e.Message, "still running on mgmt") {
					progress++
				}
				if e.Step == "first-boot" {
					last = e.Status
				}
			}
			if progress < tc.minProgress {
				t.Errorf("%d progress events, want at least %d", progress, tc.minProgress)
			}
			if want := map[bool]events.Status{true: events.Done, false: events.Failed}[len(tc.wantErr) == 0]; last != want {
				t.Errorf("step first-boot ended %q, want %q", last, want)
			}
		})
	}
}
