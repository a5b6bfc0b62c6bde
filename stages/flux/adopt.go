package flux

import (
	"context"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/opsrepo"
	"github.com/opencsp/installer/manifests"
	"github.com/opencsp/installer/stages"
	"github.com/opencsp/installer/stages/flux/kube"
)

// adoptTimeout bounds the wait for the node's sync to be Ready.
const adoptTimeout = 5 * time.Minute

// adopts reports whether this run adopts the Flux bootstrap the appliance
// node did itself (`opencsp node bootstrap` on its first boot, with its own
// age key and commit) instead of rendering, pushing and applying.
func (s *Stage) adopts(cfg *config.Config) bool {
	return s.opts.AdoptAppliance && cfg.ManagementVM.Provision.Method == config.ProvisionAppliance
}

// wantSync is the sync the config asks for, as the node bootstrap wrote it.
type wantSync struct{ url, branch, path string }

func wantSyncOf(cfg *config.Config) wantSync {
	b := cfg.OpsRepo.Branch
	if b == "" {
		b = "main"
	}
	return wantSync{url: cfg.OpsRepo.URL, branch: b, path: SyncPath(opsrepo.ClusterPath(cfg))}
}

// adopt verifies the cluster's Flux sync (GitRepository and root
// Kustomization flux-system) exists, points at the config's ops repo
// URL, branch and path, and is Ready at the fetched revision; it changes
// nothing in the repo or the cluster. The outputs are those of a bootstrap:
// the commit is the one the cluster applied.
func (s *Stage) adopt(ctx context.Context, env *stages.Env, client *kube.Client) error {
	var prev Outputs
	if err := env.Outputs(&prev); err != nil {
		return err
	}
	want := wantSyncOf(env.Config)
	done := env.Step("check-sync", "check the Flux sync the appliance node bootstrapped")
	err := checkAdoptedSync(ctx, client, want)
	done(err)
	if err != nil {
		return err
	}
	done = env.Step("health", "wait for GitRepository and Kustomization "+SyncName+" Ready")
	commit, err := waitAdopted(ctx, client, adoptTimeout)
	done(err)
	if err != nil {
		return err
	}
	planned, _, err := manifests.Plan(env.Config.ComponentEnabled)
	if err != nil {
		return fmt.Errorf("plan layers: %w", err)
	}
	var layers []string
	for _, l := range planned {
		layers = append(layers, l.Name)
	}
	env.Info(fmt.Sprintf("adopted the Flux sync the appliance node bootstrapped: %s %s at %s", redactURL(want.url), want.path, commit))
	return env.SetOutputs(Outputs{Commit: commit, Path: opsrepo.ClusterPath(env.Config), URL: redactURL(want.url),
		Layers: layers, HostKey: prev.HostKey})
}

// checkAdoptedSync requires both sync objects and refuses any that points
// elsewhere than want (ErrSyncChanged): the installer does not re-point an
// appliance node's sync behind its back.
func checkAdoptedSync(ctx context.Context, c *kube.Client, want wantSync) error {
	gr, err := getIfServed(ctx, c, GitRepositoryGVK, Namespace, SyncName)
	if err != nil {
		return err
	}
	ks, err := getIfServed(ctx, c, KustomizationGVK, Namespace, SyncName)
	if err != nil {
		return err
	}
	if gr == nil || ks == nil {
		return fmt.Errorf("provision method appliance: the cluster has no Flux sync (GitRepository and Kustomization %s/%s): "+
			"the node bootstrap did not bootstrap Flux; see /var/lib/opencsp/state/node.log on the management VM", Namespace, SyncName)
	}
	var problems []string
	if got, _, _ := unstructured.NestedString(gr.Object, "spec", "url"); got != want.url {
		problems = append(problems, fmt.Sprintf("GitRepository %s/%s fetches %q, not %q", Namespace, SyncName, redactURL(got), redactURL(want.url)))
	}
	if got, _, _ := unstructured.NestedString(gr.Object, "spec", "ref", "branch"); got != want.branch {
		problems = append(problems, fmt.Sprintf("GitRepository %s/%s follows branch %q, not %q", Namespace, SyncName, got, want.branch))
	}
	if got, _, _ := unstructured.NestedString(ks.Object, "spec", "path"); got != want.path {
		problems = append(problems, fmt.Sprintf("Kustomization %s/%s syncs path %q, not %q", Namespace, SyncName, got, want.path))
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s; the appliance node bootstrapped it, refusing to change it (fix opsRepo in the config, "+
		"or run `opencsp node bootstrap --force-sync-path` on the node to move it)", ErrSyncChanged, strings.Join(problems, "; "))
}

// waitAdopted waits (without nudging: nothing is changed) until the
// GitRepository is Ready with an artifact and the root Kustomization is
// Ready with that revision applied, and returns the commit.
func waitAdopted(ctx context.Context, c *kube.Client, timeout time.Duration) (string, error) {
	var rev string
	var last *unstructured.Unstructured
	err := c.WaitFor(ctx, GitRepositoryGVK, Namespace, SyncName, timeout, func(u *unstructured.Unstructured) (bool, error) {
		last = u
		rev, _, _ = unstructured.NestedString(u.Object, "status", "artifact", "revision")
		return kube.FluxReady(u) && rev != "", nil
	})
	if err != nil {
		return "", fmt.Errorf("GitRepository %s/%s not ready%s: %w", Namespace, SyncName, readyDetail(last), err)
	}
	last = nil
	var applied string
	err = c.WaitFor(ctx, KustomizationGVK, Namespace, SyncName, timeout, func(u *unstructured.Unstructured) (bool, error) {
		last = u
		applied, _, _ = unstructured.NestedString(u.Object, "status", "lastAppliedRevision")
		return kube.FluxReady(u) && applied == rev, nil
	})
	if err != nil {
		return "", fmt.Errorf("Kustomization %s/%s not ready at %s (applied %q)%s: %w", Namespace, SyncName, rev, applied, readyDetail(last), err)
	}
	return commitOf(rev), nil
}

// commitOf is the commit of a Flux revision ("main@sha1:<hash>", or the
// older "main/<hash>").
func commitOf(rev string) string {
	if i := strings.LastIndexAny(rev, ":/"); i >= 0 {
		return rev[i+1:]
	}
	return rev
}

func readyDetail(u *unstructured.Unstructured) string {
	if u == nil {
		return ""
	}
	if c, ok := kube.FindCondition(u, "Ready"); ok {
		return fmt.Sprintf(" (Ready=%s %s: %s)", c.Status, c.Reason, c.Message)
	}
	return ""
}
