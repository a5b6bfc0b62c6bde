package kubeenv

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
)

var rootModule = regexp.MustCompile(`(?m)^module\s+github\.com/opencsp/installer\s*$`)

// ToolsDirEnv overrides where the built tools are looked up (default <repo>/.cache/tools).
const ToolsDirEnv = "OPENCSP_TOOLS_DIR"

// ErrToolsMissing is returned (wrapped) by Start when the binaries have not been built.
var ErrToolsMissing = errors.New("e2e tools not built: run `make tools` (builds etcd, kube-apiserver, kubectl and the Flux controllers into .cache/tools; ~12 min the first time)")

// Tools are the absolute paths of the binaries and CRDs that e2e/tools built.
type Tools struct {
	Dir                 string
	Etcd                string
	KubeAPIServer       string
	Kubectl             string
	SourceController    string
	KustomizeController string
	FluxCRDs            string            // directory of the Flux CRD YAML files
	Versions            map[string]string // tool name -> version
}

// manifest mirrors e2e/tools.Manifest (a separate module; the JSON is the contract).
type manifest struct {
	Tools map[string]struct {
		Version string `json:"version"`
		Path    string `json:"path"`
	} `json:"tools"`
	FluxCRDs string `json:"fluxCRDs"`
}

// FindTools locates the tools: dir if non-empty, else $OPENCSP_TOOLS_DIR, else
// <repo>/.cache/tools with <repo> found above the working directory. Every binary must exist;
// the error wraps ErrToolsMissing and names what is missing.
func FindTools(dir string) (*Tools, error) {
	if dir == "" {
		dir = os.Getenv(ToolsDirEnv)
	}
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, err
		}
		repo, err := findRepo(wd)
		if err != nil {
			return nil, fmt.Errorf("%w (%v)", ErrToolsMissing, err)
		}
		dir = filepath.Join(repo, ".cache", "tools")
	}
	data, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil, fmt.Errorf("%w: no %s", ErrToolsMissing, filepath.Join(dir, "manifest.json"))
	}
	var m manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrToolsMissing, filepath.Join(dir, "manifest.json"), err)
	}
	t := &Tools{Dir: dir, Versions: map[string]string{}}
	for name, dst := range map[string]*string{
		"etcd": &t.Etcd, "kube-apiserver": &t.KubeAPIServer, "kubectl": &t.Kubectl,
		"source-controller": &t.SourceController, "kustomize-controller": &t.KustomizeController,
	} {
		e, ok := m.Tools[name]
		if !ok {
			return nil, fmt.Errorf("%w: %s not in the manifest", ErrToolsMissing, name)
		}
		p := filepath.Join(dir, e.Path)
		if st, err := os.Stat(p); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return nil, fmt.Errorf("%w: missing %s", ErrToolsMissing, p)
		}
		*dst = p
		t.Versions[name] = e.Version
	}
	t.FluxCRDs = filepath.Join(dir, m.FluxCRDs)
	if yamls, _ := filepath.Glob(filepath.Join(t.FluxCRDs, "*.yaml")); m.FluxCRDs == "" || len(yamls) == 0 {
		return nil, fmt.Errorf("%w: no Flux CRDs in %s", ErrToolsMissing, t.FluxCRDs)
	}
	return t, nil
}

// findRepo walks up from dir to the root of github.com/opencsp/installer.
func findRepo(dir string) (string, error) {
	for d := dir; ; {
		if data, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && rootModule.Match(data) {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no github.com/opencsp/installer go.mod above %s", dir)
		}
		d = parent
	}
}
