package standin

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// run runs a command and returns its combined output in the error.
func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	dir = filepath.Clean(dir)
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountAll unmounts everything at or below dir (lazily when busy).
func unmountAll(dir string) error {
	var errs []error
	for _, mp := range mountsUnder(dir) {
		if err := unix.Unmount(mp, 0); err != nil {
			if err2 := unix.Unmount(mp, unix.MNT_DETACH); err2 != nil && !errors.Is(err2, unix.EINVAL) {
				errs = append(errs, fmt.Errorf("umount %s: %w", mp, err2))
			}
		}
	}
	return errors.Join(errs...)
}

// safeRemoveAll removes dir, refusing when anything is still mounted below it (removing through a
// mount would delete files that are not ours).
func safeRemoveAll(dir string) error {
	if m := mountsUnder(dir); len(m) > 0 {
		return fmt.Errorf("refusing to remove %s: still mounted: %s", dir, strings.Join(m, ", "))
	}
	return os.RemoveAll(dir)
}

// procStart returns a process's start time (field 22 of /proc/PID/stat), 0 if it does not exist.
func procStart(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v
}

// procAlive reports whether pid still runs and is the process that started at start.
func procAlive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	st := procStart(pid)
	return st != 0 && (start == 0 || st == start) && !procZombie(pid)
}

func procZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && len(s) > i+2 && s[i+2] == 'Z'
}

func allPIDs() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// netnsPIDs lists the processes whose network namespace is the named one in /run/netns.
func netnsPIDs(name string) []int {
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join("/run/netns", name), &st); err != nil {
		return nil
	}
	var out []int
	for _, pid := range allPIDs() {
		var pst unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &pst); err != nil {
			continue
		}
		if pst.Ino == st.Ino && pst.Dev == st.Dev {
			out = append(out, pid)
		}
	}
	return out
}

// nsLeader finds the init process (PID 1 of its own PID namespace) among pids.
func nsLeader(pids []int) int {
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "NSpid:"); ok {
				f := strings.Fields(v)
				if len(f) > 1 && f[len(f)-1] == "1" {
					return pid
				}
			}
		}
	}
	return 0
}

// killNetns SIGKILLs every process in the named network namespace and waits until they are gone
// (exited or zombies) — including ones that already left the namespace while exiting, such as a
// PID namespace's init that is still reaping its children.
func killNetns(name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	killed := map[int]uint64{} // pid -> start time
	for {
		var live []int
		for _, p := range netnsPIDs(name) {
			if !procZombie(p) {
				live = append(live, p)
				if _, ok := killed[p]; !ok {
					killed[p] = procStart(p)
				}
			}
		}
		for p, st := range killed {
			if !procAlive(p, st) {
				delete(killed, p)
			} else if !containsInt(live, p) {
				live = append(live, p)
			}
		}
		if len(live) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes of netns %s still running: %v", name, live)
		}
		// Killing a PID namespace's init kills the whole namespace.
		if l := nsLeader(live); l > 0 {
			_ = syscall.Kill(l, syscall.SIGKILL)
		}
		for _, p := range live {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func containsInt(list []int, v int) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.ReplaceAll(string(b), "\x00", " ")
}

func listNetns() []string {
	ents, _ := os.ReadDir("/run/netns")
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// listLinks lists the host's network interface names.
func listLinks() []string {
	ents, _ := os.ReadDir("/sys/class/net")
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func writeSysctl(path, value string) error {
	return os.WriteFile(filepath.Join("/proc/sys", path), []byte(value), 0o644)
}
