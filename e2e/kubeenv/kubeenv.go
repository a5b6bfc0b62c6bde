// Package kubeenv runs a real Kubernetes control plane for tests: etcd and kube-apiserver as
// processes on loopback ports, with certificates generated in Go, and optionally the real Flux
// source-controller and kustomize-controller against it. There is no kubelet, scheduler or
// controller-manager: objects are stored and served exactly as by a real cluster, but nothing
// runs Pods (stand-ins for workload status come from elsewhere).
//
// The binaries are built by e2e/tools (`make tools`) into <repo>/.cache/tools; Start fails
// with ErrToolsMissing when they are not there. Talking to the cluster goes through the built
// kubectl (Kubectl, Apply, Get, WaitFor) or a stdlib HTTP client (HTTPClient), so the root
// module needs no Kubernetes libraries.
package kubeenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options configures Start.
type Options struct {
	// Dir is the work directory (certificates, etcd data, logs, pidfiles, kubeconfig). Use a
	// stable one so that a Start after a crashed run kills the leftovers (see Cleanup). A new
	// temporary directory, removed by Stop, when empty.
	Dir string
	// ToolsDir is where e2e/tools put the binaries; see FindTools.
	ToolsDir string
	// ExtraSANs are added to the serving certificate (IP addresses or DNS names), on top of
	// 127.0.0.1, 10.0.0.1, localhost and kubernetes.default.svc[.cluster.local].
	ExtraSANs []string
	// Flux installs the Flux CRDs and the flux-system namespace and starts source-controller
	// and kustomize-controller.
	Flux bool
	// ReadyTimeout bounds the wait for each component; 90 s when zero.
	ReadyTimeout time.Duration
	// APIServerArgs are extra kube-apiserver flags (--name=value).
	APIServerArgs []string
	// Logf receives progress lines; silent when nil.
	Logf func(format string, args ...any)
}

// Timings are how long the phases of Start took.
type Timings struct {
	PKI, Etcd, APIServer, FluxCRDs, Controllers, Total time.Duration
}

func (t Timings) String() string {
	r := func(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }
	return fmt.Sprintf("pki %s, etcd %s, kube-apiserver %s, flux CRDs %s, controllers %s, total %s",
		r(t.PKI), r(t.Etcd), r(t.APIServer), r(t.FluxCRDs), r(t.Controllers), r(t.Total))
}

// Env is a running environment.
type Env struct {
	// Dir is the work directory.
	Dir string
	// Kubeconfig is the admin kubeconfig (mode 0600, certificates embedded).
	Kubeconfig string
	// Server is the API server URL, https://127.0.0.1:PORT.
	Server string
	// CAPEM is the cluster CA certificate; the serving certificate chains to it.
	CAPEM []byte
	// EtcdURL is etcd's client URL.
	EtcdURL string
	// SourceStorageAddr is source-controller's artifact server (host:port), with Flux.
	SourceStorageAddr string
	// Tools are the binaries in use.
	Tools *Tools
	// Timings of Start.
	Timings Timings

	opts     Options
	pki      *pki
	tempDir  bool
	procs    []*proc
	stopOnce sync.Once
	stopErr  error
	client   *http.Client
}

const fluxNamespace = "flux-system"

// Start starts etcd and kube-apiserver (and Flux with Options.Flux) and waits until they are
// ready. On error everything already started is stopped again.
func Start(ctx context.Context, opts Options) (*Env, error) {
	begin := time.Now()
	tools, err := FindTools(opts.ToolsDir)
	if err != nil {
		return nil, err
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 90 * time.Second
	}
	e := &Env{opts: opts, Tools: tools}
	if opts.Dir == "" {
		if e.Dir, err = os.MkdirTemp("", "kubeenv-"); err != nil {
			return nil, err
		}
		e.tempDir = true
	} else {
		if e.Dir, err = filepath.Abs(opts.Dir); err != nil {
			return nil, err
		}
		if err := Cleanup(e.Dir); err != nil {
			return nil, err
		}
	}
	// Fresh state: a previous run's data is never reused.
	for _, sub := range []string{"pki", "etcd", "run", "logs", "home", "kubecache", "flux"} {
		os.RemoveAll(filepath.Join(e.Dir, sub))
		if err := os.MkdirAll(filepath.Join(e.Dir, sub), 0o700); err != nil {
			return nil, err
		}
	}
	if err := e.start(ctx); err != nil {
		e.Stop()
		return nil, err
	}
	e.Timings.Total = time.Since(begin)
	e.logf("kubeenv: ready at %s (%s)", e.Server, e.Timings)
	return e, nil
}

func (e *Env) logf(format string, args ...any) {
	if e.opts.Logf != nil {
		e.opts.Logf(format, args...)
	}
}

func (e *Env) path(parts ...string) string {
	return filepath.Join(append([]string{e.Dir}, parts...)...)
}

func (e *Env) start(ctx context.Context) error {
	t := time.Now()
	var err error
	if e.pki, err = generatePKI(e.path("pki"), e.opts.ExtraSANs); err != nil {
		return err
	}
	e.CAPEM = e.pki.CAPEM
	if e.client, err = e.newClient(); err != nil {
		return err
	}
	e.Timings.PKI = time.Since(t)

	t = time.Now()
	if err := e.startEtcd(ctx); err != nil {
		return err
	}
	e.Timings.Etcd = time.Since(t)

	t = time.Now()
	if err := e.startAPIServer(ctx); err != nil {
		return err
	}
	e.Kubeconfig = e.path("kubeconfig")
	if err := e.WriteKubeconfig(e.Kubeconfig, e.Server); err != nil {
		return err
	}
	e.Timings.APIServer = time.Since(t)

	if !e.opts.Flux {
		return nil
	}
	t = time.Now()
	if err := e.installFluxCRDs(ctx); err != nil {
		return err
	}
	e.Timings.FluxCRDs = time.Since(t)
	t = time.Now()
	if err := e.startControllers(ctx); err != nil {
		return err
	}
	e.Timings.Controllers = time.Since(t)
	return nil
}

// baseEnv is the environment of every child: hermetic, nothing from the caller's KUBECONFIG.
func (e *Env) baseEnv(extra ...string) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	env := []string{"PATH=" + path, "HOME=" + e.path("home"), "KUBECACHEDIR=" + e.path("kubecache")}
	if tmp := os.Getenv("TMPDIR"); tmp != "" {
		env = append(env, "TMPDIR="+tmp)
	}
	return append(env, extra...)
}

// component starts one process and waits for ready, retrying with new ports when one was taken
// between choosing and binding it.
func (e *Env) component(ctx context.Context, name, bin string, nports int,
	build func(ports []int) (args, env []string, ready func(context.Context) error)) ([]int, error) {
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		ports, err := FreePorts(nports)
		if err != nil {
			return nil, err
		}
		args, env, ready := build(ports)
		p, err := spawn(name, bin, args, env, e.path("logs"), e.path("run"))
		if err != nil {
			return nil, err
		}
		e.procs = append(e.procs, p)
		err = e.waitReady(ctx, p, ready)
		if err == nil {
			e.logf("kubeenv: %s ready (pid %d, ports %v)", name, p.cmd.Process.Pid, ports)
			return ports, nil
		}
		lastErr = err
		p.stop(5 * time.Second)
		e.procs = e.procs[:len(e.procs)-1]
		if !strings.Contains(p.tail(16<<10), "address already in use") {
			break
		}
		e.logf("kubeenv: %s: port taken, retrying", name)
	}
	return nil, lastErr
}

func (e *Env) waitReady(ctx context.Context, p *proc, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, e.opts.ReadyTimeout)
	defer cancel()
	var last error
	for {
		if p.exited() {
			return fmt.Errorf("kubeenv: %s exited (%v) before it was ready; log %s:\n%s", p.name, p.err, p.log, p.tail(4<<10))
		}
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		last = ready(rctx)
		rcancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kubeenv: %s not ready after %s: %v; log %s:\n%s", p.name, e.opts.ReadyTimeout, last, p.log, p.tail(4<<10))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// httpReady returns a probe that wants 200 from url.
func httpReady(client *http.Client, url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
		}
		return nil
	}
}

func (e *Env) startEtcd(ctx context.Context) error {
	_, err := e.component(ctx, "etcd", e.Tools.Etcd, 2, func(p []int) ([]string, []string, func(context.Context) error) {
		client := fmt.Sprintf("http://127.0.0.1:%d", p[0])
		peer := fmt.Sprintf("http://127.0.0.1:%d", p[1])
		e.EtcdURL = client
		args := []string{
			"--name=e2e",
			"--data-dir=" + e.path("etcd"),
			"--listen-client-urls=" + client, "--advertise-client-urls=" + client,
			"--listen-peer-urls=" + peer, "--initial-advertise-peer-urls=" + peer,
			"--initial-cluster=e2e=" + peer,
			"--unsafe-no-fsync", // test data: no fsync (much faster on a shared disk)
			"--log-level=warn",
		}
		return args, e.baseEnv(), httpReady(http.DefaultClient, client+"/health")
	})
	return err
}

func (e *Env) startAPIServer(ctx context.Context) error {
	_, err := e.component(ctx, "kube-apiserver", e.Tools.KubeAPIServer, 1, func(p []int) ([]string, []string, func(context.Context) error) {
		e.Server = fmt.Sprintf("https://127.0.0.1:%d", p[0])
		args := []string{
			"--etcd-servers=" + e.EtcdURL,
			"--bind-address=127.0.0.1",
			"--advertise-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(p[0]),
			"--cert-dir=" + e.path("pki"),
			"--tls-cert-file=" + e.pki.ServingCert,
			"--tls-private-key-file=" + e.pki.ServKey,
			"--client-ca-file=" + e.pki.CACert,
			"--service-account-key-file=" + e.pki.SAPub,
			"--service-account-signing-key-file=" + e.pki.SAKey,
			"--service-account-issuer=https://kubernetes.default.svc",
			"--service-cluster-ip-range=10.0.0.0/24",
			"--authorization-mode=RBAC",
			"--endpoint-reconciler-type=none",
			"--profiling=false",
		}
		args = append(args, e.opts.APIServerArgs...)
		return args, e.baseEnv(), httpReady(e.client, e.Server+"/readyz")
	})
	return err
}

func (e *Env) installFluxCRDs(ctx context.Context) error {
	ns := "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: " + fluxNamespace + "\n"
	if err := e.Apply(ctx, ns); err != nil {
		return err
	}
	if _, err := e.Kubectl(ctx, nil, "apply", "--server-side", "--field-manager=opencsp-e2e", "-f", e.Tools.FluxCRDs); err != nil {
		return err
	}
	_, err := e.Kubectl(ctx, nil, "wait", "--for=condition=Established", "crd", "--all",
		"--timeout="+e.opts.ReadyTimeout.String())
	return err
}

func (e *Env) startControllers(ctx context.Context) error {
	// A TMPDIR of their own: kustomize-controller purges every kustomization-* dir in its
	// temp dir when it starts, which would break the builds of another environment's (or a
	// sandbox's) kustomize-controller sharing /tmp. exec keeps the last TMPDIR given.
	tmp := e.path("flux", "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return err
	}
	ctlEnv := e.baseEnv("KUBECONFIG="+e.Kubeconfig, "RUNTIME_NAMESPACE="+fluxNamespace, "TMPDIR="+tmp)
	storage := e.path("flux", "storage")
	if err := os.MkdirAll(storage, 0o755); err != nil {
		return err
	}
	_, err := e.component(ctx, "source-controller", e.Tools.SourceController, 3, func(p []int) ([]string, []string, func(context.Context) error) {
		e.SourceStorageAddr = fmt.Sprintf("127.0.0.1:%d", p[0])
		health := fmt.Sprintf("127.0.0.1:%d", p[2])
		args := []string{
			"--storage-path=" + storage,
			"--storage-addr=" + e.SourceStorageAddr,
			"--storage-adv-addr=" + e.SourceStorageAddr,
			fmt.Sprintf("--metrics-addr=127.0.0.1:%d", p[1]),
			"--health-addr=" + health,
			"--enable-leader-election=false",
			"--log-level=info",
		}
		return args, ctlEnv, httpReady(http.DefaultClient, "http://"+health+"/readyz")
	})
	if err != nil {
		return err
	}
	_, err = e.component(ctx, "kustomize-controller", e.Tools.KustomizeController, 2, func(p []int) ([]string, []string, func(context.Context) error) {
		health := fmt.Sprintf("127.0.0.1:%d", p[1])
		args := []string{
			fmt.Sprintf("--metrics-addr=127.0.0.1:%d", p[0]),
			"--health-addr=" + health,
			"--enable-leader-election=false",
			"--log-level=info",
		}
		return args, ctlEnv, httpReady(http.DefaultClient, "http://"+health+"/readyz")
	})
	return err
}

// Stop stops the components in reverse order (SIGTERM, SIGKILL after 10 s), waits until every
// process has been reaped and removes a temporary Dir. Safe to call more than once.
func (e *Env) Stop() error {
	e.stopOnce.Do(func() {
		var errs []error
		for i := len(e.procs) - 1; i >= 0; i-- {
			if err := e.procs[i].stop(10 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
		if e.tempDir {
			os.RemoveAll(e.Dir)
		}
		e.stopErr = errors.Join(errs...)
	})
	return e.stopErr
}

// PIDs returns the process IDs of the running components by name.
func (e *Env) PIDs() map[string]int {
	m := map[string]int{}
	for _, p := range e.procs {
		m[p.name] = p.cmd.Process.Pid
	}
	return m
}

// LogFile is the log of a component (etcd, kube-apiserver, source-controller,
// kustomize-controller).
func (e *Env) LogFile(component string) string { return e.path("logs", component+".log") }

// LogTail returns the last n bytes of a component's log.
func (e *Env) LogTail(component string, n int64) string { return tailFile(e.LogFile(component), n) }

func (e *Env) newClient() (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(e.pki.CAPEM) {
		return nil, errors.New("kubeenv: bad CA")
	}
	cert, err := tls.X509KeyPair(e.pki.AdminCertPEM, e.pki.AdminKP)
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}}, nil
}

// HTTPClient is an HTTP client that trusts the cluster CA and authenticates as the admin
// (O=system:masters), for raw API requests against Server.
func (e *Env) HTTPClient() *http.Client { return e.client }

// WriteKubeconfig writes an admin kubeconfig (mode 0600, certificates embedded) for server, for
// example an address covered by Options.ExtraSANs.
func (e *Env) WriteKubeconfig(path, server string) error {
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: opencsp-e2e
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: opencsp-e2e-admin
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: opencsp-e2e
  context:
    cluster: opencsp-e2e
    user: opencsp-e2e-admin
current-context: opencsp-e2e
`, server, b64(e.pki.CAPEM), b64(e.pki.AdminCertPEM), b64(e.pki.AdminKP))
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(cfg), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
