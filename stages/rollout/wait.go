package rollout

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/opencsp/installer/stages/flux"
	"github.com/opencsp/installer/stages/flux/kube"
)

// HelmReleaseGVK is the kind of the layers' main releases.
var HelmReleaseGVK = schema.GroupVersionKind{Group: "helm.toolkit.fluxcd.io", Version: "v2", Kind: "HelmRelease"}

// Layer is what the rollout needs to know about one layer Kustomization.
type Layer struct {
	Name        string
	Component   string
	DependsOn   []string
	HelmRelease string // flux-system/<name>, "" for none
}

// Options of Wait.
type Options struct {
	// Timeout per layer (default 10m).
	Timeout time.Duration
	// Step announces a step and returns its end (stages.Env.Step); nil is silent.
	Step func(step, msg string) func(error)
	// Poll interval (default 500ms).
	Poll time.Duration
}

// FailedError names the component whose layer did not become Ready.
type FailedError struct {
	Layer, Component string
	Reason           string
	Details          string // conditions and recent events
}

func (e *FailedError) Error() string {
	return fmt.Sprintf("component %s (layer %s) failed: %s\n%s", e.Component, e.Layer, e.Reason, e.Details)
}

// Wait waits until every layer Kustomization is Ready at the ops repo's current revision, in
// dependency order: a layer is looked at only once its dependencies are Ready, and nudged
// (reconcile.fluxcd.io/requestedAt) when it is not yet at the revision, instead of waiting
// for its interval. A layer already Ready at the revision is not touched. A layer whose
// Kustomization fails, or whose HelmRelease is Ready=False, fails the rollout at once, naming
// the component with its conditions and recent events. Kustomizations of layers that are no
// longer planned (labelled with the same cluster) are waited on until Flux has pruned them.
func Wait(ctx context.Context, c *kube.Client, layers []Layer, opts Options) error {
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Minute
	}
	if opts.Poll == 0 {
		opts.Poll = 500 * time.Millisecond
	}
	if opts.Step == nil {
		opts.Step = func(string, string) func(error) { return func(error) {} }
	}
	order, err := Order(layers)
	if err != nil {
		return err
	}
	src, err := c.Get(ctx, flux.GitRepositoryGVK, flux.Namespace, flux.SyncName)
	if err != nil {
		return err
	}
	if src == nil {
		return fmt.Errorf("GitRepository %s/%s not found: run the flux stage first", flux.Namespace, flux.SyncName)
	}
	revision, _, _ := unstructured.NestedString(src.Object, "status", "artifact", "revision")
	for _, l := range order {
		done := opts.Step(l.Name, "component "+l.Component+": layer "+l.Name)
		err := waitLayer(ctx, c, l, revision, opts)
		done(err)
		if err != nil {
			return err
		}
	}
	return waitPruned(ctx, c, layers, opts)
}

// Order sorts layers so that every layer comes after its dependencies (stable otherwise).
func Order(layers []Layer) ([]Layer, error) {
	byName := map[string]Layer{}
	for _, l := range layers {
		byName[l.Name] = l
	}
	var out []Layer
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(l Layer) error
	visit = func(l Layer) error {
		switch state[l.Name] {
		case 1:
			return fmt.Errorf("dependency cycle at layer %s", l.Name)
		case 2:
			return nil
		}
		state[l.Name] = 1
		for _, d := range l.DependsOn {
			dep, ok := byName[d]
			if !ok {
				return fmt.Errorf("layer %s depends on %s, which is not planned", l.Name, d)
			}
			if err := visit(dep); err != nil {
				return err
			}
		}
		state[l.Name] = 2
		out = append(out, l)
		return nil
	}
	for _, l := range layers {
		if err := visit(l); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func atRevision(u *unstructured.Unstructured, revision string) bool {
	rev, _, _ := unstructured.NestedString(u.Object, "status", "lastAppliedRevision")
	return kube.FluxReady(u) && (revision == "" || rev == revision)
}

func waitLayer(ctx context.Context, c *kube.Client, l Layer, revision string, opts Options) error {
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	u, err := c.Get(ctx, flux.KustomizationGVK, flux.Namespace, l.Name)
	if err != nil {
		return err
	}
	nudged := ""
	nudge := func() error {
		nudged = time.Now().UTC().Format(time.RFC3339Nano)
		return c.Annotate(ctx, flux.KustomizationGVK, flux.Namespace, l.Name, flux.RequestedAtAnnotation, nudged)
	}
	if u != nil && atRevision(u, revision) {
		return nil
	}
	if u != nil {
		if err := nudge(); err != nil {
			return err
		}
	}
	tick := time.NewTicker(opts.Poll)
	defer tick.Stop()
	for {
		u, err = c.Get(ctx, flux.KustomizationGVK, flux.Namespace, l.Name)
		if err == nil && u != nil {
			if atRevision(u, revision) {
				return nil
			}
			if nudged == "" { // appeared after the root Kustomization applied it
				if err := nudge(); err != nil {
					return err
				}
			}
			if reason, failed := layerFailed(u, nudged); failed {
				return failure(ctx, c, l, reason)
			}
		}
		if l.HelmRelease != "" {
			if hr, _ := c.Get(ctx, HelmReleaseGVK, flux.Namespace, l.HelmRelease); hr != nil {
				if cond, ok := kube.FindCondition(hr, "Ready"); ok && cond.Status == "False" && hrCurrent(hr) {
					return failure(ctx, c, l, fmt.Sprintf("HelmRelease %s/%s: %s: %s", flux.Namespace, l.HelmRelease, cond.Reason, cond.Message))
				}
			}
		}
		select {
		case <-ctx.Done():
			reason := "not Ready after " + opts.Timeout.String()
			if u == nil {
				reason = "Kustomization not found after " + opts.Timeout.String()
			}
			return failure(context.WithoutCancel(ctx), c, l, reason)
		case <-tick.C:
		}
	}
}

func hrCurrent(hr *unstructured.Unstructured) bool {
	og, found, _ := unstructured.NestedInt64(hr.Object, "status", "observedGeneration")
	return found && og == hr.GetGeneration()
}

// layerFailed reports a terminal failure of the reconciliation we asked for: Ready=False with
// a failure reason after the controller handled our request.
func layerFailed(u *unstructured.Unstructured, nudged string) (string, bool) {
	handled, _, _ := unstructured.NestedString(u.Object, "status", "lastHandledReconcileAt")
	if nudged == "" || handled != nudged {
		return "", false
	}
	cond, ok := kube.FindCondition(u, "Ready")
	if !ok || cond.Status != "False" {
		return "", false
	}
	switch cond.Reason {
	case "Progressing", "DependencyNotReady", "ProgressingWithRetry", "":
		return "", false
	}
	// Reconciling=True is an attempt under way, except ProgressingWithRetry: the controller
	// finished a failed attempt and only waits to retry, which is how kustomize-controller
	// reports a failed apply (waiting on it hung the stage until the layer timeout).
	if r, ok := kube.FindCondition(u, "Reconciling"); ok && r.Status == "True" && r.Reason != "ProgressingWithRetry" {
		return "", false
	}
	return cond.Reason + ": " + cond.Message, true
}

func failure(ctx context.Context, c *kube.Client, l Layer, reason string) error {
	var b strings.Builder
	describe := func(gvk schema.GroupVersionKind, name string) {
		u, err := c.Get(ctx, gvk, flux.Namespace, name)
		if err != nil || u == nil {
			fmt.Fprintf(&b, "%s %s/%s: not found\n", gvk.Kind, flux.Namespace, name)
			return
		}
		fmt.Fprintf(&b, "%s %s/%s conditions:\n", gvk.Kind, flux.Namespace, name)
		for _, cond := range kube.Conditions(u) {
			fmt.Fprintf(&b, "  %s=%s %s: %s (%s)\n", cond.Type, cond.Status, cond.Reason, cond.Message,
				cond.LastTransitionTime.Format(time.RFC3339))
		}
		events, _ := c.Events(ctx, flux.Namespace, gvk.Kind, name, 5)
		if len(events) > 0 {
			fmt.Fprintf(&b, "%s %s/%s recent events:\n", gvk.Kind, flux.Namespace, name)
			for _, e := range events {
				fmt.Fprintf(&b, "  %s\n", e)
			}
		}
	}
	describe(flux.KustomizationGVK, l.Name)
	if l.HelmRelease != "" {
		describe(HelmReleaseGVK, l.HelmRelease)
	}
	return &FailedError{Layer: l.Name, Component: l.Component, Reason: reason, Details: b.String()}
}

// waitPruned waits until layer Kustomizations of the same cluster that are not planned are gone.
func waitPruned(ctx context.Context, c *kube.Client, layers []Layer, opts Options) error {
	planned := map[string]bool{flux.SyncName: true}
	for _, l := range layers {
		planned[l.Name] = true
	}
	ri, err := c.Resource(flux.KustomizationGVK, flux.Namespace)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	for {
		list, err := ri.List(ctx, listOpts())
		if err != nil {
			return fmt.Errorf("list Kustomizations: %w", err)
		}
		var left []string
		for _, k := range list.Items {
			if !planned[k.GetName()] && k.GetLabels()["app.kubernetes.io/part-of"] == "opencsp" {
				left = append(left, k.GetName())
			}
		}
		if len(left) == 0 {
			return nil
		}
		slices.Sort(left)
		select {
		case <-ctx.Done():
			return fmt.Errorf("disabled layers not pruned after %s: %s", opts.Timeout, strings.Join(left, ", "))
		case <-time.After(opts.Poll):
		}
	}
}
