// Package manifests holds the OpenCSP Core as Flux manifests: one folder per
// component (manifests/<component>/<layer>/, each a kustomization), the
// layer graph that orders them, the cluster variables and generated secrets
// they use, and the pinned chart versions. README.md documents the layout,
// the graph, the variables, the secrets and the disable rules.
package manifests

import (
	"embed"
	"io/fs"
)

//go:embed base cert-manager cloudnative-pg valkey seaweedfs tetragon system-upgrade-controller
//go:embed zitadel tofu-controller loki tempo mimir grafana otel-collector vector lago semaphore
//go:embed teleport console
var files embed.FS

// FS returns the component folders: <component>/kustomization.yaml (all its
// layers) and <component>/<layer>/ (one Flux Kustomization each). The ops
// repo gets a verbatim copy under RepoComponentsDir.
func FS() fs.FS { return files }
