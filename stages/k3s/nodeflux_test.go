package k3s_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/opencsp/installer/e2e/fluxstandins"
	"github.com/opencsp/installer/e2e/kubeenv"
	"github.com/opencsp/installer/e2e/standin"
	"github.com/opencsp/installer/stages/flux/kube"
)

// fluxSide is what the Flux half of a node bootstrap needs next to the K3s
// stand-in, the way e2e/sandbox serves it: the K3s CRDs the stand-in lacks,
// the workload-status and helm-controller stand-ins, and Flux's REAL source-
// and kustomize-controller as host processes against the VM's API, started
// once the bootstrap has applied the Flux CRDs.
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
		f.err = f.serve(ctx, inst)
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

var fluxCRDs = []string{
	"gitrepositories.source.toolkit.fluxcd.io", "ocirepositories.source.toolkit.fluxcd.io",
	"helmrepositories.source.toolkit.fluxcd.io", "helmcharts.source.toolkit.fluxcd.io",
	"buckets.source.toolkit.fluxcd.io", "kustomizations.kustomize.toolkit.fluxcd.io",
}

func (f *fluxSide) serve(ctx context.Context, inst *standin.Instance) error {
	tools, err := kubeenv.FindTools("")
	if err != nil {
		return err
	}
	server := "https://" + net.JoinHostPort(inst.Address().Addr().String(), "6443")
	src := filepath.Join(inst.RootDir(), "etc/rancher/k3s/k3s.yaml")
	kubeconfig := filepath.Join(f.dir, "kubeconfig")
	// K3s runs once the bootstrap installed it; its API answers at the VM's address.
	var client *kube.Client
	for client == nil {
		if raw, err := os.ReadFile(src); err == nil {
			if out, err := rewriteServer(raw, server); err == nil {
				if err := os.WriteFile(kubeconfig, out, 0o600); err != nil {
					return err
				}
				c, err := kube.NewFromKubeconfig(kubeconfig)
				if err == nil && fluxstandins.InstallCRDs(ctx, c, fluxstandins.K3sCRDs) == nil {
					client = c
				}
			}
		}
		if client == nil && !sleepCtx(ctx, 500*time.Millisecond) {
			return ctx.Err()
		}
	}
	f.mu.Lock()
	f.client = client
	f.mu.Unlock()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(2)
	go func() { defer wg.Done(); (&fluxstandins.WorkloadStatus{Client: client, Log: log}).Run(ctx) }()
	go func() { defer wg.Done(); (&fluxstandins.HelmController{Client: client, Log: log}).Run(ctx) }()

	// The controllers exit without their kinds: wait for the bootstrap's CRDs.
	crd := schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"}
	for _, name := range fluxCRDs {
		for {
			u, err := client.Get(ctx, crd, "", name)
			if err == nil && u != nil && established(u) {
				break
			}
			if !sleepCtx(ctx, 500*time.Millisecond) {
				return ctx.Err()
			}
		}
	}
	ports, err := kubeenv.FreePorts(5)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(f.dir, "storage"), 0o755); err != nil {
		return err
	}
	storage := fmt.Sprintf("127.0.0.1:%d", ports[0])
	env := append(os.Environ(), "KUBECONFIG="+kubeconfig, "RUNTIME_NAMESPACE=flux-system")
	for _, c := range []struct {
		name, bin string
		health    int
		args      []string
	}{
		{"source-controller", tools.SourceController, ports[2], []string{"--storage-path=" + filepath.Join(f.dir, "storage"),
			"--storage-addr=" + storage, "--storage-adv-addr=" + storage, fmt.Sprintf("--metrics-addr=127.0.0.1:%d", ports[1])}},
		{"kustomize-controller", tools.KustomizeController, ports[4], []string{fmt.Sprintf("--metrics-addr=127.0.0.1:%d", ports[3])}},
	} {
		health := fmt.Sprintf("127.0.0.1:%d", c.health)
		args := append(c.args, "--health-addr="+health, "--enable-leader-election=false", "--log-level=info")
		kill, err := startController(ctx, filepath.Join(f.dir, c.name+".log"), c.bin, args, env, "http://"+health+"/readyz")
		if kill != nil {
			defer kill()
		}
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	<-ctx.Done()
	return nil
}

// rewriteServer points k3s.yaml's one cluster at server.
func rewriteServer(raw []byte, server string) ([]byte, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	clusters, _ := doc["clusters"].([]any)
	if len(clusters) != 1 {
		return nil, fmt.Errorf("want one cluster, got %d", len(clusters))
	}
	m, _ := clusters[0].(map[string]any)
	cl, ok := m["cluster"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("no cluster entry")
	}
	cl["server"] = server
	return yaml.Marshal(doc)
}

// startController runs bin in its own process group and waits for its
// readyz; kill ends it (SIGKILL also when the test process dies: Pdeathsig
// from a locked thread).
func startController(ctx context.Context, logPath, bin string, args, env []string, readyz string) (kill func(), err error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	started, exited := make(chan error, 1), make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer logf.Close()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(exited)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	kill = func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	for deadline := time.Now().Add(time.Minute); ; {
		if resp, err := http.Get(readyz); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return kill, nil
			}
		}
		select {
		case <-exited:
			return kill, fmt.Errorf("exited (log %s)", logPath)
		case <-ctx.Done():
			return kill, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return kill, fmt.Errorf("not ready after 1m (log %s)", logPath)
		}
	}
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

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
