package flux

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/logging"
	"github.com/opencsp/installer/internal/opsrepo"
	"github.com/opencsp/installer/stages/flux/kube"
	fluxmanifests "github.com/opencsp/installer/stages/flux/manifests"
)

// Kinds the bootstrap reads.
var (
	GitRepositoryGVK = schema.GroupVersionKind{Group: "source.toolkit.fluxcd.io", Version: "v1", Kind: "GitRepository"}
	KustomizationGVK = schema.GroupVersionKind{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Kind: "Kustomization"}
	DeploymentGVK    = schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
)

// RequestedAtAnnotation asks a Flux object to reconcile now.
const RequestedAtAnnotation = "reconcile.fluxcd.io/requestedAt"

// ErrSyncChanged means the cluster already syncs from another repository URL or path.
var ErrSyncChanged = errors.New("the cluster's Flux sync points elsewhere")

// Params of Bootstrap.
type Params struct {
	Client   *kube.Client
	Config   *config.Config
	StateDir string
	AgeKey   *opsrepo.AgeKey // nil: loaded or created at opsrepo.AgeKeyPath
	Repo     opsrepo.RepoOptions
	// ClusterURL is the repository URL as the cluster reaches it (default Repo.URL).
	ClusterURL string
	// Registry replaces ghcr.io/fluxcd in the controller images (air-gapped mirror).
	Registry string
	// ForceSyncPath lets the bootstrap move an existing sync to a new URL/path.
	ForceSyncPath bool
	// SourceInterval is the GitRepository interval (default 1m).
	SourceInterval   time.Duration
	MgmtAddress      string
	InstallerVersion string
	Vars             map[string]string
	Secrets          *logging.Redactor
	// Timeout bounds each health wait (default 5m).
	Timeout time.Duration
	Log     *slog.Logger
	// Step announces a step and returns its end (stages.Env.Step); nil is silent.
	Step func(step, msg string) func(error)
}

// Result of Bootstrap.
type Result struct {
	Commit  string   `json:"commit"`
	Pushed  bool     `json:"pushed"`
	Path    string   `json:"path"`
	URL     string   `json:"url"`
	Layers  []string `json:"layers"`
	Changed []string `json:"changed,omitempty"` // objects created or updated in the cluster
	HostKey string   `json:"host_key,omitempty"`
}

// Bootstrap renders and pushes the ops repo (with the Flux components and sync manifests in
// the cluster folder's flux-system/), then installs Flux like flux2's bootstrap: components,
// source Secret, sops-age Secret, sync objects (all server-side applied with the field manager
// opencsp), and waits for the controllers, the GitRepository and the root Kustomization.
// Rerunning with the same inputs changes nothing.
func Bootstrap(ctx context.Context, p Params) (*Result, error) {
	if p.Log == nil {
		p.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if p.Step == nil {
		p.Step = func(string, string) func(error) { return func(error) {} }
	}
	if p.Timeout == 0 {
		p.Timeout = 5 * time.Minute
	}
	if p.ClusterURL == "" {
		p.ClusterURL = p.Repo.URL
	}
	if p.Repo.Branch == "" {
		p.Repo.Branch = "main"
	}
	path := opsrepo.ClusterPath(p.Config)
	res := &Result{Path: path, URL: p.ClusterURL}

	done := p.Step("check-sync", "check the cluster's existing Flux sync")
	err := checkExistingSync(ctx, p.Client, p.ClusterURL, SyncPath(path), p.ForceSyncPath)
	done(err)
	if err != nil {
		return nil, err
	}

	key := p.AgeKey
	if key == nil {
		if key, _, err = opsrepo.LoadOrCreateAgeKey(opsrepo.AgeKeyPath(p.Config, p.StateDir)); err != nil {
			return nil, fmt.Errorf("age key: %w", err)
		}
	}
	secretName := sourceSecretName(p.Repo)
	components := fluxmanifests.Components(p.Registry)
	syncYAML, err := RenderSync(SyncOptions{URL: p.ClusterURL, Branch: p.Repo.Branch, Path: path,
		SecretRef: secretName, SourceInterval: p.SourceInterval})
	if err != nil {
		return nil, err
	}

	done = p.Step("push", "render and push the ops repo "+redactURL(p.Repo.URL))
	tree, err := opsrepo.Render(ctx, opsrepo.RenderInput{
		Config: p.Config, StateDir: p.StateDir, AgeKey: key, MgmtAddress: p.MgmtAddress,
		InstallerVersion: p.InstallerVersion, Vars: p.Vars, Logger: p.Log, Redactor: p.Secrets,
		Extra: map[string][]byte{ComponentsFile: components, SyncFile: syncYAML},
	})
	if err == nil {
		var sr opsrepo.Result
		sr, err = opsrepo.Sync(ctx, tree, p.Repo)
		res.Commit, res.Pushed, res.HostKey = sr.Commit, sr.Pushed, sr.HostKey
		res.Layers = tree.Layers
	}
	done(err)
	if err != nil {
		return nil, fmt.Errorf("ops repo: %w", err)
	}
	p.Log.Info("ops repo synced", "commit", res.Commit, "pushed", res.Pushed)

	// The SSH known_hosts line is known after the sync at the latest (trust on first use).
	secretRepo := p.Repo
	if secretRepo.Auth.KnownHostKey == "" {
		secretRepo.Auth.KnownHostKey = res.HostKey
	}
	sourceSecret, _, err := SourceSecret(secretRepo, p.ClusterURL)
	if err != nil {
		return nil, err
	}

	done = p.Step("components", "install the Flux components")
	err = apply(ctx, p.Client, res, components)
	done(err)
	if err != nil {
		return nil, fmt.Errorf("flux components: %w", err)
	}
	done = p.Step("secrets", "apply the source and sops-age Secrets")
	var secrets []byte
	if sourceSecret != nil {
		secrets = append(sourceSecret, []byte("\n---\n")...)
	}
	secrets = append(secrets, opsrepo.AgeSecretManifest(key)...)
	err = apply(ctx, p.Client, res, secrets)
	done(err)
	if err != nil {
		return nil, fmt.Errorf("flux secrets: %w", err)
	}
	done = p.Step("sync", "apply GitRepository and Kustomization "+SyncName)
	err = apply(ctx, p.Client, res, syncYAML)
	done(err)
	if err != nil {
		return nil, fmt.Errorf("flux sync: %w", err)
	}

	done = p.Step("health", "wait for the Flux controllers and the sync")
	err = health(ctx, p, res.Commit)
	done(err)
	if err != nil {
		return nil, err
	}
	return res, nil
}

func apply(ctx context.Context, c *kube.Client, res *Result, data []byte) error {
	objs, err := kube.Decode(data)
	if err != nil {
		return err
	}
	applied, err := c.Apply(ctx, objs, kube.ApplyOptions{Force: true}) // as flux2: kustomize-controller co-owns them
	for _, a := range applied {
		if a.Changed {
			res.Changed = append(res.Changed, a.ID)
		}
	}
	return err
}

// checkExistingSync refuses to repoint an existing root Kustomization/GitRepository.
func checkExistingSync(ctx context.Context, c *kube.Client, url, path string, force bool) error {
	var problems []string
	ks, err := getIfServed(ctx, c, KustomizationGVK, Namespace, SyncName)
	if err != nil {
		return err
	}
	if ks != nil {
		if got, _, _ := unstructured.NestedString(ks.Object, "spec", "path"); got != path {
			problems = append(problems, fmt.Sprintf("Kustomization %s/%s syncs path %q, not %q", Namespace, SyncName, got, path))
		}
	}
	gr, err := getIfServed(ctx, c, GitRepositoryGVK, Namespace, SyncName)
	if err != nil {
		return err
	}
	if gr != nil {
		if got, _, _ := unstructured.NestedString(gr.Object, "spec", "url"); got != url {
			problems = append(problems, fmt.Sprintf("GitRepository %s/%s fetches %q, not %q", Namespace, SyncName, redactURL(got), redactURL(url)))
		}
	}
	if len(problems) == 0 || force {
		return nil
	}
	return fmt.Errorf("%w: %s; refusing to change it silently (rerun with --force-sync-path to move the sync)",
		ErrSyncChanged, strings.Join(problems, "; "))
}

// getIfServed is Get that treats a kind not served yet (no Flux CRDs) as absent.
func getIfServed(ctx context.Context, c *kube.Client, gvk schema.GroupVersionKind, ns, name string) (*unstructured.Unstructured, error) {
	u, err := c.Get(ctx, gvk, ns, name)
	if err != nil && strings.Contains(err.Error(), "no matches for kind") {
		return nil, nil
	}
	return u, err
}

func health(ctx context.Context, p Params, commit string) error {
	for _, name := range fluxDeployments() {
		err := p.Client.WaitFor(ctx, DeploymentGVK, Namespace, name, p.Timeout, func(u *unstructured.Unstructured) (bool, error) {
			og, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
			return og == u.GetGeneration() && kube.ConditionStatus(u, "Available") == "True", nil
		})
		if err != nil {
			return fmt.Errorf("Flux controller %s not available: %w", name, err)
		}
	}
	if err := waitFlux(ctx, p, GitRepositoryGVK, commit, []string{"status", "artifact", "revision"}); err != nil {
		return err
	}
	return waitFlux(ctx, p, KustomizationGVK, commit, []string{"status", "lastAppliedRevision"})
}

// waitFlux nudges (requestedAt) an object whose revision is not commit yet and waits until it
// is Ready at that revision. An object already there is left untouched.
func waitFlux(ctx context.Context, p Params, gvk schema.GroupVersionKind, commit string, revField []string) error {
	at := func(u *unstructured.Unstructured) bool {
		rev, _, _ := unstructured.NestedString(u.Object, revField...)
		return kube.FluxReady(u) && (commit == "" || strings.HasSuffix(rev, commit))
	}
	u, err := p.Client.Get(ctx, gvk, Namespace, SyncName)
	if err != nil {
		return err
	}
	if u == nil || !at(u) {
		if err := p.Client.Annotate(ctx, gvk, Namespace, SyncName, RequestedAtAnnotation, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
			return err
		}
	}
	var last *unstructured.Unstructured
	err = p.Client.WaitFor(ctx, gvk, Namespace, SyncName, p.Timeout, func(u *unstructured.Unstructured) (bool, error) {
		last = u
		return at(u), nil
	})
	if err != nil {
		msg := ""
		if last != nil {
			if c, ok := kube.FindCondition(last, "Ready"); ok {
				msg = fmt.Sprintf(" (Ready=%s %s: %s)", c.Status, c.Reason, c.Message)
			}
		}
		return fmt.Errorf("%s %s/%s not ready at %s%s: %w", gvk.Kind, Namespace, SyncName, commit, msg, err)
	}
	return nil
}

func fluxDeployments() []string {
	return []string{"source-controller", "kustomize-controller", "helm-controller", "notification-controller"}
}

// sourceSecretName is the source Secret's name for repo's credentials ("" for none).
func sourceSecretName(repo opsrepo.RepoOptions) string {
	if repo.Auth.Token != "" || repo.Auth.SSHKeyFile != "" {
		return SyncName
	}
	return ""
}

// SourceSecret returns the Secret flux-system/flux-system with the git credentials Flux
// needs for the ops repo, and its name ("" and nil for an unauthenticated repository), as
// flux2's bootstrap writes it: username/password for a token; identity (the private key),
// identity.pub and known_hosts for SSH. The known_hosts line is repo.Auth.KnownHostKey (the
// key recorded at the first contact) rewritten for the host and port of clusterURL, the
// address source-controller connects to ("[host]:port" when the port is not 22).
// Errors never hold key material.
func SourceSecret(repo opsrepo.RepoOptions, clusterURL string) ([]byte, string, error) {
	a := repo.Auth
	switch {
	case a.Token != "":
		user := a.Username
		if user == "" {
			user = "git"
		}
		return secretYAML(map[string]string{"username": user, "password": a.Token}), SyncName, nil
	case a.SSHKeyFile != "":
		key, err := os.ReadFile(a.SSHKeyFile)
		if err != nil {
			return nil, "", fmt.Errorf("source secret: SSH key: %w", err)
		}
		signer, err := ssh.ParsePrivateKey(key)
		if err != nil {
			return nil, "", fmt.Errorf("source secret: SSH key %s: not an unencrypted private key (%T)", a.SSHKeyFile, err)
		}
		if a.KnownHostKey == "" {
			return nil, "", fmt.Errorf("source secret: no known_hosts line for %s yet (the ops repo sync records it)", redactURL(clusterURL))
		}
		known, err := knownHostsFor(a.KnownHostKey, clusterURL)
		if err != nil {
			return nil, "", fmt.Errorf("source secret: %w", err)
		}
		return secretYAML(map[string]string{
			"identity":     string(key),
			"identity.pub": string(ssh.MarshalAuthorizedKey(signer.PublicKey())),
			"known_hosts":  known,
		}), SyncName, nil
	}
	return nil, "", nil
}

// knownHostsFor rewrites a known_hosts line for the host and port of rawURL.
func knownHostsFor(line, rawURL string) (string, error) {
	ep, err := transport.NewEndpoint(rawURL)
	if err != nil {
		return "", fmt.Errorf("ops repo URL %s: %w", redactURL(rawURL), err)
	}
	_, _, key, _, _, err := ssh.ParseKnownHosts([]byte(line))
	if err != nil {
		return "", fmt.Errorf("recorded SSH host key: %w", err)
	}
	port := ep.Port
	if port == 0 {
		port = 22
	}
	host := knownhosts.Normalize(net.JoinHostPort(ep.Host, strconv.Itoa(port)))
	return knownhosts.Line([]string{host}, key) + "\n", nil
}

func secretYAML(data map[string]string) []byte {
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
		"metadata": map[string]any{"name": SyncName, "namespace": Namespace},
	}}
	d := map[string]any{}
	for k, v := range data {
		d[k] = base64.StdEncoding.EncodeToString([]byte(v))
	}
	obj.Object["data"] = d
	b, _ := obj.MarshalJSON()
	return b
}

func redactURL(u string) string {
	if i := strings.Index(u, "@"); i > 0 {
		if j := strings.Index(u, "://"); j > 0 && j < i {
			return u[:j+3] + "***@" + u[i+1:]
		}
	}
	return u
}
