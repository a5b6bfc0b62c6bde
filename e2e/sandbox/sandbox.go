// Package sandbox brings up, on this machine, everything an opencsp install
// talks to: the PVE API emulator (e2e/pvesim) as a real HTTPS server, VM
// stand-ins (e2e/standin) that boot when the emulator starts a VM, an
// artifact server (a cloud image + checksums, and the K3s stand-in release
// from e2e/k3sstandin), a git server with an empty ops repo
// (e2e/gitserver), and a ready opencsp.yaml pointing at all of them.
//
// It needs root (network namespaces, overlayfs, systemd-nspawn) and the e2e
// tools (`make tools`). Up records its PID and stand-in prefix in the
// sandbox directory, so Down (another process) and a later Up can tear down
// what a crashed run left.
package sandbox

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/opencsp/installer/e2e/gitserver"
	"github.com/opencsp/installer/e2e/k3sstandin"
	"github.com/opencsp/installer/e2e/pvesim"
	"github.com/opencsp/installer/e2e/standin"
	"github.com/opencsp/installer/internal/remote"
)

// K3sVersion is the K3s release the sandbox serves (the K3s stand-in).
const K3sVersion = "v1.33.5+k3s1"

// DefaultPrefix is the stand-in prefix of `sandbox up` (fixed, so a crashed
// run's namespaces and mounts are found by name).
const DefaultPrefix = "ocsb"

// Files in the sandbox directory.
const (
	ConfigFile   = "opencsp.yaml"
	PVETokenFile = "pve-token"  // the PVE token secret (the config says env:PVE_TOKEN_SECRET)
	GitTokenFile = "git-token"  // the ops repo token (the config says file:./git-token)
	KeyFile      = "id_ed25519" // the SSH key the installer logs in with
	ImageDefFile = "debian-12.yaml"
	ImageFile    = "debian-12-genericcloud-amd64.qcow2"
	stateFile    = "sandbox.json"
)

// TokenEnv is the environment variable the config's tokenSecret names.
const TokenEnv = "PVE_TOKEN_SECRET"

// Options configure Up.
type Options struct {
	// Dir holds the config, keys, tokens, logs and the install's state
	// (.opencsp). Up empties it first.
	Dir string
	// Nodes: 1 (standalone "pve") or more (a cluster pve1..pveN).
	Nodes int
	// Prefix of the stand-in resources; empty: a random one.
	Prefix string
	// Log receives progress lines (default: discarded).
	Log io.Writer
	// ToolsDir overrides where e2e/tools put their binaries.
	ToolsDir string
	// Appliance writes a config with provision method appliance and makes
	// the sandbox act as the appliance ISO (appliance.go).
	Appliance bool
}

// Sandbox is a running sandbox.
type Sandbox struct {
	Dir    string
	Config string // path of opencsp.yaml
	PVE    *pvesim.Server
	Host   *standin.Host
	Git    *gitserver.Server
	K3s    *k3sstandin.Server
	// Artifacts is the base URL of the image server.
	Artifacts string
	// VMAddress is the management VM's address in the config.
	VMAddress netip.Prefix

	log      *log.Logger
	art      *http.Server
	ctx      context.Context
	cancel   context.CancelFunc
	mu       sync.Mutex
	vms      map[int]*vm
	closers  []func() error
	reaperWG sync.WaitGroup // the reaper, the WaitReady watchers and the Flux side (flux.go)
	toolsDir string
	fluxMu   sync.Mutex
	fluxBusy bool
	// appliance mode (appliance.go): the K3s release the ISO carries, the
	// kernel .deb, and what each VM's appliance run wrote (by VMID, s.mu).
	appliance bool
	k3sDir    string
	kernelDeb string
	installed map[int]*installedDisk
}

type vm struct {
	inst  *standin.Instance
	ready bool
	err   error
}

// State is what Up records in <Dir>/sandbox.json for Down.
type State struct {
	PID       int    `json:"pid"`
	Start     uint64 `json:"start"`
	Prefix    string `json:"prefix"`
	PVE       string `json:"pve"`
	Git       string `json:"git"`
	Artifacts string `json:"artifacts"`
	K3sMirror string `json:"k3sMirror"`
}

// Up starts everything and writes the config. Close (or Down from another
// process) tears it down.
func Up(ctx context.Context, opts Options) (_ *Sandbox, err error) {
	if opts.Dir == "" {
		return nil, errors.New("sandbox: no directory")
	}
	if opts.Nodes < 1 {
		opts.Nodes = 1
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	if st, err := ReadState(dir); err == nil && alive(st.PID, st.Start) && st.PID != os.Getpid() {
		return nil, fmt.Errorf("sandbox: already running in %s (pid %d); stop it with `make demo-down`", dir, st.PID)
	}
	// Leftovers of an earlier run in this directory, then of any crashed run.
	if err := Down(ctx, dir); err != nil {
		return nil, fmt.Errorf("sandbox: cleaning the previous run: %w", err)
	}
	if _, err := standin.CleanupStale(ctx); err != nil {
		return nil, fmt.Errorf("sandbox: cleaning stale stand-ins: %w", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	s := &Sandbox{Dir: dir, Config: filepath.Join(dir, ConfigFile), vms: map[int]*vm{}, appliance: opts.Appliance, installed: map[int]*installedDisk{},
		log: log.New(opts.Log, "sandbox: ", log.Ltime), toolsDir: opts.ToolsDir}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			s.Close(context.Background())
		}
	}()
	if opts.Prefix == "" {
		opts.Prefix = randomPrefix()
	}
	// Record the prefix first: a crash from here on is cleaned by Down.
	st := State{PID: os.Getpid(), Start: procStart(os.Getpid()), Prefix: opts.Prefix}
	if err := writeState(dir, st); err != nil {
		return nil, err
	}

	start := time.Now()
	rel, err := k3sstandin.Build(ctx, k3sstandin.BuildOptions{Version: K3sVersion, ToolsDir: opts.ToolsDir})
	if err != nil {
		return nil, fmt.Errorf("sandbox: K3s stand-in: %w", err)
	}
	s.K3s = k3sstandin.Serve(rel)
	s.closers = append(s.closers, func() error { s.K3s.Close(); return nil })
	s.log.Printf("K3s stand-in release %s at %s (%s)", K3sVersion, s.K3s.Mirror(), time.Since(start).Round(100*time.Millisecond))

	if err := s.serveArtifacts(); err != nil {
		return nil, err
	}
	if opts.Appliance {
		if err := s.prepareAppliance(ctx, rel); err != nil {
			return nil, err
		}
	}

	start = time.Now()
	s.Host, err = standin.NewHost(ctx, standin.HostConfig{Prefix: opts.Prefix})
	if err != nil {
		return nil, fmt.Errorf("sandbox: VM stand-in host: %w", err)
	}
	s.closers = append(s.closers, func() error { return s.Host.Close(context.Background()) })
	n := s.Host.Network()
	s.VMAddress = n.Address(10)
	s.log.Printf("stand-in bridge %s, host %s (golden tree ready in %s)", n.Bridge(), n.HostAddress(), time.Since(start).Round(100*time.Millisecond))

	token := randomHex(16)
	gitOpts := gitserver.Options{Dir: filepath.Join(dir, "git"), Token: token, User: "opencsp"}
	if opts.Appliance {
		// The node pushes to the ops repo itself (node bootstrap): listen
		// where the VM stand-ins reach the host, not on loopback.
		gitOpts.Addr = net.JoinHostPort(n.Gateway().String(), "0")
	}
	s.Git, err = gitserver.Start(gitOpts)
	if err != nil {
		return nil, fmt.Errorf("sandbox: git server: %w", err)
	}
	s.closers = append(s.closers, s.Git.Close)
	if _, err := s.Git.NewRepo("ops", "main"); err != nil {
		return nil, err
	}
	s.log.Printf("git server: ops repo %s", s.Git.URL("ops"))

	reqLog, err := os.OpenFile(filepath.Join(dir, "pve-requests.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, reqLog.Close)
	popts := pvesim.Options{
		Nodes:      opts.Nodes,
		TokenID:    "opencsp@pve!installer",
		DNSServers: []string{n.Gateway().String()},
		DNSSearch:  "sandbox.opencsp.test",
		AddressFor: s.addressFor,
		OnStart:    s.onStart,
		OnStop:     s.onStop,
		Log:        reqLog,
		DataDir:    filepath.Join(dir, "pve"),
	}
	if opts.Appliance {
		popts.OnApplianceBoot = s.onApplianceBoot
	}
	s.PVE, err = pvesim.New(popts)
	if err != nil {
		return nil, fmt.Errorf("sandbox: PVE emulator: %w", err)
	}
	s.closers = append(s.closers, s.PVE.Close)
	s.log.Printf("PVE emulator %s (%d node(s), fingerprint %s)", s.PVE.URL(), opts.Nodes, s.PVE.Fingerprint())

	if err := s.writeFiles(token); err != nil {
		return nil, err
	}
	st.PVE, st.Git, st.Artifacts, st.K3sMirror = s.PVE.URL(), s.Git.URL("ops"), s.Artifacts, s.K3s.Mirror()
	if err := writeState(dir, st); err != nil {
		return nil, err
	}
	s.reaperWG.Add(1)
	go s.reap()
	return s, nil
}

// Close stops everything Up started (VM stand-ins, servers) and removes the
// stand-in network. The directory stays (config, logs, state) until the next
// Up or Down.
func (s *Sandbox) Close(ctx context.Context) error {
	s.cancel()
	s.reaperWG.Wait()
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		if err := s.closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	s.closers = nil
	if st, err := ReadState(s.Dir); err == nil && st.PID == os.Getpid() {
		if err := standin.Cleanup(ctx, st.Prefix); err != nil {
			errs = append(errs, err)
		}
		os.Remove(filepath.Join(s.Dir, stateFile))
	}
	return errors.Join(errs...)
}

// Instance returns the stand-in of VM vmid (nil if none).
func (s *Sandbox) Instance(vmid int) *standin.Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.vms[vmid]; v != nil {
		return v.inst
	}
	return nil
}

// Env is the environment an install in the sandbox needs (the PVE token
// secret), in KEY=VALUE form.
func (s *Sandbox) Env() []string { return []string{TokenEnv + "=" + s.PVE.TokenSecret()} }

// serveArtifacts serves the cloud image and its checksums on loopback and
// writes the image definition file the config names.
func (s *Sandbox) serveArtifacts() error {
	image := append(pvesim.FakeQCOW2(2<<30), make([]byte, 4096)...)
	sum := sha256.Sum256(image)
	mux := http.NewServeMux()
	mux.HandleFunc("/images/"+ImageFile, func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, ImageFile, time.Time{}, strings.NewReader(string(image)))
	})
	mux.HandleFunc("/images/SHA256SUMS", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s  %s\n", hex.EncodeToString(sum[:]), ImageFile)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s.art = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go s.art.Serve(ln)
	s.closers = append(s.closers, s.art.Close)
	s.Artifacts = "http://" + ln.Addr().String()
	def := fmt.Sprintf("name: debian-12\nos: debian\nrelease: \"12\"\narch: amd64\nurl: %s/images/%s\nchecksumURL: %s/images/SHA256SUMS\nchecksumAlgorithm: sha256\nformat: qcow2\n",
		s.Artifacts, ImageFile, s.Artifacts)
	return os.WriteFile(filepath.Join(s.Dir, ImageDefFile), []byte(def), 0o644)
}

func (s *Sandbox) writeFiles(gitToken string) error {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	blk, err := ssh.MarshalPrivateKey(priv, "opencsp-sandbox")
	if err != nil {
		return err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return err
	}
	n := s.Host.Network()
	nodes := strings.Join(s.PVE.NodeNames(), ", ")
	cfg := fmt.Sprintf(`# Written by the opencsp sandbox (e2e/sandbox): every endpoint is on this machine.
apiVersion: opencsp.io/v1alpha1
kind: InstallConfig
profile: standalone
cluster:
  name: sandbox
  domain: sandbox.opencsp.test
infrastructure:
  provider: proxmox
  proxmox:
    endpoint: %s
    tokenID: %s
    tokenSecret: env:%s
    tls:
      fingerprint: "%s"
    nodes: [%s]
    storage:
      templates: local-lvm
      disks: local-lvm
      images: local
      iso: local
    network:
      bridge: vmbr0
images:
  - ./%s
managementVM:
  cores: 2
  memoryMiB: 4096
  diskGiB: 20
  network:
    address: %s
    gateway: %s
    dns: [%s]
  ssh:
    user: opencsp
    privateKeyFile: ./%s
k3s:
  version: %s
  tlsSANs: [k8s.sandbox.opencsp.test]
  artifacts:
    mirror: %s
opsRepo:
  url: %s
  branch: main
  path: clusters/sandbox
  auth:
    username: opencsp
    token: file:./%s
secrets:
  ageKeyFile: ./age.key
`, s.PVE.URL(), s.PVE.TokenID(), TokenEnv, s.PVE.Fingerprint(), nodes, ImageDefFile,
		s.VMAddress, n.Gateway(), n.Gateway(), KeyFile, K3sVersion, s.K3s.Mirror(), s.Git.URL("ops"), GitTokenFile)
	if s.appliance {
		cfg = s.applianceConfig(cfg)
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{KeyFile, pem.EncodeToMemory(blk), 0o600},
		{KeyFile + ".pub", []byte(remote.AuthorizedKey(signer.PublicKey()) + "\n"), 0o644},
		{PVETokenFile, []byte(s.PVE.TokenSecret() + "\n"), 0o600},
		{GitTokenFile, []byte(gitToken + "\n"), 0o600},
		{ConfigFile, []byte(cfg), 0o644},
	} {
		if err := os.WriteFile(filepath.Join(s.Dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// addressFor answers the guest agent: the stand-in's address once it has
// booted (cloud-init done), like qemu-guest-agent in a booting VM.
func (s *Sandbox) addressFor(vmid int, _ string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vms[vmid]
	if v == nil || !v.ready || !v.inst.Running() {
		return "", false
	}
	return v.inst.Address().String(), true
}

// onStart boots a stand-in for the VM with the seed the emulator rendered,
// net0's MAC and ipconfig0's address.
func (s *Sandbox) onStart(ev pvesim.VMEvent) error {
	if ev.ISO != "" {
		return nil // the installer ISO runs no OS: onApplianceBoot acts as the appliance
	}
	if len(ev.MACs) == 0 {
		return fmt.Errorf("sandbox: VM %d has no net0", ev.VMID)
	}
	mac, err := net.ParseMAC(ev.MACs[0])
	if err != nil {
		return err
	}
	name := fmt.Sprintf("vm%d", ev.VMID)
	// A disk the appliance wrote boots with its seed and data (appliance.go);
	// any other VM is a cloud-image clone with pvesim's cloud-init drive.
	spec, fromAppliance, err := s.applianceSpec(ev)
	if err != nil {
		return fmt.Errorf("sandbox: VM %d: %w", ev.VMID, err)
	}
	if !fromAppliance {
		addr, gw, err := ipconfig(ev.Config["ipconfig0"])
		if err != nil {
			return fmt.Errorf("sandbox: VM %d: %v", ev.VMID, err)
		}
		spec = standin.InstanceSpec{Address: addr, Gateway: gw,
			Seed: standin.Seed{UserData: []byte(ev.UserData), MetaData: []byte(ev.MetaData), NetworkConfig: []byte(ev.NetworkConfig)}}
	}
	spec.Name, spec.MAC = name, mac
	s.mu.Lock()
	if old := s.vms[ev.VMID]; old != nil {
		if old.inst.Running() {
			s.mu.Unlock()
			return nil
		}
		// A stopped VM starts again: the stand-in has no persistent disk
		// across stop/start, so it boots fresh from the (same) seed.
		delete(s.vms, ev.VMID)
		s.mu.Unlock()
		old.inst.Destroy()
		s.mu.Lock()
	}
	s.mu.Unlock()
	inst, err := s.Host.Start(s.ctx, spec)
	if err != nil {
		return fmt.Errorf("sandbox: VM %d stand-in: %w", ev.VMID, err)
	}
	v := &vm{inst: inst}
	s.mu.Lock()
	s.vms[ev.VMID] = v
	s.mu.Unlock()
	s.log.Printf("VM %d (%s) started on %s: stand-in %s at %s, console %s", ev.VMID, ev.Name, ev.Node, inst.Machine(), spec.Address, inst.Console())
	if fromAppliance {
		// The node's first boot (cloud-init runcmd: node bootstrap) waits
		// for Flux, so the Flux side cannot wait for cloud-init to finish,
		// nor the guest agent's address.
		s.reaperWG.Add(2)
		go func() {
			defer s.reaperWG.Done()
			s.runFlux(s.ctx, ev.VMID, inst)
		}()
		go func() {
			defer s.reaperWG.Done()
			s.addressUp(v)
		}()
	}
	s.reaperWG.Add(1)
	go func() {
		defer s.reaperWG.Done()
		begin := time.Now()
		err := inst.WaitReady(s.ctx)
		s.mu.Lock()
		v.ready, v.err = err == nil, err
		s.mu.Unlock()
		if err != nil {
			if s.ctx.Err() == nil {
				s.log.Printf("VM %d stand-in not ready: %v (console %s)", ev.VMID, err, inst.Console())
			}
			return
		}
		s.log.Printf("VM %d booted (cloud-init done) in %s", ev.VMID, time.Since(begin).Round(100*time.Millisecond))
		if !fromAppliance {
			s.runFlux(s.ctx, ev.VMID, inst)
		}
	}()
	return nil
}

func (s *Sandbox) onStop(ev pvesim.VMEvent) {
	if inst := s.Instance(ev.VMID); inst != nil {
		if err := inst.Stop(s.ctx); err != nil {
			s.log.Printf("VM %d stop: %v", ev.VMID, err)
		}
		s.log.Printf("VM %d stopped", ev.VMID)
	}
}

// reap destroys the stand-ins of VMs the emulator no longer has.
func (s *Sandbox) reap() {
	defer s.reaperWG.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		exists := map[int]bool{}
		for _, id := range s.PVE.VMIDs() {
			exists[id] = true
		}
		s.mu.Lock()
		var gone []*vm
		for id, v := range s.vms {
			if !exists[id] {
				gone = append(gone, v)
				delete(s.vms, id)
				s.log.Printf("VM %d destroyed: removing its stand-in", id)
			}
		}
		s.mu.Unlock()
		for _, v := range gone {
			v.inst.Stop(s.ctx)
			v.inst.Destroy()
		}
	}
}

// ipconfig parses ipconfig0 ("ip=10.213.0.10/24,gw=10.213.0.1").
func ipconfig(v string) (netip.Prefix, netip.Addr, error) {
	var addr netip.Prefix
	var gw netip.Addr
	var err error
	for _, kv := range strings.Split(v, ",") {
		k, val, _ := strings.Cut(kv, "=")
		switch k {
		case "ip":
			if val == "dhcp" {
				return addr, gw, errors.New("ipconfig0 ip=dhcp: the stand-in bridge has no DHCP server; use a static address")
			}
			if addr, err = netip.ParsePrefix(val); err != nil {
				return addr, gw, fmt.Errorf("ipconfig0 %q: %v", v, err)
			}
		case "gw":
			if gw, err = netip.ParseAddr(val); err != nil {
				return addr, gw, fmt.Errorf("ipconfig0 %q: %v", v, err)
			}
		}
	}
	if !addr.IsValid() {
		return addr, gw, fmt.Errorf("ipconfig0 %q has no static ip=", v)
	}
	return addr, gw, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func randomPrefix() string {
	const letters = "abcdefghijklmnopqrstuvwxyz"
	b := make([]byte, 6)
	rand.Read(b)
	out := []byte("sb")
	for _, c := range b[:4] {
		out = append(out, letters[int(c)%len(letters)])
	}
	return string(out)
}
