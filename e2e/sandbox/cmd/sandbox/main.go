// Command sandbox brings the opencsp sandbox up or down (see e2e/sandbox).
//
//	sandbox up   [-dir .cache/sandbox] [-nodes 1] [-prefix ocsb]   # serves until SIGINT/SIGTERM
//	sandbox down [-dir .cache/sandbox]                             # from another shell, or after a crash
//
// up prints the endpoints and writes <dir>/opencsp.yaml, then <dir>/ready.
// Install with: cd <dir> && PVE_TOKEN_SECRET=$(cat pve-token) opencsp install -c opencsp.yaml
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/opencsp/installer/e2e/sandbox"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := fs.String("dir", ".cache/sandbox", "sandbox directory (config, keys, tokens, logs, install state)")
	nodes := fs.Int("nodes", 1, "PVE nodes: 1 = standalone, 3 = a cluster")
	prefix := fs.String("prefix", sandbox.DefaultPrefix, "prefix of the stand-in namespaces, links and mounts")
	appliance := fs.Bool("appliance", false, "provision method appliance: build the ISO with \"opencsp image iso -c opencsp.yaml\", then install boots it")
	fs.Parse(os.Args[2:])
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "up":
		err = up(ctx, *dir, *nodes, *prefix, *appliance)
	case "down":
		err = sandbox.Down(context.Background(), *dir)
		if err == nil {
			fmt.Println("sandbox: down")
		}
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sandbox:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: sandbox up|down [-dir DIR] [-nodes N] [-prefix P] [-appliance]")
	os.Exit(2)
}

func up(ctx context.Context, dir string, nodes int, prefix string, appliance bool) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the sandbox needs root (network namespaces, overlayfs, systemd-nspawn)")
	}
	begin := time.Now()
	s, err := sandbox.Up(ctx, sandbox.Options{Dir: dir, Nodes: nodes, Prefix: prefix, Log: os.Stderr, Appliance: appliance})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(os.Stderr, "sandbox: stopping")
		if err := s.Close(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, "sandbox: close:", err)
		}
		fmt.Fprintln(os.Stderr, "sandbox: down")
	}()
	fmt.Printf(`Sandbox up in %s (%s):
  PVE API       %s  (%s, fingerprint %s)
  VM bridge     %s  host %s, management VM %s
  images        %s/images/
  K3s release   %s
  ops repo      %s
  config        %s
Install:  cd %s && %s=$(cat %s) opencsp install -c %s
`, dir, time.Since(begin).Round(100*time.Millisecond), s.PVE.URL(), plural(nodes), s.PVE.Fingerprint(),
		s.Host.Network().Bridge(), s.Host.Network().HostAddress(), s.VMAddress,
		s.Artifacts, s.K3s.Mirror(), s.Git.URL("ops"), s.Config,
		dir, sandbox.TokenEnv, sandbox.PVETokenFile, sandbox.ConfigFile)
	if err := os.WriteFile(filepath.Join(s.Dir, "ready"), []byte(time.Now().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

func plural(n int) string {
	if n == 1 {
		return "1 node"
	}
	return fmt.Sprintf("%d-node cluster", n)
}
