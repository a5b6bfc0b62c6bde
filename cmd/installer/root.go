package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// app holds what every command shares: streams and global flags.
type app struct {
	stdout, stderr io.Writer
	configPath     string
	stateDir       string
	output         string
	verbose        int
	// argsParsed is set once cobra accepted flags and arguments; an error
	// before that is a usage error.
	argsParsed bool
}

func newRootCmd(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "opencsp",
		Short: "Install and upgrade OpenCSP Core on Proxmox VE",
		Long: `opencsp takes a Proxmox VE host or cluster to a running OpenCSP Core:
cloud-image templates, the management VM, K3s, Flux and every Core component.
Runs are resumable: rerun the same command after a failure or Ctrl-C.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			a.argsParsed = true
			if a.output != "text" && a.output != "json" {
				return usageErrorf("--output must be text or json, got %q", a.output)
			}
			return nil
		},
	}
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	pf := root.PersistentFlags()
	pf.StringVarP(&a.configPath, "config", "c", "opencsp.yaml", "install config file")
	pf.StringVar(&a.stateDir, "state-dir", ".opencsp", "directory for state, logs, kubeconfig and keys")
	pf.StringVar(&a.output, "output", "text", "output format: text or json")
	pf.CountVarP(&a.verbose, "verbose", "v", "more detail on the terminal (repeat for debug)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErrorf("%v", err) })

	root.AddCommand(newInstallCmd(a), newPlanCmd(a), newConfigCmd(a), newVersionCmd(a), newOpsCmd(a), newImageCmd(a), newApplianceInitCmd(a), newNodeCmd(a))
	return root
}

// run executes the CLI and maps errors to exit codes.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a := &app{stdout: stdout, stderr: stderr}
	root := newRootCmd(a)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	code := exitCode(err)
	if !a.argsParsed {
		code = exitBadInput
	}
	if !isReported(err) {
		fmt.Fprintln(stderr, "Error:", err)
	}
	return code
}
