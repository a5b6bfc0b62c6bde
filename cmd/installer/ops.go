package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/opencsp/installer/internal/logging"
	"github.com/opencsp/installer/internal/opsrepo"
	"github.com/opencsp/installer/internal/version"
)

func newOpsCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ops",
		Short: "Render the ops repository Flux syncs from",
	}
	cmd.AddCommand(newOpsRenderCmd(a))
	return cmd
}

func newOpsRenderCmd(a *app) *cobra.Command {
	var (
		mgmt  string
		sets  []string
		adopt bool
	)
	cmd := &cobra.Command{
		Use:   "render DIR",
		Short: "Write the ops repo (components/ and the cluster folder) into DIR for review, without pushing",
		Long: `Render the ops repository for the config into DIR, exactly as the install
would commit it: components/, the cluster folder (opsRepo.path) with the layer
Kustomizations, cluster-vars and the SOPS-encrypted Secrets. Nothing is pushed.

Secrets already in DIR (from an earlier render) are decrypted and kept, so a
re-render changes only what the config changed. The age key is
secrets.ageKeyFile, or <state-dir>/age.key (created when missing).
opencsp owns components/ and the cluster folder in DIR: files it did not write
there stop the render (nothing is written) unless --adopt lets it delete them.`,
		Example: `  opencsp ops render ./ops -c opencsp.yaml
  opencsp ops render ./ops -c opencsp.yaml --mgmt-address 192.0.2.10 --set STORAGE_CLASS=fast`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			cfg, err := loadConfig(a)
			if err != nil {
				return err
			}
			vars, err := parseSets(sets)
			if err != nil {
				return err
			}
			secrets := logging.NewRedactor()
			in := opsrepo.RenderInput{
				Config:           cfg,
				StateDir:         a.stateDir,
				MgmtAddress:      mgmt,
				InstallerVersion: version.Get().Version,
				Vars:             vars,
				Logger:           opsLogger(a, secrets),
				Redactor:         secrets,
			}
			if st, err := os.Stat(dir); err == nil && st.IsDir() {
				in.Existing = os.DirFS(dir)
			} else if err == nil {
				return usageErrorf("%s exists and is not a directory", dir)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("check %s: %w", dir, err)
			}
			tree, err := opsrepo.Render(cmd.Context(), in)
			if errors.Is(err, opsrepo.ErrInvalidInput) || errors.Is(err, opsrepo.ErrSecretUnreadable) {
				return usageError{err}
			}
			if err != nil {
				return err
			}
			changes, err := opsrepo.WriteDir(dir, tree, adopt)
			if errors.Is(err, opsrepo.ErrUnknownFiles) {
				return usageError{err}
			}
			if err != nil {
				return err
			}
			return printRender(a, dir, tree, changes)
		},
	}
	f := cmd.Flags()
	f.StringVar(&mgmt, "mgmt-address", "", "IP address of the management VM (default: managementVM.network.address)")
	f.StringArrayVar(&sets, "set", nil, "cluster variable NAME=VALUE, e.g. STORAGE_CLASS=fast (repeatable)")
	f.BoolVar(&adopt, "adopt", false, "delete files under components/ and the cluster folder that opencsp did not write")
	return cmd
}

func parseSets(sets []string) (map[string]string, error) {
	vars := map[string]string{}
	for _, s := range sets {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return nil, usageErrorf("--set %q: want NAME=VALUE", s)
		}
		vars[k] = v
	}
	return vars, nil
}

// opsLogger logs to stderr with -v, through the redactor.
func opsLogger(a *app, secrets *logging.Redactor) *slog.Logger {
	level := slog.LevelWarn
	switch {
	case a.verbose > 1:
		level = slog.LevelDebug
	case a.verbose == 1:
		level = slog.LevelInfo
	}
	return slog.New(logging.NewHandler(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: level}), secrets))
}

func printRender(a *app, dir string, tree *opsrepo.Tree, changes []opsrepo.Change) error {
	if a.output == "json" {
		type change struct {
			Path string `json:"path"`
			Op   string `json:"op"`
		}
		out := struct {
			Dir       string   `json:"dir"`
			Cluster   string   `json:"cluster"`
			Path      string   `json:"path"`
			Recipient string   `json:"ageRecipient"`
			Layers    []string `json:"layers"`
			Files     []string `json:"files"`
			Changes   []change `json:"changes"`
			Warnings  []string `json:"warnings"`
		}{Dir: dir, Cluster: tree.Cluster, Path: tree.Path, Recipient: tree.Recipient, Layers: tree.Layers,
			Files: tree.Paths(), Changes: []change{}, Warnings: tree.Warnings}
		for _, c := range changes {
			out.Changes = append(out.Changes, change{c.Path, string(c.Op)})
		}
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	for _, w := range tree.Warnings {
		fmt.Fprintf(a.stderr, "warning: %s\n", w)
	}
	for _, c := range changes {
		fmt.Fprintf(a.stdout, "%-8s %s\n", c.Op, c.Path)
	}
	fmt.Fprintf(a.stdout, "%s: %d files for cluster %s (%s/, %s/), %d changed; Secrets encrypted for %s\n",
		dir, len(tree.Files), tree.Cluster, tree.Path, opsrepo.ComponentsDir, len(changes), tree.Recipient)
	return nil
}
