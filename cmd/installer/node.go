package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/opencsp/installer/internal/appliance/payload"
	"github.com/opencsp/installer/internal/artifacts"
	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/events"
	"github.com/opencsp/installer/internal/logging"
	"github.com/opencsp/installer/internal/remote"
	"github.com/opencsp/installer/internal/state"
	"github.com/opencsp/installer/internal/version"
	"github.com/opencsp/installer/stages"
	"github.com/opencsp/installer/stages/flux"
	"github.com/opencsp/installer/stages/k3s"
)

// nodeStateDir keeps state, kubeconfig, age key, the ops-repo credential
// and the artifact cache on the node's own disk: the data partition (laid
// out as package payload names it) is FAT, without modes.
const nodeStateDir = "/var/lib/opencsp/state"

// nodeStageNames are the stages node bootstrap runs, in order.
var nodeStageNames = []string{k3s.Name, flux.Name}

func newNodeCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Work on the management node itself (run on the node, as root)",
	}
	cmd.AddCommand(newNodeBootstrapCmd(a))
	return cmd
}

// nodeOptions are the flags of node bootstrap.
type nodeOptions struct {
	dataDir       string
	only          string
	forceSyncPath bool
}

func newNodeBootstrapCmd(a *app) *cobra.Command {
	var o nodeOptions
	cmd := &cobra.Command{
		Use:   "bootstrap --data DIR",
		Short: "Install K3s from the appliance data and bootstrap Flux on this machine (first boot; rerun to resume)",
		Long: `Runs on the management node the appliance ISO installed, as root (cloud-init's
runcmd on first boot): installs K3s from the K3s artifacts in the data
directory (no download) with the k3s stage's code, writes the kubeconfig to
the state dir (default ` + nodeStateDir + `), then bootstraps Flux against
the config's ops repo with the flux stage's code.

The install config is DIR/` + payload.ConfigFile + ` (or --config): the node config
opencsp image iso derived from the operator's config. Only what the node uses
is checked (cluster, managementVM network, k3s, opsRepo, components, secrets,
flux); the Proxmox credentials and the installer's SSH key are not on the node.
The K3s release files are in DIR/` + payload.K3sDir + `/. The ops-repo credential the
ISO carries (DIR/` + payload.SecretsDir + `/) is copied to the state dir with mode 0600
before use and never logged. A rerun changes nothing that is already in place.
Logs go to stderr (the journal or the serial console) and to node.log in the
state dir, with secrets redacted.`,
		Example: `  opencsp node bootstrap --data /var/lib/opencsp/data
  opencsp node bootstrap --data /var/lib/opencsp/data --only k3s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("state-dir") {
				a.stateDir = nodeStateDir
			}
			cfg, err := loadNodeInputs(a, cmd.Flags().Changed("config"), o)
			if err != nil {
				return err
			}
			return runNodeBootstrap(cmd, a, cfg, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dataDir, "data", "", "the appliance data directory (K3s artifacts, install config)")
	f.StringVar(&o.only, "only", "", "run just this stage ("+strings.Join(nodeStageNames, ", ")+")")
	f.BoolVar(&o.forceSyncPath, "force-sync-path", false,
		"let the flux stage move the cluster's existing Flux sync to a new opsRepo url or path (refused otherwise)")
	return cmd
}

// loadNodeInputs checks everything node bootstrap reads before anything is
// created, and returns the config with the K3s artifacts pointed at the data
// directory. Every problem is a usage error (exit 2) naming the flag or file.
func loadNodeInputs(a *app, configFlag bool, o nodeOptions) (*config.Config, error) {
	if o.dataDir == "" {
		return nil, usageErrorf("--data: required: the appliance data directory (the appliance mounts it at /var/lib/opencsp/data)")
	}
	if o.only != "" && !slices.Contains(nodeStageNames, o.only) {
		return nil, usageErrorf("--only: unknown stage %q; node bootstrap runs %s", o.only, strings.Join(nodeStageNames, ", "))
	}
	data, err := filepath.Abs(o.dataDir)
	if err != nil {
		return nil, usageErrorf("--data %s: %v", o.dataDir, err)
	}
	if err := isDir(data); err != nil {
		return nil, usageErrorf("--data %s: %v; point it at the appliance data directory", o.dataDir, err)
	}
	if err := verifyPayload(data); err != nil {
		return nil, err
	}
	if !configFlag {
		a.configPath = filepath.Join(data, payload.ConfigFile)
	}
	cfg, err := loadConfigWith(a, config.LoadForNode)
	if err != nil {
		return nil, err
	}
	k3sDir := filepath.Join(data, payload.K3sDir)
	if err := isDir(k3sDir); err != nil {
		return nil, usageErrorf("%s: %v; the data directory must carry the K3s release files (opencsp image iso --k3s-dir)", k3sDir, err)
	}
	rel, err := artifacts.Resolve(cfg.K3s.Version, artifacts.Mirror{Release: k3sDir})
	if err != nil {
		return nil, usageErrorf("%s: k3s.version: %v", a.configPath, err)
	}
	for _, src := range []artifacts.Source{rel.Binary, rel.Images, rel.Checksums, rel.Script} {
		if fi, err := os.Stat(src.URL); err != nil || !fi.Mode().IsRegular() {
			return nil, usageErrorf("%s: missing: node bootstrap installs K3s %s from the data directory and downloads nothing; "+
				"build the appliance with the release files of that version in --k3s-dir", src.URL, cfg.K3s.Version)
		}
	}
	// Air-gapped by construction: the release comes from the data directory.
	cfg.K3s.Artifacts = config.K3sArtifacts{AirgapDir: k3sDir}
	if os.Geteuid() != 0 {
		return nil, usageErrorf("node bootstrap installs K3s on this machine and must run as root (cloud-init runs it so); try sudo")
	}
	return cfg, nil
}

// verifyPayload checks the data directory against the appliance's
// manifest.json (sha256 of every payload file), when there is one: a file
// damaged on the data partition is named before anything is installed.
func verifyPayload(data string) error {
	mpath := filepath.Join(data, payload.ManifestFile)
	var m payload.Manifest
	if err := payload.ReadJSON(mpath, &m); errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return usageErrorf("%v", err)
	}
	for _, f := range m.Files {
		rel, ok := payload.DataPath(f.Path)
		if !ok {
			continue // not on the data partition: the OS image is the disk itself
		}
		p := filepath.Join(data, filepath.FromSlash(rel))
		n, sum, err := payload.Hash(p)
		if err != nil {
			return usageErrorf("%s: listed in %s but unreadable: %v; the data partition is incomplete, reinstall from the appliance ISO", p, mpath, err)
		}
		if n != f.Size || sum != f.SHA256 {
			return usageErrorf("%s: corrupted: sha256 %s (%d bytes), %s says %s (%d bytes); reinstall from the appliance ISO", p, sum, n, mpath, f.SHA256, f.Size)
		}
	}
	return nil
}

func isDir(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return errors.New("no such directory")
		}
		return err
	}
	if !fi.IsDir() {
		return errors.New("not a directory")
	}
	return nil
}

func runNodeBootstrap(cmd *cobra.Command, a *app, cfg *config.Config, o nodeOptions) error {
	ctx := cmd.Context()
	store, err := state.Open(ctx, a.stateDir)
	if err != nil {
		return fmt.Errorf("open state dir: %w", err)
	}
	defer store.Close()
	if err := copyNodeSecrets(cfg, a.stateDir); err != nil {
		return err
	}

	secrets := logging.NewRedactor()
	logPath := filepath.Join(a.stateDir, "node.log")
	log, closeLog, err := nodeLogger(a, logPath, secrets)
	if err != nil {
		return err
	}
	defer closeLog.Close()
	v := version.Get()
	log.Info("node bootstrap started", "version", v.Version, "data", o.dataDir, "config", a.configPath,
		"stateDir", a.stateDir, "cluster", cfg.Cluster.Name, "k3s", cfg.K3s.Version, "only", o.only)

	outcome := &stageOutcomes{}
	// The runner logs every event through log, so stderr already carries
	// the progress (the journal or serial console under cloud-init); stdout
	// gets the JSON events with --output json, else just the summary.
	var sink events.Sink = outcome
	if a.output == "json" {
		sink = events.Tee(newSink(a), outcome)
	}
	runner := &stages.Runner{
		Stages:           nodeStages(remote.NewLocal(log, secrets), flux.Options{ForceSyncPath: o.forceSyncPath}),
		Store:            store,
		Config:           cfg,
		Log:              log,
		Events:           sink,
		Secrets:          secrets,
		InstallerVersion: v.Version,
		ResumeHint:       func(string) string { return nodeResumeCommand(a, o) },
	}
	started := time.Now()
	if err := runner.Run(ctx, stages.Options{Only: o.only}); err != nil {
		log.Error("node bootstrap stopped", "err", err)
		var se *stages.StageError
		switch {
		case errors.Is(err, stages.ErrInterrupted):
			fmt.Fprintf(a.stderr, "\nInterrupted. State is saved in %s.\nResume with: %s\n", a.stateDir, nodeResumeCommand(a, o))
			return reportedError{err, exitInterrupted}
		case errors.As(err, &se):
			fmt.Fprintf(a.stderr, "\nError: %v\nFull log: %s\nResume with: %s\n", se, logPath, nodeResumeCommand(a, o))
			return reportedError{err, exitFailed}
		}
		return err
	}
	took := time.Since(started).Round(100 * time.Millisecond)
	log.Info("node bootstrap finished", "duration", took.String(), "ran", outcome.ran())
	if a.output == "json" {
		return nil
	}
	if ran := outcome.ran(); len(ran) == 0 {
		fmt.Fprintf(a.stdout, "\nNode bootstrap: nothing to change; %s already in place and verified.\n", strings.Join(nodeStageNames, " and "))
	} else {
		fmt.Fprintf(a.stdout, "\nNode bootstrap complete in %s (ran %s).\n", took, strings.Join(ran, ", "))
	}
	var out k3s.Outputs
	if f, err := store.Load(); err == nil && outputsOf(f, k3s.Name, &out) && out.Kubeconfig != "" {
		fmt.Fprintf(a.stdout, "Kubernetes API: %s\nKubeconfig: %s\n", out.Server, out.Kubeconfig)
	}
	return nil
}

// copyNodeSecrets copies the ops-repo credential files the config names to
// the state dir with mode 0600 and points the config at the copies: on the
// FAT data partition every file reads as world-readable, which ssh refuses
// for a key, and the credential should not stay readable by everyone.
func copyNodeSecrets(cfg *config.Config, stateDir string) error {
	auth := &cfg.OpsRepo.Auth
	if src, ok := auth.Token.FilePath(cfg.BaseDir()); ok {
		dst := filepath.Join(stateDir, filepath.FromSlash(payload.OpsRepoTokenFile))
		if err := copySecret(src, dst); err != nil {
			return fmt.Errorf("opsRepo.auth.token: %w", err)
		}
		auth.Token = config.SecretRef("file:" + dst)
	}
	if auth.SSHKeyFile != "" {
		dst := filepath.Join(stateDir, filepath.FromSlash(payload.OpsRepoSSHKeyFile))
		if err := copySecret(cfg.ResolvePath(auth.SSHKeyFile), dst); err != nil {
			return fmt.Errorf("opsRepo.auth.sshKeyFile: %w", err)
		}
		auth.SSHKeyFile = dst
	}
	return nil
}

// copySecret writes src's bytes to dst (0600, in a 0700 directory) through
// a temporary file, so a crash leaves the old copy or the new one.
func copySecret(src, dst string) error {
	if src == dst {
		return os.Chmod(dst, 0o600)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("read %s: %w", src, err)
	}
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("secrets dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("secrets dir: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*") // mode 0600
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return nil
}

// nodeStages are the k3s stage working on this machine through exec and the
// flux stage of the install pipeline, which here bootstraps Flux itself (the
// pipeline's flux stage adopts the node's result instead: AdoptAppliance).
func nodeStages(exec remote.Executor, fo flux.Options) []stages.Stage {
	return []stages.Stage{k3s.New(k3s.Options{Local: exec}), flux.New(fo)}
}

// nodeLogger logs to stderr (info, debug with -vv) and everything to the
// state dir's node.log; both redact secrets.
func nodeLogger(a *app, path string, secrets *logging.Redactor) (*slog.Logger, io.Closer, error) {
	fileLog, closer, err := logging.NewFileLogger(path, slog.LevelDebug, secrets)
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", path, err)
	}
	level := slog.LevelInfo
	if a.verbose > 1 {
		level = slog.LevelDebug
	}
	stderr := logging.NewHandler(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: level}), secrets)
	return slog.New(slog.NewMultiHandler(fileLog.Handler(), stderr)), closer, nil
}

func nodeResumeCommand(a *app, o nodeOptions) string {
	s := "opencsp node bootstrap --data " + o.dataDir
	if a.stateDir != nodeStateDir {
		s += " --state-dir " + a.stateDir
	}
	if o.only != "" {
		s += " --only " + o.only
	}
	return s
}

// stageOutcomes records which stages ran (rather than being skipped).
type stageOutcomes struct {
	mu      sync.Mutex
	started []string
}

func (s *stageOutcomes) Emit(e events.Event) {
	if e.Step == "" && e.Stage != "" && e.Status == events.Started {
		s.mu.Lock()
		s.started = append(s.started, e.Stage)
		s.mu.Unlock()
	}
}

func (s *stageOutcomes) ran() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.started...)
}
