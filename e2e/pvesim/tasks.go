package pvesim

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

type task struct {
	upid     string
	node     string
	pid      int
	pstart   int64
	start    time.Time
	typ      string
	id       string
	user     string
	running  bool
	exit     string
	end      time.Time
	lines    []string
	warnings int
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

// errInterrupted is how a worker dies when its task is stopped.
var errInterrupted = errors.New("received interrupt")

// taskCtx is handed to a task's worker function.
type taskCtx struct {
	s *Server
	t *task
}

// log appends lines to the task log.
func (tc *taskCtx) log(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	tc.s.mu.Lock()
	defer tc.s.mu.Unlock()
	for _, l := range strings.Split(strings.TrimRight(msg, "\n"), "\n") {
		tc.t.lines = append(tc.t.lines, l)
	}
}

// warn logs a warning; the task ends with "WARNINGS: N".
func (tc *taskCtx) warn(format string, a ...any) {
	tc.log("WARN: "+format, a...)
	tc.s.mu.Lock()
	tc.t.warnings++
	tc.s.mu.Unlock()
}

// sleep waits d unless the task is stopped or the server closes.
func (tc *taskCtx) sleep(d time.Duration) error {
	if d <= 0 {
		select {
		case <-tc.t.stop:
			return errInterrupted
		default:
			return nil
		}
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-tc.t.stop:
		return errInterrupted
	case <-tc.s.ctx.Done():
		return errInterrupted
	}
}

// work simulates the task's work: it waits the configured duration for the
// task type and then applies injected task failures.
func (tc *taskCtx) work() error {
	if err := tc.sleep(tc.s.taskDuration(tc.t.typ)); err != nil {
		return err
	}
	if msg, ok := tc.s.faults.taskFailure(tc.t.typ); ok {
		return errors.New(msg)
	}
	return nil
}

func (s *Server) taskDuration(typ string) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, ok := s.opts.TaskDurations[typ]; ok {
		return d
	}
	return s.opts.TaskDuration
}

// encodeUPID renders a UPID like PVE::UPID::encode.
func encodeUPID(node string, pid int, pstart int64, start int64, typ, id, user string) string {
	return fmt.Sprintf("UPID:%s:%08X:%08X:%08X:%s:%s:%s:", node, pid, pstart, start, typ, id, user)
}

// startTask forks a worker like RPCEnvironment::fork_worker and returns its UPID.
// It must be called without s.mu held.
func (s *Server) startTask(nodeName, typ, id, user string, fn func(tc *taskCtx) error) upidString {
	s.mu.Lock()
	pid, pstart := s.newPID()
	now := time.Now()
	t := &task{
		node:    nodeName,
		pid:     pid,
		pstart:  pstart,
		start:   now,
		typ:     typ,
		id:      id,
		user:    user,
		running: true,
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	t.upid = encodeUPID(nodeName, pid, pstart, now.Unix(), typ, id, user)
	s.tasks = append(s.tasks, t)
	s.taskByID[t.upid] = t
	s.mu.Unlock()

	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(t.done)
		tc := &taskCtx{s: s, t: t}
		err := fn(tc)
		s.mu.Lock()
		defer s.mu.Unlock()
		t.running = false
		t.end = time.Now()
		switch {
		case err != nil:
			msg := strings.TrimSpace(err.Error())
			msg = strings.ReplaceAll(msg, "\n", " ")
			t.lines = append(t.lines, "TASK ERROR: "+msg)
			t.exit = msg
		case t.warnings > 0:
			t.exit = fmt.Sprintf("WARNINGS: %d", t.warnings)
			t.lines = append(t.lines, "TASK "+t.exit)
		default:
			t.exit = "OK"
			t.lines = append(t.lines, "TASK OK")
		}
	}()
	return upidString(t.upid)
}

// flock is a config file lock (flock(2) semantics: shared or exclusive).
type flock struct {
	excl   bool
	shared int
}

func lockTimeoutError(vmid int) error {
	return fmt.Errorf("can't lock file '/var/lock/qemu-server/lock-%d.conf' - got timeout", vmid)
}

// lockConfig takes the config lock of vmid like PVE::AbstractConfig
// lock_config (exclusive) or lock_config_shared, waiting up to timeout.
// It must be called without s.mu held.
func (s *Server) lockConfig(vmid int, exclusive bool, timeout time.Duration, stop <-chan struct{}) (func(), error) {
	deadline := time.Now().Add(timeout)
	for {
		s.mu.Lock()
		l := s.locks[vmid]
		if l == nil {
			l = &flock{}
			s.locks[vmid] = l
		}
		ok := false
		if exclusive && !l.excl && l.shared == 0 {
			l.excl, ok = true, true
		} else if !exclusive && !l.excl {
			l.shared++
			ok = true
		}
		s.mu.Unlock()
		if ok {
			var once sync.Once
			return func() {
				once.Do(func() {
					s.mu.Lock()
					defer s.mu.Unlock()
					if exclusive {
						l.excl = false
					} else {
						l.shared--
					}
				})
			}, nil
		}
		if !time.Now().Before(deadline) {
			return nil, lockTimeoutError(vmid)
		}
		select {
		case <-stop:
			return nil, errInterrupted
		case <-s.ctx.Done():
			return nil, errInterrupted
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// lockTimeout is lock_config's timeout (10 s in PVE).
func (s *Server) lockTimeout() time.Duration { return s.opts.LockTimeout }

// lockTimeoutFull is the 1 s timeout create and clone use (lock_config_full($vmid, 1, ...)).
func (s *Server) lockTimeoutFull() time.Duration {
	d := s.opts.LockTimeout / 10
	if d <= 0 {
		d = time.Millisecond
	}
	return d
}

// taskStatus renders the status object of a task.
func (t *task) status() map[string]any {
	res := map[string]any{
		"upid":      t.upid,
		"node":      t.node,
		"pid":       t.pid,
		"pstart":    t.pstart,
		"starttime": t.start.Unix(),
		"type":      t.typ,
		"id":        t.id,
		"user":      t.user,
		"status":    "running",
	}
	if !t.running {
		res["status"] = "stopped"
		res["exitstatus"] = t.exit
	}
	return res
}

// TaskInfo describes a task for tests.
type TaskInfo struct {
	UPID       string
	Node       string
	Type       string
	ID         string
	User       string
	Running    bool
	ExitStatus string
	Log        []string
}

// Tasks returns all tasks in start order.
func (s *Server) Tasks() []TaskInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]TaskInfo, 0, len(s.tasks))
	for _, t := range s.tasks {
		out = append(out, TaskInfo{UPID: t.upid, Node: t.node, Type: t.typ, ID: t.id, User: t.user,
			Running: t.running, ExitStatus: t.exit, Log: append([]string(nil), t.lines...)})
	}
	return out
}

// WaitTask waits until the task with upid stops and returns its exit status.
func (s *Server) WaitTask(upid string, timeout time.Duration) (string, error) {
	s.mu.Lock()
	t := s.taskByID[upid]
	s.mu.Unlock()
	if t == nil {
		return "", fmt.Errorf("pvesim: no such task %s", upid)
	}
	select {
	case <-t.done:
	case <-time.After(timeout):
		return "", fmt.Errorf("pvesim: task %s still running after %s", upid, timeout)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return t.exit, nil
}

// SetTaskDuration changes how long tasks of a type take (e.g. "qmclone").
func (s *Server) SetTaskDuration(typ string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opts.TaskDurations == nil {
		s.opts.TaskDurations = map[string]time.Duration{}
	}
	s.opts.TaskDurations[typ] = d
}
