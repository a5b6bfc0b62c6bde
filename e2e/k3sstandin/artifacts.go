// Package k3sstandin builds and serves the K3s stand-in "release": the
// stand-in binary (cmd/k3s), an air-gap images tarball carrying the real etcd
// and kube-apiserver built by e2e/tools, the sha256sum file and the stand-in
// install.sh, laid out and named like a K3s GitHub release so the installer's
// production code path (internal/artifacts.Resolve + Cache.Fetch) consumes it.
// See e2e/README.md, "K3s stand-in".
package k3sstandin

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/opencsp/installer/e2e/kubeenv"
)

// InstallScript is the stand-in install.sh.
//
//go:embed install.sh
var InstallScript []byte

// Marker is what the stand-in binary prints after its version.
const Marker = "opencsp-k3s-standin"

// ComponentPrefix is where the tarball carries etcd and kube-apiserver
// (cmd/k3s extracts them from there).
const ComponentPrefix = "opencsp-k3s-standin/bin/"

// Release file names for amd64, as internal/artifacts.Resolve expects them.
const (
	BinaryName    = "k3s"
	ImagesName    = "k3s-airgap-images-amd64.tar.zst"
	ChecksumsName = "sha256sum-amd64.txt"
	ScriptName    = "install.sh"
)

// Release is a built stand-in release in Dir: the four files above.
type Release struct {
	Version string
	Dir     string
}

// Path is the local path of one release file.
func (r *Release) Path(name string) string { return filepath.Join(r.Dir, name) }

// BuildOptions configure Build.
type BuildOptions struct {
	// Version the binary reports, e.g. v1.33.5+k3s1.
	Version string
	// CacheDir holds builds; default <repo>/.cache/k3sstandin.
	CacheDir string
	// ToolsDir is where e2e/tools put etcd and kube-apiserver (see kubeenv.FindTools).
	ToolsDir string
}

var versionRE = regexp.MustCompile(`^v\d+\.\d+\.\d+(-rc\d+)?\+k3s\d+$`)

// Build compiles the stand-in binary with `go build` and packs the tarball,
// reusing the tarball while the tools are unchanged. It fails wrapping
// kubeenv.ErrToolsMissing when `make tools` has not run.
func Build(ctx context.Context, opts BuildOptions) (*Release, error) {
	if !versionRE.MatchString(opts.Version) {
		return nil, fmt.Errorf("k3s stand-in: version %q: want e.g. v1.33.5+k3s1", opts.Version)
	}
	tools, err := kubeenv.FindTools(opts.ToolsDir)
	if err != nil {
		return nil, err
	}
	repo, err := repoRoot()
	if err != nil {
		return nil, err
	}
	cache := opts.CacheDir
	if cache == "" {
		cache = filepath.Join(repo, ".cache", "k3sstandin")
	}
	dir := filepath.Join(cache, "release-"+opts.Version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	rel := &Release{Version: opts.Version, Dir: dir}

	// go build is incremental: cheap when nothing changed.
	tmp := rel.Path(BinaryName) + ".tmp"
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath",
		"-ldflags", "-s -w -X main.version="+opts.Version, "-o", tmp, "./e2e/k3sstandin/cmd/k3s")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("k3s stand-in: go build: %w\n%s", err, out)
	}
	if err := os.Rename(tmp, rel.Path(BinaryName)); err != nil {
		return nil, err
	}

	if err := packImages(rel.Path(ImagesName), map[string]string{"etcd": tools.Etcd, "kube-apiserver": tools.KubeAPIServer}); err != nil {
		return nil, fmt.Errorf("k3s stand-in: pack %s: %w", ImagesName, err)
	}
	if err := os.WriteFile(rel.Path(ScriptName), InstallScript, 0o755); err != nil {
		return nil, err
	}
	var sums strings.Builder
	for _, name := range []string{BinaryName, ImagesName} {
		sum, err := fileSHA256(rel.Path(name))
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&sums, "%s  %s\n", sum, name)
	}
	if err := os.WriteFile(rel.Path(ChecksumsName), []byte(sums.String()), 0o644); err != nil {
		return nil, err
	}
	return rel, nil
}

// packImages writes a zstd tar of the binaries under ComponentPrefix, unless
// one made from the same inputs (path, size, mtime) is there already.
func packImages(dst string, bins map[string]string) error {
	key := map[string]string{}
	for name, p := range bins {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		key[name] = fmt.Sprintf("%s|%d|%d", p, fi.Size(), fi.ModTime().UnixNano())
	}
	stamp, _ := json.Marshal(key)
	if old, err := os.ReadFile(dst + ".stamp"); err == nil && string(old) == string(stamp) {
		if _, err := os.Stat(dst); err == nil {
			return nil
		}
	}
	tmp := dst + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	zw, err := zstd.NewWriter(f, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		f.Close()
		return err
	}
	tw := tar.NewWriter(zw)
	for _, name := range []string{"etcd", "kube-apiserver"} {
		if err := addFile(tw, ComponentPrefix+name, bins[name]); err != nil {
			f.Close()
			return err
		}
	}
	err = errors.Join(tw.Close(), zw.Close(), f.Close())
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	return os.WriteFile(dst+".stamp", stamp, 0o644)
}

func addFile(tw *tar.Writer, name, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: fi.Size(), Typeflag: tar.TypeReg, ModTime: fi.ModTime()}); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

var rootModule = regexp.MustCompile(`(?m)^module\s+github\.com/opencsp/installer\s*$`)

func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; {
		if data, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && rootModule.Match(data) {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("k3s stand-in: no github.com/opencsp/installer go.mod above %s", wd)
		}
		d = parent
	}
}
