// Package fluxgen generates the Flux install manifests (gotk-components.yaml) that the flux
// stage embeds, offline, from Go module zips: the CRDs and config/manager of source-controller
// and kustomize-controller (their module zips carry both), CRDs of helm-controller and
// notification-controller generated with controller-gen from their /api modules (their root
// modules are not served), Deployments and Services for those two written from their
// documented image and args, and flux2's manifests/bases (account, labels, patch), rbac and
// policies, assembled exactly like flux2's manifests/install with kustomize.
//
// Run it with `go run ./stages/flux/fluxgen/cmd/fluxgen` from the repo root; the output is
// committed under stages/flux/manifests and a test checks that regenerating gives the same
// bytes.
package fluxgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Pinned versions. Flux2 v2.9.5's bases name source-/kustomize-controller v1.9.5; we use
// v1.9.6, the version the e2e binaries are built from (the only served patch with binaries).
const (
	Flux2Version                  = "v2.9.5"
	SourceControllerVersion       = "v1.9.6"
	KustomizeControllerVersion    = "v1.9.6"
	HelmControllerVersion         = "v1.6.4"
	NotificationControllerVersion = "v1.9.4"
	ControllerToolsVersion        = "v0.21.0"
)

// Components lists the controllers of the install, in flux2's order.
var Components = []string{"source-controller", "kustomize-controller", "notification-controller", "helm-controller"}

// Options configure Generate.
type Options struct {
	// ControllerGen is the controller-gen binary; when empty it is installed into CacheDir.
	ControllerGen string
	// CacheDir holds the built controller-gen (default <repo>/.cache/fluxgen).
	CacheDir string
	// Logf receives progress; nil is silent.
	Logf func(format string, args ...any)
}

// Output is the generated data: file name -> content.
type Output map[string][]byte

// Generate builds the install manifests. It needs the Go toolchain and the module cache (or
// the module proxy) for the pinned modules.
func Generate(ctx context.Context, opts Options) (Output, error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	dirs, err := moduleDirs(ctx, map[string]string{
		"flux2":                   "github.com/fluxcd/flux2/v2@" + Flux2Version,
		"source-controller":       "github.com/fluxcd/source-controller@" + SourceControllerVersion,
		"kustomize-controller":    "github.com/fluxcd/kustomize-controller@" + KustomizeControllerVersion,
		"helm-controller":         "github.com/fluxcd/helm-controller/api@" + HelmControllerVersion,
		"notification-controller": "github.com/fluxcd/notification-controller/api@" + NotificationControllerVersion,
	})
	if err != nil {
		return nil, err
	}
	gen := opts.ControllerGen
	if gen == "" {
		if gen, err = installControllerGen(ctx, opts.CacheDir); err != nil {
			return nil, err
		}
	}
	fs := filesys.MakeFsInMemory()
	flux2 := filepath.Join(dirs["flux2"], "manifests")
	// install/, rbac/, policies/ verbatim.
	for _, sub := range []string{"rbac", "policies", "install"} {
		if err := copyDir(fs, filepath.Join(flux2, sub), "/manifests/"+sub); err != nil {
			return nil, err
		}
	}
	// The install kustomization, limited to our four controllers.
	if err := fs.WriteFile("/manifests/install/kustomization.yaml", []byte(installKustomization)); err != nil {
		return nil, err
	}
	for _, c := range Components {
		base := filepath.Join(flux2, "bases", c)
		dst := "/manifests/bases/" + c
		for _, f := range []string{"account.yaml", "labels.yaml", "patch.yaml"} {
			if err := copyFile(fs, filepath.Join(base, f), dst+"/"+f); err != nil {
				return nil, err
			}
		}
		var crds []byte
		switch c {
		case "source-controller", "kustomize-controller":
			if crds, err = concatYAML(filepath.Join(dirs[c], "config", "crd", "bases")); err != nil {
				return nil, err
			}
			if err := copyDir(fs, filepath.Join(dirs[c], "config", "manager"), dst+"/manager"); err != nil {
				return nil, err
			}
		default:
			logf("fluxgen: controller-gen CRDs of %s", c)
			if crds, err = controllerGenCRDs(ctx, gen, dirs[c]); err != nil {
				return nil, fmt.Errorf("%s CRDs: %w", c, err)
			}
			if err := writeManager(fs, dst+"/manager", c); err != nil {
				return nil, err
			}
		}
		if err := fs.WriteFile(dst+"/crds.yaml", crds); err != nil {
			return nil, err
		}
		if err := fs.WriteFile(dst+"/kustomization.yaml", []byte(fmt.Sprintf(baseKustomization, c))); err != nil {
			return nil, err
		}
	}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	res, err := k.Run(fs, "/manifests/install")
	if err != nil {
		return nil, fmt.Errorf("kustomize build: %w", err)
	}
	out, err := res.AsYaml()
	if err != nil {
		return nil, err
	}
	header := fmt.Sprintf("# Flux %s install manifests (%s), generated offline by stages/flux/fluxgen; do not edit.\n",
		Flux2Version, versionList())
	return Output{
		"gotk-components.yaml": append([]byte(header+"---\n"), out...),
		"VERSIONS":             []byte(versionFile()),
	}, nil
}

func versionList() string {
	return fmt.Sprintf("source-controller %s, kustomize-controller %s, notification-controller %s, helm-controller %s",
		SourceControllerVersion, KustomizeControllerVersion, NotificationControllerVersion, HelmControllerVersion)
}

func versionFile() string {
	return fmt.Sprintf(`flux2 %s
source-controller %s
kustomize-controller %s
notification-controller %s
helm-controller %s
controller-tools %s
`, Flux2Version, SourceControllerVersion, KustomizeControllerVersion, NotificationControllerVersion,
		HelmControllerVersion, ControllerToolsVersion)
}

const installKustomization = `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: flux-system
resources:
  - namespace.yaml
  - ../bases/source-controller
  - ../bases/kustomize-controller
  - ../bases/notification-controller
  - ../bases/helm-controller
  - ../rbac
  - ../policies
transformers:
  - labels.yaml
images:
  - name: fluxcd/source-controller
    newName: ghcr.io/fluxcd/source-controller
  - name: fluxcd/kustomize-controller
    newName: ghcr.io/fluxcd/kustomize-controller
  - name: fluxcd/helm-controller
    newName: ghcr.io/fluxcd/helm-controller
  - name: fluxcd/notification-controller
    newName: ghcr.io/fluxcd/notification-controller
`

// baseKustomization is flux2's manifests/bases/<c>/kustomization.yaml with the release URLs
// replaced by local files.
const baseKustomization = `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- crds.yaml
- manager
- account.yaml
transformers:
- labels.yaml
patches:
- target:
    group: apps
    version: v1
    kind: Deployment
    name: %s
  path: patch.yaml
`

// moduleDirs downloads (or finds in the module cache) each module and returns its directory.
func moduleDirs(ctx context.Context, mods map[string]string) (map[string]string, error) {
	tmp, err := os.MkdirTemp("", "fluxgen-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	names := make([]string, 0, len(mods))
	for n := range mods {
		names = append(names, n)
	}
	sort.Strings(names)
	dirs := map[string]string{}
	for _, n := range names {
		cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", mods[n])
		cmd.Dir = tmp
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		var info struct{ Dir, Error string }
		if jerr := json.Unmarshal(out, &info); jerr == nil && info.Error != "" {
			return nil, fmt.Errorf("go mod download %s: %s", mods[n], info.Error)
		}
		if err != nil {
			return nil, fmt.Errorf("go mod download %s: %w: %s", mods[n], err, stderr.String())
		}
		if info.Dir == "" {
			return nil, fmt.Errorf("go mod download %s: no directory", mods[n])
		}
		dirs[n] = info.Dir
	}
	return dirs, nil
}

// installControllerGen builds controller-gen at the pinned version into cacheDir (once).
func installControllerGen(ctx context.Context, cacheDir string) (string, error) {
	if cacheDir == "" {
		repo, err := repoRoot()
		if err != nil {
			return "", err
		}
		cacheDir = filepath.Join(repo, ".cache", "fluxgen")
	}
	bin := filepath.Join(cacheDir, "controller-gen-"+ControllerToolsVersion)
	if st, err := os.Stat(bin); err == nil && !st.IsDir() {
		return bin, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(cacheDir, "cg-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.CommandContext(ctx, "go", "install", "sigs.k8s.io/controller-tools/cmd/controller-gen@"+ControllerToolsVersion)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build controller-gen %s: %w: %s", ControllerToolsVersion, err, out)
	}
	if err := os.Rename(filepath.Join(tmp, "controller-gen"), bin); err != nil {
		return "", err
	}
	return bin, nil
}

// controllerGenCRDs runs controller-gen over a copy of an /api module and returns the CRDs,
// concatenated in file-name order.
func controllerGenCRDs(ctx context.Context, gen, modDir string) ([]byte, error) {
	tmp, err := os.MkdirTemp("", "fluxgen-api-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	src := filepath.Join(tmp, "src")
	if err := os.CopyFS(src, os.DirFS(modDir)); err != nil {
		return nil, err
	}
	if err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Chmod(p, map[bool]os.FileMode{true: 0o755, false: 0o644}[d.IsDir()])
	}); err != nil {
		return nil, err
	}
	outDir := filepath.Join(tmp, "crds")
	cmd := exec.CommandContext(ctx, gen, "crd:crdVersions=v1", "paths=./...", "output:crd:dir="+outDir)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("controller-gen: %w: %s", err, out)
	}
	return concatYAML(outDir)
}

func concatYAML(dir string) ([]byte, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no YAML in %s", dir)
	}
	sort.Strings(files)
	var b bytes.Buffer
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		data = bytes.TrimPrefix(data, []byte("---\n"))
		b.WriteString("---\n")
		b.Write(data)
		if !bytes.HasSuffix(data, []byte("\n")) {
			b.WriteByte('\n')
		}
	}
	return b.Bytes(), nil
}

func copyDir(fs filesys.FileSystem, src, dst string) error {
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		return copyFile(fs, p, path.Join(dst, filepath.ToSlash(rel)))
	})
}

func copyFile(fs filesys.FileSystem, src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return fs.WriteFile(dst, data)
}

func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if data, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil &&
			strings.Contains(string(data), "module github.com/opencsp/installer\n") {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no github.com/opencsp/installer go.mod above %s", wd)
		}
	}
}
