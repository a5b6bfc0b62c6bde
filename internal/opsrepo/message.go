package opsrepo

import (
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	"github.com/opencsp/installer/clusters"
)

// CommitMessage describes a render's changes: a subject naming the
// installer version and the cluster, and a body listing the layers added,
// removed and changed, the Secrets re-encrypted and other files.
func CommitMessage(t *Tree, changes []Change) string {
	version := t.Version
	if version == "" {
		version = "dev"
	}
	subject := fmt.Sprintf("opencsp %s: render cluster %s", version, t.Cluster)
	planned := map[string]bool{}
	for _, l := range t.Layers {
		planned[l] = true
	}
	groups := map[string]map[string]bool{}
	add := func(group, item string) {
		if groups[group] == nil {
			groups[group] = map[string]bool{}
		}
		groups[group][item] = true
	}
	layersDir := path.Join(t.Path, clusters.LayersDir) + "/"
	secretsDir := path.Join(t.Path, clusters.SecretsDir) + "/"
	for _, c := range changes {
		switch {
		case strings.HasPrefix(c.Path, layersDir) && strings.HasSuffix(c.Path, ".yaml") && path.Base(c.Path) != "kustomization.yaml":
			name := strings.TrimSuffix(path.Base(c.Path), ".yaml")
			switch c.Op {
			case Added:
				add("Layers added", name)
			case Removed:
				add("Layers removed", name)
			default:
				add("Layers changed", name)
			}
		case strings.HasPrefix(c.Path, secretsDir) && strings.HasSuffix(c.Path, ".sops.yaml"):
			add("Secrets encrypted", strings.TrimSuffix(path.Base(c.Path), ".sops.yaml"))
		case strings.HasPrefix(c.Path, ComponentsDir+"/"):
			parts := strings.SplitN(strings.TrimPrefix(c.Path, ComponentsDir+"/"), "/", 3)
			if len(parts) == 3 && planned[parts[1]] {
				add("Layers changed", parts[1])
			} else {
				add("Component files changed", strings.Join(parts[:len(parts)-1], "/"))
			}
		case c.Path == layersDir+"kustomization.yaml" || c.Path == secretsDir+"kustomization.yaml":
			// Follows from the layers and Secrets above.
		default:
			add("Files "+string(c.Op), strings.TrimPrefix(c.Path, t.Path+"/"))
		}
	}
	// Added/removed layers also change their component files only when new.
	for l := range groups["Layers added"] {
		delete(groups["Layers changed"], l)
	}
	var body []string
	for _, g := range []string{"Layers added", "Layers removed", "Layers changed", "Secrets encrypted", "Component files changed",
		"Files added", "Files updated", "Files removed"} {
		if len(groups[g]) > 0 {
			body = append(body, fmt.Sprintf("%s: %s", g, strings.Join(slices.Sorted(maps.Keys(groups[g])), ", ")))
		}
	}
	return subject + "\n\n" + strings.Join(body, "\n") + "\n"
}
