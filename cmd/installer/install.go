package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/events"
	"github.com/opencsp/installer/internal/infra/openstack"
	"github.com/opencsp/installer/internal/infra/providers"
	"github.com/opencsp/installer/internal/logging"
	"github.com/opencsp/installer/internal/state"
	"github.com/opencsp/installer/internal/ui"
	"github.com/opencsp/installer/internal/version"
	"github.com/opencsp/installer/stages"
	"github.com/opencsp/installer/stages/pipeline"
)

func newInstallCmd(a *app) *cobra.Command {
	var opts stages.Options
	var pipe pipeline.InstallOptions
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install OpenCSP Core; rerun to resume after a failure or Ctrl-C",
		Long: `Runs the install stages in order (` + strings.Join(pipeline.Names(), ", ") + `).
A stage that finished, whose config is unchanged and whose outputs still exist
is skipped, so rerunning the same command resumes where the last run stopped.`,
		Example: `  opencsp install -c opencsp.yaml
  opencsp install -c opencsp.yaml --from provision
  opencsp install -c opencsp.yaml --only preflight --output json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(a)
			if err != nil {
				return err
			}
			if err := checkStageFlags(opts); err != nil {
				return err
			}
			if err := checkProvider(a, cfg); err != nil {
				return err
			}
			// Preflight lists the ops repo, also when it runs alone (`--only
			// preflight` is how an operator checks readiness); another stage
			// run alone never reaches the repo check.
			pipe.Preflight.OpsRepo = opts.Only == "" || opts.Only == "preflight"
			return runInstall(cmd, a, cfg, opts, pipe)
		},
	}
	addStageFlags(cmd, &opts)
	cmd.Flags().BoolVar(&pipe.Flux.ForceSyncPath, "force-sync-path", false,
		"let the flux stage move the cluster's existing Flux sync to a new opsRepo url or path (refused otherwise)")
	return cmd
}

func addStageFlags(cmd *cobra.Command, opts *stages.Options) {
	names := strings.Join(pipeline.Names(), ", ")
	cmd.Flags().StringVar(&opts.From, "from", "", "run this stage and every later one ("+names+")")
	cmd.Flags().StringVar(&opts.Only, "only", "", "run just this stage ("+names+")")
}

// checkProvider refuses, before anything runs, a provider that cannot
// provision yet.
func checkProvider(a *app, cfg *config.Config) error {
	if cfg.Infrastructure.Provider == "openstack" {
		return usageError{fmt.Errorf("%s: infrastructure.provider: %w", a.configPath, openstack.ErrProvisioning)}
	}
	return nil
}

// checkStageFlags refuses unknown stage names before anything is created.
func checkStageFlags(opts stages.Options) error {
	if opts.From != "" && opts.Only != "" {
		return usageErrorf("--from and --only cannot be combined: --from runs a stage and every later one, --only runs one")
	}
	for flag, name := range map[string]string{"--from": opts.From, "--only": opts.Only} {
		if name != "" && !slices.Contains(pipeline.Names(), name) {
			return usageErrorf("%s: unknown stage %q; stages are %s", flag, name, strings.Join(pipeline.Names(), ", "))
		}
	}
	return nil
}

func runInstall(cmd *cobra.Command, a *app, cfg *config.Config, opts stages.Options, pipe pipeline.InstallOptions) (err error) {
	ctx := cmd.Context()
	_, statErr := os.Stat(a.stateDir)
	fresh := errors.Is(statErr, fs.ErrNotExist)
	store, err := state.Open(ctx, a.stateDir)
	if err != nil {
		return fmt.Errorf("open state dir: %w", err)
	}
	defer store.Close()
	// A refusal before anything ran (e.g. --only k3s on a fresh state dir)
	// is bad input: leave no state dir behind that this run created.
	defer func() {
		if fresh && err != nil && exitCode(err) == exitBadInput {
			store.Close()
			if rmErr := os.RemoveAll(a.stateDir); rmErr != nil {
				err = errors.Join(err, fmt.Errorf("remove the state dir this run created: %w", rmErr))
			}
		}
	}()

	secrets := logging.NewRedactor()
	logPath := filepath.Join(a.stateDir, "install.log")
	log, closeLog, err := newLogger(a, logPath, secrets)
	if err != nil {
		return err
	}
	defer closeLog.Close()
	v := version.Get()
	log.Info("install started", "version", v.Version, "config", a.configPath, "cluster", cfg.Cluster.Name, "from", opts.From, "only", opts.Only)

	provider, err := providers.New(cfg, log)
	if err != nil {
		return fmt.Errorf("%s: %w", a.configPath, err)
	}
	runner := &stages.Runner{
		Stages:           pipeline.InstallWith(provider, pipe),
		Store:            store,
		Config:           cfg,
		Log:              log,
		Events:           newSink(a),
		Secrets:          secrets,
		InstallerVersion: v.Version,
		ResumeHint:       func(string) string { return resumeCommand(a) },
	}
	started := time.Now()
	err = runner.Run(ctx, opts)
	if err != nil {
		log.Error("install stopped", "err", err)
		return reportRunError(a, err, logPath)
	}
	log.Info("install finished", "duration", time.Since(started).String())
	return printSummary(a, store, time.Since(started))
}

// newLogger writes the full log to the state dir and, with -v, to stderr.
func newLogger(a *app, path string, secrets *logging.Redactor) (*slog.Logger, io.Closer, error) {
	fileLog, closer, err := logging.NewFileLogger(path, slog.LevelDebug, secrets)
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", path, err)
	}
	if a.verbose == 0 {
		return fileLog, closer, nil
	}
	level := slog.LevelInfo
	if a.verbose > 1 {
		level = slog.LevelDebug
	}
	stderr := logging.NewHandler(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: level}), secrets)
	return slog.New(slog.NewMultiHandler(fileLog.Handler(), stderr)), closer, nil
}

func newSink(a *app) events.Sink {
	if a.output == "json" {
		return ui.NewJSON(a.stdout)
	}
	f, ok := a.stdout.(*os.File)
	return ui.NewText(a.stdout, ok && term.IsTerminal(int(f.Fd())))
}

// resumeCommand is the command line that continues this install.
func resumeCommand(a *app) string {
	s := "opencsp install -c " + a.configPath
	if a.stateDir != ".opencsp" {
		s += " --state-dir " + a.stateDir
	}
	return s
}

// reportRunError prints a failed run's cause and how to go on, and returns
// an error carrying the exit code.
func reportRunError(a *app, err error, logPath string) error {
	var se *stages.StageError
	switch {
	case errors.Is(err, stages.ErrInterrupted):
		fmt.Fprintf(a.stderr, "\nInterrupted. State is saved in %s.\nResume with: %s\n", a.stateDir, resumeCommand(a))
		return reportedError{err, exitInterrupted}
	case errors.As(err, &se):
		fmt.Fprintf(a.stderr, "\nError: %v\nFull log: %s\nResume with: %s\n", se, logPath, cmpOr(se.Resume, resumeCommand(a)))
		return reportedError{err, exitFailed}
	}
	return err
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// printSummary shows what the install produced.
func printSummary(a *app, store *state.Store, took time.Duration) error {
	f, err := store.Load()
	if err != nil {
		return err
	}
	if a.output == "json" {
		return nil // the event stream already carries everything
	}
	fmt.Fprintf(a.stdout, "\nInstall complete in %s. Stages:\n", took.Round(100*time.Millisecond))
	for _, name := range pipeline.Names() {
		st := f.Stages[name]
		if st == nil {
			continue
		}
		fmt.Fprintf(a.stdout, "  %-10s %s\n", name, st.Status)
	}
	var vm struct {
		VMID    int    `json:"vmid"`
		Node    string `json:"node"`
		Name    string `json:"name"`
		Address string `json:"address"`
	}
	if outputsOf(f, "provision", &vm) && vm.Name != "" {
		fmt.Fprintf(a.stdout, "Management VM: %s (VM %d on %s), address %s\n", vm.Name, vm.VMID, vm.Node, cmpOr(vm.Address, "unknown"))
	}
	var k3s struct {
		Kubeconfig string `json:"kubeconfig"`
		Server     string `json:"server"`
	}
	if outputsOf(f, "k3s", &k3s) && k3s.Kubeconfig != "" {
		fmt.Fprintf(a.stdout, "Kubernetes API: %s\nKubeconfig: %s\n", k3s.Server, k3s.Kubeconfig)
	}
	fmt.Fprintf(a.stdout, "State: %s\n", store.Path())
	return nil
}

// outputsOf decodes the recorded outputs of a stage into v; false when the
// stage has none.
func outputsOf(f *state.File, stage string, v any) bool {
	st := f.Stages[stage]
	return st != nil && len(st.Outputs) > 0 && json.Unmarshal(st.Outputs, v) == nil
}
