// Command buildtools builds the e2e tools (etcd, kube-apiserver, kubectl, Flux source- and
// kustomize-controller) into <repo>/.cache/tools, skipping what is already built, and copies the
// Flux CRDs next to them. `make tools` runs it; see e2e/README.md.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencsp/installer/e2e/tools"
)

func main() {
	repo := flag.String("repo", "", "repository root (default: found above the working directory)")
	out := flag.String("out", "", "output directory (default: <repo>/.cache/tools)")
	only := flag.String("only", "", "comma-separated tools to build (default: all, plus flux-crds)")
	force := flag.Bool("force", false, "rebuild even when up to date")
	flag.Parse()

	if *repo == "" {
		wd, _ := os.Getwd()
		r, err := tools.FindRepo(wd)
		if err != nil {
			fail(err)
		}
		*repo = r
	}
	if *out == "" {
		*out = filepath.Join(*repo, ".cache", "tools")
	}
	b := &tools.Builder{
		PinsDir: filepath.Join(*repo, "e2e", "tools", "pins"),
		OutDir:  *out,
		Force:   *force,
	}
	if *only != "" {
		b.Only = map[string]bool{}
		for _, n := range strings.Split(*only, ",") {
			b.Only[strings.TrimSpace(n)] = true
		}
	}
	start := time.Now()
	if _, err := b.Run(); err != nil {
		fail(err)
	}
	fmt.Fprintf(os.Stderr, "buildtools: tools in %s (%s)\n", *out, time.Since(start).Round(time.Millisecond))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "buildtools:", err)
	os.Exit(1)
}
