// Package seed renders a NoCloud seed (user-data, meta-data, network-config, vendor-data) from a
// VM's cloud-init settings the way Proxmox VE renders its cloud-init drive for citype=nocloud
// (PVE::QemuServer::Cloudinit in qemu-server 8: cloudinit_userdata, nocloud_network,
// nocloud_gen_metadata). It is a small, independent re-statement of that behaviour — byte for
// byte where it matters — so that the PVE emulator's own renderer can be compared with it and the
// VM stand-ins boot from what a real Proxmox would hand a real VM.
//
// Proxmox facts mirrored here:
//   - user-data is "#cloud-config" with hostname, manage_etc_hosts: true, fqdn (only when the VM
//     name contains a dot or searchdomain is set), user, disable_root (user root), password (as
//     stored, i.e. already hashed), ssh_authorized_keys (sshkeys is stored URL-encoded; one key a
//     line, blank lines dropped), "chpasswd:\n  expire: False", "users:\n  - default" unless the
//     user is root, and "package_upgrade: true" unless ciupgrade is 0;
//   - network-config is version 1: one "physical" entry per netN that has an ipconfigN (sorted by
//     key as strings: net0, net1, net10, net2), named ethN, matched by the lower-cased MAC, with a
//     static (address + dotted netmask + gateway), dhcp4, static6, dhcp6 or ipv6_slaac subnet; then
//     always a "nameserver" entry, with the VM's nameserver/searchdomain or, when unset, the node's
//     resolv.conf values;
//   - meta-data is "instance-id: " + sha1_hex(user-data + network-config);
//   - vendor-data is empty.
package seed

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net/netip"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// Files is a NoCloud seed: the four files of a cidata drive.
type Files struct {
	UserData      []byte
	MetaData      []byte
	NetworkConfig []byte
	VendorData    []byte
}

// HostDNS is the Proxmox node's /etc/resolv.conf as PVE reads it (search, dns1..dns3); it is used
// when the VM has no nameserver/searchdomain of its own.
type HostDNS struct {
	Search  string
	Servers []string
}

// VMConfig holds the cloud-init related keys of a Proxmox VM config, as stored by PVE.
type VMConfig struct {
	VMID int
	// Name is the VM's "name" (hostname; a dotted name is its FQDN). Empty: "VM<vmid>".
	Name string
	// CIUser, CIPassword (stored hashed), SSHKeys (stored URL-encoded, newline separated).
	CIUser     string
	CIPassword string
	SSHKeys    string
	// CIUpgrade is "ciupgrade"; nil means unset (PVE's default: upgrade packages on first boot).
	CIUpgrade *bool
	// Nets holds the raw "netN" values, e.g. {0: "virtio=BC:24:11:2E:1A:01,bridge=vmbr0"}.
	Nets map[int]string
	// IPConfigs holds the raw "ipconfigN" values, e.g. {0: "ip=10.0.0.5/24,gw=10.0.0.1"}.
	IPConfigs map[int]string
	// Nameserver and Searchdomain are the raw values (space separated); empty means unset.
	Nameserver   string
	Searchdomain string
	// Host is the node's resolver configuration, used for unset Nameserver/Searchdomain.
	Host HostDNS
}

// EncodeSSHKeys encodes public keys the way PVE stores "sshkeys" (what a client sends).
func EncodeSSHKeys(keys ...string) string {
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(strings.TrimRight(k, "\r\n"))
		b.WriteString("\n")
	}
	// PVE's API expects the value URI-escaped with %20 for spaces (not '+').
	return strings.ReplaceAll(url.QueryEscape(b.String()), "+", "%20")
}

// Hostname returns the hostname and FQDN PVE derives from the config (fqdn may be empty).
func Hostname(c VMConfig) (hostname, fqdn string) {
	hostname = c.Name
	if hostname == "" {
		hostname = "VM" + strconv.Itoa(c.VMID)
	}
	if i := strings.IndexByte(hostname, '.'); i >= 0 {
		return hostname[:i], hostname
	}
	if c.Searchdomain != "" {
		return hostname, hostname + "." + c.Searchdomain
	}
	return hostname, ""
}

// UserData renders the #cloud-config user-data.
func UserData(c VMConfig) (string, error) {
	hostname, fqdn := Hostname(c)
	var b strings.Builder
	b.WriteString("#cloud-config\n")
	fmt.Fprintf(&b, "hostname: %s\n", hostname)
	b.WriteString("manage_etc_hosts: true\n")
	if fqdn != "" {
		fmt.Fprintf(&b, "fqdn: %s\n", fqdn)
	}
	if c.CIUser != "" {
		fmt.Fprintf(&b, "user: %s\n", c.CIUser)
		if c.CIUser == "root" {
			b.WriteString("disable_root: False\n")
		}
	}
	if c.CIPassword != "" {
		fmt.Fprintf(&b, "password: %s\n", c.CIPassword)
	}
	if c.SSHKeys != "" {
		raw, err := url.PathUnescape(c.SSHKeys)
		if err != nil {
			return "", fmt.Errorf("sshkeys: %w", err)
		}
		b.WriteString("ssh_authorized_keys:\n")
		for _, k := range strings.Split(raw, "\n") {
			k = strings.TrimSuffix(k, "\r")
			if strings.TrimSpace(k) == "" {
				continue
			}
			fmt.Fprintf(&b, "  - %s\n", k)
		}
	}
	b.WriteString("chpasswd:\n  expire: False\n")
	if c.CIUser != "root" {
		b.WriteString("users:\n  - default\n")
	}
	if c.CIUpgrade == nil || *c.CIUpgrade {
		b.WriteString("package_upgrade: true\n")
	}
	return b.String(), nil
}

// NetworkConfig renders the version 1 network-config.
func NetworkConfig(c VMConfig) (string, error) {
	var b strings.Builder
	b.WriteString("version: 1\nconfig:\n")
	keys := make([]string, 0, len(c.Nets))
	ids := map[string]int{}
	for id := range c.Nets {
		k := "net" + strconv.Itoa(id)
		keys = append(keys, k)
		ids[k] = id
	}
	sort.Strings(keys) // Perl's sort: string order
	for _, k := range keys {
		id := ids[k]
		ipc, ok := c.IPConfigs[id]
		if !ok || ipc == "" {
			continue
		}
		mac, err := netMAC(c.Nets[id])
		if err != nil {
			return "", fmt.Errorf("%s: %w", k, err)
		}
		ip, err := parseIPConfig(ipc)
		if err != nil {
			return "", fmt.Errorf("ipconfig%d: %w", id, err)
		}
		fmt.Fprintf(&b, "    - type: physical\n      name: eth%d\n      mac_address: '%s'\n      subnets:\n", id, strings.ToLower(mac))
		const i = "      "
		if v, ok := ip["ip"]; ok {
			if v == "dhcp" {
				b.WriteString(i + "- type: dhcp4\n")
			} else {
				p, err := netip.ParsePrefix(v)
				if err != nil || !p.Addr().Is4() {
					return "", fmt.Errorf("ipconfig%d: ip %q is not an IPv4 CIDR", id, v)
				}
				fmt.Fprintf(&b, "%s- type: static\n%s  address: '%s'\n%s  netmask: '%s'\n", i, i, p.Addr(), i, netmask4(p.Bits()))
				if gw, ok := ip["gw"]; ok {
					fmt.Fprintf(&b, "%s  gateway: '%s'\n", i, gw)
				}
			}
		}
		if v, ok := ip["ip6"]; ok {
			switch v {
			case "dhcp":
				b.WriteString(i + "- type: dhcp6\n")
			case "auto":
				b.WriteString(i + "- type: ipv6_slaac\n")
			default:
				fmt.Fprintf(&b, "%s- type: static6\n%s  address: '%s'\n", i, i, v)
				if gw, ok := ip["gw6"]; ok {
					fmt.Fprintf(&b, "%s  gateway: '%s'\n", i, gw)
				}
			}
		}
	}
	search, servers := dnsConf(c)
	// PVE tests two array references here, which are always true: the entry is always written.
	b.WriteString("    - type: nameserver\n")
	if len(servers) > 0 {
		b.WriteString("      address:\n")
		for _, s := range servers {
			fmt.Fprintf(&b, "      - '%s'\n", s)
		}
	}
	if len(search) > 0 {
		b.WriteString("      search:\n")
		for _, s := range search {
			fmt.Fprintf(&b, "      - '%s'\n", s)
		}
	}
	return b.String(), nil
}

// MetaData renders meta-data for the given user-data and network-config.
func MetaData(userData, networkConfig string) string {
	sum := sha1.Sum([]byte(userData + networkConfig))
	return "instance-id: " + hex.EncodeToString(sum[:]) + "\n"
}

// Render renders the whole seed.
func Render(c VMConfig) (Files, error) {
	ud, err := UserData(c)
	if err != nil {
		return Files{}, err
	}
	nc, err := NetworkConfig(c)
	if err != nil {
		return Files{}, err
	}
	return Files{
		UserData:      []byte(ud),
		MetaData:      []byte(MetaData(ud, nc)),
		NetworkConfig: []byte(nc),
		VendorData:    []byte{},
	}, nil
}

func dnsConf(c VMConfig) (search, servers []string) {
	s := c.Searchdomain
	if s == "" {
		s = c.Host.Search
	}
	search = strings.Fields(s)
	if c.Nameserver != "" {
		servers = strings.Fields(c.Nameserver)
	} else {
		for i, v := range c.Host.Servers {
			if i == 3 { // dns1..dns3
				break
			}
			if v != "" {
				servers = append(servers, v)
			}
		}
	}
	return search, servers
}

// nicModels are the netN keys whose value is the MAC address (PVE's NIC models).
var nicModels = map[string]bool{
	"virtio": true, "e1000": true, "e1000e": true, "e1000-82540em": true, "e1000-82544gc": true,
	"e1000-82545em": true, "i82551": true, "i82557b": true, "i82559er": true, "ne2k_isa": true,
	"ne2k_pci": true, "pcnet": true, "rtl8139": true, "vmxnet3": true,
}

func netMAC(v string) (string, error) {
	for _, kv := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		if nicModels[k] || k == "macaddr" {
			if val != "" {
				return val, nil
			}
		}
	}
	return "", fmt.Errorf("network interface has no mac address")
}

func parseIPConfig(v string) (map[string]string, error) {
	m := map[string]string{}
	for _, kv := range strings.Split(v, ",") {
		if kv == "" {
			continue
		}
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("bad item %q", kv)
		}
		switch k {
		case "ip", "gw", "ip6", "gw6":
			m[k] = val
		default:
			return nil, fmt.Errorf("unknown key %q", k)
		}
	}
	return m, nil
}

func netmask4(bits int) string {
	var m uint32
	if bits > 0 {
		m = ^uint32(0) << (32 - bits)
	}
	return fmt.Sprintf("%d.%d.%d.%d", m>>24, m>>16&0xff, m>>8&0xff, m&0xff)
}
