package opsrepo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net/netip"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/opencsp/installer/clusters"
	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/logging"
	"github.com/opencsp/installer/manifests"
)

// ErrInvalidInput marks render errors the user fixes in the config or the
// flags (exit code 2): nothing was written.
var ErrInvalidInput = errors.New("invalid input")

func inputErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidInput, fmt.Sprintf(format, args...))
}

// Repo-level names.
const (
	// ComponentsDir holds the copy of manifests.FS() shared by all clusters.
	ComponentsDir = manifests.RepoComponentsDir
	// FilesListName, in the cluster folder, lists every file opencsp wrote
	// (repo-relative): the ownership record of README.md.
	FilesListName = ".opencsp-files"
	// SOPSConfigName, in the cluster folder, lets operators edit the
	// encrypted Secrets with the sops CLI.
	SOPSConfigName = ".sops.yaml"
)

// RenderInput is everything a render depends on.
type RenderInput struct {
	Config *config.Config
	// StateDir holds the age key when Config names none (AgeKeyPath); only
	// used when AgeKey is nil.
	StateDir string
	// AgeKey encrypts the Secrets; nil loads or creates it at AgeKeyPath.
	AgeKey *AgeKey
	// MgmtAddress is the management VM's IP address (provision stage);
	// empty falls back to the static address of the config.
	MgmtAddress string
	// InstallerVersion is written into commit messages (e.g. v0.1.0).
	InstallerVersion string
	// Vars sets further cluster variables (STORAGE_CLASS, CLUSTER_ISSUER,
	// ACME_EMAIL, ...; see manifests.Vars). The ones derived from the
	// config cannot be set here.
	Vars map[string]string
	// Extra files of the cluster folder (paths relative to it), e.g. the
	// flux stage's flux-system/gotk-components.yaml and gotk-sync.yaml.
	Extra map[string][]byte
	// Existing is the ops repo as it is now (repo root; nil for none): the
	// Secrets' values are read back from it, and encrypted files whose
	// plaintext is unchanged are kept byte for byte.
	Existing fs.FS
	// Logger receives progress (never a secret); nil discards.
	Logger *slog.Logger
	// Redactor learns every generated or read secret and the age key.
	Redactor *logging.Redactor
	// Now stamps newly encrypted files (sops lastmodified); nil: time.Now.
	Now func() time.Time

	// previous are the Secret values of an earlier render of the same
	// input, used before generating new ones (Tree.Rerender).
	previous map[string]map[string]string
}

// Tree is a rendered ops repo: every file opencsp owns, by repo-relative
// slash path.
type Tree struct {
	Cluster string
	// Path is the cluster folder in the repo (opsRepo.path).
	Path string
	// Files are the rendered files, including the encrypted Secrets and
	// the FilesListName record.
	Files map[string][]byte
	// Layers are the planned layers in rollout order.
	Layers []string
	// Warnings of the plan (components switched off by others, missing
	// optional dependencies).
	Warnings []string
	// Recipient is the age public key of the Secrets.
	Recipient string
	// Version is the installer version of the render.
	Version string

	in     RenderInput
	values map[string]map[string]string // secret name -> key -> value
}

// Paths returns the tree's file paths, sorted.
func (t *Tree) Paths() []string { return slices.Sorted(maps.Keys(t.Files)) }

// Roots are the repo folders the tree owns: the cluster folder and
// components/.
func (t *Tree) Roots() []string { return []string{t.Path, ComponentsDir} }

// Rerender renders the same input against another state of the repo
// (existing, repo root), e.g. a new remote head. Secret values found there
// win; values of this tree are reused before new ones are generated.
func (t *Tree) Rerender(ctx context.Context, existing fs.FS) (*Tree, error) {
	in := t.in
	in.Existing = existing
	in.previous = t.values
	return Render(ctx, in)
}

// ClusterPath is the cluster folder in the ops repo: opsRepo.path, default
// clusters/<cluster>.
func ClusterPath(cfg *config.Config) string {
	if cfg.OpsRepo.Path != "" {
		return cfg.OpsRepo.Path
	}
	return "clusters/" + cfg.Cluster.Name
}

// Render renders the ops repo for in.Config. Problems with the input wrap
// ErrInvalidInput.
func Render(ctx context.Context, in RenderInput) (*Tree, error) {
	if in.Config == nil {
		return nil, inputErrorf("no config")
	}
	if in.Logger == nil {
		in.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if in.Redactor == nil {
		in.Redactor = &logging.Redactor{}
	}
	if in.Now == nil {
		in.Now = time.Now
	}
	cfg := in.Config
	log := in.Logger.With("cluster", cfg.Cluster.Name)
	cpath := ClusterPath(cfg)
	if err := checkClusterPath(cpath); err != nil {
		return nil, err
	}
	vars, err := ClusterVars(cfg, in.MgmtAddress, in.Vars)
	if err != nil {
		return nil, err
	}
	layers, warnings, err := manifests.Plan(cfg.ComponentEnabled)
	if err != nil {
		return nil, fmt.Errorf("plan layers: %w", err)
	}
	for _, w := range warnings {
		log.Info("layer plan", "warning", w)
	}
	files, err := clusters.Render(cfg.Cluster.Name, layers, vars, clusters.Options{Overrides: overrides(cfg)})
	if err != nil {
		return nil, inputErrorf("render cluster %s: %v", cfg.Cluster.Name, err)
	}
	if in.AgeKey == nil {
		if cfg.Secrets.AgeKeyFile == "" && in.StateDir == "" {
			return nil, inputErrorf("no age key: set secrets.ageKeyFile or a state dir")
		}
		p := AgeKeyPath(cfg, in.StateDir)
		k, created, err := LoadOrCreateAgeKey(p)
		if err != nil {
			return nil, err
		}
		if created {
			log.Info("generated age key", "path", p, "recipient", k.Recipient())
		}
		in.AgeKey = k
	}
	in.Redactor.Add(in.AgeKey.Secret())

	t := &Tree{
		Cluster:   cfg.Cluster.Name,
		Path:      cpath,
		Files:     map[string][]byte{},
		Warnings:  warnings,
		Recipient: in.AgeKey.Recipient(),
		Version:   in.InstallerVersion,
		in:        in,
	}
	for _, l := range layers {
		t.Layers = append(t.Layers, l.Name)
	}
	for p, data := range files {
		t.Files[path.Join(cpath, p)] = data
	}
	for _, p := range slices.Sorted(maps.Keys(in.Extra)) {
		if err := checkExtra(p); err != nil {
			return nil, err
		}
		t.Files[path.Join(cpath, p)] = in.Extra[p]
	}
	err = fs.WalkDir(manifests.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(manifests.FS(), p)
		t.Files[path.Join(ComponentsDir, p)] = data
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("copy components: %w", err)
	}
	t.Files[path.Join(cpath, SOPSConfigName)] = sopsConfig(t.Recipient)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	secretFiles, values, err := renderSecrets(ctx, in, cpath, log)
	if err != nil {
		return nil, err
	}
	maps.Copy(t.Files, secretFiles)
	t.values = values
	t.Files[path.Join(cpath, FilesListName)] = filesList(t)
	log.Debug("rendered ops repo", "files", len(t.Files), "layers", len(t.Layers))
	return t, nil
}

// ClusterVars are the cluster-vars values of a config: name, domain, K3s
// version, the management address (mgmt, else the config's static
// address) and the further variables of extra.
func ClusterVars(cfg *config.Config, mgmt string, extra map[string]string) (map[string]string, error) {
	if mgmt == "" {
		mgmt = StaticAddress(cfg)
	}
	if mgmt == "" {
		return nil, inputErrorf("the management VM address is not known yet (managementVM.network uses DHCP): give it explicitly")
	}
	if a, err := netip.ParseAddr(mgmt); err != nil || a.Zone() != "" {
		return nil, inputErrorf("management VM address %q is not an IP address", mgmt)
	}
	vars := map[string]string{
		"CLUSTER_NAME":       cfg.Cluster.Name,
		"CLUSTER_DOMAIN":     cfg.Cluster.Domain,
		"K3S_VERSION":        cfg.K3s.Version,
		"MANAGEMENT_ADDRESS": mgmt,
	}
	for _, k := range slices.Sorted(maps.Keys(extra)) {
		if _, fromConfig := vars[k]; fromConfig {
			return nil, inputErrorf("cluster variable %s comes from the config and cannot be set", k)
		}
		vars[k] = extra[k]
	}
	if _, err := manifests.ResolveVars(vars); err != nil {
		return nil, inputErrorf("%v", err)
	}
	return vars, nil
}

// StaticAddress is the management VM's address from the config
// (managementVM.network.address without the prefix), or "".
func StaticAddress(cfg *config.Config) string {
	n := cfg.ManagementVM.Network
	if n.DHCP || n.Address == "" {
		return ""
	}
	if p, err := netip.ParsePrefix(n.Address); err == nil {
		return p.Addr().String()
	}
	if a, err := netip.ParseAddr(n.Address); err == nil {
		return a.String()
	}
	return ""
}

func overrides(cfg *config.Config) map[string]clusters.Override {
	out := map[string]clusters.Override{}
	for name, c := range cfg.Components {
		if c.Version != "" || len(c.Values) > 0 {
			out[name] = clusters.Override{Version: c.Version, Values: c.Values}
		}
	}
	return out
}

func checkClusterPath(p string) error {
	if p == "" || p == "." || path.IsAbs(p) || path.Clean(p) != p || strings.HasPrefix(p, "../") || p == ".." {
		return inputErrorf("opsRepo.path %q must be a clean relative folder", p)
	}
	if p == ComponentsDir || strings.HasPrefix(p, ComponentsDir+"/") || p == ".git" || strings.HasPrefix(p, ".git/") {
		return inputErrorf("opsRepo.path %q overlaps %s/ or .git/", p, ComponentsDir)
	}
	return nil
}

func checkExtra(p string) error {
	if !fs.ValidPath(p) || p == "." || path.Clean(p) != p {
		return fmt.Errorf("extra file %q: not a clean relative path", p)
	}
	if strings.HasPrefix(p, clusters.SecretsDir+"/") || p == FilesListName || p == SOPSConfigName {
		return fmt.Errorf("extra file %q: written by opsrepo itself", p)
	}
	return nil
}

func sopsConfig(recipient string) []byte {
	return fmt.Appendf(nil, `# sops settings for editing this cluster's Secrets by hand
# (sops edit secrets/<name>.sops.yaml). Written by opencsp.
creation_rules:
  - path_regex: \.sops\.yaml$
    encrypted_regex: ^(data|stringData)$
    age: %s
`, recipient)
}

func filesList(t *Tree) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# Files opencsp writes for cluster %s. opencsp deletes a listed file when it\n", t.Cluster)
	b.WriteString("# no longer renders it, and refuses to touch unlisted files under its folders.\n")
	paths := append(t.Paths(), path.Join(t.Path, FilesListName))
	slices.Sort(paths)
	for _, p := range slices.Compact(paths) {
		b.WriteString(p)
		b.WriteByte('\n')
	}
	return []byte(b.String())
}
