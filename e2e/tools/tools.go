// Package tools builds and caches the binaries the e2e tests run: etcd, kube-apiserver, kubectl,
// Flux source-controller and kustomize-controller, plus the Flux CRDs copied from the
// controller modules. Each tool is pinned by its own module under pins/ and built into
// <out>/<name>-<version> only when that file is missing or its stamp (a hash of everything
// that goes into the build) changed, so reruns take well under a second.
//
// The result is described by <out>/manifest.json, which e2e/kubeenv reads.
package tools

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"
)

// KubeVersion, EtcdVersion and FluxVersion are the pinned versions; pins/*/go.mod must agree.
const (
	KubeVersion = "v1.36.3"
	EtcdVersion = "v3.6.8"
	FluxVersion = "v1.9.6" // source-controller and kustomize-controller
)

// ManifestName is the file in the output directory that lists what was built.
const ManifestName = "manifest.json"

// Tool is one binary to build.
type Tool struct {
	Name    string // binary name; the output is <Name>-<Version>
	Version string
	Pin     string // directory under pins/ holding the module that pins it
	Package string // the main package to build
	LDFlags string
}

func kubeStamp() string {
	major, minor, _ := strings.Cut(strings.TrimPrefix(KubeVersion, "v"), ".")
	minor, _, _ = strings.Cut(minor, ".")
	var b []string
	for _, p := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		b = append(b,
			"-X "+p+".gitVersion="+KubeVersion,
			"-X "+p+".gitMajor="+major,
			"-X "+p+".gitMinor="+minor,
			"-X "+p+".gitTreeState=clean",
			"-X "+p+".buildDate=1970-01-01T00:00:00Z")
	}
	return strings.Join(b, " ")
}

// Tools is the build list, in build order (cheapest first).
var Tools = []Tool{
	{Name: "etcd", Version: EtcdVersion, Pin: "etcd", Package: "go.etcd.io/etcd/server/v3",
		LDFlags: "-X go.etcd.io/etcd/api/v3/version.GitSHA=" + EtcdVersion},
	{Name: "kube-apiserver", Version: KubeVersion, Pin: "kube", Package: "k8s.io/kubernetes/cmd/kube-apiserver",
		LDFlags: kubeStamp()},
	{Name: "kubectl", Version: KubeVersion, Pin: "kube", Package: "k8s.io/kubernetes/cmd/kubectl",
		LDFlags: kubeStamp()},
	{Name: "source-controller", Version: FluxVersion, Pin: "source-controller", Package: "github.com/fluxcd/source-controller"},
	{Name: "kustomize-controller", Version: FluxVersion, Pin: "kustomize-controller", Package: "github.com/fluxcd/kustomize-controller"},
}

// CRDSource is a module whose config/crd/bases/*.yaml are copied into the CRD directory.
type CRDSource struct {
	Pin    string
	Module string
}

// FluxCRDDir is the directory name (under the output dir) of the copied Flux CRDs.
var FluxCRDDir = "flux-crds-" + FluxVersion

// FluxCRDSources lists where the Flux CRDs come from (Apache-2.0, copied verbatim).
var FluxCRDSources = []CRDSource{
	{Pin: "source-controller", Module: "github.com/fluxcd/source-controller@" + FluxVersion},
	{Pin: "kustomize-controller", Module: "github.com/fluxcd/kustomize-controller@" + FluxVersion},
}

// Manifest is written to <out>/manifest.json. Paths are relative to the output directory.
type Manifest struct {
	Tools    map[string]ManifestTool `json:"tools"`
	FluxCRDs string                  `json:"fluxCRDs"`
}

// ManifestTool is one built binary.
type ManifestTool struct {
	Version string `json:"version"`
	Path    string `json:"path"`
}

// Builder builds the tools.
type Builder struct {
	PinsDir string    // e2e/tools/pins
	OutDir  string    // <repo>/.cache/tools
	Go      string    // the go command; "go" if empty
	Log     io.Writer // progress; os.Stderr if nil
	Force   bool      // rebuild even when the stamp matches
	Only    map[string]bool
}

func (b *Builder) logf(format string, args ...any) {
	w := b.Log
	if w == nil {
		w = os.Stderr
	}
	fmt.Fprintf(w, "buildtools: "+format+"\n", args...)
}

func (b *Builder) goCmd() string {
	if b.Go != "" {
		return b.Go
	}
	return "go"
}

// env is the environment of every go command: module mode for the pin, trimmed static builds.
func (b *Builder) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "GOFLAGS", "GOWORK", "CGO_ENABLED", "GOOS", "GOARCH":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "GOFLAGS=-trimpath -buildvcs=false -mod=readonly", "GOWORK=off", "CGO_ENABLED=0")
}

func (b *Builder) output(dir string, args ...string) ([]byte, error) {
	cmd := exec.Command(b.goCmd(), args...)
	cmd.Dir = dir
	cmd.Env = b.env()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go %s in %s: %v\n%s", strings.Join(args, " "), dir, err, stderr.Bytes())
	}
	return out, nil
}

// Stamp is the hash of everything that determines a tool's binary.
func (b *Builder) Stamp(t Tool, goVersion string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%s\x00%s/%s\x00", t.Name, t.Version, t.Package, t.LDFlags, goVersion, runtime.GOOS, runtime.GOARCH)
	for _, f := range []string{"go.mod", "go.sum"} {
		data, err := os.ReadFile(filepath.Join(b.PinsDir, t.Pin, f))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", f, len(data))
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func upToDate(bin, stampFile, stamp string) bool {
	if _, err := os.Stat(bin); err != nil {
		return false
	}
	got, err := os.ReadFile(stampFile)
	return err == nil && strings.TrimSpace(string(got)) == stamp
}

// Run builds what is missing or stale, copies the CRDs and writes the manifest.
func (b *Builder) Run() (*Manifest, error) {
	if err := os.MkdirAll(b.OutDir, 0o755); err != nil {
		return nil, err
	}
	// One build at a time per output directory (two checkouts' `make tools` or parallel CI
	// jobs): the second waits, then finds everything up to date.
	lock, err := os.OpenFile(filepath.Join(b.OutDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b.logf("waiting for another buildtools on %s", b.OutDir)
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
			return nil, err
		}
	}
	gv, err := b.output(b.PinsDir, "env", "GOVERSION")
	if err != nil {
		return nil, err
	}
	goVersion := strings.TrimSpace(string(gv))
	m := &Manifest{Tools: map[string]ManifestTool{}}
	for _, t := range Tools {
		name := t.Name + "-" + t.Version
		m.Tools[t.Name] = ManifestTool{Version: t.Version, Path: name}
		if len(b.Only) > 0 && !b.Only[t.Name] {
			continue
		}
		if err := b.build(t, goVersion); err != nil {
			return nil, err
		}
	}
	if len(b.Only) == 0 || b.Only["flux-crds"] {
		if err := b.copyCRDs(goVersion); err != nil {
			return nil, err
		}
	}
	m.FluxCRDs = FluxCRDDir
	data, _ := json.MarshalIndent(m, "", "  ")
	if err := writeAtomic(filepath.Join(b.OutDir, ManifestName), append(data, '\n'), 0o644); err != nil {
		return nil, err
	}
	return m, nil
}

func (b *Builder) build(t Tool, goVersion string) error {
	name := t.Name + "-" + t.Version
	bin := filepath.Join(b.OutDir, name)
	stampFile := bin + ".stamp"
	stamp, err := b.Stamp(t, goVersion)
	if err != nil {
		return err
	}
	if !b.Force && upToDate(bin, stampFile, stamp) {
		b.logf("%s: up to date", name)
		return nil
	}
	b.logf("%s: building %s (takes minutes when cold)", name, t.Package)
	start := time.Now()
	tmp := bin + ".tmp"
	args := []string{"build", "-p", "2", "-ldflags", strings.TrimSpace("-s -w " + t.LDFlags), "-o", tmp, t.Package}
	cmd := exec.Command(b.goCmd(), args...)
	cmd.Dir = filepath.Join(b.PinsDir, t.Pin)
	cmd.Env = b.env()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("building %s: %v\n%s", name, err, out.Bytes())
	}
	if err := os.Rename(tmp, bin); err != nil {
		return err
	}
	if err := writeAtomic(stampFile, []byte(stamp+"\n"), 0o644); err != nil {
		return err
	}
	b.logf("%s: built in %s", name, time.Since(start).Round(time.Second))
	return nil
}

// ModuleDir returns the extracted directory of module@version in the module cache, downloading
// it through the pin's module (so its go.sum verifies it) when needed.
func (b *Builder) ModuleDir(pin, modVersion string) (string, error) {
	out, err := b.output(filepath.Join(b.PinsDir, pin), "mod", "download", "-json", modVersion)
	if err != nil {
		return "", err
	}
	var info struct{ Dir, Error string }
	if err := json.Unmarshal(out, &info); err != nil {
		return "", fmt.Errorf("go mod download %s: %v", modVersion, err)
	}
	if info.Error != "" || info.Dir == "" {
		return "", fmt.Errorf("go mod download %s: %s", modVersion, info.Error)
	}
	return info.Dir, nil
}

// copyCRDs copies config/crd/bases/*.yaml of the Flux controller modules into <out>/FluxCRDDir.
func (b *Builder) copyCRDs(goVersion string) error {
	dir := filepath.Join(b.OutDir, FluxCRDDir)
	stampFile := dir + ".stamp"
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00", goVersion)
	for _, s := range FluxCRDSources {
		fmt.Fprintf(h, "%s\x00", s.Module)
	}
	stamp := hex.EncodeToString(h.Sum(nil))
	if !b.Force && upToDate(dir, stampFile, stamp) {
		b.logf("%s: up to date", FluxCRDDir)
		return nil
	}
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	var names []string
	for _, s := range FluxCRDSources {
		src, err := b.ModuleDir(s.Pin, s.Module)
		if err != nil {
			return err
		}
		files, _ := filepath.Glob(filepath.Join(src, "config", "crd", "bases", "*.yaml"))
		if len(files) == 0 {
			return fmt.Errorf("no CRDs in %s/config/crd/bases", src)
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(tmp, filepath.Base(f)), data, 0o644); err != nil {
				return err
			}
			names = append(names, filepath.Base(f))
		}
	}
	sort.Strings(names)
	notice := "Copied verbatim from config/crd/bases of\n"
	for _, s := range FluxCRDSources {
		notice += "  " + s.Module + "\n"
	}
	notice += "Licence: Apache-2.0 (The Flux authors). Written by e2e/tools/cmd/buildtools.\n"
	if err := os.WriteFile(filepath.Join(tmp, "SOURCE"), []byte(notice), 0o644); err != nil {
		return err
	}
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	b.logf("%s: copied %d CRDs", FluxCRDDir, len(names))
	return writeAtomic(stampFile, []byte(stamp+"\n"), 0o644)
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// FindRepo walks up from dir to the directory holding e2e/tools/pins.
func FindRepo(dir string) (string, error) {
	for d := dir; ; {
		if st, err := os.Stat(filepath.Join(d, "e2e", "tools", "pins")); err == nil && st.IsDir() {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", errors.New("e2e/tools/pins not found above " + dir)
		}
		d = parent
	}
}
