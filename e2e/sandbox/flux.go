package sandbox

import (
	"context"
	"path/filepath"

	"github.com/opencsp/installer/e2e/fluxside"
	"github.com/opencsp/installer/e2e/standin"
)

// The flux/rollout side of the management VM (the K3s CRDs the stand-in lacks, the flux
// stand-ins and Flux's real controllers) is e2e/fluxside, started by the sandbox once a VM
// stand-in runs K3s (its /etc/rancher/k3s/k3s.yaml appears). Its files are in <Dir>/flux.

// runFlux serves the flux/rollout side of the VM stand-in inst until ctx ends or the stand-in
// stops. Only one VM at a time gets it (the management VM; templates never run K3s).
func (s *Sandbox) runFlux(ctx context.Context, vmid int, inst *standin.Instance) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-inst.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	dir := filepath.Join(s.Dir, "flux")
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := fluxside.WaitKubeconfig(ctx, inst, kubeconfig); err != nil {
		return
	}
	s.fluxMu.Lock()
	if s.fluxBusy {
		s.fluxMu.Unlock()
		s.log.Printf("VM %d runs K3s too: Flux already serves another VM, not starting it again", vmid)
		return
	}
	s.fluxBusy = true
	s.fluxMu.Unlock()
	defer func() {
		s.fluxMu.Lock()
		s.fluxBusy = false
		s.fluxMu.Unlock()
	}()
	err := fluxside.Serve(ctx, fluxside.Options{Kubeconfig: kubeconfig, Dir: dir, ToolsDir: s.toolsDir,
		Logf: func(format string, args ...any) { s.log.Printf("VM %d: "+format, append([]any{vmid}, args...)...) }})
	if err != nil && ctx.Err() == nil {
		s.log.Printf("VM %d: Flux controllers: %v", vmid, err)
	}
}
