// Package kbuild runs kustomize builds over an fs.FS in memory. It exists for
// tests (manifests, clusters): the installer binary does not link it.
package kbuild

import (
	"fmt"
	"io/fs"
	"path"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Object is one resource of a build: its content as a map and as YAML.
type Object struct {
	Map  map[string]any
	YAML []byte
}

// APIVersion, Kind, Name and Namespace read the object's identity.
func (o Object) APIVersion() string { return str(o.Map["apiVersion"]) }
func (o Object) Kind() string       { return str(o.Map["kind"]) }
func (o Object) Name() string       { return str(Get(o.Map, "metadata", "name")) }
func (o Object) Namespace() string  { return str(Get(o.Map, "metadata", "namespace")) }

// ID is kind/namespace/name.
func (o Object) ID() string { return o.Kind() + "/" + o.Namespace() + "/" + o.Name() }

// Get walks nested maps; nil when a step is missing.
func Get(m any, keys ...string) any {
	for _, k := range keys {
		mm, ok := m.(map[string]any)
		if !ok {
			return nil
		}
		m = mm[k]
	}
	return m
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// Builder holds a copy of a file tree in memory.
type Builder struct {
	fs filesys.FileSystem
}

// Load copies every file of fsys into memory, under root ("/" when empty).
func Load(fsys fs.FS, root string) (*Builder, error) {
	mem := filesys.MakeFsInMemory()
	b := &Builder{fs: mem}
	if err := b.Add(fsys, root); err != nil {
		return nil, err
	}
	return b, nil
}

// Add copies fsys into the builder's tree under root.
func (b *Builder) Add(fsys fs.FS, root string) error {
	if root == "" {
		root = "/"
	}
	return fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		return b.fs.WriteFile(path.Join("/", root, p), data)
	})
}

// WriteFile adds one file.
func (b *Builder) WriteFile(p string, data []byte) error {
	return b.fs.WriteFile(path.Join("/", p), data)
}

// Build runs `kustomize build dir` and returns the resources in output order.
func (b *Builder) Build(dir string) ([]Object, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(b.fs, path.Join("/", dir))
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var out []Object
	for _, r := range rm.Resources() {
		m, err := r.Map()
		if err != nil {
			return nil, fmt.Errorf("kustomize build %s: %s: %w", dir, r.CurId(), err)
		}
		y, err := r.AsYAML()
		if err != nil {
			return nil, fmt.Errorf("kustomize build %s: %s: %w", dir, r.CurId(), err)
		}
		out = append(out, Object{Map: m, YAML: y})
	}
	return out, nil
}
