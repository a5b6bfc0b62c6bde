// Package k3s is the install stage that puts K3s on the management VM: over
// SSH (host key pinned and recorded), with the release files fetched on this
// machine into the artifact cache, uploaded over SFTP and installed by K3s's
// install script in skip-download mode. It leaves a kubeconfig for the VM's
// address in the state dir.
//
// The node work goes through remote.Executor, so the same code installs K3s
// on the machine it runs on (Options.Local): the management node installed
// from the appliance ISO bootstrapping itself (`opencsp node bootstrap`). With
// managementVM.provision.method appliance, over SSH, the stage adopts what
// that first boot did (adopt.go) instead of installing.
package k3s

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/opencsp/installer/internal/artifacts"
	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/events"
	"github.com/opencsp/installer/internal/remote"
	"github.com/opencsp/installer/stages"
	"github.com/opencsp/installer/stages/provision"
)

// Name is the stage name.
const Name = "k3s"

// Where things go on the VM (K3s's own conventions).
const (
	remoteBinary     = "/usr/local/bin/k3s"
	remoteImagesDir  = "/var/lib/rancher/k3s/agent/images"
	remoteConfig     = "/etc/rancher/k3s/config.yaml"
	remoteKubeconfig = "/etc/rancher/k3s/k3s.yaml"
	remoteScript     = "/var/lib/rancher/k3s/opencsp/install.sh"
	apiPort          = "6443"
)

// KubeconfigFile is the kubeconfig's name in the state dir.
const KubeconfigFile = "kubeconfig"

// Options tune waiting; the zero value is right for real installs.
type Options struct {
	// ConnectTimeout bounds connecting to the VM, retries included
	// (default remote.DefaultConnectTimeout).
	ConnectTimeout time.Duration
	// AuthRetryWindow: how long a refused key is retried while cloud-init
	// may still be installing it (default remote.DefaultAuthRetryWindow).
	AuthRetryWindow time.Duration
	// ReadyTimeout bounds the wait for the API server and the Ready node
	// after an install or restart (default 5m).
	ReadyTimeout time.Duration
	// Local installs K3s on this machine through this executor (usually
	// remote.NewLocal) instead of on the provisioned VM over SSH: the
	// management node bootstrapping itself on first boot (`opencsp node
	// bootstrap`). The node name and tls-san come from the config, the
	// kubeconfig points at https://127.0.0.1:6443.
	Local remote.Executor
}

// Stage installs K3s.
type Stage struct {
	opts Options
	poll time.Duration // progress interval while waiting for the first boot
}

// New returns the stage.
func New(opts Options) *Stage {
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 5 * time.Minute
	}
	return &Stage{opts: opts, poll: firstBootPoll}
}

// Outputs are recorded in the state after every successful step that
// matters for the next run.
type Outputs struct {
	// Address is the VM address the host key below belongs to.
	Address string `json:"address"`
	// HostKey is the VM's SSH host key (authorized_keys form), pinned on
	// first contact; later runs refuse any other key at this address.
	HostKey            string `json:"host_key,omitempty"`
	HostKeyFingerprint string `json:"host_key_fingerprint,omitempty"`
	Version            string `json:"version,omitempty"`
	NodeName           string `json:"node_name,omitempty"`
	// ConfigDigest is the sha256 of /etc/rancher/k3s/config.yaml as written.
	ConfigDigest string `json:"config_digest,omitempty"`
	// Kubeconfig is the admin kubeconfig for Server, mode 0600.
	Kubeconfig string `json:"kubeconfig,omitempty"`
	Server     string `json:"server,omitempty"`
}

// Name implements stages.Stage.
func (*Stage) Name() string { return Name }

type inputs struct {
	K3s                config.K3s `json:"k3s"`
	User               string     `json:"user"`
	KeyFile            string     `json:"key_file"`
	HostKeyFingerprint string     `json:"host_key_fingerprint"`
	Port               int        `json:"port"`
	Local              bool       `json:"local,omitempty"`
	// Method is set for provision method appliance only (adopt, not
	// install), so cloud-image fingerprints stay as they were.
	Method string `json:"method,omitempty"`
}

// Inputs implements stages.Stage: the K3s settings and how to log in.
func (s *Stage) Inputs(cfg *config.Config) any {
	ssh := cfg.ManagementVM.SSH
	in := inputs{K3s: cfg.K3s, User: ssh.User, KeyFile: ssh.PrivateKeyFile, HostKeyFingerprint: ssh.HostKeyFingerprint,
		Port: ssh.Port, Local: s.opts.Local != nil}
	if s.adopts(cfg) {
		in.Method = cfg.ManagementVM.Provision.Method
	}
	return in
}

// localServer is where this machine's own API server answers in local mode.
const localServer = "127.0.0.1"

// target is what this run works on, derived from config and provision's outputs.
type target struct {
	addr   string // VM address, no prefix length; in local mode the configured static address or ""
	where  string // for messages: the address, or "this machine"
	server string // API server URL the kubeconfig gets
	node   string
	config []byte
	digest string
}

func (s *Stage) target(env *stages.Env) (target, error) {
	if s.opts.Local != nil {
		return s.localTarget(env)
	}
	var prov provision.Outputs
	if err := env.StageOutputs(provision.Name, &prov); err != nil {
		return target{}, fmt.Errorf("management VM address: %w", err)
	}
	addr, err := hostAddress(prov.Address)
	if err != nil {
		return target{}, fmt.Errorf("management VM address from stage %s: %w", provision.Name, err)
	}
	node := strings.ToLower(prov.Name)
	if node == "" || s.adopts(env.Config) {
		// The appliance node named itself from the config (localTarget).
		node = strings.ToLower(env.Config.ManagementVM.Name)
	}
	if node == "" {
		node = env.Config.Tag() + "-mgmt"
	}
	return newTarget(env.Config, addr, addr, "https://"+net.JoinHostPort(addr, apiPort), node)
}

// localTarget is this machine: named like the VM the install would have
// provisioned, with the configured static address (if any) as the first
// tls-san, so config.yaml is the same as a remote install would write.
func (s *Stage) localTarget(env *stages.Env) (target, error) {
	cfg := env.Config
	addr := ""
	if a := cfg.ManagementVM.Network.Address; a != "" && !cfg.ManagementVM.Network.DHCP {
		var err error
		if addr, err = hostAddress(a); err != nil {
			return target{}, fmt.Errorf("managementVM.network.address: %w", err)
		}
	}
	node := strings.ToLower(cfg.ManagementVM.Name)
	if node == "" {
		node = cfg.Tag() + "-mgmt"
	}
	return newTarget(cfg, addr, "this machine", "https://"+net.JoinHostPort(localServer, apiPort), node)
}

func newTarget(cfg *config.Config, addr, where, server, node string) (target, error) {
	k := cfg.K3s
	var sans []string
	if addr != "" {
		sans = append(sans, addr)
	}
	nc := nodeConfig{NodeName: node, TLSSANs: append(sans, k.TLSSANs...), Disable: k.Disable, ExtraArgs: k.ExtraArgs}
	body, err := nc.render()
	if err != nil {
		return target{}, err
	}
	return target{addr: addr, where: where, server: server, node: node, config: body, digest: digest(body)}, nil
}

// hostAddress accepts "10.0.0.5" or "10.0.0.5/24" (and DNS names).
func hostAddress(a string) (string, error) {
	a = strings.TrimSpace(a)
	if a == "" {
		return "", errors.New("empty")
	}
	if p, err := netip.ParsePrefix(a); err == nil {
		return p.Addr().String(), nil
	}
	return a, nil
}

// Plan implements stages.Stage. It does not contact the VM.
func (s *Stage) Plan(ctx context.Context, env *stages.Env) ([]stages.Change, error) {
	want := env.Config.K3s.Version
	t, err := s.target(env)
	if errors.Is(err, stages.ErrNoOutputs) {
		return []stages.Change{{Action: "install", Target: "k3s " + want, Detail: "on the management VM, once provisioned"}}, nil
	}
	if err != nil {
		return nil, err
	}
	var out Outputs
	if err := env.Outputs(&out); err != nil {
		return nil, err
	}
	target := "k3s on " + t.where
	if s.adopts(env.Config) {
		if out.Kubeconfig != "" && out.Address == t.addr {
			return nil, nil
		}
		return []stages.Change{{Action: "adopt", Target: target, Detail: "installed by the appliance's first boot; fetch its kubeconfig"}}, nil
	}
	switch {
	case out.Version == "" || out.Address != t.addr:
		return []stages.Change{{Action: "install", Target: target, Detail: want + ", node " + t.node}}, nil
	case out.Version != want:
		return []stages.Change{{Action: "upgrade", Target: target, Detail: out.Version + " -> " + want}}, nil
	case out.ConfigDigest != t.digest:
		return []stages.Change{{Action: "reconfigure", Target: target, Detail: "write " + remoteConfig + " and restart k3s"}}, nil
	}
	return nil, nil
}

// Run implements stages.Stage.
func (s *Stage) Run(ctx context.Context, env *stages.Env) error {
	t, err := s.target(env)
	if err != nil {
		return err
	}
	var out Outputs
	if err := env.Outputs(&out); err != nil {
		return err
	}
	c, err := s.connect(ctx, env, t, &out)
	if err != nil {
		return err
	}
	defer c.Close()
	if s.adopts(env.Config) {
		return s.adopt(ctx, env, c, t, &out)
	}

	want := env.Config.K3s.Version
	st, err := probe(ctx, c)
	if err != nil {
		return err
	}
	configSame := "sha256:"+st.configSHA == t.digest
	switch {
	case st.version == want && configSame && st.active:
		env.Info(fmt.Sprintf("k3s %s is installed on %s with this configuration: nothing to change", want, t.where))
	case st.version == want && st.unit:
		// Same binary: only the configuration (or a stopped service) needs fixing.
		if !configSame {
			if err := s.writeConfig(ctx, env, c, t); err != nil {
				return err
			}
		}
		done := env.Step("restart", "restart k3s to apply "+remoteConfig)
		err := c.Run(ctx, "systemctl enable k3s >/dev/null 2>&1; systemctl restart k3s")
		done(err)
		if err != nil {
			return fmt.Errorf("restart k3s on %s: %w%s", t.where, err, journal(ctx, c))
		}
	default:
		if err := s.install(ctx, env, c, t, st, configSame); err != nil {
			return err
		}
	}

	kc, err := s.waitReady(ctx, env, c, t)
	if err != nil {
		return err
	}
	if err := saveKubeconfig(env, kc); err != nil {
		return err
	}
	out.Version, out.NodeName, out.ConfigDigest = want, t.node, t.digest
	out.Kubeconfig, out.Server = kubeconfigPath(env), t.server
	if s.opts.Local != nil {
		out.Address = t.addr
	}
	return env.SetOutputs(out)
}

func kubeconfigPath(env *stages.Env) string { return filepath.Join(env.StateDir, KubeconfigFile) }

// saveKubeconfig writes kc (0600) unless it is there already.
func saveKubeconfig(env *stages.Env, kc []byte) error {
	p := kubeconfigPath(env)
	if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, kc) {
		return nil
	}
	if err := writePrivate(p, kc); err != nil {
		return fmt.Errorf("save kubeconfig: %w", err)
	}
	return nil
}

// connect logs in with the host key pinned: the key recorded for this
// address, else the configured fingerprint, else the first key seen, which
// is recorded in the outputs (saved at once) before anything else happens.
func (s *Stage) connect(ctx context.Context, env *stages.Env, t target, out *Outputs) (remote.Executor, error) {
	if s.opts.Local != nil {
		return s.opts.Local, nil
	}
	addr := t.addr
	sshCfg := env.Config.ManagementVM.SSH
	keyFile := sshCfg.PrivateKeyFile
	if keyFile != "" {
		keyFile = env.Config.ResolvePath(keyFile)
	}
	policy := remote.HostKeyPolicy{Fingerprint: sshCfg.HostKeyFingerprint}
	if out.HostKey != "" && out.Address == addr {
		policy.Known = out.HostKey
	}
	policy.OnFirstContact = func(key ssh.PublicKey) error {
		out.Address, out.HostKey, out.HostKeyFingerprint = addr, remote.AuthorizedKey(key), ssh.FingerprintSHA256(key)
		env.Info(fmt.Sprintf("pinned the SSH host key of %s: %s", addr, out.HostKeyFingerprint))
		return env.SetOutputs(out)
	}
	done := env.Step("connect", "ssh "+sshCfg.User+"@"+addr)
	c, err := remote.Dial(ctx, remote.Config{
		Host: addr, Port: sshCfg.Port, User: sshCfg.User, KeyFile: keyFile, Sudo: true,
		HostKey: policy, ConnectTimeout: s.opts.ConnectTimeout, AuthRetryWindow: s.opts.AuthRetryWindow,
		Logger: env.Log, Redactor: env.Secrets,
	})
	done(err)
	if err != nil {
		return nil, fmt.Errorf("management VM %s: %w", addr, err)
	}
	return c, nil
}

// nodeState is what is on the VM now.
type nodeState struct {
	version   string // from `k3s --version`; empty if not installed
	configSHA string
	unit      bool
	active    bool
}

func probe(ctx context.Context, c remote.Executor) (nodeState, error) {
	const script = `echo "version=$(` + remoteBinary + ` --version 2>/dev/null | head -n1)"
echo "config=$(sha256sum ` + remoteConfig + ` 2>/dev/null | cut -d' ' -f1)"
if [ -f /etc/systemd/system/k3s.service ]; then echo unit=yes; fi
echo "active=$(systemctl is-active k3s 2>/dev/null)"`
	b, err := c.Output(ctx, script)
	if err != nil {
		return nodeState{}, fmt.Errorf("inspect k3s on the node: %w", err)
	}
	var st nodeState
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		switch k {
		case "version":
			// "k3s version v1.33.5+k3s1 (abcdef12)"
			if f := strings.Fields(v); len(f) >= 3 && f[0] == "k3s" && f[1] == "version" {
				st.version = f[2]
			}
		case "config":
			st.configSHA = v
		case "unit":
			st.unit = v == "yes"
		case "active":
			st.active = v == "active"
		}
	}
	return st, nil
}

// install fetches the release (verified against its checksums before
// anything reaches the VM), uploads what differs, writes the config and runs
// the install script in skip-download mode, which (re)starts k3s.
func (s *Stage) install(ctx context.Context, env *stages.Env, c remote.Executor, t target, st nodeState, configSame bool) error {
	k := env.Config.K3s
	mirror := artifacts.Mirror{Release: k.Artifacts.Mirror}
	if k.Artifacts.AirgapDir != "" {
		mirror.Release = env.Config.ResolvePath(k.Artifacts.AirgapDir)
	}
	rel, err := artifacts.Resolve(k.Version, mirror)
	if err != nil {
		return err
	}
	cache := &artifacts.Cache{Dir: filepath.Join(env.StateDir, "cache"), Events: env.Events, Stage: Name, Logger: env.Log}
	done := env.Step("fetch", "fetch k3s "+k.Version+" release files")
	files, err := cache.Fetch(ctx, rel)
	done(err)
	if err != nil {
		return fmt.Errorf("fetch k3s %s: %w", k.Version, err)
	}
	uploads := []struct {
		f    artifacts.File
		dst  string
		mode fs.FileMode
	}{
		{files.Binary, remoteBinary, 0o755},
		{files.Images, path.Join(remoteImagesDir, path.Base(rel.Images.Name)), 0o644},
		{files.Script, remoteScript, 0o755},
	}
	for _, u := range uploads {
		if sum, err := c.SHA256(ctx, u.dst); err == nil && sum == u.f.SHA256 {
			env.Log.Debug("remote file up to date, not uploading", "path", u.dst)
			continue
		} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		done := env.Step("upload", fmt.Sprintf("upload %s (%d bytes) to %s:%s", path.Base(u.f.URL), u.f.Size, t.where, u.dst))
		err := c.UploadFile(ctx, u.f.Path, u.dst, u.mode, remote.ProgressEvents(env.Events, events.Event{Step: "upload"}))
		done(err)
		if err != nil {
			return fmt.Errorf("upload to %s: %w", t.where, err)
		}
	}
	if !configSame {
		if err := s.writeConfig(ctx, env, c, t); err != nil {
			return err
		}
	}
	done = env.Step("install", "run the k3s install script (skip-download mode)")
	err = c.Run(ctx, "INSTALL_K3S_SKIP_DOWNLOAD=true INSTALL_K3S_EXEC=server sh "+remoteScript)
	done(err)
	if err != nil {
		return fmt.Errorf("install k3s on %s: %w%s", t.where, err, journal(ctx, c))
	}
	return nil
}

func (s *Stage) writeConfig(ctx context.Context, env *stages.Env, c remote.Executor, t target) error {
	done := env.Step("config", "write "+remoteConfig+" ("+t.digest[:19]+")")
	err := c.WriteFile(ctx, remoteConfig, t.config, 0o600)
	done(err)
	if err != nil {
		return fmt.Errorf("write k3s config on %s: %w", t.where, err)
	}
	return nil
}

// waitReady waits for k3s.yaml, the API's /readyz (reached at the VM's
// address, as everything after this stage will; at 127.0.0.1 in local mode)
// and the node's Ready condition. It returns the kubeconfig pointing there.
func (s *Stage) waitReady(ctx context.Context, env *stages.Env, c remote.Executor, t target) ([]byte, error) {
	server := t.server
	done := env.Step("ready", "wait for the API at "+server+" and node "+t.node+" Ready")
	ctx2, cancel := context.WithTimeout(ctx, s.opts.ReadyTimeout)
	defer cancel()
	var last error
	for {
		kc, err := s.checkReady(ctx2, c, t, server)
		if err == nil {
			done(nil)
			return kc, nil
		}
		last = err
		select {
		case <-ctx2.Done():
			if ctx.Err() != nil {
				done(ctx.Err())
				return nil, ctx.Err()
			}
			err := fmt.Errorf("k3s on %s not ready after %s: %w%s", t.where, s.opts.ReadyTimeout, last, journal(ctx, c))
			done(err)
			return nil, err
		case <-time.After(time.Second):
		}
	}
}

func (s *Stage) checkReady(ctx context.Context, c remote.Executor, t target, server string) ([]byte, error) {
	raw, err := c.ReadFile(ctx, remoteKubeconfig)
	if err != nil {
		return nil, err
	}
	kc, err := parseKubeconfig(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", remoteKubeconfig, err)
	}
	out, err := kc.withServer(server)
	if err != nil {
		return nil, err
	}
	hc, err := kc.client()
	if err != nil {
		return nil, err
	}
	defer hc.CloseIdleConnections()
	if err := readyz(ctx, hc, server); err != nil {
		return nil, err
	}
	if err := nodeReady(ctx, hc, server, t.node); err != nil {
		return nil, err
	}
	return out, nil
}

// journal returns the end of k3s's journal for error messages.
func journal(ctx context.Context, c remote.Executor) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	b, err := c.Output(ctx, "journalctl -u k3s -n 15 --no-pager 2>&1")
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return ""
	}
	return "\nlast lines of `journalctl -u k3s` on the node:\n" + strings.TrimSpace(string(b))
}

// Verify implements stages.Stage: the kubeconfig is there and the API
// answers /readyz through it.
func (s *Stage) Verify(ctx context.Context, env *stages.Env) error {
	var out Outputs
	if err := env.Outputs(&out); err != nil {
		return err
	}
	if out.Kubeconfig == "" {
		return errors.New("no kubeconfig recorded")
	}
	data, err := os.ReadFile(out.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	kc, err := parseKubeconfig(data)
	if err != nil {
		return err
	}
	hc, err := kc.client()
	if err != nil {
		return err
	}
	defer hc.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := readyz(ctx, hc, kc.server); err != nil {
		return fmt.Errorf("k3s API %s: %w", kc.server, err)
	}
	return nil
}
