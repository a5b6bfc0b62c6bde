package config

import (
	"bytes"
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// NodeAuth says where the management node finds the ops-repo credential
// the appliance carries for it: paths relative to the node config's
// directory (the data directory), empty when the config names none.
type NodeAuth struct {
	TokenFile  string // becomes opsRepo.auth.token: file:<TokenFile>
	SSHKeyFile string // becomes opsRepo.auth.sshKeyFile
}

// hostOnly are the fields that point at secrets or files of the installer
// host. The node config leaves them out: the node does not use them, and a
// credential such as the Proxmox token must never reach the appliance ISO.
// The age key and the air-gap directory are the node's own (its state dir,
// the data directory's k3s/).
var hostOnly = [][]string{
	{"infrastructure", "proxmox", "tokenSecret"},
	{"infrastructure", "proxmox", "tls", "caFile"},
	{"infrastructure", "openstack", "applicationCredentialSecret"},
	{"infrastructure", "openstack", "tls", "caFile"},
	{"managementVM", "ssh", "privateKeyFile"},
	{"secrets", "ageKeyFile"},
	{"k3s", "artifacts", "airgapDir"},
	{"opsRepo", "auth", "token"},
	{"opsRepo", "auth", "sshKeyFile"},
}

// NodeYAML derives the config the management node reads on first boot from
// the file this config was loaded from: the operator's own fields (profile
// included, so the node merges the same way), without the host-only fields
// above, and with opsRepo.auth pointing at the carried credential. Comments
// are dropped: they are the operator's notes and may quote anything.
func (c *Config) NodeYAML(a NodeAuth) ([]byte, error) {
	if len(c.raw) == 0 {
		return nil, fmt.Errorf("%s: no source text to derive the node config from", c.Source)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(c.raw, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", c.Source, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s: not a mapping", c.Source)
	}
	root := doc.Content[0]
	for _, p := range hostOnly {
		if err := deletePath(root, p); err != nil {
			return nil, fmt.Errorf("%s: %w", c.Source, err)
		}
	}
	set := map[string]string{}
	if a.TokenFile != "" {
		set["token"] = "file:" + a.TokenFile
	}
	if a.SSHKeyFile != "" {
		set["sshKeyFile"] = a.SSHKeyFile
	}
	if len(set) > 0 {
		auth, err := mappingAt(root, []string{"opsRepo", "auth"})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.Source, err)
		}
		for _, k := range []string{"token", "sshKeyFile"} {
			if v, ok := set[k]; ok {
				auth.Content = append(auth.Content,
					&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: k},
					&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v})
			}
		}
	}
	stripComments(&doc)
	var buf bytes.Buffer
	buf.WriteString("# Node config written by opencsp image iso from the install config;\n" +
		"# host-only fields and credentials are left out.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, fmt.Errorf("encode node config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode node config: %w", err)
	}
	return buf.Bytes(), nil
}

// deletePath removes the key at path. An alias on the way is refused: the
// edit would change the anchored node everywhere it is used.
func deletePath(m *yaml.Node, path []string) error {
	for i, key := range path {
		if m.Kind == yaml.AliasNode {
			return fmt.Errorf("%s: YAML aliases are not supported in the fields the node config rewrites; write the value out", joinPath(path[:i]))
		}
		if m.Kind != yaml.MappingNode {
			return nil // absent or not a mapping: nothing to delete (Load reported wrong types)
		}
		j := indexOf(m, key)
		if j < 0 {
			return nil
		}
		if i == len(path)-1 {
			m.Content = append(m.Content[:j], m.Content[j+2:]...)
			return nil
		}
		m = m.Content[j+1]
	}
	return nil
}

// mappingAt returns the mapping at path, creating missing levels.
func mappingAt(m *yaml.Node, path []string) (*yaml.Node, error) {
	for i, key := range path {
		j := indexOf(m, key)
		if j < 0 {
			n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, n)
			m = n
			continue
		}
		n := m.Content[j+1]
		switch {
		case n.Kind == yaml.AliasNode:
			return nil, fmt.Errorf("%s: YAML aliases are not supported in the fields the node config rewrites; write the value out", joinPath(path[:i+1]))
		case n.Kind == yaml.ScalarNode && n.Tag == "!!null":
			*n = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		case n.Kind != yaml.MappingNode:
			return nil, fmt.Errorf("%s: must be a mapping", joinPath(path[:i+1]))
		}
		m = n
	}
	return m, nil
}

func indexOf(m *yaml.Node, key string) int {
	for j := 0; j+1 < len(m.Content); j += 2 {
		if m.Content[j].Value == key {
			return j
		}
	}
	return -1
}

func joinPath(p []string) string { return strings.Join(p, ".") }

func stripComments(n *yaml.Node) {
	n.HeadComment, n.LineComment, n.FootComment = "", "", ""
	for _, c := range n.Content {
		stripComments(c)
	}
}

// FilePath returns the file a file: reference points at, resolved against
// baseDir, and false for env: references (or an invalid one).
func (r SecretRef) FilePath(baseDir string) (string, bool) {
	scheme, target, err := r.parse()
	if err != nil || scheme != "file" {
		return "", false
	}
	return resolvePath(baseDir, target), true
}
