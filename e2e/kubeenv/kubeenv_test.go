package kubeenv

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func alive(pid int) bool { return procStart(pid) != "" }

// TestControlPlane: etcd + kube-apiserver start, kubectl works through the written kubeconfig,
// a ConfigMap is server-side applied and read back, and Stop leaves no process behind.
func TestControlPlane(t *testing.T) {
	t.Parallel()
	env := StartForTest(t, Options{ExtraSANs: []string{"10.213.0.10", "k3s.e2e.invalid"}})
	t.Logf("cold start: %s", env.Timings)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	st, err := os.Stat(env.Kubeconfig)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("kubeconfig: %v %v", st.Mode(), err)
	}
	out, err := env.Kubectl(ctx, nil, "get", "ns", "-o", "name")
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"namespace/default", "namespace/kube-system"} {
		if !strings.Contains(out, ns) {
			t.Errorf("kubectl get ns: no %s in\n%s", ns, out)
		}
	}
	if v, err := env.Kubectl(ctx, nil, "version", "-o", "json"); err != nil || !strings.Contains(v, `"gitVersion": "`+env.Tools.Versions["kube-apiserver"]+`"`) {
		t.Errorf("kubectl version: %v\n%s", err, v)
	}

	cm := `apiVersion: v1
kind: ConfigMap
metadata:
  name: probe
  namespace: default
data:
  key: value-1
`
	if err := env.Apply(ctx, cm); err != nil {
		t.Fatal(err)
	}
	if err := env.Apply(ctx, strings.Replace(cm, "value-1", "value-2", 1)); err != nil {
		t.Fatal(err)
	}
	o, err := env.Get(ctx, "configmap", "default", "probe")
	if err != nil {
		t.Fatal(err)
	}
	if got := o.String("data", "key"); got != "value-2" {
		t.Fatalf("data.key = %q", got)
	}
	if mf, err := env.Kubectl(ctx, nil, "get", "configmap", "probe", "-n", "default", "--show-managed-fields", "-o", "jsonpath={.metadata.managedFields[*].manager}/{.metadata.managedFields[*].operation}"); err != nil || mf != FieldManager+"/Apply" {
		t.Errorf("managedFields: %q %v, want %s/Apply", mf, err, FieldManager)
	}
	if _, err := env.Get(ctx, "configmap", "default", "absent"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(absent) = %v, want ErrNotFound", err)
	}
	if err := env.Delete(ctx, "configmap", "default", "probe"); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Get(ctx, "configmap", "default", "probe"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after Delete: %v", err)
	}

	// Raw API access with the stdlib client.
	resp, err := env.HTTPClient().Get(env.Server + "/api/v1/namespaces/kube-system")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET namespace: %v %v", resp, err)
	}
	resp.Body.Close()

	// The serving certificate covers the extra SANs and chains to CAPEM.
	servingPEM, _ := os.ReadFile(filepath.Join(env.Dir, "pki", "apiserver.crt"))
	blk, _ := pem.Decode(servingPEM)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(env.CAPEM)
	for _, name := range []string{"127.0.0.1", "localhost", "10.213.0.10", "k3s.e2e.invalid", "kubernetes.default.svc"} {
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: name, Roots: pool}); err != nil {
			t.Errorf("serving cert for %s: %v", name, err)
		}
	}

	// A kubeconfig for another address (as the K3s stand-in will need) is written the same way.
	alt := filepath.Join(t.TempDir(), "alt.kubeconfig")
	if err := env.WriteKubeconfig(alt, "https://localhost:"+strings.Split(env.Server, ":")[2]); err != nil {
		t.Fatal(err)
	}
	if out, err := env.Kubectl(ctx, nil, "--kubeconfig="+alt, "get", "ns", "default", "-o", "name"); err != nil || strings.TrimSpace(out) != "namespace/default" {
		t.Errorf("alt kubeconfig: %v %q", err, out)
	}

	// Stop: every process reaped, the API port closed.
	pids := env.PIDs()
	if len(pids) != 2 {
		t.Fatalf("PIDs = %v", pids)
	}
	if err := env.Stop(); err != nil {
		t.Fatal(err)
	}
	for name, pid := range pids {
		if alive(pid) {
			t.Errorf("%s (pid %d) still running after Stop", name, pid)
		}
	}
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(env.Server, "https://"), time.Second); err == nil {
		c.Close()
		t.Error("API port still open after Stop")
	}
	if files, _ := filepath.Glob(filepath.Join(env.Dir, "run", "*.pid")); len(files) != 0 {
		t.Errorf("pidfiles left: %v", files)
	}
}

// TestLeftoversOfCrashedRun: a Start in the directory of a run that never called Stop kills
// that run's processes (found from the pidfiles) before starting anew.
func TestLeftoversOfCrashedRun(t *testing.T) {
	t.Parallel()
	if os.Getenv(SkipEnv) == "1" {
		t.Skip(SkipEnv + "=1")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	first, err := Start(ctx, Options{Dir: dir, Logf: t.Logf})
	if err != nil {
		if errors.Is(err, ErrToolsMissing) {
			t.Fatalf("%v\n(set %s=1 to skip these tests)", err, SkipEnv)
		}
		t.Fatal(err)
	}
	defer first.Stop()
	old := first.PIDs()

	second := StartForTest(t, Options{Dir: dir})
	for name, pid := range old {
		if alive(pid) {
			t.Errorf("leftover %s (pid %d) still running", name, pid)
		}
	}
	if _, err := second.Kubectl(ctx, nil, "get", "ns", "default"); err != nil {
		t.Fatal(err)
	}
	// A stale pidfile whose PID belongs to someone else (here: this test) is ignored.
	os.WriteFile(filepath.Join(dir, "run", "stale.pid"), []byte(`{"pid":`+itoa(os.Getpid())+`,"start":"1","name":"stale"}`), 0o644)
	if err := Cleanup(filepath.Join(dir, "nonexistent")); err != nil {
		t.Fatal(err)
	}
	if err := second.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := Cleanup(dir); err != nil {
		t.Fatal(err)
	}
	if syscall.Kill(os.Getpid(), 0) != nil {
		t.Fatal("Cleanup killed the test process")
	}
	if _, err := os.Stat(filepath.Join(dir, "run", "stale.pid")); !os.IsNotExist(err) {
		t.Errorf("stale pidfile not removed: %v", err)
	}
}

func TestFindToolsMissing(t *testing.T) {
	_, err := FindTools(t.TempDir())
	if !errors.Is(err, ErrToolsMissing) || !strings.Contains(err.Error(), "make tools") {
		t.Fatalf("FindTools(empty dir) = %v", err)
	}
	t.Setenv(ToolsDirEnv, t.TempDir())
	if _, err := Start(context.Background(), Options{}); !errors.Is(err, ErrToolsMissing) {
		t.Fatalf("Start without tools = %v", err)
	}
}

func TestPKI(t *testing.T) {
	p, err := generatePKI(t.TempDir(), []string{"192.0.2.7", "", "api.example.invalid"})
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(p.AdminCertPEM)
	admin, _ := x509.ParseCertificate(blk.Bytes)
	if len(admin.Subject.Organization) != 1 || admin.Subject.Organization[0] != "system:masters" {
		t.Errorf("admin O = %v", admin.Subject.Organization)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.CAPEM)
	if _, err := admin.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Error(err)
	}
	for _, f := range []string{p.CAKey, p.ServKey, p.AdminKey, p.SAKey} {
		if st, err := os.Stat(f); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v", f, err)
		}
	}
	data, _ := os.ReadFile(p.ServingCert)
	blk, _ = pem.Decode(data)
	srv, _ := x509.ParseCertificate(blk.Bytes)
	if !strings.Contains(toJSON(srv.IPAddresses), "192.0.2.7") || !strings.Contains(strings.Join(srv.DNSNames, ","), "api.example.invalid") {
		t.Errorf("SANs: %v %v", srv.IPAddresses, srv.DNSNames)
	}
}
