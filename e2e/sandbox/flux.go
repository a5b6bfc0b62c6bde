package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/opencsp/installer/e2e/fluxstandins"
	"github.com/opencsp/installer/e2e/kubeenv"
	"github.com/opencsp/installer/e2e/standin"
	"github.com/opencsp/installer/stages/flux/kube"
)

// What the flux and rollout stages need next to the K3s stand-in's API server, started by the
// sandbox once a VM stand-in runs K3s (its /etc/rancher/k3s/k3s.yaml appears):
//
//   - the K3s CRDs the stand-in does not serve (bundled Traefik's, fluxstandins.K3sCRDs);
//   - the e2e/fluxstandins WorkloadStatus and HelmController stand-ins (goroutines);
//   - Flux's REAL source-controller and kustomize-controller (e2e tools) as host processes
//     against the VM's API, started once the flux stage has applied the Flux CRDs (they exit
//     when their kinds are missing). The ops repo URL is on loopback: they reach it as host
//     processes, and kustomize-controller fetches artifacts from source-controller on loopback.

const k3sKubeconfig = "etc/rancher/k3s/k3s.yaml"

var crdGVK = schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"}

// fluxCRDs are the CRDs the two controllers reconcile; they start once all are Established.
var fluxCRDs = []string{
	"gitrepositories.source.toolkit.fluxcd.io", "ocirepositories.source.toolkit.fluxcd.io",
	"helmrepositories.source.toolkit.fluxcd.io", "helmcharts.source.toolkit.fluxcd.io",
	"buckets.source.toolkit.fluxcd.io", "kustomizations.kustomize.toolkit.fluxcd.io",
}

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
	kubeconfig, err := s.waitKubeconfig(ctx, inst)
	if err != nil {
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
	if err := s.serveFlux(ctx, vmid, kubeconfig); err != nil && ctx.Err() == nil {
		s.log.Printf("VM %d: Flux controllers: %v", vmid, err)
	}
}

// waitKubeconfig waits for K3s's k3s.yaml in the stand-in's tree and writes it, with the server
// rewritten to the VM's address, to <Dir>/flux/kubeconfig.
func (s *Sandbox) waitKubeconfig(ctx context.Context, inst *standin.Instance) (string, error) {
	src := filepath.Join(inst.RootDir(), k3sKubeconfig)
	for {
		if raw, err := os.ReadFile(src); err == nil && len(raw) > 0 {
			out, err := rewriteServer(raw, "https://"+net.JoinHostPort(inst.Address().Addr().String(), "6443"))
			if err == nil {
				dir := filepath.Join(s.Dir, "flux")
				if err := os.MkdirAll(dir, 0o700); err != nil {
					return "", err
				}
				p := filepath.Join(dir, "kubeconfig")
				return p, os.WriteFile(p, out, 0o600)
			}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func rewriteServer(raw []byte, server string) ([]byte, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	clusters, _ := doc["clusters"].([]any)
	if len(clusters) == 0 {
		return nil, errors.New("no clusters")
	}
	for _, c := range clusters {
		if m, ok := c.(map[string]any); ok {
			if cl, ok := m["cluster"].(map[string]any); ok {
				cl["server"] = server
			}
		}
	}
	return yaml.Marshal(doc)
}

func (s *Sandbox) serveFlux(ctx context.Context, vmid int, kubeconfig string) error {
	tools, err := kubeenv.FindTools(s.toolsDir)
	if err != nil {
		return err
	}
	client, err := kube.NewFromKubeconfig(kubeconfig)
	if err != nil {
		return err
	}
	// The K3s stand-in's API answers once K3s runs; K3s's own CRDs first.
	for {
		if err := fluxstandins.InstallCRDs(ctx, client, fluxstandins.K3sCRDs); err == nil {
			break
		} else if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(time.Second)
	}
	logf, err := os.OpenFile(filepath.Join(s.Dir, "flux", "standins.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	slogger := slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	done := make(chan struct{}, 2)
	go func() { (&fluxstandins.WorkloadStatus{Client: client, Log: slogger}).Run(ctx); done <- struct{}{} }()
	go func() { (&fluxstandins.HelmController{Client: client, Log: slogger}).Run(ctx); done <- struct{}{} }()
	defer func() { <-done; <-done }()
	s.log.Printf("VM %d: K3s API up; flux stand-ins (workload status, helm-controller) running; Flux controllers start once the flux stage applied the Flux CRDs", vmid)

	for i := 0; ; i++ {
		err := crdsEstablished(ctx, client)
		if err == nil {
			break
		}
		if i%15 == 14 {
			s.log.Printf("VM %d: waiting for the Flux CRDs: %v", vmid, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	ports, err := kubeenv.FreePorts(5)
	if err != nil {
		return err
	}
	storage := filepath.Join(s.Dir, "flux", "storage")
	if err := os.MkdirAll(storage, 0o755); err != nil {
		return err
	}
	// A TMPDIR of its own: kustomize-controller purges every kustomization-* dir in its temp
	// dir when it starts, which breaks the builds of any other kustomize-controller (another
	// sandbox, e2e/kubeenv) sharing /tmp.
	tmp := filepath.Join(s.Dir, "flux", "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return err
	}
	env := append(os.Environ(), "KUBECONFIG="+kubeconfig, "RUNTIME_NAMESPACE=flux-system", "TMPDIR="+tmp)
	storageAddr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	procs := []struct {
		name, bin, health string
		args              []string
	}{
		{"source-controller", tools.SourceController, fmt.Sprintf("127.0.0.1:%d", ports[2]), []string{
			"--storage-path=" + storage, "--storage-addr=" + storageAddr, "--storage-adv-addr=" + storageAddr,
			fmt.Sprintf("--metrics-addr=127.0.0.1:%d", ports[1])}},
		{"kustomize-controller", tools.KustomizeController, fmt.Sprintf("127.0.0.1:%d", ports[4]), []string{
			fmt.Sprintf("--metrics-addr=127.0.0.1:%d", ports[3])}},
	}
	var running []*controller
	defer func() {
		for i := len(running) - 1; i >= 0; i-- {
			running[i].stop()
		}
	}()
	for _, p := range procs {
		args := append(p.args, "--health-addr="+p.health, "--enable-leader-election=false", "--log-level=info")
		c, err := startController(p.name, p.bin, args, env, filepath.Join(s.Dir, "flux", p.name+".log"))
		if err != nil {
			return err
		}
		running = append(running, c)
		if err := c.waitReady(ctx, "http://"+p.health+"/readyz"); err != nil {
			return err
		}
		s.log.Printf("VM %d: %s running (pid %d, log %s)", vmid, p.name, c.cmd.Process.Pid, c.log)
	}
	select {
	case <-ctx.Done():
		return nil
	case <-running[0].done:
		return fmt.Errorf("source-controller exited: %v (log %s)", running[0].err, running[0].log)
	case <-running[1].done:
		return fmt.Errorf("kustomize-controller exited: %v (log %s)", running[1].err, running[1].log)
	}
}

func crdsEstablished(ctx context.Context, client *kube.Client) error {
	for _, name := range fluxCRDs {
		u, err := client.Get(ctx, crdGVK, "", name)
		if err != nil {
			return err
		}
		if u == nil || !established(u) {
			return fmt.Errorf("CRD %s not established yet", name)
		}
	}
	return nil
}

func established(u *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// controller is one Flux controller process.
type controller struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// startController starts bin in its own process group; it gets SIGKILL when the sandbox
// process dies (Pdeathsig, forked from a thread locked until the process is reaped).
func startController(name, bin string, args, env []string, logPath string) (*controller, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logf, "=== %s %s %s\n", time.Now().Format(time.RFC3339), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	c := &controller{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer logf.Close()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		c.err = cmd.Wait()
		close(c.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	return c, nil
}

func (c *controller) waitReady(ctx context.Context, url string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-c.done:
			return fmt.Errorf("%s exited: %v (log %s)", c.name, c.err, c.log)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after 1m (log %s)", c.name, c.log)
		}
	}
}

// stop: SIGTERM to the group, SIGKILL after 10 s; waits until reaped.
func (c *controller) stop() {
	pid := c.cmd.Process.Pid
	syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-pid, syscall.SIGKILL)
		<-c.done
	}
	syscall.Kill(-pid, syscall.SIGKILL)
}
