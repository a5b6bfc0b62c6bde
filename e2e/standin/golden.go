package standin

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Suite is the Debian release of the golden tree.
const Suite = "bookworm"

// goldenRecipe versions the build steps below; bump it whenever they change so caches rebuild.
const goldenRecipe = 3

// IncludePackages is debootstrap's --include list (reference/vm-standin.md): without
// python3-cffi-backend, python3-cryptography fails to configure.
var IncludePackages = []string{
	"systemd", "systemd-sysv", "dbus", "openssh-server", "sudo", "cloud-init", "iproute2",
	"ca-certificates", "python3-cffi-backend",
}

// FixPackages are installed into the tree afterwards: cloud-init's locale module and its netplan
// renderer need them.
var FixPackages = []string{"locales", "netplan.io", "udev"}

// Mirror is the Debian archive the machine's apt uses for Suite.
type Mirror struct {
	URI     string // e.g. http://deb.debian.org/debian
	Keyring string // Signed-By keyring file, if any
	Source  string // the file it came from
}

// DefaultCacheDir is <repo>/.cache/standin (the repo is found by walking up from the working
// directory to go.mod), or $OPENCSP_STANDIN_CACHE when set.
func DefaultCacheDir() string {
	if d := os.Getenv("OPENCSP_STANDIN_CACHE"); d != "" {
		return d
	}
	dir, err := os.Getwd()
	if err == nil {
		for d := dir; ; d = filepath.Dir(d) {
			if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil &&
				strings.Contains(string(b), "module github.com/opencsp/installer") {
				return filepath.Join(d, ".cache", "standin")
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return filepath.Join(os.TempDir(), "opencsp-standin-cache")
}

type goldenStamp struct {
	Version  string    `json:"version"`
	Recipe   int       `json:"recipe"`
	Suite    string    `json:"suite"`
	Mirror   string    `json:"mirror"`
	Include  []string  `json:"include"`
	Fix      []string  `json:"fix"`
	Built    time.Time `json:"built"`
	Duration string    `json:"duration"`
}

// EnsureGoldenTree returns the root of the cached golden Debian tree, building it first when the
// cache has no tree for the current recipe and mirror. It is safe to call from several processes
// at once (an flock serialises builds; a finished tree is never modified). The tree is used
// read-only, as the lower layer of every instance's overlay.
func EnsureGoldenTree(ctx context.Context, cacheDir string) (string, error) {
	if cacheDir == "" {
		cacheDir = DefaultCacheDir()
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", err
	}
	mirror, err := DetectMirror(Suite)
	if err != nil {
		return "", err
	}
	version := goldenVersion(mirror)
	final := filepath.Join(cacheDir, "golden-"+version)
	rootfs := filepath.Join(final, "rootfs")
	if goldenComplete(final) {
		return rootfs, nil
	}

	unlock, err := lockFile(ctx, filepath.Join(cacheDir, "golden.lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if goldenComplete(final) { // built by another process while we waited
		return rootfs, nil
	}
	start := time.Now()
	tmp := final + ".tmp"
	if err := safeRemoveAll(tmp); err != nil {
		return "", err
	}
	if err := safeRemoveAll(final); err != nil { // an incomplete tree without stamp
		return "", err
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", err
	}
	logPath := filepath.Join(cacheDir, "golden-"+version+".build.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return "", err
	}
	defer logf.Close()
	if err := buildGolden(ctx, filepath.Join(tmp, "rootfs"), mirror, logf); err != nil {
		return "", fmt.Errorf("building the golden tree (log %s): %w\n%s", logPath, err, tailFile(logPath, 20))
	}
	st := goldenStamp{Version: version, Recipe: goldenRecipe, Suite: Suite, Mirror: mirror.URI,
		Include: IncludePackages, Fix: FixPackages, Built: time.Now().UTC(),
		Duration: time.Since(start).Round(time.Second).String()}
	b, _ := json.MarshalIndent(st, "", "  ")
	if err := os.WriteFile(filepath.Join(tmp, "STAMP"), append(b, '\n'), 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, final); err != nil {
		return "", err
	}
	return rootfs, nil
}

func goldenComplete(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "STAMP"))
	return err == nil
}

func goldenVersion(m Mirror) string {
	h := sha256.New()
	fmt.Fprintf(h, "recipe=%d\nsuite=%s\nmirror=%s\ninclude=%s\nfix=%s\nunit=%s\nshim=%s\n", goldenRecipe, Suite, m.URI,
		strings.Join(IncludePackages, ","), strings.Join(FixPackages, ","), vethMACUnit, vethMACShim)
	return hex.EncodeToString(h.Sum(nil))[:12]
}

func buildGolden(ctx context.Context, root string, m Mirror, log *os.File) error {
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	env = append(env, aptProxyEnv(ctx)...)
	run := func(name string, args ...string) error {
		fmt.Fprintf(log, "+ %s %s\n", name, strings.Join(args, " "))
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
		}
		return nil
	}
	args := []string{"--variant=minbase", "--include=" + strings.Join(IncludePackages, ",")}
	if m.Keyring != "" {
		args = append(args, "--keyring="+m.Keyring)
	}
	args = append(args, Suite, root, m.URI)
	if err := run("debootstrap", args...); err != nil {
		return err
	}
	write := func(rel, content string, mode os.FileMode) error {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		_ = os.Remove(p) // replace symlinks rather than writing through them
		return os.WriteFile(p, []byte(content), mode)
	}
	// No service may start inside the chroot while packages are installed.
	if err := write("usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", 0o755); err != nil {
		return err
	}
	// A private mount namespace: /proc is mounted for apt only and vanishes with the process.
	script := fmt.Sprintf("mount -t proc proc %q/proc && exec chroot %q apt-get install -y -q --no-install-recommends %s",
		root, root, strings.Join(FixPackages, " "))
	if err := run("unshare", "--mount", "--propagation", "private", "sh", "-c", script); err != nil {
		return err
	}
	localeGen := filepath.Join(root, "etc/locale.gen")
	b, err := os.ReadFile(localeGen)
	if err != nil {
		return err
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if strings.TrimSpace(strings.TrimLeft(l, "# ")) == "en_US.UTF-8 UTF-8" {
			lines[i] = "en_US.UTF-8 UTF-8"
		}
	}
	if err := os.WriteFile(localeGen, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		return err
	}
	if err := run("chroot", root, "locale-gen"); err != nil {
		return err
	}
	if err := write("usr/local/libexec/standin-veth-mac", vethMACShim, 0o755); err != nil {
		return err
	}
	if err := write("etc/systemd/system/standin-veth-mac.service", vethMACUnit, 0o644); err != nil {
		return err
	}
	if err := run("systemctl", "--root="+root, "enable", "systemd-networkd.service", "standin-veth-mac.service"); err != nil {
		return err
	}
	// minbase has no /etc/hosts (sudo stalls ~20 s on DNS without it).
	hosts := "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n"
	for rel, content := range map[string]string{
		"etc/hosts":    hosts,
		"etc/hostname": "localhost\n",
		// No resolver of the build host leaks in; cloud-init/networkd own DNS in the instance.
		"etc/resolv.conf": "",
		// Empty: systemd gives every instance its own machine-id on first boot.
		"etc/machine-id": "",
	} {
		if err := write(rel, content, 0o644); err != nil {
			return err
		}
	}
	if err := run("chroot", root, "apt-get", "clean"); err != nil {
		return err
	}
	// A cloud image ships without SSH host keys: cloud-init generates them per instance.
	keys, _ := filepath.Glob(filepath.Join(root, "etc/ssh/ssh_host_*"))
	for _, k := range keys {
		if err := os.Remove(k); err != nil {
			return err
		}
	}
	return os.Remove(filepath.Join(root, "usr/sbin/policy-rc.d"))
}

// vethMACShim is the one stand-in specific change inside the tree. netplan renders cloud-init's
// "match: macaddress" (Proxmox's v1 mac_address) as PermanentMACAddress=, which a virtio NIC has
// but a veth has not (the veth's MAC is set to the VM's MAC instead), so networkd would leave the
// interface unmanaged. The shim adds a drop-in that matches the same MAC as MACAddress= instead.
const vethMACShim = `#!/bin/sh
# opencsp VM stand-in (e2e/standin): a veth has no permanent MAC address, while netplan renders
# cloud-init's "match: macaddress" as PermanentMACAddress=. The veth carries the VM's MAC as its
# address, so match the same MAC with MACAddress= instead.
for f in /run/systemd/network/*.network; do
	[ -e "$f" ] || continue
	macs=$(sed -n 's/^PermanentMACAddress=//p' "$f")
	[ -n "$macs" ] || continue
	mkdir -p "$f.d"
	{
		echo "[Match]"
		echo "PermanentMACAddress="
		for m in $macs; do echo "MACAddress=$m"; done
	} > "$f.d/00-standin-veth-mac.conf"
done
exit 0
`

const vethMACUnit = `[Unit]
Description=VM stand-in: match netplan MAC rules on a veth (no permanent MAC)
DefaultDependencies=no
After=cloud-init-local.service
Before=network-pre.target systemd-networkd.service
Wants=network-pre.target

[Service]
Type=oneshot
ExecStart=/usr/local/libexec/standin-veth-mac

[Install]
WantedBy=systemd-networkd.service
`

// aptProxyEnv passes apt's configured HTTP(S) proxy on to debootstrap and apt in the chroot.
func aptProxyEnv(ctx context.Context) []string {
	var env []string
	for _, p := range []struct{ key, env string }{{"Acquire::http::Proxy", "http_proxy"}, {"Acquire::https::Proxy", "https_proxy"}} {
		out, err := exec.CommandContext(ctx, "apt-config", "shell", "V", p.key).Output()
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(out))
		if v, ok := strings.CutPrefix(s, "V="); ok {
			v = strings.Trim(v, "'\"")
			if v != "" && v != "DIRECT" && v != "false" {
				env = append(env, p.env+"="+v)
			}
		}
	}
	return env
}

// DetectMirror finds the archive URI the machine's apt uses for suite, reading
// /etc/apt/sources.list and /etc/apt/sources.list.d/*.list and *.sources.
func DetectMirror(suite string) (Mirror, error) {
	files := []string{"/etc/apt/sources.list"}
	for _, pat := range []string{"/etc/apt/sources.list.d/*.list", "/etc/apt/sources.list.d/*.sources"} {
		m, _ := filepath.Glob(pat)
		files = append(files, m...)
	}
	var entries []aptSource
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if strings.HasSuffix(f, ".sources") {
			entries = append(entries, parseDeb822(f, string(b))...)
		} else {
			entries = append(entries, parseOneLine(f, string(b))...)
		}
	}
	if m, ok := pickMirror(entries, suite); ok {
		return m, nil
	}
	return Mirror{}, fmt.Errorf("no apt source for Debian %q (main) in /etc/apt/sources.list or sources.list.d", suite)
}

type aptSource struct {
	types, uris, suites, components []string
	signedBy, file                  string
	enabled                         bool
}

func pickMirror(entries []aptSource, suite string) (Mirror, bool) {
	for _, e := range entries {
		if !e.enabled || !contains(e.types, "deb") || !contains(e.suites, suite) || !contains(e.components, "main") {
			continue
		}
		for _, u := range e.uris {
			if strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://") || strings.HasPrefix(u, "file:") {
				m := Mirror{URI: strings.TrimSuffix(u, "/"), Source: e.file}
				if strings.HasPrefix(e.signedBy, "/") && !strings.Contains(e.signedBy, "\n") {
					if _, err := os.Stat(e.signedBy); err == nil {
						m.Keyring = e.signedBy
					}
				}
				return m, true
			}
		}
	}
	return Mirror{}, false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// parseOneLine parses "deb [opt=val ...] uri suite component..." lines.
func parseOneLine(file, text string) []aptSource {
	var out []aptSource
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		e := aptSource{types: []string{f[0]}, file: file, enabled: true}
		rest := f[1:]
		if strings.HasPrefix(rest[0], "[") {
			var opts []string
			for len(rest) > 0 {
				tok := rest[0]
				rest = rest[1:]
				opts = append(opts, strings.Trim(tok, "[]"))
				if strings.HasSuffix(tok, "]") {
					break
				}
			}
			for _, o := range opts {
				if v, ok := strings.CutPrefix(o, "signed-by="); ok {
					e.signedBy = v
				}
			}
		}
		if len(rest) < 2 {
			continue
		}
		e.uris = []string{rest[0]}
		e.suites = []string{rest[1]}
		e.components = rest[2:]
		out = append(out, e)
	}
	return out
}

// parseDeb822 parses the paragraphs of a .sources file.
func parseDeb822(file, text string) []aptSource {
	var out []aptSource
	fields := map[string]string{}
	var last string
	flush := func() {
		if len(fields) == 0 {
			return
		}
		e := aptSource{
			types: strings.Fields(fields["types"]), uris: strings.Fields(fields["uris"]),
			suites: strings.Fields(fields["suites"]), components: strings.Fields(fields["components"]),
			signedBy: strings.TrimSpace(fields["signed-by"]), file: file, enabled: true,
		}
		if v := strings.ToLower(strings.TrimSpace(fields["enabled"])); v == "no" || v == "false" {
			e.enabled = false
		}
		out = append(out, e)
		fields = map[string]string{}
		last = ""
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#"):
			continue
		case strings.TrimSpace(line) == "":
			flush()
		case line[0] == ' ' || line[0] == '\t':
			if last != "" {
				fields[last] += "\n" + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			last = strings.ToLower(strings.TrimSpace(k))
			fields[last] = strings.TrimSpace(v)
		}
	}
	flush()
	return out
}

// lockFile takes an exclusive flock on path, waiting until ctx ends.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for lock %s: %w", path, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
