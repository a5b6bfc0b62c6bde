package kubeenv

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is one long-running component (etcd, kube-apiserver, a controller).
type proc struct {
	name    string
	cmd     *exec.Cmd
	log     string
	pidFile string
	done    chan struct{} // closed when the process has been reaped
	err     error         // its exit status, valid after done
}

// pidRecord is what a pidfile holds: enough to recognise the process after a crash without
// killing an unrelated process that reused the PID.
type pidRecord struct {
	PID   int    `json:"pid"`
	Start string `json:"start"` // /proc/<pid>/stat field 22 (start time in clock ticks since boot)
	Exe   string `json:"exe"`
	Name  string `json:"name"`
}

// procStart returns the start time of pid from /proc, "" if it does not run (or is a zombie).
func procStart(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return ""
	}
	return f[19]
}

// spawn starts bin with args and env, output to <logs>/<name>.log, in its own process group,
// recorded in <run>/<name>.pid. The process gets SIGKILL when the harness dies (Pdeathsig: a
// kube-apiserver given SIGTERM while etcd dies too lingers for long; the data is throwaway),
// and a later Start or Cleanup in the same directory kills it from the pidfile otherwise.
func spawn(name, bin string, args, env []string, logDir, runDir string) (*proc, error) {
	logPath := filepath.Join(logDir, name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logf, "=== %s %s %s\n", time.Now().Format(time.RFC3339), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &proc{name: name, cmd: cmd, log: logPath, pidFile: filepath.Join(runDir, name+".pid"), done: make(chan struct{})}
	// Pdeathsig fires when the forking thread exits: fork from a locked thread that lives until
	// the process has been reaped.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer logf.Close()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		rec := pidRecord{PID: cmd.Process.Pid, Start: procStart(cmd.Process.Pid), Exe: bin, Name: name}
		data, _ := json.Marshal(rec)
		started <- os.WriteFile(p.pidFile, data, 0o644)
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		if cmd.Process != nil {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
		return nil, fmt.Errorf("kubeenv: starting %s: %w", name, err)
	}
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, waits up to grace, then SIGKILLs it, and waits
// until the process has been reaped. It removes the pidfile.
func (p *proc) stop(grace time.Duration) error {
	pid := p.cmd.Process.Pid
	if !p.exited() {
		syscall.Kill(-pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			syscall.Kill(-pid, syscall.SIGKILL)
			<-p.done
		}
		// Anything left in its group (none of these components fork, but be sure).
		syscall.Kill(-pid, syscall.SIGKILL)
	}
	os.Remove(p.pidFile)
	if p.err != nil {
		var ee *exec.ExitError
		if errors.As(p.err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && (ws.Signal() == syscall.SIGTERM || ws.Signal() == syscall.SIGKILL) {
				return nil
			}
		}
		return fmt.Errorf("%s: %v", p.name, p.err)
	}
	return nil
}

// tail returns the last n bytes of the process's log.
func (p *proc) tail(n int64) string { return tailFile(p.log, n) }

func tailFile(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, _ := f.Stat()
	off := st.Size() - n
	if off < 0 {
		off = 0
	}
	buf := make([]byte, st.Size()-off)
	f.ReadAt(buf, off)
	return string(buf)
}

// Cleanup kills the processes recorded under dir by an earlier Start whose Stop never ran (a
// crashed or killed test), waits until they are gone and removes their pidfiles. Start calls
// it; it is safe to call when nothing is left.
func Cleanup(dir string) error {
	files, _ := filepath.Glob(filepath.Join(dir, "run", "*.pid"))
	type leftover struct {
		file  string
		rec   pidRecord
		start uint64
	}
	var live []leftover
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var rec pidRecord
		if json.Unmarshal(data, &rec) != nil || rec.PID <= 1 {
			os.Remove(f)
			continue
		}
		if rec.Start == "" || procStart(rec.PID) != rec.Start {
			os.Remove(f) // gone, or the PID now belongs to another process
			continue
		}
		start, _ := strconv.ParseUint(rec.Start, 10, 64)
		live = append(live, leftover{f, rec, start})
	}
	// Newest first, as Stop does: the API server goes down quickly while etcd still answers.
	sort.Slice(live, func(i, j int) bool { return live[i].start > live[j].start })
	var errs []error
	for _, l := range live {
		if err := killAndWait(l.rec.PID, l.rec.Start, 10*time.Second); err != nil {
			errs = append(errs, fmt.Errorf("kubeenv: leftover %s (pid %d): %w", l.rec.Name, l.rec.PID, err))
			continue
		}
		os.Remove(l.file)
	}
	return errors.Join(errs...)
}

// killAndWait terminates a process that is not our child (so cannot be waited for): SIGTERM to
// its group, SIGKILL after grace, until /proc shows it gone or a zombie of someone else.
func killAndWait(pid int, start string, grace time.Duration) error {
	syscall.Kill(-pid, syscall.SIGTERM)
	syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	killed := false
	for procStart(pid) == start {
		if !killed && time.Now().After(deadline) {
			syscall.Kill(-pid, syscall.SIGKILL)
			syscall.Kill(pid, syscall.SIGKILL)
			killed = true
			deadline = time.Now().Add(grace)
		} else if killed && time.Now().After(deadline) {
			return errors.New("still running after SIGKILL")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// FreePorts returns n distinct free loopback ports. Another process may take one before it is
// used; Start retries a component whose port was taken. The sandbox uses it for the controllers
// it runs against the K3s stand-in.
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
