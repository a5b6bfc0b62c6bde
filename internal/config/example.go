package config

import (
	"bytes"
	_ "embed"
	"fmt"
	"text/template"

	"github.com/opencsp/installer/profiles"
)

//go:embed example.yaml.tmpl
var exampleTemplate string

// ExampleOptions fills the parts of an example that depend on the user.
type ExampleOptions struct {
	Profile        string
	Cluster        string
	PrivateKeyFile string // path the example points at
	PublicKey      string // authorized_keys line for the example; optional
}

// Example renders a commented config for a profile that validates once its
// references (environment variables, key files) exist.
func Example(o ExampleOptions) ([]byte, error) {
	if _, _, ok := profiles.Get(o.Profile); !ok {
		return nil, fmt.Errorf("unknown profile %q; use one of %v", o.Profile, profiles.Names())
	}
	if o.Cluster == "" {
		o.Cluster = "lab"
	}
	if o.PrivateKeyFile == "" {
		o.PrivateKeyFile = "~/.ssh/id_ed25519"
	}
	data := struct {
		ExampleOptions
		Image, User               string
		Cores, MemoryMiB, DiskGiB int
	}{o, "debian-12", "opencsp", 4, 16384, 100}
	switch o.Profile {
	case "openstack":
		data.Image, data.User = "ubuntu-24.04", "ubuntu"
	case "cluster":
		data.Cores, data.MemoryMiB, data.DiskGiB = 8, 24576, 150
	case "minimal":
		data.Cores, data.MemoryMiB, data.DiskGiB = 2, 8192, 40
	}
	t, err := template.New("example").Parse(exampleTemplate)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
