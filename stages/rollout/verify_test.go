package rollout

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestInProgress(t *testing.T) {
	ks := func(conds ...map[string]any) *unstructured.Unstructured {
		list := make([]any, len(conds))
		for i, c := range conds {
			list[i] = c
		}
		return &unstructured.Unstructured{Object: map[string]any{"status": map[string]any{"conditions": list}}}
	}
	cond := func(typ, status, reason string) map[string]any {
		return map[string]any{"type": typ, "status": status, "reason": reason}
	}
	for _, tc := range []struct {
		name string
		u    *unstructured.Unstructured
		want bool
	}{
		{"no conditions", ks(), false},
		{"ready", ks(cond("Ready", "True", "ReconciliationSucceeded")), false},
		{"reconciling", ks(cond("Ready", "Unknown", "Progressing"), cond("Reconciling", "True", "Progressing")), true},
		{"ready unknown", ks(cond("Ready", "Unknown", "Progressing")), true},
		{"dependency not ready", ks(cond("Ready", "False", "DependencyNotReady")), true},
		{"build failed", ks(cond("Ready", "False", "BuildFailed")), false},
		{"health check failed", ks(cond("Ready", "False", "HealthCheckFailed")), false},
		// kustomize-controller's failed apply: it only waits to retry.
		{"apply failed, retrying", ks(cond("Ready", "False", "ReconciliationFailed"), cond("Reconciling", "True", "ProgressingWithRetry")), false},
		{"retrying, ready unknown", ks(cond("Ready", "Unknown", "Progressing"), cond("Reconciling", "True", "ProgressingWithRetry")), true},
	} {
		if got := inProgress(tc.u); got != tc.want {
			t.Errorf("%s: inProgress %v, want %v", tc.name, got, tc.want)
		}
	}
}
