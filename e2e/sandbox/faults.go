package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/opencsp/installer/stages/flux/kube"
)

// Fault injection beyond the PVE emulator's own (pvesim.InjectHTTPError, FailTasks, ...) and
// the git server's (gitserver.RejectPushes): an SSH connection dropped under the installer,
// and an admission policy that makes the cluster refuse what Flux applies.

// DropSSH cuts the live SSH connections of user to VM vmid's stand-in, as a network drop or
// an sshd restart does from the client's side: it SIGKILLs that user's sshd session processes
// ("sshd: <user> [priv]" and "sshd: <user>@notty"/"@pts/N") inside the stand-in, found by PID
// among the processes of the stand-in's network namespace. It returns the PIDs it killed
// (none: there was no session).
func (s *Sandbox) DropSSH(vmid int, user string) ([]int, error) {
	inst := s.Instance(vmid)
	if inst == nil {
		return nil, fmt.Errorf("drop SSH of VM %d: no stand-in", vmid)
	}
	leader := inst.LeaderPID()
	if leader == 0 {
		return nil, fmt.Errorf("drop SSH of VM %d: stand-in not running", vmid)
	}
	netns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", leader))
	if err != nil {
		return nil, fmt.Errorf("drop SSH of VM %d: %w", vmid, err)
	}
	procs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return nil, err
	}
	var killed []int
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil {
			continue
		}
		if ns, err := os.Readlink(p + "/ns/net"); err != nil || ns != netns {
			continue
		}
		// sshd rewrites its argv into the process title.
		b, err := os.ReadFile(p + "/cmdline")
		if err != nil {
			continue
		}
		title := strings.TrimRight(strings.ReplaceAll(string(b), "\x00", " "), " ")
		if !strings.HasPrefix(title, "sshd: "+user+"@") && title != "sshd: "+user+" [priv]" {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return killed, fmt.Errorf("drop SSH of VM %d: kill %d (%s): %w", vmid, pid, title, err)
		}
		killed = append(killed, pid)
	}
	return killed, nil
}

var (
	vapGVK     = schema.GroupVersionKind{Group: "admissionregistration.k8s.io", Version: "v1", Kind: "ValidatingAdmissionPolicy"}
	bindingGVK = schema.GroupVersionKind{Group: "admissionregistration.k8s.io", Version: "v1", Kind: "ValidatingAdmissionPolicyBinding"}
)

// DenyApply installs, through kubeconfig, a ValidatingAdmissionPolicy and its binding (both
// named policy) that make the API server deny creating or updating the objects of
// group/resource named name with message, as a cluster's admission policy refuses what Flux
// applies. It returns once the API server enforces it, and a function that removes both and
// waits until it no longer does (the API server applies policy changes with a short delay).
// ConfigMaps named name are denied too: a dry-run create of one is the probe.
func DenyApply(ctx context.Context, kubeconfig, policy, group, resource, name, message string) (remove func(context.Context) error, err error) {
	c, err := kube.NewFromKubeconfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	doc := fmt.Sprintf(`apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: %[1]s
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: [%[2]q]
        apiVersions: ["*"]
        operations: [CREATE, UPDATE]
        resources: [%[3]q]
      - apiGroups: [""]
        apiVersions: [v1]
        operations: [CREATE, UPDATE]
        resources: [configmaps]
  validations:
    - expression: %[4]q
      message: %[5]q
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: %[1]s
spec:
  policyName: %[1]s
  validationActions: [Deny]
`, policy, group, resource, "object.metadata.name != "+strconv.Quote(name), message)
	objs, err := kube.Decode([]byte(doc))
	if err != nil {
		return nil, fmt.Errorf("admission policy %s: %w", policy, err)
	}
	if _, err := c.Apply(ctx, objs, kube.ApplyOptions{}); err != nil {
		return nil, fmt.Errorf("apply admission policy %s: %w", policy, err)
	}
	if err := waitDenied(ctx, c, name, true); err != nil {
		return nil, fmt.Errorf("admission policy %s: %w", policy, err)
	}
	return func(ctx context.Context) error {
		var errs []error
		for _, gvk := range []schema.GroupVersionKind{bindingGVK, vapGVK} {
			r, err := c.Resource(gvk, "")
			if err == nil {
				err = r.Delete(ctx, policy, metav1.DeleteOptions{})
			}
			if err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("delete %s %s: %w", gvk.Kind, policy, err))
			}
		}
		if err := errors.Join(errs...); err != nil {
			return err
		}
		return waitDenied(ctx, c, name, false)
	}, nil
}

var configMapGVK = schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}

// waitDenied waits (up to 30 s) until a dry-run create of ConfigMap default/name is denied
// (want) or admitted (!want).
func waitDenied(ctx context.Context, c *kube.Client, name string, want bool) error {
	r, err := c.Resource(configMapGVK, "default")
	if err != nil {
		return err
	}
	cm := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": name, "namespace": "default"}}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := r.Create(ctx, cm, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		denied := apierrors.IsForbidden(err) || apierrors.IsInvalid(err)
		if err != nil && !denied {
			return fmt.Errorf("probe ConfigMap default/%s: %w", name, err)
		}
		if denied == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the API server still does not enforce the change after 30s (dry-run create of ConfigMap default/%s denied: %v)", name, denied)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
