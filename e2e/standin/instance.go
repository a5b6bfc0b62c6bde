package standin

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencsp/installer/e2e/standin/seed"
	"golang.org/x/sys/unix"
)

// Seed is the NoCloud seed of an instance (what the PVE emulator renders for the VM), mounted
// read-only at /var/lib/cloud/seed/nocloud.
type Seed = seed.Files

// HostConfig configures NewHost.
type HostConfig struct {
	// Prefix names every resource of this harness (see ValidPrefix); empty picks a random one.
	// Leftovers of a crashed run with the same prefix are cleaned up first.
	Prefix string
	// CacheDir holds the golden tree (default DefaultCacheDir()).
	CacheDir string
	// Subnet for the bridge; zero picks a free /24 of DefaultSupernet.
	Subnet netip.Prefix
}

// Host is a harness: the golden tree, one bridge, and the instances started on it.
type Host struct {
	store  *stateStore
	prefix string
	golden string
	net    *Network

	mu        sync.Mutex
	instances map[string]*Instance
}

// NewHost ensures the golden tree, then creates the harness's state directory and bridge.
func NewHost(ctx context.Context, cfg HostConfig) (*Host, error) {
	golden, err := EnsureGoldenTree(ctx, cfg.CacheDir)
	if err != nil {
		return nil, err
	}
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = randomPrefix()
	}
	if stale, _ := staleOwner(prefix); stale {
		if err := Cleanup(ctx, prefix); err != nil {
			return nil, fmt.Errorf("cleaning leftovers of prefix %q: %w", prefix, err)
		}
	}
	store, err := openStore(prefix)
	if err != nil {
		return nil, err
	}
	n, err := newNetwork(ctx, store, cfg.Subnet)
	if err != nil {
		_ = Cleanup(context.Background(), prefix)
		return nil, err
	}
	return &Host{store: store, prefix: prefix, golden: golden, net: n, instances: map[string]*Instance{}}, nil
}

func randomPrefix() string {
	b := make([]byte, 3)
	f, err := os.Open("/dev/urandom")
	if err == nil {
		_, _ = f.Read(b)
		f.Close()
	}
	return fmt.Sprintf("st%06x", int(b[0])<<16|int(b[1])<<8|int(b[2]))
}

// staleOwner reports whether prefix has a state file whose owner process is gone.
func staleOwner(prefix string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(StateRoot(), prefix, "state.json"))
	if err != nil {
		return false, err
	}
	var st hostState
	if err := json.Unmarshal(b, &st); err != nil {
		return true, nil
	}
	return !procAlive(st.OwnerPID, st.OwnerStart), nil
}

// Prefix is the harness prefix.
func (h *Host) Prefix() string { return h.prefix }

// Network is the harness's bridge.
func (h *Host) Network() *Network { return h.net }

// GoldenTree is the root of the golden tree the instances are overlaid on.
func (h *Host) GoldenTree() string { return h.golden }

// Instance returns a started instance by name.
func (h *Host) Instance(name string) *Instance {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.instances[name]
}

// Close destroys every instance, the bridge and the state directory.
func (h *Host) Close(ctx context.Context) error {
	h.mu.Lock()
	insts := make([]*Instance, 0, len(h.instances))
	for _, in := range h.instances {
		insts = append(insts, in)
	}
	h.mu.Unlock()
	var errs []error
	var wg sync.WaitGroup
	var emu sync.Mutex
	for _, in := range insts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := in.Destroy(); err != nil {
				emu.Lock()
				errs = append(errs, err)
				emu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := h.net.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	// Sweep whatever is left (also removes the state directory).
	if err := Cleanup(ctx, h.prefix); err != nil {
		errs = append(errs, err)
	}
	h.store.forget()
	return errors.Join(errs...)
}

// InstanceSpec describes one stand-in VM.
type InstanceSpec struct {
	// Name of the VM, e.g. "vm101" or "mgmt-1": lower-case letters, digits and '-'.
	Name string
	// Address is the address the seed configures (e.g. 10.213.4.10/24): where WaitReady looks for
	// SSH, and what the PVE emulator reports through the guest agent.
	Address netip.Prefix
	// Gateway is the gateway the seed configures (informational).
	Gateway netip.Addr
	// MAC of the NIC (PVE's netN MAC, which the v1 seed matches on); empty derives a stable
	// BC:24:11 (Proxmox OUI) address from the prefix and name.
	MAC net.HardwareAddr
	// IfName is the NIC's name inside the instance (default "eth0", PVE's v1 name for net0).
	IfName string
	// Seed is the NoCloud seed.
	Seed Seed
	// Prepare, if set, runs on the root tree after the overlay is mounted and before the
	// instance boots: files the VM's disk already holds when it starts (e2e/sandbox's
	// appliance data partition), with no race against cloud-init.
	Prepare func(root string) error
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$`)

// Instance is a running (or stopped) stand-in VM.
type Instance struct {
	host    *Host
	spec    InstanceSpec
	machine string
	netns   string
	veth    string
	dir     string
	merged  string
	upper   string
	seedDir string
	console string

	mu        sync.Mutex
	stopping  bool
	pid       int           // current nspawn process
	done      chan struct{} // closed when the instance stopped for good
	waitc     chan error    // nspawn's exit
	started   bool          // supervise runs
	boots     int           // nspawn starts (1 + reboots)
	exitErr   error
	destroyed bool
}

// Start creates the instance: an overlay over the golden tree, a network namespace with a veth
// on the bridge, the seed directory, and systemd-nspawn booting the tree in that namespace. It
// returns once nspawn runs; use WaitReady to wait for SSH and cloud-init.
func (h *Host) Start(ctx context.Context, spec InstanceSpec) (_ *Instance, err error) {
	if !nameRE.MatchString(spec.Name) {
		return nil, fmt.Errorf("instance name %q: want lower-case letters, digits and '-' (max 40)", spec.Name)
	}
	if !spec.Address.IsValid() {
		return nil, fmt.Errorf("instance %s: no address", spec.Name)
	}
	if spec.IfName == "" {
		spec.IfName = "eth0"
	}
	if len(spec.MAC) == 0 {
		sum := sha256.Sum256([]byte(h.prefix + "/" + spec.Name))
		spec.MAC = net.HardwareAddr{0xbc, 0x24, 0x11, sum[0], sum[1], sum[2]}
	}
	h.mu.Lock()
	if _, dup := h.instances[spec.Name]; dup {
		h.mu.Unlock()
		return nil, fmt.Errorf("instance %s exists", spec.Name)
	}
	var idx int
	_ = h.store.update(func(st *hostState) { idx = st.NextIndex; st.NextIndex++ })
	in := &Instance{
		host: h, spec: spec,
		machine: h.prefix + "-" + spec.Name,
		netns:   h.prefix + "-" + spec.Name,
		veth:    h.prefix + "-v" + strconv.Itoa(idx),
		dir:     filepath.Join(h.store.dir, spec.Name),
		done:    make(chan struct{}),
		waitc:   make(chan error, 1),
	}
	if len(in.veth) > 15 {
		h.mu.Unlock()
		return nil, fmt.Errorf("interface name %s too long", in.veth)
	}
	h.instances[spec.Name] = in
	h.mu.Unlock()
	in.merged = filepath.Join(in.dir, "merged")
	in.upper = filepath.Join(in.dir, "upper")
	in.seedDir = filepath.Join(in.dir, "seed")
	in.console = filepath.Join(in.dir, "console.log")
	// Record before creating anything, so that Cleanup finds it after a crash.
	if err := h.store.update(func(st *hostState) {
		st.Instances[spec.Name] = &instanceState{Name: spec.Name, Machine: in.machine, Netns: in.netns, HostVeth: in.veth, Dir: in.dir}
	}); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = in.Destroy()
		}
	}()
	for _, d := range []string{in.upper, filepath.Join(in.dir, "work"), in.merged, in.seedDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	for name, b := range map[string][]byte{
		"user-data": spec.Seed.UserData, "meta-data": spec.Seed.MetaData,
		"network-config": spec.Seed.NetworkConfig, "vendor-data": spec.Seed.VendorData,
	} {
		if b == nil && name == "network-config" {
			continue // no network-config: cloud-init falls back to DHCP, as on a VM
		}
		if err := os.WriteFile(filepath.Join(in.seedDir, name), b, 0o644); err != nil {
			return nil, err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", h.golden, in.upper, filepath.Join(in.dir, "work"))
	if err := unix.Mount("overlay", in.merged, "overlay", 0, opts); err != nil {
		return nil, fmt.Errorf("mount overlay on %s: %w", in.merged, err)
	}
	if spec.Prepare != nil {
		if err := spec.Prepare(in.merged); err != nil {
			return nil, fmt.Errorf("instance %s: prepare the root tree: %w", spec.Name, err)
		}
	}
	if err := run(ctx, "ip", "netns", "add", in.netns); err != nil {
		return nil, err
	}
	if err := run(ctx, "ip", "link", "add", in.veth, "type", "veth", "peer", "name", spec.IfName,
		"netns", in.netns, "address", spec.MAC.String()); err != nil {
		return nil, err
	}
	_ = writeSysctl("net/ipv6/conf/"+in.veth+"/disable_ipv6", "1")
	for _, args := range [][]string{
		{"link", "set", in.veth, "master", h.net.bridge},
		{"link", "set", in.veth, "up"},
		{"-n", in.netns, "link", "set", "lo", "up"},
	} {
		if err := run(ctx, "ip", args...); err != nil {
			return nil, err
		}
	}
	if err := in.boot(); err != nil {
		return nil, err
	}
	in.mu.Lock()
	in.started = true
	in.mu.Unlock()
	go in.supervise()
	return in, nil
}

// boot starts systemd-nspawn in the instance's network namespace. nsenter --net (not nspawn's
// --network-namespace-path, with which the container sees the host's interfaces and networkd
// lacks CAP_NET_ADMIN; not "ip netns exec", which remounts /sys and hides the cgroups).
func (in *Instance) boot() error {
	con, err := os.OpenFile(in.console, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer con.Close()
	cmd := exec.Command("nsenter", "--net=/run/netns/"+in.netns, "systemd-nspawn",
		"-D", in.merged, "--boot", "--register=no", "--keep-unit",
		"--capability=CAP_NET_ADMIN",
		"--resolv-conf=off", "--timezone=off", "--link-journal=no",
		"--bind-ro="+in.seedDir+":/var/lib/cloud/seed/nocloud",
		"--machine="+in.machine, "--console=read-only")
	cmd.Stdout, cmd.Stderr = con, con
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=dumb", "SYSTEMD_COLORS=0"}
	// Own process group (a Ctrl-C of the test does not hit the container directly); SIGTERM to
	// nspawn when the harness dies, which shuts the container down cleanly.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	// Pdeathsig fires when the forking thread exits: fork from a locked thread that lives on.
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine's process wait
		if err := cmd.Start(); err != nil {
			errc <- err
			return
		}
		in.mu.Lock()
		in.pid = cmd.Process.Pid
		in.boots++
		in.mu.Unlock()
		_ = in.host.store.update(func(st *hostState) {
			if s := st.Instances[in.spec.Name]; s != nil {
				s.NspawnPID, s.NspawnStart = cmd.Process.Pid, procStart(cmd.Process.Pid)
			}
		})
		errc <- nil
		in.waitc <- cmd.Wait()
	}()
	return <-errc
}

// supervise waits for nspawn; a reboot inside the container makes nspawn exit 133, upon which
// the container is booted again, as a VM reboots.
func (in *Instance) supervise() {
	for {
		err := <-in.waitc
		in.mu.Lock()
		stopping := in.stopping
		in.mu.Unlock()
		var ee *exec.ExitError
		if !stopping && errors.As(err, &ee) && ee.ExitCode() == 133 {
			if berr := in.boot(); berr == nil {
				continue
			} else {
				err = fmt.Errorf("reboot: %w", berr)
			}
		}
		in.mu.Lock()
		in.exitErr = err
		in.pid = 0
		in.mu.Unlock()
		close(in.done)
		return
	}
}

// Name is the instance's name.
func (in *Instance) Name() string { return in.spec.Name }

// Machine is the container's machine name ("<prefix>-<name>").
func (in *Instance) Machine() string { return in.machine }

// Address is the instance's address (from the spec).
func (in *Instance) Address() netip.Prefix { return in.spec.Address }

// MAC is the NIC's MAC address.
func (in *Instance) MAC() net.HardwareAddr { return in.spec.MAC }

// Netns is the name of the instance's network namespace (in /run/netns).
func (in *Instance) Netns() string { return in.netns }

// HostVeth is the host end of the instance's veth, a port of the bridge.
func (in *Instance) HostVeth() string { return in.veth }

// Dir is the instance's state directory (upper, work, merged, seed, console.log).
func (in *Instance) Dir() string { return in.dir }

// RootDir is the merged root file system of the instance, as seen from the host.
func (in *Instance) RootDir() string { return in.merged }

// Console is the path of the console log (all boots appended).
func (in *Instance) Console() string { return in.console }

// Done is closed when the instance has stopped for good (Stop, poweroff inside, or a crash).
func (in *Instance) Done() <-chan struct{} { return in.done }

// Running reports whether the container runs.
func (in *Instance) Running() bool {
	select {
	case <-in.done:
		return false
	default:
		return true
	}
}

// NspawnPID is the current systemd-nspawn process (0 when stopped).
func (in *Instance) NspawnPID() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.pid
}

// LeaderPID is the container's init (systemd, PID 1 inside), 0 when not running.
func (in *Instance) LeaderPID() int {
	if !in.Running() {
		return 0
	}
	return nsLeader(netnsPIDs(in.netns))
}

// Boots counts the container's boots: 1 after Start, +1 for each reboot from inside.
func (in *Instance) Boots() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.boots
}

// ExitErr is nspawn's last exit error once Done is closed (nil for a clean shutdown).
func (in *Instance) ExitErr() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.exitErr
}

// CloudInitResult is /run/cloud-init/result.json of the instance: written when cloud-init's last
// stage has finished (what `cloud-init status --wait` waits for).
type CloudInitResult struct {
	V1 struct {
		Datasource string   `json:"datasource"`
		Errors     []string `json:"errors"`
	} `json:"v1"`
}

// CloudInitResult reads the result of the current boot; ok is false while cloud-init runs.
func (in *Instance) CloudInitResult() (res CloudInitResult, ok bool, err error) {
	l := in.LeaderPID()
	if l == 0 {
		return res, false, nil
	}
	// /run is a tmpfs inside the container: read it through the leader's root.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/run/cloud-init/result.json", l))
	if err != nil {
		if os.IsNotExist(err) {
			return res, false, nil
		}
		return res, false, err
	}
	if err := json.Unmarshal(b, &res); err != nil {
		return res, false, nil // being written
	}
	return res, true, nil
}

// WaitReady waits until the instance accepts TCP connections on port 22 at its address AND
// cloud-init has finished (sshd restarts once while cloud-init runs, so both are needed). It
// fails early when the container stops, and when cloud-init reports errors.
func (in *Instance) WaitReady(ctx context.Context) error {
	addr := net.JoinHostPort(in.spec.Address.Addr().String(), "22")
	sshOK := false
	for {
		select {
		case <-in.done:
			return fmt.Errorf("instance %s stopped while waiting (%v); console:\n%s", in.spec.Name, in.ExitErr(), tailFile(in.console, 30))
		default:
		}
		if !sshOK {
			d := net.Dialer{Timeout: 500 * time.Millisecond}
			if c, err := d.DialContext(ctx, "tcp", addr); err == nil {
				c.Close()
				sshOK = true
			}
		}
		res, done, err := in.CloudInitResult()
		if err != nil {
			return err
		}
		if done {
			if len(res.V1.Errors) > 0 {
				return fmt.Errorf("instance %s: cloud-init finished with errors: %s", in.spec.Name, strings.Join(res.V1.Errors, "; "))
			}
			if sshOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("instance %s not ready (ssh open: %v, cloud-init done: %v): %w; console:\n%s",
				in.spec.Name, sshOK, done, ctx.Err(), tailFile(in.console, 30))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop shuts the container down: SIGTERM to nspawn (a clean shutdown, ~0.2-2 s), then SIGKILL
// for nspawn and every process in the instance's network namespace when ctx ends first (or after
// 30 s without a deadline).
func (in *Instance) Stop(ctx context.Context) error {
	in.mu.Lock()
	in.stopping = true
	pid := in.pid
	in.mu.Unlock()
	if !in.Running() {
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	if pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	select {
	case <-in.done:
		return nil
	case <-ctx.Done():
	}
	if pid := in.NspawnPID(); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	err := killNetns(in.netns, 10*time.Second)
	select {
	case <-in.done:
	case <-time.After(10 * time.Second):
		err = errors.Join(err, fmt.Errorf("instance %s: nspawn did not exit", in.spec.Name))
	}
	return err
}

// Destroy stops the instance and removes everything it had: the overlay mount, the network
// namespace and veth, and its directory.
func (in *Instance) Destroy() error {
	in.mu.Lock()
	if in.destroyed {
		in.mu.Unlock()
		return nil
	}
	in.destroyed = true
	in.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	var errs []error
	in.mu.Lock()
	started := in.started
	in.mu.Unlock()
	if started {
		if err := in.Stop(ctx); err != nil {
			errs = append(errs, err)
		}
	} else {
		close(in.done) // never booted: nothing will close it
	}
	// Processes left in the namespace (e.g. a failed start) go too.
	if err := killNetns(in.netns, 10*time.Second); err != nil {
		errs = append(errs, err)
	}
	if err := unmountAll(in.dir); err != nil {
		errs = append(errs, err)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", in.netns)); err == nil {
		if err := run(ctx, "ip", "netns", "delete", in.netns); err != nil {
			errs = append(errs, err)
		}
	}
	if linkExists(in.veth) {
		if err := run(ctx, "ip", "link", "delete", in.veth); err != nil && linkExists(in.veth) {
			errs = append(errs, err)
		}
	}
	if err := safeRemoveAll(in.dir); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		_ = in.host.store.update(func(st *hostState) { delete(st.Instances, in.spec.Name) })
		in.host.mu.Lock()
		delete(in.host.instances, in.spec.Name)
		in.host.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Exec runs a command inside the running container (all of its namespaces, as root) and returns
// its combined output. Tests use it to look inside; the installer itself only uses SSH.
func (in *Instance) Exec(ctx context.Context, args ...string) ([]byte, error) {
	l := in.LeaderPID()
	if l == 0 {
		return nil, fmt.Errorf("instance %s is not running", in.spec.Name)
	}
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(l), "-m", "-u", "-i", "-n", "-p", "--"}, args...)...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	return cmd.CombinedOutput()
}

// Memory sums the proportional set size (PSS: shared pages split between their users) and the
// resident set size (RSS) in bytes of the instance's processes, nspawn included.
func (in *Instance) Memory() (pss, rss uint64, err error) {
	for _, pid := range netnsPIDs(in.netns) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			for key, dst := range map[string]*uint64{"Pss:": &pss, "Rss:": &rss} {
				if v, ok := strings.CutPrefix(l, key); ok {
					if f := strings.Fields(v); len(f) > 0 {
						kb, _ := strconv.ParseUint(f[0], 10, 64)
						*dst += kb * 1024
					}
				}
			}
		}
	}
	return pss, rss, nil
}
