// Command pvesim-schemagen regenerates e2e/pvesim/apischema.json, the
// emulator's compact schema facts, from the official PVE API description
// (../shared/reference/pve-api/pve-api-9.1.json relative to the module root).
//
//	go run ./e2e/pvesim/cmd/pvesim-schemagen [-in FILE] [-out FILE]
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/opencsp/installer/e2e/pvesim/internal/schemagen"
)

func main() {
	in := flag.String("in", "", "API description (default: <module>/"+schemagen.ReferenceRel+")")
	out := flag.String("out", "", "output file (default: <module>/"+schemagen.OutputRel+")")
	flag.Parse()
	if err := run(*in, *out); err != nil {
		fmt.Fprintln(os.Stderr, "pvesim-schemagen:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	root, err := schemagen.ModuleRoot(".")
	if err != nil {
		return err
	}
	if in == "" {
		in = filepath.Join(root, schemagen.ReferenceRel)
	}
	if out == "" {
		out = filepath.Join(root, schemagen.OutputRel)
	}
	data, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	gen, err := schemagen.Generate(data)
	if err != nil {
		return err
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, gen, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}
