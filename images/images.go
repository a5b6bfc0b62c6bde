// Package images holds the cloud-image definitions the installer can turn
// into Proxmox VM templates. They are embedded so the binary is self-contained.
package images

import (
	"bytes"
	"embed"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

//go:embed *.yaml
var files embed.FS

// Definition describes one cloud image and how to verify it.
type Definition struct {
	Name              string `yaml:"name"`
	OS                string `yaml:"os"`
	Release           string `yaml:"release"`
	Arch              string `yaml:"arch"`
	URL               string `yaml:"url"`
	ChecksumURL       string `yaml:"checksumURL"`
	ChecksumAlgorithm string `yaml:"checksumAlgorithm"`
	Format            string `yaml:"format"`
}

// FileName is the name the image gets on Proxmox import storage, which only
// accepts .qcow2/.raw/.vmdk/.ova names.
func (d Definition) FileName() string {
	return fmt.Sprintf("opencsp-%s-%s.%s", d.Name, d.Arch, d.Format)
}

// IsDefinitionFile tells an image definition file (YAML) from an image name
// or an image file path in the config's images list.
func IsDefinitionFile(entry string) bool {
	ext := strings.ToLower(path.Ext(entry))
	return ext == ".yaml" || ext == ".yml"
}

// LoadFile reads an image definition kept outside the binary: the same
// fields as the embedded ones, e.g. to take a cloud image from an internal
// mirror or to add an image the installer does not ship.
func LoadFile(file string) (Definition, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return Definition{}, fmt.Errorf("read image definition: %w", err)
	}
	d, err := decode(b)
	if err != nil {
		return Definition{}, fmt.Errorf("image definition %s: %w", file, err)
	}
	return d, nil
}

// decode parses and checks one definition.
func decode(b []byte) (Definition, error) {
	var d Definition
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&d); err != nil {
		return Definition{}, err
	}
	var missing []string
	for _, f := range []struct{ name, v string }{{"name", d.Name}, {"url", d.URL}, {"checksumURL", d.ChecksumURL}, {"checksumAlgorithm", d.ChecksumAlgorithm}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return Definition{}, fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	if d.ChecksumAlgorithm != "sha256" && d.ChecksumAlgorithm != "sha512" {
		return Definition{}, fmt.Errorf("checksumAlgorithm %q: use sha256 or sha512", d.ChecksumAlgorithm)
	}
	if d.Format == "" {
		d.Format = "qcow2"
	}
	if d.Arch == "" {
		d.Arch = "amd64"
	}
	return d, nil
}

// All returns every embedded definition, sorted by name.
func All() ([]Definition, error) {
	entries, err := files.ReadDir(".")
	if err != nil {
		return nil, err
	}
	var defs []Definition
	for _, e := range entries {
		b, err := files.ReadFile(e.Name())
		if err != nil {
			return nil, err
		}
		d, err := decode(b)
		if err != nil {
			return nil, fmt.Errorf("image definition %s: %w", e.Name(), err)
		}
		if want := strings.TrimSuffix(e.Name(), path.Ext(e.Name())); d.Name != want {
			return nil, fmt.Errorf("image definition %s: name %q must match the file name", e.Name(), d.Name)
		}
		defs = append(defs, d)
	}
	sort.Slice(defs, func(i, j int) bool { return defs[i].Name < defs[j].Name })
	return defs, nil
}

// Get returns the definition with the given name.
func Get(name string) (Definition, bool) {
	defs, err := All()
	if err != nil {
		return Definition{}, false
	}
	for _, d := range defs {
		if d.Name == name {
			return d, true
		}
	}
	return Definition{}, false
}

// Names lists the embedded image names.
func Names() []string {
	defs, _ := All()
	names := make([]string, len(defs))
	for i, d := range defs {
		names[i] = d.Name
	}
	return names
}
