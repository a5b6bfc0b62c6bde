package rollout

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestLayerFailed: a failed apply as the real kustomize-controller reports it (Ready=False
// ReconciliationFailed with Reconciling=True ProgressingWithRetry, our request handled) is a
// failure; an attempt still under way, a dependency wait or a request not handled yet is not.
func TestLayerFailed(t *testing.T) {
	const nudged = "2026-11-26T04:14:38.489595947Z"
	ks := func(handled string, conds ...[3]string) *unstructured.Unstructured {
		var list []any
		for _, c := range conds {
			list = append(list, map[string]any{"type": c[0], "status": c[1], "reason": c[2], "message": c[0] + " " + c[2]})
		}
		return &unstructured.Unstructured{Object: map[string]any{"status": map[string]any{
			"conditions": list, "lastHandledReconcileAt": handled}}}
	}
	failedApply := [3]string{"Ready", "False", "ReconciliationFailed"}
	for _, tc := range []struct {
		name   string
		u      *unstructured.Unstructured
		failed bool
	}{
		{"apply denied, retry pending", ks(nudged, [3]string{"Reconciling", "True", "ProgressingWithRetry"}, failedApply), true},
		{"apply failed, no Reconciling", ks(nudged, failedApply), true},
		{"attempt under way", ks(nudged, [3]string{"Reconciling", "True", "Progressing"}, failedApply), false},
		{"old failure, request not handled yet", ks("earlier", [3]string{"Reconciling", "True", "ProgressingWithRetry"}, failedApply), false},
		{"dependency not ready", ks(nudged, [3]string{"Reconciling", "True", "ProgressingWithRetry"}, [3]string{"Ready", "False", "DependencyNotReady"}), false},
		{"ready", ks(nudged, [3]string{"Ready", "True", "ReconciliationSucceeded"}), false},
	} {
		reason, failed := layerFailed(tc.u, nudged)
		if failed != tc.failed {
			t.Errorf("%s: failed %v, want %v", tc.name, failed, tc.failed)
		}
		if failed && !strings.HasPrefix(reason, "ReconciliationFailed: ") {
			t.Errorf("%s: reason %q does not name the condition's reason and message", tc.name, reason)
		}
	}
}
