package proxmox

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/opencsp/installer/internal/infra"
	"github.com/opencsp/installer/internal/state"
)

// TaskError is a PVE task that ended with an exit status other than OK or
// WARNINGS: N. Log holds the last lines of the task log.
type TaskError struct {
	UPID       string
	ExitStatus string
	Log        []string
}

func (e *TaskError) Error() string {
	s := fmt.Sprintf("task %s failed: %s", e.UPID, e.ExitStatus)
	if len(e.Log) > 0 {
		s += "\n    task log (last lines):\n      " + strings.Join(e.Log, "\n      ")
	}
	return s
}

var warningsRE = regexp.MustCompile(`^WARNINGS: \d+$`)

// taskOK reports whether a stopped task's exit status means success.
func taskOK(exit string) bool { return exit == "OK" || warningsRE.MatchString(exit) }

// upidNode returns the node a UPID ran on (UPID:node:...).
func upidNode(upid string) string {
	parts := strings.Split(upid, ":")
	if len(parts) < 2 || parts[0] != "UPID" {
		return ""
	}
	return parts[1]
}

// Backoff is an exponential delay schedule; its zero value is unusable,
// use defaults from Options.
type Backoff struct {
	Initial, Max time.Duration
}

func (b Backoff) next(d time.Duration) time.Duration {
	if d == 0 {
		return b.Initial
	}
	return min(2*d, b.Max)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

// waitTask polls a task until it is stopped. Our own waiter because
// go-proxmox's Task.Wait does not return on context cancellation between
// polls. Transient errors while polling are tolerated a bounded number of
// times in a row.
func (p *Provider) waitTask(ctx context.Context, upid string) error {
	node := upidNode(upid)
	if node == "" {
		return fmt.Errorf("wait for task: malformed UPID %q", upid)
	}
	path := fmt.Sprintf("/nodes/%s/tasks/%s/status", node, upid)
	var delay time.Duration
	failures := 0
	for {
		var st struct {
			Status     string `json:"status"`
			ExitStatus string `json:"exitstatus"`
		}
		err := p.api.get(ctx, path, nil, &st)
		switch {
		case err == nil:
			failures = 0
			if st.Status == "stopped" {
				if taskOK(st.ExitStatus) {
					return nil
				}
				return &TaskError{UPID: upid, ExitStatus: st.ExitStatus, Log: p.taskLogTail(ctx, node, upid, 10)}
			}
		case isTransient(err) && failures < p.opts.Attempts:
			failures++
			p.log.Debug("task status poll failed, retrying", "upid", upid, "err", err)
		default:
			return fmt.Errorf("wait for task %s: %w", upid, err)
		}
		delay = p.opts.Poll.next(delay)
		if err := sleep(ctx, delay); err != nil {
			return fmt.Errorf("wait for task %s: %w", upid, err)
		}
	}
}

// taskLogTail returns the last n lines of a task log (best effort).
func (p *Provider) taskLogTail(ctx context.Context, node, upid string, n int) []string {
	var lines []struct {
		N int    `json:"n"`
		T string `json:"t"`
	}
	path := fmt.Sprintf("/nodes/%s/tasks/%s/log", node, upid)
	if err := p.api.get(ctx, path, map[string]string{"start": "0", "limit": "1000"}, &lines); err != nil {
		return []string{"(task log unavailable: " + err.Error() + ")"}
	}
	var out []string
	for _, l := range lines {
		if t := strings.TrimSpace(l.T); t != "" {
			out = append(out, t)
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out
}

// reattach waits for a task of this kind an earlier run started and left
// in state, then forgets it. The caller looks the resource up afterwards,
// so the task's outcome is logged, not returned — unless the context ends.
func (p *Provider) reattach(ctx context.Context, tasks infra.Tasks, kind string) error {
	if tasks == nil {
		return nil
	}
	for _, t := range tasks.InFlight() {
		if t.Kind != kind {
			continue
		}
		p.log.Info("re-attaching to a task started by an earlier run", "kind", kind, "upid", t.ID)
		err := p.waitTask(ctx, t.ID)
		if ctx.Err() != nil {
			return fmt.Errorf("re-attach to %s: %w", kind, err)
		}
		if err != nil {
			p.log.Warn("task of an earlier run failed", "kind", kind, "upid", t.ID, "err", err)
		}
		if err := tasks.FinishTask(t.ID); err != nil {
			return err
		}
	}
	return nil
}

// runTask starts a task, records it before waiting, waits, and forgets it.
// When the context ends while waiting, the task stays recorded.
func (p *Provider) runTask(ctx context.Context, tasks infra.Tasks, kind string, start func() (string, error)) error {
	upid, err := start()
	if err != nil || upid == "" { // "": the call finished synchronously
		return err
	}
	if tasks != nil {
		if err := tasks.TrackTask(state.Task{ID: upid, Kind: kind, Node: upidNode(upid)}); err != nil {
			return fmt.Errorf("record task %s: %w", upid, err)
		}
	}
	err = p.waitTask(ctx, upid)
	if ctx.Err() != nil {
		return err
	}
	if tasks != nil {
		if ferr := tasks.FinishTask(upid); ferr != nil {
			return ferr
		}
	}
	return err
}

// retry runs op until it succeeds or fails with an error that is not worth
// retrying: lock timeouts and transient server errors are retried with
// backoff, a bounded number of times.
func (p *Provider) retry(ctx context.Context, what string, op func() error) error {
	var delay time.Duration
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || attempt >= p.opts.Attempts || !(isLockTimeout(err) || isTransient(err)) {
			if attempt > 1 {
				return fmt.Errorf("%s (after %d attempts): %w", what, attempt, err)
			}
			return fmt.Errorf("%s: %w", what, err)
		}
		delay = p.opts.Retry.next(delay)
		p.log.Warn("retrying", "op", what, "attempt", attempt, "in", delay, "err", err)
		if err := sleep(ctx, delay); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
}
