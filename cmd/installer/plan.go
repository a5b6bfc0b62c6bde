package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/opencsp/installer/internal/infra/providers"
	"github.com/opencsp/installer/internal/logging"
	"github.com/opencsp/installer/stages"
	"github.com/opencsp/installer/stages/pipeline"
)

func newPlanCmd(a *app) *cobra.Command {
	var opts stages.Options
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Show what install would do, per stage, without changing anything",
		Args:  cobra.NoArgs,
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
			provider, err := providers.New(cfg, nil)
			if err != nil {
				return fmt.Errorf("%s: %w", a.configPath, err)
			}
			runner := &stages.Runner{
				Stages:   pipeline.Install(provider),
				Config:   cfg,
				StateDir: a.stateDir, // read without locking or creating anything
				Secrets:  logging.NewRedactor(),
			}
			plans, err := runner.Plan(cmd.Context(), opts)
			if err != nil {
				return err
			}
			if a.output == "json" {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(plans)
			}
			printPlan(a, plans)
			return nil
		},
	}
	addStageFlags(cmd, &opts)
	return cmd
}

func printPlan(a *app, plans []stages.StagePlan) {
	for _, p := range plans {
		if p.Skip {
			fmt.Fprintf(a.stdout, "%s: skip (%s)\n", p.Stage, p.Reason)
			continue
		}
		fmt.Fprintf(a.stdout, "%s: run (%s)\n", p.Stage, p.Reason)
		for _, c := range p.Changes {
			fmt.Fprintf(a.stdout, "  - %s\n", c)
		}
		if len(p.Changes) == 0 {
			fmt.Fprintln(a.stdout, "  (no changes)")
		}
	}
}
