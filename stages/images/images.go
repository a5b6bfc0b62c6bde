// Package images is the stage that turns cloud images into Proxmox VM
// templates: the node downloads the image (download-url, checksum checked
// by PVE), or — air-gapped, or for a local image file — the installer
// fetches it into its cache and uploads it; then a VM importing the image
// is created and converted to a template.
//
// Where templates go: with shared template storage one template serves
// every node (it lives on the first allowed online node); with local
// storage every allowed online node gets its own, so placement stays free
// to choose any of them.
package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/opencsp/installer/images"
	"github.com/opencsp/installer/internal/artifacts"
	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/infra"
	"github.com/opencsp/installer/stages"
)

// Name is the stage name.
const Name = "images"

// Stage implements stages.Stage.
type Stage struct{ provider infra.Provider }

// New returns the images stage working through provider.
func New(p infra.Provider) *Stage { return &Stage{provider: p} }

// Template is one template the stage made or found.
type Template struct {
	Image string `json:"image"` // as named in the config
	Node  string `json:"node"`
	ID    int    `json:"id"`
	Name  string `json:"name"`
}

// Outputs lists the templates per image and node.
type Outputs struct {
	Shared    bool       `json:"shared"` // one template serves every node
	Templates []Template `json:"templates"`
}

// For returns the template of image usable on node.
func (o Outputs) For(image, node string) (Template, bool) {
	for _, t := range o.Templates {
		if t.Image == image && (o.Shared || t.Node == node) {
			return t, true
		}
	}
	return Template{}, false
}

func (*Stage) Name() string { return Name }

// inputs: the images (with their resolved definitions, so an edited
// definition file reruns the stage) and where templates go.
type inputs struct {
	Images       []source       `json:"images"`
	Storage      config.Storage `json:"storage"`
	Network      config.Network `json:"network"`
	Nodes        []string       `json:"nodes"`
	UploadImages bool           `json:"upload_images"`
	Tag          string         `json:"tag"`
	// Appliance: provision method appliance needs no templates (set only
	// then, so cloud-image fingerprints stay as they were).
	Appliance bool `json:"appliance,omitempty"`
}

// skipped reports whether the stage has nothing to do: the management VM
// is installed from the appliance ISO, not cloned from a template.
func skipped(cfg *config.Config) bool {
	return cfg.ManagementVM.Provision.Method == config.ProvisionAppliance
}

func (*Stage) Inputs(cfg *config.Config) any {
	if skipped(cfg) {
		return inputs{Tag: cfg.Tag(), Appliance: true}
	}
	in := inputs{Tag: cfg.Tag()}
	if px := cfg.Infrastructure.Proxmox; px != nil {
		in.Storage, in.Network, in.Nodes, in.UploadImages = px.Storage, px.Network, px.Nodes, px.UploadImages
	}
	for _, entry := range cfg.Images {
		src, err := resolve(cfg, entry)
		if err != nil {
			src = source{Entry: entry, Err: err.Error()}
		}
		in.Images = append(in.Images, src)
	}
	return in
}

// source is where one configured image comes from.
type source struct {
	Entry     string             `json:"entry"`
	Def       *images.Definition `json:"def,omitempty"`
	LocalPath string             `json:"local_path,omitempty"`
	Err       string             `json:"err,omitempty"`
}

var unsafeRE = regexp.MustCompile(`[^a-z0-9-]+`)

// Short is the image's part of the template name.
func (s source) short() string {
	if s.Def != nil {
		return s.Def.Name
	}
	base := strings.ToLower(strings.TrimSuffix(path.Base(s.LocalPath), path.Ext(s.LocalPath)))
	return strings.Trim(unsafeRE.ReplaceAllString(base, "-"), "-")
}

func (s source) fileName() string {
	if s.Def != nil {
		return s.Def.FileName()
	}
	return "opencsp-" + s.short() + ".qcow2" // import content wants .qcow2/.raw
}

func resolve(cfg *config.Config, entry string) (source, error) {
	switch {
	case images.IsDefinitionFile(entry):
		d, err := images.LoadFile(cfg.ResolvePath(entry))
		if err != nil {
			return source{}, err
		}
		return source{Entry: entry, Def: &d}, nil
	default:
		if d, ok := images.Get(entry); ok {
			return source{Entry: entry, Def: &d}, nil
		}
		return source{Entry: entry, LocalPath: cfg.ResolvePath(entry)}, nil
	}
}

// TemplateName is the deterministic name of an image's template.
func TemplateName(cfg *config.Config, short string) string {
	return "opencsp-" + cfg.Cluster.Name + "-" + short
}

// targets decides the nodes that get a template (see the package doc).
func targets(cfg *config.Config, nodes []infra.Node) (names []string, shared bool, err error) {
	px := cfg.Infrastructure.Proxmox
	for _, n := range nodes {
		if n.Online && (len(px.Nodes) == 0 || slices.Contains(px.Nodes, n.Name)) {
			names = append(names, n.Name)
		}
	}
	if len(names) == 0 {
		return nil, false, fmt.Errorf("no allowed node is online")
	}
	for _, n := range nodes {
		if n.Name != names[0] {
			continue
		}
		for _, s := range n.Storages {
			if s.Name == px.Storage.Templates && s.Shared {
				shared = true
			}
		}
	}
	if shared {
		first := names[0]
		if pin := cfg.ManagementVM.Node; pin != "" && slices.Contains(names, pin) {
			first = pin
		}
		return []string{first}, true, nil
	}
	return names, false, nil
}

func (s *Stage) Plan(ctx context.Context, env *stages.Env) ([]stages.Change, error) {
	if skipped(env.Config) {
		return nil, nil
	}
	var out []stages.Change
	nodes, err := s.provider.Nodes(ctx)
	if err != nil {
		for _, entry := range env.Config.Images {
			out = append(out, stages.Change{Action: "ensure", Target: "template of " + entry, Detail: "could not look at the cloud: " + err.Error()})
		}
		return out, nil
	}
	names, _, err := targets(env.Config, nodes)
	if err != nil {
		return nil, err
	}
	for _, entry := range env.Config.Images {
		src, err := resolve(env.Config, entry)
		if err != nil {
			return nil, err
		}
		name := TemplateName(env.Config, src.short())
		for _, node := range names {
			if _, ok, err := s.provider.FindTemplate(ctx, name, env.Config.Tag(), node); err != nil {
				return nil, err
			} else if !ok {
				out = append(out, stages.Change{Action: "create", Target: "template " + name, Detail: "on " + node + " from " + entry})
			}
		}
	}
	return out, nil
}

func (s *Stage) Run(ctx context.Context, env *stages.Env) error {
	cfg := env.Config
	if skipped(cfg) {
		env.Info("managementVM.provision.method is appliance: no templates needed")
		return env.SetOutputs(Outputs{})
	}
	px := cfg.Infrastructure.Proxmox
	nodes, err := s.provider.Nodes(ctx)
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	names, shared, err := targets(cfg, nodes)
	if err != nil {
		return err
	}
	cache := &artifacts.Cache{Dir: filepath.Join(env.StateDir, "cache"), Events: env.Events, Stage: Name, Logger: env.Log}
	out := Outputs{Shared: shared}
	for _, entry := range cfg.Images {
		src, err := resolve(cfg, entry)
		if err != nil {
			return err
		}
		img, err := prepare(ctx, env, cache, src, px.UploadImages)
		if err != nil {
			return fmt.Errorf("image %s: %w", entry, err)
		}
		for _, node := range names {
			spec := infra.TemplateSpec{Image: img, Node: node, Name: TemplateName(cfg, src.short()), Tag: cfg.Tag(),
				Storage: px.Storage.Templates, Import: px.Storage.Images, Bridge: px.Network.Bridge, VLAN: px.Network.VLAN}
			done := env.Step("template", fmt.Sprintf("template %s on %s", spec.Name, node))
			t, err := s.provider.EnsureTemplate(ctx, spec, env, env.Events)
			done(err)
			if err != nil {
				return fmt.Errorf("template %s on %s: %w", spec.Name, node, err)
			}
			out.Templates = append(out.Templates, Template{Image: entry, Node: t.Node, ID: t.ID, Name: t.Name})
		}
	}
	return env.SetOutputs(out)
}

// prepare resolves what the provider needs: the expected digest from the
// definition's checksum file and, when the installer uploads, the file in
// the local cache.
func prepare(ctx context.Context, env *stages.Env, cache *artifacts.Cache, src source, upload bool) (infra.Image, error) {
	img := infra.Image{Name: src.short(), FileName: src.fileName()}
	if src.Def == nil {
		sum, size, err := sha256File(src.LocalPath)
		if err != nil {
			return img, err
		}
		img.LocalPath, img.Checksum, img.ChecksumAlgorithm, img.Size = src.LocalPath, sum, "sha256", size
		return img, nil
	}
	d := src.Def
	img.URL = d.URL
	sums, err := cache.Get(ctx, artifacts.Source{URL: d.ChecksumURL, Name: path.Base(d.ChecksumURL) + "-" + d.Name})
	if err != nil {
		return img, fmt.Errorf("fetch checksum file %s: %w", d.ChecksumURL, err)
	}
	f, err := os.Open(sums.Path)
	if err != nil {
		return img, err
	}
	digest, err := artifacts.FindChecksum(f, path.Base(d.URL))
	f.Close()
	if err != nil {
		return img, fmt.Errorf("checksum of %s in %s: %w", path.Base(d.URL), d.ChecksumURL, err)
	}
	if digest.Algo != d.ChecksumAlgorithm {
		return img, fmt.Errorf("checksum file %s holds a %s digest, the definition says %s", d.ChecksumURL, digest.Algo, d.ChecksumAlgorithm)
	}
	img.Checksum, img.ChecksumAlgorithm = digest.Hex, digest.Algo
	if upload {
		env.Info(fmt.Sprintf("fetching %s into the local cache for upload", d.URL))
		file, err := cache.Get(ctx, artifacts.Source{URL: d.URL, Digest: digest})
		if err != nil {
			return img, fmt.Errorf("fetch %s: %w", d.URL, err)
		}
		img.LocalPath, img.Size = file.Path, file.Size
	}
	return img, nil
}

func sha256File(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, fmt.Errorf("local image: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("hash %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// Verify checks that every recorded template still exists (one cheap
// lookup per template, no writes).
func (s *Stage) Verify(ctx context.Context, env *stages.Env) error {
	var out Outputs
	if err := env.Outputs(&out); err != nil {
		return err
	}
	if skipped(env.Config) {
		return nil // nothing was made, nothing can be gone
	}
	if len(out.Templates) == 0 {
		return fmt.Errorf("no templates recorded")
	}
	for _, t := range out.Templates {
		found, ok, err := s.provider.FindTemplate(ctx, t.Name, env.Config.Tag(), t.Node)
		if err != nil {
			return err
		}
		if !ok || found.ID != t.ID {
			return fmt.Errorf("template %s (%d) on %s is gone", t.Name, t.ID, t.Node)
		}
	}
	return nil
}
