package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/opencsp/installer/profiles"
)

// Load reads, merges (profile under file), defaults and validates the config
// at path. Every problem the user must fix comes back together as an
// ErrorList; nothing is written anywhere.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, ErrorList{{Pos: Pos{File: path}, Msg: fmt.Sprintf("cannot read config file: %v; create one with \"opencsp config init\"", unwrapPathErr(err))}}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", path, err)
	}
	return Parse(path, filepath.Dir(abs), data)
}

// LoadForNode is Load for the management node itself (opencsp node
// bootstrap): it validates only what the node uses (cluster, managementVM
// name and network, k3s, opsRepo with its auth, components, secrets, flux)
// and skips what only the installer host needs: infrastructure and its
// credentials, images, managementVM.ssh (the installer's login) and the
// appliance build inputs. Those are not on the node, so checking them there
// would refuse every real operator's config.
func LoadForNode(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, ErrorList{{Pos: Pos{File: path}, Msg: fmt.Sprintf("cannot read config file: %v; the appliance data directory should hold it", unwrapPathErr(err))}}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", path, err)
	}
	return ParseForNode(path, filepath.Dir(abs), data)
}

// LoadForImage is Load for building the appliance ISO (opencsp image iso):
// everything is validated, but the infrastructure's credential references
// (the PVE token, the OpenStack secret) need not resolve, since the ISO never
// carries them and the build machine may not hold them.
func LoadForImage(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, ErrorList{{Pos: Pos{File: path}, Msg: fmt.Sprintf("cannot read config file: %v; create one with \"opencsp config init --profile appliance\"", unwrapPathErr(err))}}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", path, err)
	}
	return parse(path, filepath.Dir(abs), data, scopeImage)
}

// Parse is Load for bytes already read. name is used in messages; baseDir
// anchors relative paths in the file.
func Parse(name, baseDir string, data []byte) (*Config, error) {
	return parse(name, baseDir, data, scopeInstall)
}

// ParseForNode is LoadForNode for bytes already read.
func ParseForNode(name, baseDir string, data []byte) (*Config, error) {
	return parse(name, baseDir, data, scopeNode)
}

// scope is who reads the config, which decides what must be there.
type scope int

const (
	scopeInstall scope = iota // the installer host: everything
	scopeNode                 // the management node (LoadForNode)
	scopeImage                // the ISO build (LoadForImage)
)

func parse(name, baseDir string, data []byte, sc scope) (*Config, error) {
	root, errs := parseDocument(name, data)
	if errs != nil {
		return nil, errs
	}
	d := &decoder{file: name, pos: map[string]Pos{}}

	profile, perr := pickProfile(name, root)
	if perr != nil {
		d.errs = append(d.errs, *perr)
		// Go on with the default profile so the rest of the report is about
		// the file, not about every field the named profile would have set.
		profile = profiles.Default
	}
	cfg := &Config{}
	if profile != "" {
		pdata, pfile, _ := profiles.Get(profile)
		pd := &decoder{file: pfile, pos: map[string]Pos{}}
		proot, perrs := parseDocument(pfile, pdata)
		if perrs != nil {
			return nil, fmt.Errorf("embedded profile %s is broken: %w", profile, perrs)
		}
		pd.decode(proot, reflect.ValueOf(cfg).Elem(), "", nil)
		if pd.errs != nil {
			return nil, fmt.Errorf("embedded profile %s is broken: %w", profile, pd.errs)
		}
		// Positions of profile values are kept so a bad merged value can be
		// traced to the profile; the user's positions override them below.
		for k, v := range pd.pos {
			d.pos[k] = v
		}
	}
	d.decode(root, reflect.ValueOf(cfg).Elem(), "", nil)
	preferFile(cfg, d.pos, name)
	cfg.Profile = profile
	cfg.baseDir = baseDir
	cfg.Source = name
	cfg.raw = data
	applyDefaults(cfg)

	v := &validator{cfg: cfg, pos: d.pos, file: name, baseDir: baseDir, node: sc == scopeNode,
		unresolvedInfraSecrets: sc == scopeImage, decodeErrs: map[string]bool{}}
	for _, e := range d.errs {
		v.decodeErrs[e.Field] = true
	}
	v.validate()
	errs = append(d.errs, v.errs...)
	if len(errs) > 0 {
		return nil, errs.sorted()
	}
	return cfg, nil
}

// parseDocument turns bytes into the root mapping node, refusing empty files,
// binary data, YAML syntax errors and multi-document streams.
func parseDocument(name string, data []byte) (*yaml.Node, ErrorList) {
	fileErr := func(line int, format string, args ...any) ErrorList {
		return ErrorList{{Pos: Pos{File: name, Line: line}, Msg: fmt.Sprintf(format, args...)}}
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fileErr(1, `the file is empty; write an example with "opencsp config init"`)
	}
	if i := bytes.IndexByte(data, 0); i >= 0 || !utf8.Valid(data) {
		if i < 0 {
			i = firstInvalidUTF8(data)
		}
		return nil, fileErr(1+bytes.Count(data[:i], []byte("\n")), "not a YAML text file: binary or non-UTF-8 data at byte %d", i)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); errors.Is(err, io.EOF) {
		return nil, fileErr(1, `the file holds only comments; write an example with "opencsp config init"`)
	} else if err != nil {
		return nil, yamlSyntaxError(name, data, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		line := extra.Line
		if err != nil {
			return nil, yamlSyntaxError(name, data, err)
		}
		return nil, fileErr(line, "the file holds more than one YAML document; keep only the InstallConfig")
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	if doc.Kind != yaml.MappingNode {
		return nil, ErrorList{{Pos: Pos{File: name, Line: doc.Line, Col: doc.Column}, Msg: fmt.Sprintf("the file must be a mapping of fields (apiVersion, kind, cluster, ...), got %s", describe(doc))}}
	}
	return doc, nil
}

var (
	yamlLineRE   = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
	yamlAnchorRE = regexp.MustCompile(`^yaml: unknown anchor '(.*)' referenced$`)
)

// yamlSyntaxError keeps the line from a go-yaml parse error in our format.
func yamlSyntaxError(name string, data []byte, err error) ErrorList {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return ErrorList{{Pos: Pos{File: name, Line: line}, Msg: "YAML syntax error: " + m[2]}}
	}
	line := 1
	if m := yamlAnchorRE.FindStringSubmatch(msg); m != nil {
		// go-yaml names no line here: point at the first use of the alias.
		if i := regexp.MustCompile(`\*` + regexp.QuoteMeta(m[1]) + `\b`).FindIndex(data); i != nil {
			line += bytes.Count(data[:i[0]], []byte("\n"))
		}
	}
	return ErrorList{{Pos: Pos{File: name, Line: line}, Msg: "YAML syntax error: " + strings.TrimPrefix(msg, "yaml: ")}}
}

func firstInvalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size <= 1 {
			return i
		}
		i += size
	}
	return 0
}

// pickProfile reads the profile name before decoding, since the profile is
// decoded first and the file on top of it.
func pickProfile(name string, root *yaml.Node) (string, *FieldError) {
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Value != "profile" {
			continue
		}
		if v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!str" {
			return profiles.Default, nil // null, or a wrong type the decoder reports
		}
		if _, _, ok := profiles.Get(v.Value); !ok {
			return "", &FieldError{Pos: Pos{File: name, Line: k.Line, Col: k.Column}, Field: "profile",
				Msg: fmt.Sprintf("unknown profile %q; use one of %s", v.Value, strings.Join(profiles.Names(), ", "))}
		}
		return v.Value, nil
	}
	return profiles.Default, nil
}

// preferFile settles alternatives that the profile and the file fill in
// differently: the file wins. A static address in the file replaces the
// profile's dhcp: true, and a provider chosen in the file drops the profile's
// section for the other provider. Only choices both made in the file clash.
func preferFile(c *Config, pos map[string]Pos, file string) {
	inFile := func(field string) bool { p, ok := pos[field]; return ok && p.File == file }
	if n := &c.ManagementVM.Network; n.Address != "" && inFile("managementVM.network.address") && !inFile("managementVM.network.dhcp") {
		n.DHCP = false
	}
	inf := &c.Infrastructure
	if inf.Provider == "proxmox" && inf.OpenStack != nil && !inFile("infrastructure.openstack") {
		inf.OpenStack = nil
	}
	if inf.Provider == "openstack" && inf.Proxmox != nil && !inFile("infrastructure.proxmox") {
		inf.Proxmox = nil
	}
}
