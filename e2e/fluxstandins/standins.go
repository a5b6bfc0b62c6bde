// Package fluxstandins holds two TEST STAND-INS for what cannot run in the sandbox, to run
// against an e2e/kubeenv API server next to the real source- and kustomize-controller:
//
//   - WorkloadStatus replaces kubelet + kube-controller-manager for readiness only: it writes
//     the status subresource of Deployments, StatefulSets and DaemonSets as if every replica
//     were scheduled, running and available. No Pod is ever created.
//   - HelmController replaces Flux's helm-controller (charts cannot be fetched offline): it
//     marks HelmRepositories Ready, checks each HelmRelease (its HelmRepository exists, its
//     chart version is in a fake index: the version pinned in manifests.Charts() plus the
//     versions the test declares in HelmController.Index; its valuesFrom exist and parse),
//     installs the CRDs the chart would bring (permissive schemas, see ChartCRDs), and marks the
//     HelmRelease Ready — or Ready=False with a reason. It renders and installs nothing else.
//
// Both poll (every 200 ms) instead of watching; they are goroutines of the test process.
package fluxstandins

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/opencsp/installer/stages/flux/kube"
)

var (
	deploymentGVK  = schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
	statefulSetGVK = schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "StatefulSet"}
	daemonSetGVK   = schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "DaemonSet"}
)

const poll = 200 * time.Millisecond

// loop runs once every poll until ctx ends, logging errors (they are retried).
func loop(ctx context.Context, log *slog.Logger, name string, once func(context.Context) error) {
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		if err := once(ctx); err != nil && ctx.Err() == nil {
			log.Debug(name+" stand-in", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// WorkloadStatus is the workload-status stand-in.
type WorkloadStatus struct {
	Client *kube.Client
	Log    *slog.Logger
}

// Run marks workloads available until ctx ends.
func (w *WorkloadStatus) Run(ctx context.Context) {
	if w.Log == nil {
		w.Log = slog.Default()
	}
	loop(ctx, w.Log, "workload-status", w.Once)
}

// Once marks every workload that is not yet available available.
func (w *WorkloadStatus) Once(ctx context.Context) error {
	for _, gvk := range []schema.GroupVersionKind{deploymentGVK, statefulSetGVK, daemonSetGVK} {
		ri, err := w.Client.Resource(gvk, "")
		if err != nil {
			return err
		}
		list, err := ri.List(ctx, metav1.ListOptions{})
		if err != nil {
			return fmt.Errorf("list %s: %w", gvk.Kind, err)
		}
		for i := range list.Items {
			u := &list.Items[i]
			og, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
			if og == u.GetGeneration() {
				continue
			}
			replicas, found, _ := unstructured.NestedInt64(u.Object, "spec", "replicas")
			if !found {
				replicas = 1
			}
			status := workloadStatus(gvk.Kind, u.GetGeneration(), replicas)
			u.Object["status"] = status
			nri, err := w.Client.Resource(gvk, u.GetNamespace())
			if err != nil {
				return err
			}
			if _, err := nri.UpdateStatus(ctx, u, metav1.UpdateOptions{FieldManager: "standin-workload-status"}); err != nil {
				return fmt.Errorf("status of %s: %w", kube.ID(u), err)
			}
		}
	}
	return nil
}

func workloadStatus(kind string, gen, replicas int64) map[string]any {
	now := time.Now().UTC().Format(time.RFC3339)
	switch kind {
	case "Deployment":
		return map[string]any{
			"observedGeneration": gen, "replicas": replicas, "updatedReplicas": replicas,
			"readyReplicas": replicas, "availableReplicas": replicas,
			"conditions": []any{
				map[string]any{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
					"message": "stand-in: marked available (no kubelet)", "lastTransitionTime": now, "lastUpdateTime": now},
				map[string]any{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
					"message": "stand-in", "lastTransitionTime": now, "lastUpdateTime": now},
			},
		}
	case "StatefulSet":
		return map[string]any{
			"observedGeneration": gen, "replicas": replicas, "readyReplicas": replicas,
			"currentReplicas": replicas, "updatedReplicas": replicas, "availableReplicas": replicas,
			"currentRevision": "standin", "updateRevision": "standin",
		}
	default: // DaemonSet: one node
		return map[string]any{
			"observedGeneration": gen, "desiredNumberScheduled": int64(1), "currentNumberScheduled": int64(1),
			"numberReady": int64(1), "numberAvailable": int64(1), "updatedNumberScheduled": int64(1),
			"numberMisscheduled": int64(0),
		}
	}
}

// setCondition writes status (observedGeneration + one Ready condition + extra fields) on a
// Flux object through its status subresource, only when something changes.
func setReady(ctx context.Context, c *kube.Client, u *unstructured.Unstructured, status, reason, msg string, extra map[string]any) error {
	cur, _ := kube.FindCondition(u, "Ready")
	og, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	if og == u.GetGeneration() && cur.Status == status && cur.Reason == reason && cur.Message == msg {
		return nil
	}
	now := time.Now().UTC().Format(time.RFC3339)
	st, _, _ := unstructured.NestedMap(u.Object, "status")
	if st == nil {
		st = map[string]any{}
	}
	st["observedGeneration"] = u.GetGeneration()
	st["conditions"] = []any{map[string]any{
		"type": "Ready", "status": status, "reason": reason, "message": msg,
		"lastTransitionTime": now, "observedGeneration": u.GetGeneration(),
	}}
	if v, ok, _ := unstructured.NestedString(u.Object, "metadata", "annotations", "reconcile.fluxcd.io/requestedAt"); ok {
		st["lastHandledReconcileAt"] = v
	}
	for k, v := range extra {
		st[k] = v
	}
	u.Object["status"] = st
	ri, err := c.Resource(u.GroupVersionKind(), u.GetNamespace())
	if err != nil {
		return err
	}
	if _, err := ri.UpdateStatus(ctx, u, metav1.UpdateOptions{FieldManager: "standin-helm-controller"}); err != nil {
		return fmt.Errorf("status of %s: %w", kube.ID(u), err)
	}
	return nil
}
