package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/profiles"
)

func newConfigCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Write, check and describe the install config",
	}
	cmd.AddCommand(newConfigInitCmd(a), newConfigValidateCmd(a), newConfigSchemaCmd(a))
	return cmd
}

func newConfigInitCmd(a *app) *cobra.Command {
	var (
		profile, file, cluster, key string
		force                       bool
	)
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Write a commented example config for a profile",
		Example: `  opencsp config init --profile standalone -f opencsp.yaml
  opencsp config init --profile cluster -f - > cluster.yaml`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if _, _, ok := profiles.Get(profile); !ok {
				return usageErrorf("--profile: unknown profile %q; use one of %v", profile, profiles.Names())
			}
			out, err := config.Example(config.ExampleOptions{Profile: profile, Cluster: cluster, PrivateKeyFile: key})
			if err != nil {
				return usageError{err}
			}
			if file == "-" {
				_, err := a.stdout.Write(out)
				return err
			}
			if _, err := os.Stat(file); err == nil && !force {
				return usageErrorf("%s already exists; use --force to overwrite or -f to pick another file", file)
			} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("check %s: %w", file, err)
			}
			if err := os.WriteFile(file, out, 0o644); err != nil {
				return fmt.Errorf("write %s: %w", file, err)
			}
			fmt.Fprintf(a.stderr, "wrote %s (profile %s); edit it, then run: opencsp config validate -c %s\n", file, profile, file)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&profile, "profile", profiles.Default, "profile: "+fmt.Sprint(profiles.Names()))
	f.StringVarP(&file, "file", "f", "opencsp.yaml", "where to write the example (- for stdout)")
	f.StringVar(&cluster, "cluster", "lab", "cluster name to put in the example")
	f.StringVar(&key, "ssh-key", defaultSSHKey(), "SSH private key the installer logs in with")
	f.BoolVar(&force, "force", false, "overwrite an existing file")
	return cmd
}

// defaultSSHKey proposes the user's usual key, as ssh would pick it.
func defaultSSHKey() string {
	home, err := os.UserHomeDir()
	if err != nil {
		return "~/.ssh/id_ed25519"
	}
	for _, name := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
		if _, err := os.Stat(filepath.Join(home, ".ssh", name)); err == nil {
			return "~/.ssh/" + name
		}
	}
	return "~/.ssh/id_ed25519"
}

func newConfigValidateCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "validate",
		Short: "Check the config: syntax, fields, values, references; report every problem",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg, err := loadConfig(a)
			if err != nil {
				return err
			}
			if a.output == "json" {
				return json.NewEncoder(a.stdout).Encode(map[string]any{"valid": true, "file": a.configPath, "profile": cfg.Profile})
			}
			fmt.Fprintf(a.stdout, "%s is valid (profile %s, provider %s, cluster %s)\n", a.configPath, cfg.Profile, cfg.Infrastructure.Provider, cfg.Cluster.Name)
			return nil
		},
	}
}

func newConfigSchemaCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of the install config (for editor completion)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			s, err := config.JSONSchema()
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(a.stdout, "%s\n", s)
			return err
		},
	}
}

// loadConfig loads the config and prints every problem in it; the returned
// error carries exit code 2.
func loadConfig(a *app) (*config.Config, error) { return loadConfigWith(a, config.Load) }

// loadConfigWith is loadConfig with another loader (config.LoadForNode).
func loadConfigWith(a *app, load func(string) (*config.Config, error)) (*config.Config, error) {
	cfg, err := load(a.configPath)
	var list config.ErrorList
	if errors.As(err, &list) {
		if a.output == "json" {
			enc := json.NewEncoder(a.stderr)
			for _, e := range list {
				_ = enc.Encode(map[string]any{"level": "error", "file": e.Pos.File, "line": e.Pos.Line, "column": e.Pos.Col, "field": e.Field, "message": e.Msg, "error": e.Error()})
			}
		} else {
			fmt.Fprintf(a.stderr, "%s has %d problem(s):\n%s\n", a.configPath, len(list), list)
		}
		return nil, reportedError{err, exitBadInput}
	}
	return cfg, err
}
