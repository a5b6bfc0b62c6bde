package k3s

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// KubeconfigMode is what config.yaml asks K3s for: root-only. The installer
// reads k3s.yaml through sudo, so nothing on the VM needs it world-readable
// (K3s's own default is 0600 too; "0644" would hand cluster-admin to every
// local user).
const KubeconfigMode = "0600"

// nodeConfig is what goes into /etc/rancher/k3s/config.yaml.
type nodeConfig struct {
	NodeName  string
	TLSSANs   []string // VM address first, then the configured names
	Disable   []string
	ExtraArgs []string // "--key=value" or "--flag"
}

// Options that take lists in K3s's config file (and may repeat as flags).
var listOptions = []string{"tls-san", "disable", "node-label", "node-taint", "kube-apiserver-arg",
	"kube-controller-manager-arg", "kube-scheduler-arg", "kubelet-arg", "kube-proxy-arg", "etcd-arg"}

// render writes config.yaml deterministically (same input, same bytes: the
// digest decides whether a node must be reconfigured). Extra args become
// config-file keys, as K3s reads its flags from there: "--kube-apiserver-arg=a=b"
// adds "a=b" to the kube-apiserver-arg list, a bare "--flag" is "flag: true".
func (c nodeConfig) render() ([]byte, error) {
	type entry struct {
		key  string
		list bool
		vals []string
	}
	var entries []*entry
	find := func(key string) *entry {
		for _, e := range entries {
			if e.key == key {
				return e
			}
		}
		e := &entry{key: key, list: slices.Contains(listOptions, key)}
		entries = append(entries, e)
		return e
	}
	add := func(key string, vals ...string) {
		e := find(key)
		for _, v := range vals {
			if e.list && slices.Contains(e.vals, v) {
				continue
			}
			if !e.list {
				e.vals = nil // the last value wins, as on a command line
			}
			e.vals = append(e.vals, v)
		}
	}
	add("node-name", c.NodeName)
	add("write-kubeconfig-mode", KubeconfigMode)
	add("tls-san", c.TLSSANs...)
	if len(c.Disable) > 0 {
		add("disable", c.Disable...)
	}
	for _, a := range c.ExtraArgs {
		if !strings.HasPrefix(a, "--") || len(a) < 3 {
			return nil, fmt.Errorf("k3s extra arg %q: want --name=value or --flag", a)
		}
		k, v, ok := strings.Cut(a[2:], "=")
		if !ok {
			v = "true"
		}
		switch k {
		case "node-name", "write-kubeconfig-mode", "config", "data-dir":
			return nil, fmt.Errorf("k3s extra arg %q: %s is managed by the installer", a, k)
		}
		add(k, v)
	}

	root := &yaml.Node{Kind: yaml.MappingNode}
	for _, e := range entries {
		key := &yaml.Node{Kind: yaml.ScalarNode, Value: e.key}
		var val *yaml.Node
		if e.list {
			val = &yaml.Node{Kind: yaml.SequenceNode}
			for _, v := range e.vals {
				val.Content = append(val.Content, scalar(v))
			}
		} else {
			val = scalar(e.vals[len(e.vals)-1])
		}
		root.Content = append(root.Content, key, val)
	}
	body, err := yaml.Marshal(root)
	if err != nil {
		return nil, fmt.Errorf("render k3s config: %w", err)
	}
	header := "# Written by the opencsp installer (stage k3s). Edits are overwritten by the next install run;\n" +
		"# change k3s.* in opencsp.yaml instead.\n"
	return append([]byte(header), body...), nil
}

// scalar is a string node, quoted when YAML would read it as something else
// ("0600" as a number, "true" as a bool).
func scalar(v string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v}
	var probe any
	if err := yaml.Unmarshal([]byte(v), &probe); err != nil || fmt.Sprint(probe) != v {
		n.Style = yaml.DoubleQuotedStyle
	} else if _, isString := probe.(string); !isString {
		n.Style = yaml.DoubleQuotedStyle
	}
	return n
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
