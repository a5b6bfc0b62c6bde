package kubeenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"
)

// ErrNotFound is returned (wrapped) by Get when the object does not exist.
var ErrNotFound = errors.New("not found")

// FieldManager is the server-side apply field manager of Apply.
const FieldManager = "opencsp-e2e"

// Kubectl runs the built kubectl against the environment (admin kubeconfig, hermetic home and
// cache) with stdin (may be nil) and returns its stdout. The error carries stderr.
func (e *Env) Kubectl(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, e.Tools.Kubectl, append([]string{"--kubeconfig=" + e.Kubeconfig}, args...)...)
	cmd.Env = e.baseEnv()
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if strings.Contains(msg, "(NotFound)") {
			return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), ErrNotFound, msg)
		}
		return stdout.String(), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, msg)
	}
	return stdout.String(), nil
}

// Apply server-side-applies YAML (one or more documents) with field manager FieldManager,
// taking over conflicting fields.
func (e *Env) Apply(ctx context.Context, yaml string) error {
	_, err := e.Kubectl(ctx, strings.NewReader(yaml), "apply", "--server-side", "--force-conflicts",
		"--field-manager="+FieldManager, "-f", "-")
	return err
}

// Object is a decoded Kubernetes object.
type Object map[string]any

// Get returns one object; kind is anything kubectl accepts (configmap,
// gitrepositories.source.toolkit.fluxcd.io, ...), namespace "" for cluster-scoped objects.
// A missing object gives an error wrapping ErrNotFound.
func (e *Env) Get(ctx context.Context, kind, namespace, name string) (Object, error) {
	args := []string{"get", kind, name, "-o", "json"}
	if namespace != "" {
		args = append(args, "-n", namespace)
	}
	out, err := e.Kubectl(ctx, nil, args...)
	if err != nil {
		return nil, err
	}
	var o Object
	if err := json.Unmarshal([]byte(out), &o); err != nil {
		return nil, fmt.Errorf("kubectl get %s %s: %v", kind, name, err)
	}
	return o, nil
}

// Delete deletes one object and waits until it is gone; a missing object is not an error.
func (e *Env) Delete(ctx context.Context, kind, namespace, name string) error {
	args := []string{"delete", kind, name, "--ignore-not-found", "--wait=true"}
	if namespace != "" {
		args = append(args, "-n", namespace)
	}
	_, err := e.Kubectl(ctx, nil, args...)
	return err
}

// WaitFor polls Get every 250 ms until cond returns true, ctx ends or cond fails. A missing
// object counts as "not yet". The last object seen is returned.
func (e *Env) WaitFor(ctx context.Context, kind, namespace, name string, cond func(Object) (bool, error)) (Object, error) {
	var last Object
	var lastErr error
	for {
		o, err := e.Get(ctx, kind, namespace, name)
		switch {
		case err == nil:
			last, lastErr = o, nil
			ok, cerr := cond(o)
			if cerr != nil {
				return o, cerr
			}
			if ok {
				return o, nil
			}
		case errors.Is(err, ErrNotFound):
			lastErr = err
		case ctx.Err() == nil:
			lastErr = err
		}
		select {
		case <-ctx.Done():
			summary := "never seen"
			if last != nil {
				summary = last.Summary()
			}
			if lastErr != nil {
				summary += "; last error: " + lastErr.Error()
			}
			return last, fmt.Errorf("kubeenv: waiting for %s %s/%s: %w (%s)", kind, namespace, name, ctx.Err(), summary)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// WaitReady waits for a Flux-style object to report Ready=True for its current generation.
// A Ready=False condition with a terminal-looking reason does not end the wait early: Flux
// retries, and the timeout's error shows the last condition.
func (e *Env) WaitReady(ctx context.Context, kind, namespace, name string) (Object, error) {
	return e.WaitFor(ctx, kind, namespace, name, func(o Object) (bool, error) {
		st, _, _ := o.Condition("Ready")
		return st == "True" && o.ObservedCurrent(), nil
	})
}

// RequestReconcile sets reconcile.fluxcd.io/requestedAt to now, which makes a Flux controller
// reconcile the object at once instead of at its next interval. It returns the value set.
func (e *Env) RequestReconcile(ctx context.Context, kind, namespace, name string) (string, error) {
	v := time.Now().Format(time.RFC3339Nano)
	_, err := e.Kubectl(ctx, nil, "annotate", "--overwrite", "-n", namespace, kind, name,
		"reconcile.fluxcd.io/requestedAt="+v)
	return v, err
}

// Path returns the value at a path of map keys, nil when absent.
func (o Object) Path(keys ...string) any {
	var cur any = map[string]any(o)
	for _, k := range keys {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

// String returns the string at a path of map keys, "" when absent or not a string.
func (o Object) String(keys ...string) string {
	s, _ := o.Path(keys...).(string)
	return s
}

// Condition returns status, reason and message of status.conditions[type=t] ("" when absent).
func (o Object) Condition(t string) (status, reason, message string) {
	conds, _ := o.Path("status", "conditions").([]any)
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == t {
			status, _ = m["status"].(string)
			reason, _ = m["reason"].(string)
			message, _ = m["message"].(string)
			return
		}
	}
	return "", "", ""
}

// ObservedCurrent reports whether status.observedGeneration has caught up with
// metadata.generation (true when the object has no generation).
func (o Object) ObservedCurrent() bool {
	gen, ok := o.Path("metadata", "generation").(float64)
	if !ok {
		return true
	}
	obs, _ := o.Path("status", "observedGeneration").(float64)
	return obs >= gen
}

// Summary is a one-line description for error messages: kind/name and the Ready condition.
func (o Object) Summary() string {
	st, reason, msg := o.Condition("Ready")
	s := fmt.Sprintf("%s %s/%s", o.String("kind"), o.String("metadata", "namespace"), o.String("metadata", "name"))
	if st != "" {
		s += fmt.Sprintf(" Ready=%s %s: %s", st, reason, msg)
	}
	if !o.ObservedCurrent() {
		s += " (generation not yet observed)"
	}
	return s
}
