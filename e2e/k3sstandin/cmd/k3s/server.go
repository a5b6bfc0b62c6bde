package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const (
	apiPort   = 6443
	etcdURL   = "http://127.0.0.1:2379"
	etcdPeer  = "http://127.0.0.1:2380"
	heartbeat = 10 * time.Second
)

func runServer(ctx context.Context, log *slog.Logger, c *serverConfig) error {
	log.Info("starting "+Marker+": NOT K3s, a test stand-in running a real etcd and kube-apiserver",
		"version", version, "node", c.NodeName)
	logIgnored(log, c)
	bins, err := extractComponents(c.DataDir)
	if err != nil {
		return err
	}
	nodeIP := primaryIPv4()
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.43.0.1")}
	if nodeIP != nil {
		ips = append(ips, nodeIP)
	}
	dns := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", c.NodeName}
	for _, s := range c.TLSSANs {
		if ip := net.ParseIP(s); ip != nil {
			if !containsIP(ips, ip) {
				ips = append(ips, ip)
			}
		} else if !containsString(dns, s) {
			dns = append(dns, s)
		}
	}
	p, reissued, err := ensurePKI(filepath.Join(c.DataDir, "server", "tls"), ips, dns)
	if err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	log.Info("serving certificate", "ips", ips, "dns", dns, "reissued", reissued)

	sup := &supervisor{log: log, logDir: filepath.Join(c.DataDir, "server", "logs"), exited: make(chan error, 2)}
	defer sup.stopAll()
	if err := sup.start("etcd", bins["etcd"],
		"--name=default", "--data-dir="+filepath.Join(c.DataDir, "server", "db", "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+etcdPeer, "--initial-advertise-peer-urls="+etcdPeer,
		"--initial-cluster=default="+etcdPeer, "--unsafe-no-fsync", "--log-level=warn"); err != nil {
		return err
	}
	if err := waitFor(ctx, sup, 60*time.Second, httpOK(http.DefaultClient, etcdURL+"/health")); err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	advertise := "127.0.0.1"
	if nodeIP != nil {
		advertise = nodeIP.String()
	}
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=0.0.0.0", fmt.Sprintf("--secure-port=%d", apiPort), "--advertise-address=" + advertise,
		"--cert-dir=" + p.dir, "--tls-cert-file=" + p.servingCert, "--tls-private-key-file=" + p.servingKey,
		"--client-ca-file=" + p.caCert,
		"--service-account-key-file=" + p.saPub, "--service-account-signing-key-file=" + p.saKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range=10.43.0.0/16", "--authorization-mode=Node,RBAC",
		"--endpoint-reconciler-type=none", "--profiling=false",
	}
	for _, a := range c.APIServerArgs {
		args = append(args, "--"+strings.TrimPrefix(a, "--"))
	}
	if err := sup.start("kube-apiserver", bins["kube-apiserver"], args...); err != nil {
		return err
	}
	client, err := adminClient(p)
	if err != nil {
		return err
	}
	local := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	if err := waitFor(ctx, sup, 120*time.Second, httpOK(client, local+"/readyz")); err != nil {
		return fmt.Errorf("kube-apiserver: %w", err)
	}
	if err := writeKubeconfig(c.WriteKubeconfig, c.WriteKubeconfigMode, local, p); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	n := &nodeAgent{client: client, server: local, name: c.NodeName, ip: advertise, log: log}
	if err := waitFor(ctx, sup, 60*time.Second, n.register); err != nil {
		return fmt.Errorf("register node %s: %w", c.NodeName, err)
	}
	notify("READY=1\nSTATUS=" + Marker + " running")
	log.Info("k3s stand-in ready", "node", c.NodeName, "kubeconfig", c.WriteKubeconfig)

	t := time.NewTicker(heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			notify("STOPPING=1")
			log.Info("stopping")
			return nil
		case err := <-sup.exited:
			return err
		case <-t.C:
			hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := n.heartbeat(hctx); err != nil {
				log.Warn("node heartbeat failed", "err", err)
			}
			cancel()
		}
	}
}

func containsIP(list []net.IP, ip net.IP) bool {
	for _, x := range list {
		if x.Equal(ip) {
			return true
		}
	}
	return false
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// primaryIPv4 is the address of the interface holding the default route's
// source, approximated as the first global unicast IPv4 address (K3s picks
// the default route's interface too).
func primaryIPv4() net.IP {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip4 := ipn.IP.To4(); ip4 != nil && ip4.IsGlobalUnicast() {
				return ip4
			}
		}
	}
	return nil
}

// supervisor runs the control-plane processes; any exit ends the server
// (systemd restarts the whole unit, as with K3s).
type supervisor struct {
	log    *slog.Logger
	logDir string
	procs  []*exec.Cmd
	exited chan error
}

func (s *supervisor) start(name, bin string, args ...string) error {
	if err := os.MkdirAll(s.logDir, 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(s.logDir, name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Children die with the server even if it is SIGKILLed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	s.log.Info("started", "component", name, "pid", cmd.Process.Pid, "log", logf.Name())
	s.procs = append(s.procs, cmd)
	go func() {
		err := cmd.Wait()
		logf.Close()
		s.exited <- fmt.Errorf("%s exited: %v (log %s)", name, err, logf.Name())
	}()
	return nil
}

func (s *supervisor) stopAll() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		p := s.procs[i]
		_ = p.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() {
			for p.ProcessState == nil {
				if err := p.Process.Signal(syscall.Signal(0)); err != nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = p.Process.Kill()
		}
	}
}

func waitFor(ctx context.Context, sup *supervisor, timeout time.Duration, probe func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
		last = probe(pctx)
		pcancel()
		if last == nil {
			return nil
		}
		select {
		case err := <-sup.exited:
			return err
		case <-ctx.Done():
			return fmt.Errorf("not ready after %s: %v", timeout, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func httpOK(c *http.Client, url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
		}
		return nil
	}
}

func adminClient(p *pki) (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(p.caPEM) {
		return nil, errors.New("bad CA certificate")
	}
	cert, err := tls.X509KeyPair(p.adminPEM, p.adminKeyPEM)
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}}, nil
}

// writeKubeconfig writes the admin kubeconfig the way K3s writes k3s.yaml:
// cluster/user/context "default", server https://127.0.0.1:6443.
func writeKubeconfig(path string, mode os.FileMode, server string, p *pki) error {
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	cfg := fmt.Sprintf(`apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: %s
    server: %s
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: %s
    client-key-data: %s
`, b64(p.caPEM), server, b64(p.adminPEM), b64(p.adminKeyPEM))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(cfg), mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil { // not subject to the umask
		return err
	}
	return os.Rename(tmp, path)
}

// nodeAgent does what the kubelet does for the Node object: register it,
// report Ready, renew its lease. Nothing runs Pods.
type nodeAgent struct {
	client *http.Client
	server string
	name   string
	ip     string
	log    *slog.Logger
	since  string // Ready since (lastTransitionTime); heartbeats do not move it
}

func (n *nodeAgent) do(ctx context.Context, method, path, contentType string, body any) (int, []byte, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, n.server+path, bytes.NewReader(data))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", "application/json")
	resp, err := n.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, b, nil
}

func (n *nodeAgent) register(ctx context.Context) error {
	node := map[string]any{
		"apiVersion": "v1", "kind": "Node",
		"metadata": map[string]any{"name": n.name, "labels": map[string]string{
			"kubernetes.io/hostname": n.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
			"node-role.kubernetes.io/control-plane": "true", "node-role.kubernetes.io/master": "true",
			"node.kubernetes.io/instance-type": "k3s",
		}, "annotations": map[string]string{"opencsp.io/k3s-standin": "no kubelet: status is reported by the stand-in"}},
	}
	code, body, err := n.do(ctx, http.MethodPost, "/api/v1/nodes", "application/json", node)
	if err != nil {
		return err
	}
	if code != http.StatusCreated && code != http.StatusConflict {
		return fmt.Errorf("create node: HTTP %d: %s", code, body)
	}
	return n.heartbeat(ctx)
}

func (n *nodeAgent) heartbeat(ctx context.Context) error {
	now := time.Now().UTC().Format(time.RFC3339)
	if n.since == "" {
		n.since = now
	}
	status := map[string]any{"status": map[string]any{
		"conditions": []map[string]string{{
			"type": "Ready", "status": "True", "reason": "KubeletReady",
			"message":           "opencsp k3s stand-in: control plane running (no kubelet)",
			"lastHeartbeatTime": now, "lastTransitionTime": n.since,
		}},
		"addresses": []map[string]string{{"type": "InternalIP", "address": n.ip}, {"type": "Hostname", "address": n.name}},
		"nodeInfo": map[string]string{"kubeletVersion": version, "kubeProxyVersion": version, "operatingSystem": "linux",
			"architecture": "amd64", "containerRuntimeVersion": "none://" + Marker},
	}}
	code, body, err := n.do(ctx, http.MethodPatch, "/api/v1/nodes/"+n.name+"/status", "application/strategic-merge-patch+json", status)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("update node status: HTTP %d: %s", code, body)
	}
	return n.renewLease(ctx)
}

func (n *nodeAgent) renewLease(ctx context.Context) error {
	now := time.Now().UTC().Format("2006-01-02T15:04:05.000000Z07:00")
	path := "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
	lease := map[string]any{"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
		"metadata": map[string]any{"name": n.name},
		"spec":     map[string]any{"holderIdentity": n.name, "leaseDurationSeconds": 40, "renewTime": now}}
	code, body, err := n.do(ctx, http.MethodPost, path, "application/json", lease)
	if err != nil {
		return err
	}
	if code == http.StatusCreated {
		return nil
	}
	if code != http.StatusConflict {
		return fmt.Errorf("create lease: HTTP %d: %s", code, body)
	}
	code, body, err = n.do(ctx, http.MethodPatch, path+"/"+n.name, "application/merge-patch+json",
		map[string]any{"spec": map[string]any{"renewTime": now}})
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("renew lease: HTTP %d: %s", code, body)
	}
	return nil
}

// notify speaks systemd's sd_notify protocol (Type=notify, as K3s's unit).
func notify(state string) {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return
	}
	if strings.HasPrefix(sock, "@") {
		sock = "\x00" + sock[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = conn.Write([]byte(state))
}
