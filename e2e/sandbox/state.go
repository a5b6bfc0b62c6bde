package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opencsp/installer/e2e/standin"
)

// ReadState reads <dir>/sandbox.json.
func ReadState(dir string) (State, error) {
	var st State
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(b, &st)
}

func writeState(dir string, st State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, stateFile))
}

// Down stops the sandbox recorded in dir, from any process: it sends
// SIGTERM to the `sandbox up` process (checked by its start time, SIGKILL
// after 30 s), then removes every stand-in resource of its prefix
// (processes, mounts, namespaces, links) — also when that process crashed.
// The directory's files stay; Up empties it. No sandbox: nothing to do.
func Down(ctx context.Context, dir string) error {
	st, err := ReadState(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", filepath.Join(dir, stateFile), err)
	}
	if st.PID != os.Getpid() && alive(st.PID, st.Start) {
		syscall.Kill(st.PID, syscall.SIGTERM)
		deadline := time.Now().Add(30 * time.Second)
		for alive(st.PID, st.Start) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if alive(st.PID, st.Start) {
			syscall.Kill(st.PID, syscall.SIGKILL)
			for i := 0; i < 50 && alive(st.PID, st.Start); i++ {
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	if standin.ValidPrefix(st.Prefix) {
		if err := standin.Cleanup(ctx, st.Prefix); err != nil {
			return err
		}
	}
	if err := os.Remove(filepath.Join(dir, stateFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// alive tells whether pid runs and is the process that started at start
// (clock ticks since boot, /proc/PID/stat field 22), not a reused PID.
func alive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	got := procStart(pid)
	return got != 0 && (start == 0 || got == start) && !zombie(pid)
}

func procStat(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:]) // fields from 3 (state) on
}

func procStart(pid int) uint64 {
	f := procStat(pid)
	if len(f) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v
}

func zombie(pid int) bool {
	f := procStat(pid)
	return len(f) > 0 && f[0] == "Z"
}
