package config

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"maps"
	"net/netip"
	"net/url"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/opencsp/installer/images"
)

// validator checks a merged config and records each problem at the position
// of the field in the user's file (or the profile that set it).
type validator struct {
	cfg     *Config
	pos     map[string]Pos
	file    string
	baseDir string
	// node limits the checks to what the management node uses (LoadForNode).
	node bool
	// unresolvedInfraSecrets: infrastructure credential references are
	// not resolved (the ISO build does not use them).
	unresolvedInfraSecrets bool
	errs                   ErrorList
	// decodeErrs holds fields that already failed to decode; checks of them
	// or their children would only repeat the problem (e.g. "required").
	decodeErrs map[string]bool
}

// where finds the best position for a field in the user's file: its own, else
// the nearest parent that appears in the file, else the top of the file.
// Positions in a profile are skipped: the user can only edit their own file.
func (v *validator) where(field string) Pos {
	for p := field; p != ""; p = parentPath(p) {
		if pos, ok := v.pos[p]; ok && pos.File == v.file {
			return pos
		}
	}
	return Pos{File: v.file, Line: 1, Col: 1}
}

func parentPath(p string) string {
	if i := strings.LastIndexAny(p, ".["); i >= 0 {
		return p[:i]
	}
	return ""
}

func (v *validator) errorf(field, format string, args ...any) {
	for p := field; p != ""; p = parentPath(p) {
		if v.decodeErrs[p] {
			return
		}
	}
	v.errs = append(v.errs, FieldError{Pos: v.where(field), Field: field, Msg: fmt.Sprintf(format, args...)})
}

var (
	dnsLabelRE    = regexp.MustCompile(`^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$`)
	dnsNameRE     = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$`)
	tokenIDRE     = regexp.MustCompile(`^[^\s@!]+@[^\s@!]+![A-Za-z][A-Za-z0-9._-]*$`)
	pveIDRE       = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9._-]*$`)
	nodeNameRE    = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
	bridgeRE      = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,14}$`)
	unixUserRE    = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	k3sVersionRE  = regexp.MustCompile(`^v\d+\.\d+\.\d+\+k3s\d+$`)
	chartVerRE    = regexp.MustCompile(`^v?\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$`)
	sha256FprRE   = regexp.MustCompile(`^SHA256:[A-Za-z0-9+/]{43}=?$`)
	hexFprRE      = regexp.MustCompile(`^[0-9A-Fa-f]{2}(:?[0-9A-Fa-f]{2}){31}$`)
	gitScpRE      = regexp.MustCompile(`^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^/].*$`)
	k3sComponents = []string{"traefik", "servicelb", "local-storage", "metrics-server", "coredns"}
)

func (v *validator) validate() {
	c := v.cfg
	switch {
	case c.APIVersion == "":
		v.errorf("apiVersion", "required: set apiVersion: %s", APIVersion)
	case c.APIVersion != APIVersion:
		v.errorf("apiVersion", "unsupported version %q; this installer reads %s", c.APIVersion, APIVersion)
	}
	switch {
	case c.Kind == "":
		v.errorf("kind", "required: set kind: %s", Kind)
	case c.Kind != Kind:
		v.errorf("kind", "must be %s, got %q", Kind, c.Kind)
	}
	v.cluster()
	if !v.node {
		v.infrastructure()
		v.images()
	}
	v.managementVM()
	v.k3s()
	v.opsRepo()
	v.components()
	v.secrets()
	v.flux()
	if !v.node {
		v.appliance()
	}
}

var (
	sha256HexRE = regexp.MustCompile(`^[0-9a-f]{64}$`)
	devPathRE   = regexp.MustCompile(`^/dev/[A-Za-z0-9._/-]+$`)
)

func (v *validator) appliance() {
	const at = "appliance"
	a := v.cfg.Appliance
	switch m := v.cfg.ManagementVM.Provision.Method; m {
	case ProvisionCloudImage, ProvisionAppliance:
	default:
		v.errorf("managementVM.provision.method", "unknown method %q; use cloudimage (clone a cloud-image template) or appliance (boot the appliance ISO)", m)
	}
	if a.ISO != "" && !strings.HasSuffix(strings.ToLower(a.ISO), ".iso") {
		v.errorf(at+".iso", "%q must name an .iso file, e.g. opencsp-appliance.iso", a.ISO)
	}
	if d := a.TargetDisk; d != TargetDiskAuto && (!devPathRE.MatchString(d) || path.Clean(d) != d) {
		v.errorf(at+".targetDisk", "%q must be auto (the only empty disk) or an absolute device path such as /dev/sda", d)
	}
	if a.After != AfterPoweroff && a.After != AfterReboot {
		v.errorf(at+".after", "unknown action %q; use poweroff or reboot", a.After)
	}
	k := a.Kernel
	switch {
	case k.Deb != "" && k.URL != "":
		v.errorf(at+".kernel", "set either deb (a local file) or url, not both")
	case k.Deb != "" && !strings.HasSuffix(k.Deb, ".deb"):
		v.errorf(at+".kernel.deb", "%q is not a .deb file; use a Debian linux-image-*.deb", k.Deb)
	}
	if k.URL != "" {
		if u, err := url.Parse(k.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			v.errorf(at+".kernel.url", "must be an https or http URL, got %q", k.URL)
		}
		if k.SHA256 == "" {
			v.errorf(at+".kernel.sha256", "required with kernel.url: the hex sha256 of the .deb (sha256sum FILE)")
		}
	}
	if k.SHA256 != "" {
		if !sha256HexRE.MatchString(k.SHA256) {
			v.errorf(at+".kernel.sha256", "must be 64 lower-case hex digits (sha256sum FILE)")
		} else if k.URL == "" {
			v.errorf(at+".kernel.sha256", "only used with kernel.url; remove it or set url")
		}
	}
}

// registryRE is an image repository prefix without scheme or tag:
// host[:port][/path].
var registryRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]([a-z0-9._/-]*[a-z0-9])?)?$`)

func (v *validator) flux() {
	if r := v.cfg.Flux.Registry; r != "" && !registryRE.MatchString(r) {
		v.errorf("flux.registry", "%q is not an image repository prefix; use host[:port][/path] without scheme or tag, e.g. registry.example.net/fluxcd", r)
	}
}

func (v *validator) cluster() {
	c := v.cfg.Cluster
	switch {
	case c.Name == "":
		v.errorf("cluster.name", "required: a short lower-case name such as \"lab\"")
	case !dnsLabelRE.MatchString(c.Name):
		v.errorf("cluster.name", "%q must be a lower-case DNS label (a-z, 0-9, '-', at most 32 characters, starting with a letter)", c.Name)
	}
	switch {
	case c.Domain == "":
		v.errorf("cluster.domain", "required: the DNS domain services are published under, e.g. opencsp.example.net")
	case !dnsNameRE.MatchString(c.Domain):
		v.errorf("cluster.domain", "%q is not a valid lower-case DNS domain", c.Domain)
	}
}

func (v *validator) infrastructure() {
	inf := v.cfg.Infrastructure
	switch inf.Provider {
	case "proxmox":
		if inf.Proxmox == nil {
			v.errorf("infrastructure.proxmox", "required when provider is proxmox")
			return
		}
		v.proxmox(inf.Proxmox)
		if inf.OpenStack != nil {
			v.errorf("infrastructure.openstack", "set, but provider is proxmox; remove it or change the provider")
		}
	case "openstack":
		if inf.OpenStack == nil {
			v.errorf("infrastructure.openstack", "required when provider is openstack")
			return
		}
		v.openstack(inf.OpenStack)
		if inf.Proxmox != nil { // only if the file set it: see preferFile
			v.errorf("infrastructure.proxmox", "set, but provider is openstack; remove it or change the provider")
		}
	case "":
		v.errorf("infrastructure.provider", "required: proxmox or openstack")
	default:
		v.errorf("infrastructure.provider", "unknown provider %q; use proxmox or openstack", inf.Provider)
	}
}

func (v *validator) proxmox(p *Proxmox) {
	const at = "infrastructure.proxmox"
	v.httpsURL(at+".endpoint", p.Endpoint, true)
	switch {
	case p.TokenID == "":
		v.errorf(at+".tokenID", "required: the API token id, e.g. opencsp@pve!installer")
	case !tokenIDRE.MatchString(p.TokenID):
		v.errorf(at+".tokenID", "%q must look like USER@REALM!TOKENNAME, e.g. opencsp@pve!installer", p.TokenID)
	}
	v.secret(at+".tokenSecret", p.TokenSecret, true)
	v.tls(at+".tls", p.TLS)
	v.uniqueNames(at+".nodes", p.Nodes, nodeNameRE, "node name")
	for _, st := range []struct{ field, name string }{
		{"templates", p.Storage.Templates}, {"disks", p.Storage.Disks}, {"images", p.Storage.Images}, {"iso", p.Storage.ISO},
	} {
		f, name := at+".storage."+st.field, st.name
		switch {
		case name == "":
			v.errorf(f, "required: a Proxmox storage id, e.g. local or local-lvm")
		case !pveIDRE.MatchString(name):
			v.errorf(f, "%q is not a valid Proxmox storage id", name)
		}
	}
	switch {
	case p.Network.Bridge == "":
		v.errorf(at+".network.bridge", "required: the Linux bridge for the VM, e.g. vmbr0")
	case !bridgeRE.MatchString(p.Network.Bridge):
		v.errorf(at+".network.bridge", "%q is not a valid interface name", p.Network.Bridge)
	}
	if p.Network.VLAN < 0 || p.Network.VLAN > 4094 {
		v.errorf(at+".network.vlan", "%d is out of range: use 1-4094, or 0 for untagged", p.Network.VLAN)
	}
	if node := v.cfg.ManagementVM.Node; node != "" && len(p.Nodes) > 0 && !slices.Contains(p.Nodes, node) {
		v.errorf("managementVM.node", "%q is not in infrastructure.proxmox.nodes (%s)", node, strings.Join(p.Nodes, ", "))
	}
}

func (v *validator) openstack(o *OpenStack) {
	const at = "infrastructure.openstack"
	if o.AuthURL == "" {
		v.errorf(at+".authURL", "required: the Keystone URL, e.g. https://keystone.example.net:5000/v3")
	} else if u, err := url.Parse(o.AuthURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		v.errorf(at+".authURL", "must be an http(s) URL, got %q", o.AuthURL)
	}
	if o.ApplicationCredentialID == "" {
		v.errorf(at+".applicationCredentialID", "required: the application credential id")
	}
	v.secret(at+".applicationCredentialSecret", o.ApplicationCredentialSecret, true)
	if o.Network == "" {
		v.errorf(at+".network", "required: the network the management VM attaches to")
	}
	if o.Flavor == "" {
		v.errorf(at+".flavor", "required: the flavor of the management VM")
	}
	v.tls(at+".tls", o.TLS)
}

func (v *validator) httpsURL(field, raw string, required bool) {
	if raw == "" {
		if required {
			v.errorf(field, "required: an https URL, e.g. https://pve1.example.net:8006")
		}
		return
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		v.errorf(field, "must be an https URL, got %q", raw)
		return
	}
	if u.Port() != "" {
		if _, err := netip.ParseAddrPort("0.0.0.0:" + u.Port()); err != nil {
			v.errorf(field, "port %q is not a valid port", u.Port())
		}
	}
}

func (v *validator) tls(field string, t TLS) {
	if t.Insecure && (t.CAFile != "" || t.Fingerprint != "") {
		v.errorf(field+".insecure", "contradicts caFile/fingerprint: either verify the certificate or skip verification, not both")
	}
	if t.CAFile != "" {
		p := resolvePath(v.baseDir, t.CAFile)
		b, err := os.ReadFile(p)
		switch {
		case err != nil:
			v.errorf(field+".caFile", "cannot read %s: %v", p, unwrapPathErr(err))
		case !parsesAsCerts(b):
			v.errorf(field+".caFile", "%s holds no PEM certificate", p)
		}
	}
	if t.Fingerprint != "" && !hexFprRE.MatchString(t.Fingerprint) {
		v.errorf(field+".fingerprint", "must be a SHA-256 fingerprint: 32 hex byte pairs, colons optional (as shown by pvenode cert info)")
	}
}

func parsesAsCerts(b []byte) bool {
	block, _ := pem.Decode(b)
	if block == nil {
		return false
	}
	_, err := x509.ParseCertificate(block.Bytes)
	return err == nil
}

func (v *validator) secret(field string, r SecretRef, required bool) {
	if r.IsZero() {
		if required {
			v.errorf(field, `required: a secret reference "env:NAME" or "file:PATH"`)
		}
		return
	}
	check := r.Check
	if v.unresolvedInfraSecrets && strings.HasPrefix(field, "infrastructure.") {
		check = func(string) error { return r.CheckForm() }
	}
	if err := check(v.baseDir); err != nil {
		v.errorf(field, "%v", err)
	}
}

func (v *validator) uniqueNames(field string, names []string, re *regexp.Regexp, what string) {
	seen := map[string]int{}
	for i, n := range names {
		f := fmt.Sprintf("%s[%d]", field, i)
		if !re.MatchString(n) {
			v.errorf(f, "%q is not a valid %s", n, what)
		}
		if j, dup := seen[n]; dup {
			v.errorf(f, "duplicate %s %q (first at line %d)", what, n, v.where(fmt.Sprintf("%s[%d]", field, j)).Line)
			continue
		}
		seen[n] = i
	}
}

func (v *validator) images() {
	imgs := v.cfg.Images
	if len(imgs) == 0 {
		v.errorf("images", "required: at least one cloud image, e.g. debian-12 (known: %s)", strings.Join(images.Names(), ", "))
	}
	seen := map[string]bool{}
	for i, img := range imgs {
		f := fmt.Sprintf("images[%d]", i)
		if seen[img] {
			v.errorf(f, "duplicate image %q", img)
		}
		seen[img] = true
		if images.IsDefinitionFile(img) {
			if _, err := images.LoadFile(resolvePath(v.baseDir, img)); err != nil {
				v.errorf(f, "%v", unwrapPathErr(err))
			}
			continue
		}
		if isLocalImage(img) {
			p := resolvePath(v.baseDir, img)
			if st, err := os.Stat(p); err != nil {
				v.errorf(f, "local image %s: %v", p, unwrapPathErr(err))
			} else if !st.Mode().IsRegular() {
				v.errorf(f, "local image %s is not a regular file", p)
			}
			continue
		}
		if _, ok := images.Get(img); !ok {
			v.errorf(f, "unknown image %q; use one of %s, a path to a local .qcow2/.raw file, or an image definition file (.yaml)", img, strings.Join(images.Names(), ", "))
		}
	}
	if m := v.cfg.ManagementVM.Image; m != "" && len(imgs) > 0 && !slices.Contains(imgs, m) {
		v.errorf("managementVM.image", "%q is not one of images (%s)", m, strings.Join(imgs, ", "))
	}
}

// isLocalImage tells a file path from an image name.
func isLocalImage(s string) bool {
	return strings.ContainsRune(s, '/') || strings.HasPrefix(s, "~") ||
		slices.Contains([]string{".qcow2", ".raw", ".img"}, path.Ext(s))
}

func (v *validator) managementVM() {
	const at = "managementVM"
	m := v.cfg.ManagementVM
	if m.Name != "" && !nodeNameRE.MatchString(m.Name) {
		v.errorf(at+".name", "%q is not a valid VM name (letters, digits and '-')", m.Name)
	}
	if m.Node != "" && !nodeNameRE.MatchString(m.Node) {
		v.errorf(at+".node", "%q is not a valid node name", m.Node)
	}
	if m.Cores < 1 || m.Cores > 512 {
		v.errorf(at+".cores", "%d is out of range: use 1-512 (4 or more recommended)", m.Cores)
	}
	if m.MemoryMiB < 4096 {
		v.errorf(at+".memoryMiB", "%d MiB is too little for K3s and the Core: use at least 4096 (16384 recommended)", m.MemoryMiB)
	}
	if m.DiskGiB < 20 {
		v.errorf(at+".diskGiB", "%d GiB is too small: use at least 20 (100 recommended)", m.DiskGiB)
	}
	v.vmNetwork(at+".network", m.Network)
	if !v.node { // the installer's login to the VM; the node does not use it
		v.ssh(at+".ssh", m.SSH)
	}
}

func (v *validator) vmNetwork(at string, n VMNetwork) {
	if n.DHCP && n.Address != "" {
		v.errorf(at+".address", "set together with dhcp: true; use either DHCP or a static address")
	}
	if !n.DHCP && n.Address == "" {
		v.errorf(at+".address", "required unless dhcp: true; a static address in CIDR form, e.g. 192.0.2.10/24")
	}
	var prefix netip.Prefix
	if n.Address != "" {
		var err error
		prefix, err = netip.ParsePrefix(n.Address)
		if err != nil {
			v.errorf(at+".address", "%q is not an address in CIDR form, e.g. 192.0.2.10/24", n.Address)
		}
	}
	if n.Gateway != "" {
		gw, err := netip.ParseAddr(n.Gateway)
		switch {
		case err != nil:
			v.errorf(at+".gateway", "%q is not an IP address", n.Gateway)
		case prefix.IsValid() && !prefix.Masked().Contains(gw):
			v.errorf(at+".gateway", "%s is not inside the VM's network %s", gw, prefix.Masked())
		}
	} else if n.Address != "" {
		v.errorf(at+".gateway", "required with a static address")
	}
	for i, d := range n.DNS {
		if _, err := netip.ParseAddr(d); err != nil {
			v.errorf(fmt.Sprintf("%s.dns[%d]", at, i), "%q is not an IP address", d)
		}
	}
	if n.SearchDomain != "" && !dnsNameRE.MatchString(n.SearchDomain) {
		v.errorf(at+".searchDomain", "%q is not a valid DNS domain", n.SearchDomain)
	}
}

func (v *validator) ssh(at string, s SSH) {
	switch {
	case s.User == "":
		v.errorf(at+".user", "required: the cloud-init user the installer logs in as")
	case !unixUserRE.MatchString(s.User):
		v.errorf(at+".user", "%q is not a valid Linux user name", s.User)
	}
	for i, k := range s.PublicKeys {
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k)); err != nil {
			v.errorf(fmt.Sprintf("%s.publicKeys[%d]", at, i), "not an OpenSSH public key (%v); paste a line from id_ed25519.pub", err)
		}
	}
	if s.PrivateKeyFile != "" {
		p := resolvePath(v.baseDir, s.PrivateKeyFile)
		b, err := os.ReadFile(p)
		if err != nil {
			v.errorf(at+".privateKeyFile", "cannot read %s: %v", p, unwrapPathErr(err))
		} else if _, err := ssh.ParseRawPrivateKey(b); err != nil {
			if _, missing := err.(*ssh.PassphraseMissingError); !missing {
				v.errorf(at+".privateKeyFile", "%s is not an SSH private key: %v", p, err)
			}
		}
	} else if os.Getenv("SSH_AUTH_SOCK") == "" {
		v.errorf(at+".privateKeyFile", "required when no ssh-agent is running (SSH_AUTH_SOCK is not set)")
	}
	if len(s.PublicKeys) == 0 && s.PrivateKeyFile == "" {
		v.errorf(at+".publicKeys", "required: at least one public key to authorize on the VM")
	}
	if s.HostKeyFingerprint != "" && !sha256FprRE.MatchString(s.HostKeyFingerprint) {
		v.errorf(at+".hostKeyFingerprint", "must look like SHA256:<43 base64 characters> (ssh-keygen -lf)")
	}
	if s.Port < 1 || s.Port > 65535 {
		v.errorf(at+".port", "%d is not a TCP port", s.Port)
	}
}

func (v *validator) k3s() {
	k := v.cfg.K3s
	switch {
	case k.Version == "":
		v.errorf("k3s.version", "required: a K3s release such as v1.33.5+k3s1")
	case !k3sVersionRE.MatchString(k.Version):
		v.errorf("k3s.version", "%q is not a K3s release name; use the form v1.33.5+k3s1", k.Version)
	}
	for i, d := range k.Disable {
		if !slices.Contains(k3sComponents, d) {
			v.errorf(fmt.Sprintf("k3s.disable[%d]", i), "unknown packaged component %q; use one of %s", d, strings.Join(k3sComponents, ", "))
		}
	}
	for i, san := range k.TLSSANs {
		if _, err := netip.ParseAddr(san); err != nil && !dnsNameRE.MatchString(san) && !dnsLabelRE.MatchString(san) {
			v.errorf(fmt.Sprintf("k3s.tlsSANs[%d]", i), "%q is neither an IP address nor a DNS name", san)
		}
	}
	if m := k.Artifacts.Mirror; m != "" {
		if u, err := url.Parse(m); err != nil || !slices.Contains([]string{"https", "http", "file"}, u.Scheme) || (u.Scheme != "file" && u.Host == "") {
			v.errorf("k3s.artifacts.mirror", "must be an https, http or file URL, got %q", m)
		}
	}
	if d := k.Artifacts.AirgapDir; d != "" {
		p := resolvePath(v.baseDir, d)
		if st, err := os.Stat(p); err != nil || !st.IsDir() {
			v.errorf("k3s.artifacts.airgapDir", "%s is not a readable directory", p)
		}
	}
}

func (v *validator) opsRepo() {
	const at = "opsRepo"
	r := v.cfg.OpsRepo
	scheme := ""
	switch {
	case r.URL == "":
		v.errorf(at+".url", "required: the git URL Flux syncs from (ssh://, https:// or file://)")
	case gitScpRE.MatchString(r.URL):
		scheme = "ssh"
	default:
		u, err := url.Parse(r.URL)
		if err != nil || !slices.Contains([]string{"ssh", "https", "http", "file"}, u.Scheme) || (u.Scheme != "file" && u.Host == "") {
			v.errorf(at+".url", "must be an ssh://, https://, http:// or file:// git URL, got %q", r.URL)
			break
		}
		scheme = u.Scheme
	}
	if r.Branch != "" && !validBranch(r.Branch) {
		v.errorf(at+".branch", "%q is not a valid git branch name", r.Branch)
	}
	if r.Path != "" {
		if path.IsAbs(r.Path) || path.Clean(r.Path) != r.Path || strings.HasPrefix(r.Path, "..") {
			v.errorf(at+".path", "%q must be a clean relative path inside the repo, e.g. clusters/lab", r.Path)
		}
	}
	a := r.Auth
	if a.SSHKeyFile != "" && !a.Token.IsZero() {
		v.errorf(at+".auth", "set either sshKeyFile or token, not both")
	}
	if a.SSHKeyFile != "" {
		if scheme == "https" || scheme == "http" {
			v.errorf(at+".auth.sshKeyFile", "is for ssh URLs; the url is %s (use auth.token)", scheme)
		}
		p := resolvePath(v.baseDir, a.SSHKeyFile)
		if _, err := os.ReadFile(p); err != nil {
			v.errorf(at+".auth.sshKeyFile", "cannot read %s: %v", p, unwrapPathErr(err))
		}
	}
	if !a.Token.IsZero() {
		if scheme == "ssh" {
			v.errorf(at+".auth.token", "is for https URLs; the url is ssh (use auth.sshKeyFile)")
		}
		v.secret(at+".auth.token", a.Token, false)
	}
	if a.HostKeyFingerprint != "" && !sha256FprRE.MatchString(a.HostKeyFingerprint) {
		v.errorf(at+".auth.hostKeyFingerprint", "must look like SHA256:<43 base64 characters> (ssh-keygen -lf)")
	}
}

// validBranch follows the main rules of git check-ref-format.
func validBranch(b string) bool {
	if b == "" || strings.HasPrefix(b, "-") || strings.HasPrefix(b, "/") || strings.HasSuffix(b, "/") ||
		strings.HasSuffix(b, ".lock") || strings.HasSuffix(b, ".") || strings.Contains(b, "..") ||
		strings.Contains(b, "@{") || strings.Contains(b, "//") {
		return false
	}
	return !strings.ContainsAny(b, " ~^:?*[\\\x7f") && !strings.ContainsFunc(b, func(r rune) bool { return r < 0x20 })
}

func (v *validator) components() {
	for _, name := range slices.Sorted(maps.Keys(v.cfg.Components)) {
		cc, f := v.cfg.Components[name], "components."+name
		if !slices.Contains(componentNames, name) {
			v.errorf(f, "unknown component %q; known: %s", name, strings.Join(componentNames, ", "))
			continue
		}
		if cc.Version != "" && !chartVerRE.MatchString(cc.Version) {
			v.errorf(f+".version", "%q is not a chart version such as 1.2.3", cc.Version)
		}
	}
}

func (v *validator) secrets() {
	if f := v.cfg.Secrets.AgeKeyFile; f != "" {
		p := resolvePath(v.baseDir, f)
		if st, err := os.Stat(p); err == nil && !st.Mode().IsRegular() {
			v.errorf("secrets.ageKeyFile", "%s exists but is not a regular file", p)
		}
	}
}
