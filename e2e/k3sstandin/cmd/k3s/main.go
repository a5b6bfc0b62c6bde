// Command k3s is the OpenCSP K3s STAND-IN, for tests only. It is not K3s: K3s
// cannot be obtained or run here (no release binaries offline, its Go module is
// refused by the proxy, and a container without br_netfilter cannot run its
// agent). It implements the part of K3s the installer relies on:
//
//	k3s --version | k3s version    prints "k3s version <v> (opencsp-k3s-standin)"
//	k3s server [flags]             reads /etc/rancher/k3s/config.yaml (+ flags), starts a
//	                               REAL etcd and kube-apiserver on :6443, writes
//	                               /etc/rancher/k3s/k3s.yaml and registers a Ready Node
//
// The etcd and kube-apiserver binaries are not in this binary: like K3s's
// bundled components they are delivered with the release, inside the
// "air-gap images" tarball the installer uploads to
// /var/lib/rancher/k3s/agent/images/, and extracted on start.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"
)

// version is stamped at build time (-X main.version=v1.33.5+k3s1).
var version = "v0.0.0+k3s0"

// Marker names the stand-in in every version string, so nobody mistakes it for K3s.
const Marker = "opencsp-k3s-standin"

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	args := os.Args[1:]
	if len(args) == 0 {
		usage()
		os.Exit(1)
	}
	switch args[0] {
	case "--version", "-v", "version":
		fmt.Printf("k3s version %s (%s)\ngo version %s\n", version, Marker, runtime.Version())
	case "server":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		cfg, err := loadServerConfig(args[1:])
		if err != nil {
			log.Error("k3s stand-in: bad configuration", "err", err)
			os.Exit(1)
		}
		if err := runServer(ctx, log, cfg); err != nil {
			log.Error("k3s stand-in: server failed", "err", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintf(os.Stderr, "k3s stand-in (%s): command %q is not implemented\n", Marker, args[0])
		usage()
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintf(os.Stderr, "usage: k3s --version | k3s server [--config FILE] [--tls-san NAME]... [--node-name NAME] "+
		"[--write-kubeconfig-mode MODE] [--disable NAME]... [--data-dir DIR] [--kube-apiserver-arg ARG]...\n"+
		"This is %s %s, a test stand-in for K3s.\n", Marker, version)
}
