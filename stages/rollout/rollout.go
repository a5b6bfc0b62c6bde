// Package rollout is the rollout stage: it waits until Flux has rolled out every planned
// layer of the Core (each layer a Flux Kustomization with dependsOn), in dependency order,
// nudging reconciliation instead of waiting for intervals, with one progress step per layer;
// a failing layer fails the stage naming its component, with conditions and recent events.
// Readiness is read from Flux's Ready condition and observedGeneration (what kstatus does for
// Flux kinds) rather than by importing sigs.k8s.io/cli-utils.
package rollout

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/manifests"
	"github.com/opencsp/installer/stages"
	"github.com/opencsp/installer/stages/flux"
	"github.com/opencsp/installer/stages/flux/kube"
)

// Name of the stage.
const Name = "rollout"

// Stage implements stages.Stage.
type Stage struct{ timeout time.Duration }

// New returns the rollout stage; timeout is per layer (0: 10m).
func New(timeout time.Duration) *Stage { return &Stage{timeout: timeout} }

// Name implements stages.Stage.
func (*Stage) Name() string { return Name }

// Inputs implements stages.Stage: the components (what is planned).
func (*Stage) Inputs(cfg *config.Config) any { return cfg.Components }

// Plan implements stages.Stage.
func (*Stage) Plan(ctx context.Context, env *stages.Env) ([]stages.Change, error) {
	return []stages.Change{{Action: "wait", Target: "layer Kustomizations", Detail: "Ready in dependency order"}}, nil
}

// LayersFor returns the rollout view of planned layer names (as the flux stage recorded them).
func LayersFor(names []string) ([]Layer, error) {
	planned := map[string]bool{}
	for _, n := range names {
		planned[n] = true
	}
	var out []Layer
	for _, n := range names {
		l, ok := manifests.LayerByName(n)
		if !ok {
			return nil, fmt.Errorf("unknown layer %s", n)
		}
		var deps []string
		for _, d := range l.DependsOn {
			if planned[d] {
				deps = append(deps, d)
			}
		}
		out = append(out, Layer{Name: l.Name, Component: l.Component, DependsOn: deps, HelmRelease: l.HelmRelease})
	}
	return out, nil
}

func (s *Stage) setup(env *stages.Env) (*kube.Client, []Layer, error) {
	var k3s flux.K3sOutputs
	if err := env.StageOutputs("k3s", &k3s); err != nil {
		return nil, nil, err
	}
	var fo flux.Outputs
	if err := env.StageOutputs(flux.Name, &fo); err != nil {
		return nil, nil, err
	}
	c, err := kube.NewFromKubeconfig(k3s.Kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	layers, err := LayersFor(fo.Layers)
	return c, layers, err
}

// Run implements stages.Stage.
func (s *Stage) Run(ctx context.Context, env *stages.Env) error {
	c, layers, err := s.setup(env)
	if err != nil {
		return err
	}
	return Wait(ctx, c, layers, Options{Timeout: s.timeout, Step: env.Step})
}

// Verify implements stages.Stage: every layer Kustomization is Ready.
func (s *Stage) Verify(ctx context.Context, env *stages.Env) error {
	c, layers, err := s.setup(env)
	if err != nil {
		return err
	}
	return VerifyReady(ctx, c, layers)
}

// verifySettle bounds how long VerifyReady waits for a layer the controller is reconciling
// right now (a periodic or dependency-triggered reconcile flips Ready to Unknown for a moment:
// that is not drift).
var verifySettle = 15 * time.Second

// VerifyReady checks (without nudging) that every layer Kustomization is Ready. A layer in the
// middle of a reconciliation gets up to verifySettle to finish it.
func VerifyReady(ctx context.Context, c *kube.Client, layers []Layer) error {
	for _, l := range layers {
		u, err := c.Get(ctx, flux.KustomizationGVK, flux.Namespace, l.Name)
		if err != nil {
			return err
		}
		for deadline := time.Now().Add(verifySettle); u != nil && !kube.FluxReady(u) && inProgress(u) && time.Now().Before(deadline); {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(250 * time.Millisecond):
			}
			if u, err = c.Get(ctx, flux.KustomizationGVK, flux.Namespace, l.Name); err != nil {
				return err
			}
		}
		if u == nil || !kube.FluxReady(u) {
			return fmt.Errorf("component %s: layer Kustomization %s is missing or not Ready", l.Component, l.Name)
		}
	}
	return nil
}

func listOpts() metav1.ListOptions { return metav1.ListOptions{} }

// inProgress reports a Kustomization the controller is reconciling (or holding for a
// dependency that is): Reconciling=True, Ready=Unknown, or Ready=False with a transient reason.
func inProgress(u *unstructured.Unstructured) bool {
	cond, ok := kube.FindCondition(u, "Ready")
	// Reconciling=True ProgressingWithRetry with Ready=False is a failed apply the
	// controller only waits to retry (as layerFailed reads it): settled, not in progress.
	if r, rok := kube.FindCondition(u, "Reconciling"); rok && r.Status == "True" {
		return !(ok && cond.Status == "False" && r.Reason == "ProgressingWithRetry")
	}
	if !ok {
		return false
	}
	switch {
	case cond.Status == "Unknown":
		return true
	case cond.Status == "False":
		return cond.Reason == "Progressing" || cond.Reason == "DependencyNotReady" || cond.Reason == "ProgressingWithRetry"
	}
	return false
}
