package pvesim

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// cloudinitKeys are the options whose change makes the cloud-init image
// pending (qemu-server $cloudinitoptions).
var cloudinitKeys = []string{"cicustom", "cipassword", "citype", "ciupgrade", "ciuser", "nameserver", "searchdomain", "sshkeys"}

func isCloudinitKey(k string) bool {
	for _, c := range cloudinitKeys {
		if c == k {
			return true
		}
	}
	return ipconfigKeyRE.MatchString(k)
}

// ciFormat mirrors get_cloudinit_format.
func ciFormat(conf map[string]string) string {
	if f := conf["citype"]; f != "" {
		return f
	}
	switch conf["ostype"] {
	case "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11":
		return "configdrive2"
	}
	return "nocloud"
}

func ciHostname(conf map[string]string, vmid int) (string, string) {
	hostname := conf["name"]
	if hostname == "" {
		hostname = "VM" + strconv.Itoa(vmid)
	}
	if strings.Contains(hostname, ".") {
		return strings.SplitN(hostname, ".", 2)[0], hostname
	}
	if search := conf["searchdomain"]; search != "" {
		return hostname, hostname + "." + search
	}
	return hostname, hostname
}

// uriUnescape mirrors URI::Escape::uri_unescape (no '+' handling).
func uriUnescape(s string) string {
	u, err := url.PathUnescape(s)
	if err != nil {
		return s
	}
	return u
}

// ciUserData mirrors cloudinit_userdata.
func ciUserData(conf map[string]string, vmid int) string {
	hostname, fqdn := ciHostname(conf, vmid)
	var b strings.Builder
	b.WriteString("#cloud-config\n")
	b.WriteString("hostname: " + hostname + "\n")
	b.WriteString("manage_etc_hosts: true\n")
	b.WriteString("fqdn: " + fqdn + "\n")
	user, hasUser := conf["ciuser"]
	if hasUser {
		b.WriteString("user: " + user + "\n")
		if user == "root" {
			b.WriteString("disable_root: False\n")
		}
	}
	if pw, ok := conf["cipassword"]; ok {
		b.WriteString("password: " + pw + "\n")
	}
	if keys, ok := conf["sshkeys"]; ok {
		b.WriteString("ssh_authorized_keys:\n")
		for _, k := range strings.Split(uriUnescape(keys), "\n") {
			k = strings.TrimRight(k, "\r")
			if strings.TrimSpace(k) == "" {
				continue
			}
			b.WriteString("  - " + k + "\n")
		}
	}
	b.WriteString("chpasswd:\n")
	b.WriteString("  expire: False\n")
	if !hasUser || user != "root" {
		b.WriteString("users:\n")
		b.WriteString("  - default\n")
	}
	if v, ok := conf["ciupgrade"]; !ok || v == "1" {
		b.WriteString("package_upgrade: true\n")
	}
	return b.String()
}

// ciDNS mirrors get_dns_conf: the VM's options, else the node's resolv.conf.
func ciDNS(conf map[string]string, n *node) (search, servers []string) {
	if v, ok := conf["searchdomain"]; ok {
		search = strings.Fields(v)
	} else {
		search = strings.Fields(n.dnsSearch)
	}
	if v, ok := conf["nameserver"]; ok {
		servers = strings.Fields(v)
	} else {
		servers = append(servers, n.dnsServers...)
	}
	return search, servers
}

func netIndexes(conf map[string]string) []string {
	var ids []string
	for k := range conf {
		if m := netKeyRE.FindStringSubmatch(k); m != nil {
			ids = append(ids, m[1])
		}
	}
	// Perl sorts the keys "netN" as strings
	sort.Slice(ids, func(i, j int) bool { return "net"+ids[i] < "net"+ids[j] })
	return ids
}

// ipv4Mask returns the dotted netmask of a prefix length.
func ipv4Mask(bits int) string {
	if bits < 0 || bits > 32 {
		return ""
	}
	m := uint32(0xffffffff) << (32 - bits)
	if bits == 0 {
		m = 0
	}
	return fmt.Sprintf("%d.%d.%d.%d", m>>24, m>>16&0xff, m>>8&0xff, m&0xff)
}

// ciNetworkNoCloud mirrors nocloud_network (network-config version 1).
func ciNetworkNoCloud(conf map[string]string, n *node) (string, error) {
	var b strings.Builder
	b.WriteString("version: 1\nconfig:\n")
	for _, id := range netIndexes(conf) {
		ipc, ok := conf["ipconfig"+id]
		if !ok || ipc == "" {
			continue
		}
		i := "    "
		net := parseNet(conf["net"+id])
		ip := parseIPConfig(ipc)
		mac := strings.ToLower(net["macaddr"])
		if mac == "" {
			return "", fmt.Errorf("network interface 'net%s' has no mac address", id)
		}
		b.WriteString(i + "- type: physical\n" + i + "  name: eth" + id + "\n" + i + "  mac_address: '" + mac + "'\n" + i + "  subnets:\n")
		i += "  "
		if v, ok := ip["ip"]; ok {
			if v == "dhcp" {
				b.WriteString(i + "- type: dhcp4\n")
			} else {
				addr, bits, found := strings.Cut(v, "/")
				if !found {
					return "", fmt.Errorf("not a CIDR: %s", v)
				}
				nb, _ := strconv.Atoi(bits)
				b.WriteString(i + "- type: static\n" + i + "  address: '" + addr + "'\n" + i + "  netmask: '" + ipv4Mask(nb) + "'\n")
				if gw, ok := ip["gw"]; ok {
					b.WriteString(i + "  gateway: '" + gw + "'\n")
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
				b.WriteString(i + "- type: static6\n" + i + "  address: '" + v + "'\n")
				if gw, ok := ip["gw6"]; ok {
					b.WriteString(i + "  gateway: '" + gw + "'\n")
				}
			}
		}
	}
	i := "    "
	search, servers := ciDNS(conf, n)
	b.WriteString(i + "- type: nameserver\n")
	if len(servers) > 0 {
		b.WriteString(i + "  address:\n")
		for _, s := range servers {
			b.WriteString(i + "  - '" + s + "'\n")
		}
	}
	if len(search) > 0 {
		b.WriteString(i + "  search:\n")
		for _, s := range search {
			b.WriteString(i + "  - '" + s + "'\n")
		}
	}
	return b.String(), nil
}

// ciNetworkConfigDrive mirrors configdrive2_network (ENI format).
func ciNetworkConfigDrive(conf map[string]string, n *node) (string, error) {
	var b strings.Builder
	b.WriteString("auto lo\niface lo inet loopback\n\n")
	search, servers := ciDNS(conf, n)
	if len(servers) > 0 {
		b.WriteString("        dns_nameservers " + strings.Join(servers, " ") + "\n")
	}
	if len(search) > 0 {
		b.WriteString("        dns_search " + strings.Join(search, " ") + "\n")
	}
	for _, id := range netIndexes(conf) {
		ipc, ok := conf["ipconfig"+id]
		if !ok || ipc == "" {
			continue
		}
		ip := parseIPConfig(ipc)
		dev := "eth" + id
		b.WriteString("auto " + dev + "\n")
		if v, ok := ip["ip"]; ok && v != "" {
			if v == "dhcp" {
				b.WriteString("iface " + dev + " inet dhcp\n")
			} else {
				addr, bits, found := strings.Cut(v, "/")
				if !found {
					return "", fmt.Errorf("not a CIDR: %s", v)
				}
				nb, _ := strconv.Atoi(bits)
				b.WriteString("iface " + dev + " inet static\n        address " + addr + "\n        netmask " + ipv4Mask(nb) + "\n")
				if gw := ip["gw"]; gw != "" {
					b.WriteString("        gateway " + gw + "\n")
				}
			}
		}
		if v, ok := ip["ip6"]; ok && v != "" {
			if v == "auto" || v == "dhcp" {
				b.WriteString("iface " + dev + " inet6 " + v + "\n")
			} else {
				addr, mask, _ := strings.Cut(v, "/")
				b.WriteString("iface " + dev + " inet6 static\n        address " + addr + "\n        netmask " + mask + "\n")
				if gw := ip["gw6"]; gw != "" {
					b.WriteString("        gateway " + gw + "\n")
				}
			}
		}
	}
	return b.String(), nil
}

// ciSeed renders user-data, network-config and meta-data like PVE's dump.
func ciSeed(conf map[string]string, vmid int, n *node) (user, network, meta string, err error) {
	user = ciUserData(conf, vmid)
	if ciFormat(conf) == "nocloud" {
		network, err = ciNetworkNoCloud(conf, n)
		if err != nil {
			return
		}
		sum := sha1.Sum([]byte(user + network))
		meta = "instance-id: " + hex.EncodeToString(sum[:]) + "\n"
		return
	}
	network, err = ciNetworkConfigDrive(conf, n)
	if err != nil {
		return
	}
	sum := sha1.Sum([]byte(user + network))
	meta = "{\n     \"uuid\": \"" + hex.EncodeToString(sum[:]) + "\",\n     \"network_config\": { \"content_path\": \"/content/0000\" }\n}\n"
	return
}

// cryptedPasswordRE recognizes already hashed passwords like qemu-server.
func isCryptedPassword(pw string) bool {
	if !strings.HasPrefix(pw, "$") {
		return false
	}
	parts := strings.Split(pw, "$")
	if len(parts) < 4 {
		return false
	}
	switch parts[1] {
	case "1", "5", "6", "2a", "2y":
		return parts[2] != "" && parts[3] != ""
	}
	return false
}

// encryptPassword mirrors PVE::Tools::encrypt_pw: crypt(3) SHA-256 ($5$).
func (s *Server) encryptPassword(pw string) string {
	const chars = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	salt := make([]byte, 8)
	for i := range salt {
		salt[i] = chars[s.rng.Intn(len(chars))]
	}
	return sha256Crypt(pw, string(salt))
}

// sha256Crypt implements the SHA-256 based crypt(3) ("$5$") with the
// default 5000 rounds (Drepper's specification).
func sha256Crypt(password, salt string) string {
	if len(salt) > 16 {
		salt = salt[:16]
	}
	p, sl := []byte(password), []byte(salt)
	const rounds = 5000

	b := sha256.New()
	b.Write(p)
	b.Write(sl)
	b.Write(p)
	digB := b.Sum(nil)

	a := sha256.New()
	a.Write(p)
	a.Write(sl)
	for i := len(p); i > 0; i -= 32 {
		if i > 32 {
			a.Write(digB)
		} else {
			a.Write(digB[:i])
		}
	}
	for i := len(p); i > 0; i >>= 1 {
		if i&1 != 0 {
			a.Write(digB)
		} else {
			a.Write(p)
		}
	}
	digA := a.Sum(nil)

	dp := sha256.New()
	for range p {
		dp.Write(p)
	}
	digDP := dp.Sum(nil)
	P := make([]byte, 0, len(p))
	for i := len(p); i > 0; i -= 32 {
		if i > 32 {
			P = append(P, digDP...)
		} else {
			P = append(P, digDP[:i]...)
		}
	}

	ds := sha256.New()
	for i := 0; i < 16+int(digA[0]); i++ {
		ds.Write(sl)
	}
	digDS := ds.Sum(nil)
	S := make([]byte, 0, len(sl))
	for i := len(sl); i > 0; i -= 32 {
		if i > 32 {
			S = append(S, digDS...)
		} else {
			S = append(S, digDS[:i]...)
		}
	}

	c := digA
	for i := 0; i < rounds; i++ {
		h := sha256.New()
		if i&1 != 0 {
			h.Write(P)
		} else {
			h.Write(c)
		}
		if i%3 != 0 {
			h.Write(S)
		}
		if i%7 != 0 {
			h.Write(P)
		}
		if i&1 != 0 {
			h.Write(c)
		} else {
			h.Write(P)
		}
		c = h.Sum(nil)
	}

	const b64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	var out strings.Builder
	enc := func(b2, b1, b0 byte, n int) {
		w := uint(b2)<<16 | uint(b1)<<8 | uint(b0)
		for ; n > 0; n-- {
			out.WriteByte(b64[w&0x3f])
			w >>= 6
		}
	}
	order := [][3]int{{0, 10, 20}, {21, 1, 11}, {12, 22, 2}, {3, 13, 23}, {24, 4, 14}, {15, 25, 5}, {6, 16, 26}, {27, 7, 17}, {18, 28, 8}, {9, 19, 29}}
	for _, o := range order {
		enc(c[o[0]], c[o[1]], c[o[2]], 4)
	}
	enc(0, c[31], c[30], 3)
	return "$5$" + salt + "$" + out.String()
}
