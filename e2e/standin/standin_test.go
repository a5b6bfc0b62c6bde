package standin_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencsp/installer/e2e/standin"
	"github.com/opencsp/installer/e2e/standin/seed"
	"golang.org/x/crypto/ssh"
)

// The tests below boot real containers: they need root, debootstrap, systemd-nspawn, nsenter,
// unshare and ip, and the Debian mirror apt uses (once, to build the cached golden tree).

func requireStandin(t *testing.T) {
	t.Helper()
	standin.RequireHost(t, "STANDIN TESTS")
}

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		if cleaned, err := standin.CleanupStale(context.Background()); len(cleaned) > 0 || err != nil {
			fmt.Fprintf(os.Stderr, "standin: cleaned leftovers of crashed runs %v (err: %v)\n", cleaned, err)
		}
	}
	code := m.Run()
	shared.close()
	os.Exit(code)
}

// shared is one harness for the tests that only need instances on a common bridge.
var shared sharedHarness

type sharedHarness struct {
	once sync.Once
	host *standin.Host
	err  error
}

func (s *sharedHarness) close() {
	if s.host != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.host.Close(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "standin: closing the shared host: %v\n", err)
		}
	}
}

func sharedHost(t *testing.T) *standin.Host {
	t.Helper()
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		shared.host, shared.err = standin.NewHost(ctx, standin.HostConfig{})
	})
	if shared.err != nil {
		t.Fatalf("harness: %v", shared.err)
	}
	return shared.host
}

// testKey is the key the tests log in with, as the cloud-init user.
type testKey struct {
	signer ssh.Signer
	authz  string
}

func newTestKey(t *testing.T) testKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{signer: s, authz: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey()))) + " standin-test"}
}

// proxmoxSeed renders the seed the way Proxmox renders it for a VM with these settings.
func proxmoxSeed(t *testing.T, vmid int, name string, addr net.IP, h *standin.Host, mac net.HardwareAddr, key testKey) standin.Seed {
	t.Helper()
	no := false
	n := h.Network()
	f, err := seed.Render(seed.VMConfig{
		VMID:         vmid,
		Name:         name,
		CIUser:       "opencsp",
		SSHKeys:      seed.EncodeSSHKeys(key.authz),
		CIUpgrade:    &no,
		Nets:         map[int]string{0: "virtio=" + strings.ToUpper(mac.String()) + ",bridge=vmbr0"},
		IPConfigs:    map[int]string{0: fmt.Sprintf("ip=%s/%d,gw=%s", addr, n.Subnet().Bits(), n.Gateway())},
		Nameserver:   n.Gateway().String(),
		Searchdomain: "standin.test",
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

type sshConn struct {
	client  *ssh.Client
	hostKey ssh.PublicKey
}

func dialSSH(t *testing.T, ctx context.Context, addr string, user string, key testKey) *sshConn {
	t.Helper()
	c := &sshConn{}
	cfg := &ssh.ClientConfig{
		User: user,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(key.signer)},
		HostKeyCallback: func(_ string, _ net.Addr, k ssh.PublicKey) error {
			c.hostKey = k
			return nil
		},
		Timeout: 10 * time.Second,
	}
	var err error
	for ctx.Err() == nil {
		c.client, err = ssh.Dial("tcp", net.JoinHostPort(addr, "22"), cfg)
		if err == nil {
			t.Cleanup(func() { c.client.Close() })
			return c
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("ssh %s@%s: %v", user, addr, err)
	return nil
}

func (c *sshConn) run(t *testing.T, cmd string) string {
	t.Helper()
	s, err := c.client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out, stderr bytes.Buffer
	s.Stdout, s.Stderr = &out, &stderr
	if err := s.Run(cmd); err != nil {
		t.Fatalf("%q: %v: %s%s", cmd, err, out.String(), stderr.String())
	}
	return strings.TrimSpace(out.String())
}

func TestGoldenTreeCached(t *testing.T) {
	requireStandin(t)
	ctx := context.Background()
	start := time.Now()
	root, err := standin.EnsureGoldenTree(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	first := time.Since(start)
	start = time.Now()
	again, err := standin.EnsureGoldenTree(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	second := time.Since(start)
	t.Logf("golden tree %s: first call %v, second %v", root, first.Round(time.Millisecond), second)
	if again != root {
		t.Errorf("second call returned %s, want %s", again, root)
	}
	if second > time.Second {
		t.Errorf("cached call took %v", second)
	}
	for _, p := range []string{"usr/bin/cloud-init", "usr/sbin/sshd", "usr/bin/sudo", "usr/sbin/netplan", "lib/systemd/systemd",
		"etc/systemd/system/multi-user.target.wants/systemd-networkd.service", "usr/lib/locale/locale-archive"} {
		if _, err := os.Lstat(filepath.Join(root, p)); err != nil {
			t.Errorf("golden tree lacks %s", p)
		}
	}
	if keys, _ := filepath.Glob(filepath.Join(root, "etc/ssh/ssh_host_*")); len(keys) > 0 {
		t.Errorf("golden tree has SSH host keys %v; cloud-init must generate them per instance", keys)
	}
	if b, err := os.ReadFile(filepath.Join(root, "etc/machine-id")); err != nil || len(b) != 0 {
		t.Errorf("etc/machine-id = %q, %v; want empty", b, err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/hosts")); !strings.Contains(string(b), "localhost") {
		t.Errorf("etc/hosts = %q", b)
	}
}

// TestInstancesLikeClonedVMs boots two stand-ins from Proxmox-style seeds (v1 network-config with
// a static address) and checks them from the host the way the installer will use them.
func TestInstancesLikeClonedVMs(t *testing.T) {
	requireStandin(t)
	t.Parallel()
	h := sharedHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	key := newTestKey(t)

	type vm struct {
		name  string
		vmid  int
		addr  net.IP
		inst  *standin.Instance
		conn  *sshConn
		sshAt time.Duration
		ready time.Duration
	}
	vms := []*vm{{name: "vm-a", vmid: 101}, {name: "vm-b", vmid: 102}}
	var wg sync.WaitGroup
	errs := make([]error, len(vms))
	for i, v := range vms {
		a := h.Network().Address(10 + i)
		v.addr = net.IP(a.Addr().AsSlice())
		mac := net.HardwareAddr{0xbc, 0x24, 0x11, 0x5e, 0x00, byte(i + 1)}
		start := time.Now()
		inst, err := h.Start(ctx, standin.InstanceSpec{
			Name: v.name, Address: a, Gateway: h.Network().Gateway(), MAC: mac,
			Seed: proxmoxSeed(t, v.vmid, v.name, v.addr, h, mac, key),
		})
		if err != nil {
			t.Fatalf("start %s: %v", v.name, err)
		}
		v.inst = inst
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Time to the SSH port alone, then to ready (cloud-init finished too).
			for ctx.Err() == nil {
				if c, err := net.DialTimeout("tcp", net.JoinHostPort(v.addr.String(), "22"), 300*time.Millisecond); err == nil {
					c.Close()
					v.sshAt = time.Since(start)
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			errs[i] = inst.WaitReady(ctx)
			v.ready = time.Since(start)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s: %v", vms[i].name, err)
		}
	}
	for _, v := range vms {
		t.Logf("%s at %s: SSH port open after %v, cloud-init done after %v",
			v.name, v.addr, v.sshAt.Round(100*time.Millisecond), v.ready.Round(100*time.Millisecond))
	}

	for _, v := range vms {
		// Log in as the cloud-init user with the seed's key — not as root.
		v.conn = dialSSH(t, ctx, v.addr.String(), "opencsp", key)
		c := v.conn
		if got := c.run(t, "id -un"); got != "opencsp" {
			t.Errorf("%s: logged in as %q", v.name, got)
		}
		if got := c.run(t, "sudo -n id -u"); got != "0" {
			t.Errorf("%s: sudo -n id -u = %q, want 0", v.name, got)
		}
		if got := c.run(t, "hostname"); got != v.name {
			t.Errorf("%s: hostname = %q", v.name, got)
		}
		if got := c.run(t, "hostname -f"); got != v.name+".standin.test" {
			t.Errorf("%s: hostname -f = %q", v.name, got)
		}
		if got := c.run(t, "cloud-init status"); got != "status: done" {
			t.Errorf("%s: cloud-init status = %q", v.name, got)
		}
		want := fmt.Sprintf("inet %s/%d", v.addr, h.Network().Subnet().Bits())
		if got := c.run(t, "ip -4 -o addr show dev eth0"); !strings.Contains(got, want) {
			t.Errorf("%s: eth0 has %q, want %q", v.name, got, want)
		}
		if got := c.run(t, "ip -4 route show default"); !strings.Contains(got, "via "+h.Network().Gateway().String()+" dev eth0") {
			t.Errorf("%s: default route %q", v.name, got)
		}
		if got := c.run(t, "sudo -n cat /etc/hosts"); !strings.Contains(got, v.name) {
			t.Errorf("%s: manage_etc_hosts: /etc/hosts lacks the hostname:\n%s", v.name, got)
		}
	}
	for _, v := range vms {
		pss, rss, _ := v.inst.Memory()
		du, _ := exec.Command("du", "-sm", filepath.Join(v.inst.Dir(), "upper")).Output()
		t.Logf("%s: memory PSS %.1f MiB, RSS %.1f MiB; overlay upper %s MiB", v.name,
			float64(pss)/(1<<20), float64(rss)/(1<<20), strings.Fields(string(du) + " ?")[0])
	}
	// cloud-init generated host keys per instance (the golden tree has none).
	if bytes.Equal(vms[0].conn.hostKey.Marshal(), vms[1].conn.hostKey.Marshal()) {
		t.Error("both instances present the same SSH host key")
	}
	// The instances reach each other on the bridge.
	if got := vms[0].conn.run(t, fmt.Sprintf("timeout 5 bash -c 'echo > /dev/tcp/%s/22' && echo reachable", vms[1].addr)); got != "reachable" {
		t.Errorf("vm-a cannot reach vm-b:22: %q", got)
	}
	if got := vms[1].conn.run(t, fmt.Sprintf("timeout 5 bash -c 'echo > /dev/tcp/%s/22' && echo reachable", vms[0].addr)); got != "reachable" {
		t.Errorf("vm-b cannot reach vm-a:22: %q", got)
	}

	// A reboot inside makes nspawn exit 133; the stand-in boots again, like a VM.
	b := vms[1]
	hostKey := b.conn.hostKey.Marshal()
	_, _ = b.conn.client.NewSession() // the connection dies with the reboot
	if s, err := b.conn.client.NewSession(); err == nil {
		_ = s.Start("sudo -n systemctl reboot")
	}
	rebootStart := time.Now()
	for b.inst.Boots() < 2 {
		if ctx.Err() != nil || !b.inst.Running() {
			t.Fatalf("vm-b did not boot again (boots %d, running %v, exit %v)", b.inst.Boots(), b.inst.Running(), b.inst.ExitErr())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := b.inst.WaitReady(ctx); err != nil {
		t.Fatalf("after reboot: %v", err)
	}
	t.Logf("vm-b rebooted and ready again after %v", time.Since(rebootStart).Round(100*time.Millisecond))
	c2 := dialSSH(t, ctx, b.addr.String(), "opencsp", key)
	if !bytes.Equal(c2.hostKey.Marshal(), hostKey) {
		t.Error("host key changed across a reboot")
	}

	// Stop, then Destroy, leaves nothing behind.
	for _, v := range vms {
		start := time.Now()
		if err := v.inst.Stop(ctx); err != nil {
			t.Errorf("stop %s: %v", v.name, err)
		}
		t.Logf("%s stopped in %v (exit: %v)", v.name, time.Since(start).Round(10*time.Millisecond), v.inst.ExitErr())
		if err := v.inst.Destroy(); err != nil {
			t.Errorf("destroy %s: %v", v.name, err)
		}
		assertGone(t, v.inst.Netns(), v.inst.HostVeth(), v.inst.Dir())
	}
}

// assertGone checks from the host that no network namespace, link or mount of an instance is left.
func assertGone(t *testing.T, netns, link, dir string) {
	t.Helper()
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == netns {
			t.Errorf("netns %s still exists", netns)
		}
	}
	if out, err := exec.Command("ip", "link", "show", link).CombinedOutput(); err == nil {
		t.Errorf("link %s still exists: %s", link, out)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), dir) {
		t.Errorf("a mount below %s is left", dir)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists", dir)
	}
}

// TestCleanupAfterCrash simulates a harness that died: the nspawn process is SIGKILLed and the
// handles are forgotten; Cleanup(prefix) must still remove everything.
func TestCleanupAfterCrash(t *testing.T) {
	requireStandin(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	prefix := fmt.Sprintf("cr%06x", os.Getpid()&0xffffff)
	h, err := standin.NewHost(ctx, standin.HostConfig{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	key := newTestKey(t)
	a := h.Network().Address(20)
	mac := net.HardwareAddr{0xbc, 0x24, 0x11, 0x5e, 0x01, 0x01}
	inst, err := h.Start(ctx, standin.InstanceSpec{Name: "crashme", Address: a, MAC: mac,
		Seed: proxmoxSeed(t, 120, "crashme", net.IP(a.Addr().AsSlice()), h, mac, key)})
	if err != nil {
		t.Fatal(err)
	}
	var leader int
	for leader == 0 && ctx.Err() == nil {
		leader = inst.LeaderPID()
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // let systemd start services inside
	netns, link, dir, bridge := inst.Netns(), inst.HostVeth(), inst.Dir(), h.Network().Bridge()
	if err := exec.Command("kill", "-9", fmt.Sprint(inst.NspawnPID())).Run(); err != nil {
		t.Fatal(err)
	}
	<-inst.Done()
	// The container's init outlives a SIGKILLed nspawn: that is what Cleanup must catch.
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", leader)); err != nil {
		t.Logf("note: container init %d died with nspawn", leader)
	}
	h, inst = nil, nil // forget the handles

	if err := standin.Cleanup(ctx, prefix); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", leader)); err == nil && !strings.Contains(string(b), "zombie") {
		t.Errorf("container init %d still runs", leader)
	}
	assertGone(t, netns, link, dir)
	if out, err := exec.Command("ip", "link", "show", bridge).CombinedOutput(); err == nil {
		t.Errorf("bridge %s still exists: %s", bridge, out)
	}
	if _, err := os.Stat(filepath.Join(standin.StateRoot(), prefix)); !os.IsNotExist(err) {
		t.Errorf("state dir of %s still exists", prefix)
	}
	if _, err := os.Stat("/run/systemd/nspawn/propagate/" + prefix + "-crashme"); !os.IsNotExist(err) {
		t.Errorf("nspawn's propagate dir of the killed container is left")
	}
}
