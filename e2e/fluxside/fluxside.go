// Package fluxside serves, next to a K3s stand-in's API server, what the flux and rollout
// stages need there and that nothing in the stand-in runs:
//
//   - the K3s CRDs the stand-in does not serve (bundled Traefik's, fluxstandins.K3sCRDs);
//   - the e2e/fluxstandins WorkloadStatus and HelmController stand-ins (goroutines);
//   - Flux's REAL source-controller and kustomize-controller (e2e tools) as host processes
//     against the node's API, started once the Flux CRDs are Established (the flux stage or
//     `opencsp node bootstrap` applies them; the controllers exit while their kinds are
//     missing). They reach a loopback git server as host processes, and kustomize-controller
//     fetches artifacts from source-controller on loopback.
//
// e2e/sandbox runs it for the management VM; the node-bootstrap test runs it for its stand-in.
package fluxside

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

// K3sKubeconfig is where K3s (and its stand-in) writes the admin kubeconfig, relative to the
// node's root.
const K3sKubeconfig = "etc/rancher/k3s/k3s.yaml"

var crdGVK = schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"}

// fluxCRDs are the CRDs the two controllers reconcile; they start once all are Established.
var fluxCRDs = []string{
	"gitrepositories.source.toolkit.fluxcd.io", "ocirepositories.source.toolkit.fluxcd.io",
	"helmrepositories.source.toolkit.fluxcd.io", "helmcharts.source.toolkit.fluxcd.io",
	"buckets.source.toolkit.fluxcd.io", "kustomizations.kustomize.toolkit.fluxcd.io",
}

// WaitKubeconfig waits until K3s wrote its kubeconfig inside the stand-in, then writes it to
// out (0600) with the server pointed at the VM's address, where the host reaches the API.
func WaitKubeconfig(ctx context.Context, inst *standin.Instance, out string) error {
	src := filepath.Join(inst.RootDir(), K3sKubeconfig)
	server := "https://" + net.JoinHostPort(inst.Address().Addr().String(), "6443")
	for {
		if raw, err := os.ReadFile(src); err == nil && len(raw) > 0 {
			if b, err := RewriteServer(raw, server); err == nil {
				if err := os.MkdirAll(filepath.Dir(out), 0o700); err != nil {
					return err
				}
				return os.WriteFile(out, b, 0o600)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// RewriteServer points every cluster of a kubeconfig at server.
func RewriteServer(raw []byte, server string) ([]byte, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	clusters, _ := doc["clusters"].([]any)
	if len(clusters) == 0 {
		return nil, errors.New("kubeconfig has no clusters")
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

// Options configure Serve.
type Options struct {
	// Kubeconfig reaches the node's API from this host (see WaitKubeconfig).
	Kubeconfig string
	// Dir gets the controllers' storage, TMPDIR and logs (source-controller.log,
	// kustomize-controller.log, standins.log).
	Dir string
	// ToolsDir overrides where e2e/tools put the binaries (see kubeenv.FindTools).
	ToolsDir string
	// Logf receives progress lines (nil: none).
	Logf func(format string, args ...any)
	// OnAPI is called once the API answers (the K3s CRDs are installed), with a client for it.
	OnAPI func(*kube.Client)
}

// Serve runs the stand-ins and the controllers until ctx ends (nil) or a controller exits.
func Serve(ctx context.Context, o Options) error {
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	tools, err := kubeenv.FindTools(o.ToolsDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return err
	}
	client, err := kube.NewFromKubeconfig(o.Kubeconfig)
	if err != nil {
		return err
	}
	// The stand-in's API answers once K3s runs; K3s's own CRDs first.
	for fluxstandins.InstallCRDs(ctx, client, fluxstandins.K3sCRDs) != nil {
		if !sleep(ctx, time.Second) {
			return ctx.Err()
		}
	}
	if o.OnAPI != nil {
		o.OnAPI(client)
	}
	standinLog, err := os.OpenFile(filepath.Join(o.Dir, "standins.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer standinLog.Close()
	slogger := slog.New(slog.NewTextHandler(standinLog, &slog.HandlerOptions{Level: slog.LevelInfo}))
	done := make(chan struct{}, 2)
	go func() { (&fluxstandins.WorkloadStatus{Client: client, Log: slogger}).Run(ctx); done <- struct{}{} }()
	go func() { (&fluxstandins.HelmController{Client: client, Log: slogger}).Run(ctx); done <- struct{}{} }()
	defer func() { <-done; <-done }()
	logf("K3s API up; flux stand-ins (workload status, helm-controller) running; Flux controllers start once the Flux CRDs are applied")

	for i := 0; ; i++ {
		err := crdsEstablished(ctx, client)
		if err == nil {
			break
		}
		if i%15 == 14 {
			logf("waiting for the Flux CRDs: %v", err)
		}
		if !sleep(ctx, time.Second) {
			return ctx.Err()
		}
	}
	return runControllers(ctx, o, tools, logf)
}

func runControllers(ctx context.Context, o Options, tools *kubeenv.Tools, logf func(string, ...any)) error {
	ports, err := kubeenv.FreePorts(5)
	if err != nil {
		return err
	}
	storage := filepath.Join(o.Dir, "storage")
	// A TMPDIR of its own: kustomize-controller purges every kustomization-* dir in its temp
	// dir when it starts, which breaks the builds of any other kustomize-controller (another
	// sandbox, e2e/kubeenv) sharing /tmp.
	tmp := filepath.Join(o.Dir, "tmp")
	for _, d := range []string{storage, tmp} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	env := append(os.Environ(), "KUBECONFIG="+o.Kubeconfig, "RUNTIME_NAMESPACE=flux-system", "TMPDIR="+tmp)
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
		c, err := startController(p.name, p.bin, args, env, filepath.Join(o.Dir, p.name+".log"))
		if err != nil {
			return err
		}
		running = append(running, c)
		if err := c.waitReady(ctx, "http://"+p.health+"/readyz"); err != nil {
			return err
		}
		logf("%s running (pid %d, log %s)", p.name, c.cmd.Process.Pid, c.log)
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
		if m, _ := c.(map[string]any); m["type"] == "Established" && m["status"] == "True" {
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

// startController starts bin in its own process group; it gets SIGKILL when this process
// dies (Pdeathsig, forked from a thread locked until the child is reaped).
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
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-c.done
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
}

func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
