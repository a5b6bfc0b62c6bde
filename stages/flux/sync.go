package flux

import (
	"fmt"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Namespace, and the name of the GitRepository, root Kustomization and source Secret, as in
// flux2's bootstrap.
const (
	Namespace      = "flux-system"
	SyncName       = "flux-system"
	SOPSSecret     = "sops-age"
	ComponentsFile = "flux-system/gotk-components.yaml"
	SyncFile       = "flux-system/gotk-sync.yaml"
)

// SyncOptions describe gotk-sync.yaml.
type SyncOptions struct {
	URL, Branch string
	// Path is the cluster folder, e.g. clusters/lab (written as ./clusters/lab).
	Path string
	// SecretRef names the source Secret; "" for a public repository.
	SecretRef string
	// Interval of the GitRepository (default 1m) and the Kustomization (default 10m).
	SourceInterval, Interval time.Duration
}

// SyncPath is how a cluster folder appears in the Kustomization's spec.path.
func SyncPath(p string) string { return "./" + strings.TrimPrefix(strings.Trim(p, "/"), "./") }

// RenderSync returns gotk-sync.yaml: the GitRepository and the root Kustomization (with SOPS
// decryption through sops-age), as flux2's sync.Generate writes them.
func RenderSync(o SyncOptions) ([]byte, error) {
	if o.URL == "" || o.Path == "" {
		return nil, fmt.Errorf("sync manifests: URL and path are required")
	}
	if o.Branch == "" {
		o.Branch = "main"
	}
	if o.SourceInterval == 0 {
		o.SourceInterval = time.Minute
	}
	if o.Interval == 0 {
		o.Interval = 10 * time.Minute
	}
	gitSpec := map[string]any{
		"interval": o.SourceInterval.String(),
		"ref":      map[string]any{"branch": o.Branch},
		"url":      o.URL,
	}
	if o.SecretRef != "" {
		gitSpec["secretRef"] = map[string]any{"name": o.SecretRef}
	}
	docs := []any{
		map[string]any{
			"apiVersion": "source.toolkit.fluxcd.io/v1",
			"kind":       "GitRepository",
			"metadata":   map[string]any{"name": SyncName, "namespace": Namespace},
			"spec":       gitSpec,
		},
		map[string]any{
			"apiVersion": "kustomize.toolkit.fluxcd.io/v1",
			"kind":       "Kustomization",
			"metadata":   map[string]any{"name": SyncName, "namespace": Namespace},
			"spec": map[string]any{
				"interval":   o.Interval.String(),
				"path":       SyncPath(o.Path),
				"prune":      true,
				"sourceRef":  map[string]any{"kind": "GitRepository", "name": SyncName},
				"decryption": map[string]any{"provider": "sops", "secretRef": map[string]any{"name": SOPSSecret}},
			},
		},
	}
	var b strings.Builder
	b.WriteString("# Flux sync of this cluster, written by opencsp (flux stage); do not edit.\n")
	for _, d := range docs {
		out, err := yaml.Marshal(d)
		if err != nil {
			return nil, err
		}
		b.WriteString("---\n")
		b.Write(out)
	}
	return []byte(b.String()), nil
}
