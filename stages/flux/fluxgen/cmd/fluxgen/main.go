// Command fluxgen regenerates stages/flux/manifests (the embedded Flux install manifests).
//
//	go run ./stages/flux/fluxgen/cmd/fluxgen [-out stages/flux/manifests]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/opencsp/installer/stages/flux/fluxgen"
)

func main() {
	out := flag.String("out", "stages/flux/manifests", "output directory")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "fluxgen:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	files, err := fluxgen.Generate(context.Background(), fluxgen.Options{
		Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) },
	})
	if err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(out, n), files[n], 0o644); err != nil {
			return err
		}
		fmt.Println("wrote", filepath.Join(out, n))
	}
	return nil
}
