package config

import (
	"os"
	"path/filepath"
	"strings"
)

// BaseDir is the directory relative paths in the config are taken from.
func (c *Config) BaseDir() string { return c.baseDir }

// ResolvePath expands a leading ~/ and anchors relative paths at the
// config file's directory, as a user reading the file would expect.
func (c *Config) ResolvePath(p string) string {
	return resolvePath(c.baseDir, p)
}

func resolvePath(baseDir, p string) string {
	if p == "" {
		return ""
	}
	if p == "~" || strings.HasPrefix(p, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			p = filepath.Join(home, strings.TrimPrefix(p, "~"))
		}
	}
	if !filepath.IsAbs(p) && baseDir != "" {
		p = filepath.Join(baseDir, p)
	}
	return filepath.Clean(p)
}

// Secret resolves a secret reference relative to the config file.
func (c *Config) Secret(r SecretRef) (string, error) { return r.Resolve(c.baseDir) }

// ApplianceISO is the appliance ISO's path: where opencsp image iso writes
// it and provision method appliance boots it from.
func (c *Config) ApplianceISO() string { return c.ResolvePath(c.Appliance.ISO) }
