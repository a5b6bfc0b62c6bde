package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// serverConfig is what the stand-in understands of K3s's server options.
type serverConfig struct {
	DataDir             string
	NodeName            string
	TLSSANs             []string
	WriteKubeconfigMode os.FileMode
	WriteKubeconfig     string
	Disable             []string // accepted and reported; nothing is packaged here
	APIServerArgs       []string // --kube-apiserver-arg values, passed to the real kube-apiserver
	Ignored             []string // options K3s has but the stand-in does not implement
}

// Options with list values: repeated on the command line, YAML lists in the file.
var listOptions = []string{"tls-san", "disable", "kube-apiserver-arg", "node-label", "node-taint",
	"kube-controller-manager-arg", "kube-scheduler-arg", "kubelet-arg", "kube-proxy-arg", "etcd-arg"}

// loadServerConfig merges /etc/rancher/k3s/config.yaml (or --config) with the
// flags, as K3s does: a flag wins over the file for scalars, list values add up.
func loadServerConfig(args []string) (*serverConfig, error) {
	flags, err := parseFlags(args)
	if err != nil {
		return nil, err
	}
	path := "/etc/rancher/k3s/config.yaml"
	if v, ok := flags["config"]; ok {
		path = v[len(v)-1]
		delete(flags, "config")
	}
	file := map[string][]string{}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", path, err)
	default:
		if file, err = parseConfigFile(data); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	merged := map[string][]string{}
	for k, v := range file {
		merged[k] = v
	}
	for k, v := range flags {
		if slices.Contains(listOptions, k) {
			merged[k] = append(merged[k], v...)
		} else {
			merged[k] = v
		}
	}
	return buildServerConfig(merged)
}

func last(v []string) string { return v[len(v)-1] }

func buildServerConfig(opts map[string][]string) (*serverConfig, error) {
	c := &serverConfig{DataDir: "/var/lib/rancher/k3s", WriteKubeconfigMode: 0o600,
		WriteKubeconfig: "/etc/rancher/k3s/k3s.yaml"}
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := opts[k]
		switch k {
		case "data-dir", "d":
			c.DataDir = last(v)
		case "node-name":
			c.NodeName = last(v)
		case "tls-san":
			for _, s := range v {
				// K3s accepts comma-separated values too.
				for _, part := range strings.Split(s, ",") {
					if part = strings.TrimSpace(part); part != "" && !slices.Contains(c.TLSSANs, part) {
						c.TLSSANs = append(c.TLSSANs, part)
					}
				}
			}
		case "write-kubeconfig-mode":
			m, err := strconv.ParseUint(last(v), 8, 32)
			if err != nil {
				return nil, fmt.Errorf("write-kubeconfig-mode %q: want an octal mode like 0600", last(v))
			}
			c.WriteKubeconfigMode = os.FileMode(m)
		case "write-kubeconfig", "o":
			c.WriteKubeconfig = last(v)
		case "disable":
			c.Disable = append(c.Disable, v...)
		case "kube-apiserver-arg":
			c.APIServerArgs = append(c.APIServerArgs, v...)
		default:
			c.Ignored = append(c.Ignored, k)
		}
	}
	if c.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("node name: %w", err)
		}
		c.NodeName = strings.ToLower(h)
	}
	return c, nil
}

// parseFlags reads --key=value, --key value and bare --flag (true).
func parseFlags(args []string) (map[string][]string, error) {
	out := map[string][]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			return nil, fmt.Errorf("unexpected argument %q", a)
		}
		key := strings.TrimLeft(a, "-")
		if k, v, ok := strings.Cut(key, "="); ok {
			out[k] = append(out[k], v)
			continue
		}
		if i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			out[key] = append(out[key], args[i+1])
			i++
			continue
		}
		out[key] = append(out[key], "true")
	}
	return out, nil
}

// parseConfigFile reads K3s's config.yaml: keys are flag names, values
// scalars or lists.
func parseConfigFile(data []byte) (map[string][]string, error) {
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for k, v := range raw {
		k = strings.TrimSuffix(k, "+") // K3s's "append" suffix
		switch x := v.(type) {
		case []any:
			for _, e := range x {
				out[k] = append(out[k], fmt.Sprint(e))
			}
		case nil:
		default:
			out[k] = append(out[k], fmt.Sprint(x))
		}
	}
	return out, nil
}

func logIgnored(log *slog.Logger, c *serverConfig) {
	if len(c.Disable) > 0 {
		log.Info("stand-in packages no components; disable list accepted", "disable", c.Disable)
	}
	if len(c.Ignored) > 0 {
		log.Warn("options not implemented by the K3s stand-in, ignored", "options", c.Ignored)
	}
}
