package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/opencsp/installer/internal/version"
)

func newVersionCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the installer version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			v := version.Get()
			if a.output == "json" {
				return json.NewEncoder(a.stdout).Encode(v)
			}
			fmt.Fprintf(a.stdout, "%s\ngo: %s\nplatform: %s\n", v, v.GoVersion, v.Platform)
			return nil
		},
	}
}
