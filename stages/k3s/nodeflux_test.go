package k3s_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/opencsp/installer/e2e/fluxside"
	"github.com/opencsp/installer/e2e/standin"
	"github.com/opencsp/installer/stages/flux/kube"
)

// fluxSide is what the Flux half of a node bootstrap needs next to the K3s
// stand-in, served by e2e/fluxside as the sandbox does: the K3s CRDs the
// stand-in lacks, the workload-status and helm-controller stand-ins, and
// Flux's REAL source- and kustomize-controller as host processes against the
// VM's API, started once the bootstrap has applied the Flux CRDs.
type fluxSide struct {
	dir    string
	cancel context.CancelFunc
	done   chan struct{}
	err    error // why serve stopped, once done is closed

	mu     sync.Mutex
	client *kube.Client // talks to the node's API at the VM's address, once it answers
}

// serveFlux runs the Flux side for inst in the background until stop.
func serveFlux(t *testing.T, ctx context.Context, inst *standin.Instance) *fluxSide {
	ctx, cancel := context.WithCancel(ctx)
	f := &fluxSide{dir: t.TempDir(), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		kubeconfig := filepath.Join(f.dir, "kubeconfig")
		if f.err = fluxside.WaitKubeconfig(ctx, inst, kubeconfig); f.err != nil {
			return
		}
		f.err = fluxside.Serve(ctx, fluxside.Options{Kubeconfig: kubeconfig, Dir: f.dir,
			OnAPI: func(c *kube.Client) { f.mu.Lock(); f.client = c; f.mu.Unlock() }})
	}()
	return f
}

// stop ends the stand-ins and the controllers and waits for them.
func (f *fluxSide) stop() {
	f.cancel()
	<-f.done
}

// report says how far the Flux side got, with the controllers' last log
// lines, for failure messages.
func (f *fluxSide) report() string {
	var b strings.Builder
	select {
	case <-f.done:
		fmt.Fprintf(&b, "flux side stopped: %v\n", f.err)
	default:
		fmt.Fprintf(&b, "flux side running (node API reached: %v)\n", f.Client() != nil)
	}
	logs, _ := filepath.Glob(filepath.Join(f.dir, "*.log"))
	for _, l := range logs {
		data, _ := os.ReadFile(l)
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		fmt.Fprintf(&b, "--- %s (last lines)\n%s\n", filepath.Base(l), strings.Join(lines[max(0, len(lines)-15):], "\n"))
	}
	return b.String()
}

// Client returns the client for the node's API (nil before K3s answered).
func (f *fluxSide) Client() *kube.Client {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.client
}
