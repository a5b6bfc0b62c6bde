package pvesim

import (
	"strings"
	"testing"
)

func TestFormats(t *testing.T) {
	tests := []struct {
		format string
		ok     []string
		bad    []string
	}{
		{"pve-vmid", []string{"100", "999999999"}, []string{"99", "0100", "1000000000"}},
		{"pve-node", []string{"pve", "pve-1", "a"}, []string{"pve_1", "-pve", "pve-"}},
		{"pve-storage-id", []string{"local", "local-lvm", "nfs.1"}, []string{"1local", "local-", "a b"}},
		{"dns-name", []string{"vm1", "vm-1.example.org"}, []string{"vm_1", "-vm", "vm..x"}},
		{"pve-volume-id", []string{"local:import/x.qcow2", "local-lvm:vm-100-disk-0"}, []string{"local", ":x", "1st:x"}},
		{"pve-volume-id-or-qm-path", []string{"none", "cdrom", "/dev/sdb", "local-lvm:0"}, []string{"disk0"}},
		{"disk-size", []string{"10", "4G", "1.5T", "512M"}, []string{"4GB", "-1", "G"}},
		{"pve-tag-list", []string{"a;b", "opencsp-x,k3s", "x.y+z", ""}, []string{"a;b@c", "-a"}},
		{"pve-configid-list", []string{"net0,scsi1", "tags"}, []string{"0net"}},
		{"mac-addr", []string{"BC:24:11:AA:BB:CC"}, []string{"BD:24:11:AA:BB:CC", "BC:24:11:AA:BB"}},
		{"pve-qm-ipconfig", []string{"ip=dhcp", "ip=10.0.0.5/24,gw=10.0.0.1", "ip6=auto", "ip6=fd00::5/64,gw6=fd00::1"},
			[]string{"ip=10.0.0.5", "ip=10.0.0.5/4", "gw=10.0.0.300", "foo=1"}},
		{"pve-qm-boot", []string{"order=scsi0;ide2;net0", "cdn"}, []string{"order=scsi31", "order=efidisk0", "legacy=x"}},
		{"address-list", []string{"10.0.0.1 1.1.1.1", "ns1.example.org", "fd00::1"}, []string{"10.0.0.1 bad_name"}},
		{"urlencoded", []string{"ssh-ed25519%20AAAA", ""}, []string{"a b", "a+b"}},
		{"pve-storage-content-list", []string{"images,rootdir", "import"}, []string{"images,disks"}},
	}
	for _, tt := range tests {
		for _, v := range tt.ok {
			if err := checkFormat(nil, tt.format, v, "p"); err != nil {
				t.Errorf("%s %q rejected: %v", tt.format, v, err)
			}
		}
		for _, v := range tt.bad {
			if err := checkFormat(nil, tt.format, v, "p"); err == nil {
				t.Errorf("%s %q accepted", tt.format, v)
			} else if !strings.HasSuffix(err.Error(), "\n") {
				t.Errorf("%s %q: error %q lacks PVE's trailing newline", tt.format, v, err)
			}
		}
	}
}

func TestSizes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{{"1G", 1 << 30}, {"1.5G", 3 << 29}, {"512", 512}, {"2T", 2 << 40}} {
		if got, ok := parseSize(tc.in); !ok || got != tc.want {
			t.Errorf("parseSize(%q) = %d", tc.in, got)
		}
	}
	for _, tc := range []struct {
		in   int64
		want string
	}{{1 << 30, "1G"}, {3 << 29, "1536M"}, {4 << 20, "4M"}, {1025, "1025"}, {2 << 40, "2T"}} {
		if got := formatSize(tc.in); got != tc.want {
			t.Errorf("formatSize(%d) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestSHA256Crypt(t *testing.T) {
	// vectors computed with `openssl passwd -5 -salt SALT PASSWORD`
	for _, tc := range []struct{ pw, salt, want string }{
		{"Hello world!", "saltstring", "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"},
		{"s3cret", "abcdefgh", "$5$abcdefgh$OcHWp0Vj4l19dnE2g4tHD4hbItEZgO0bjRV6LjwCLoA"},
	} {
		if got := sha256Crypt(tc.pw, tc.salt); got != tc.want {
			t.Errorf("sha256Crypt(%q, %q) = %s, want %s", tc.pw, tc.salt, got, tc.want)
		}
	}
	if !isCryptedPassword("$5$abcdefgh$OcHW") || isCryptedPassword("plain") || isCryptedPassword("$x$a$b") {
		t.Error("isCryptedPassword")
	}
}

func TestCloudinitConfigDrive(t *testing.T) {
	n := &node{dnsServers: []string{"192.0.2.53"}, dnsSearch: "lab.local"}
	conf := map[string]string{
		"name": "win.example.org", "citype": "configdrive2", "ipconfig0": "ip=10.0.0.5/24,gw=10.0.0.1",
		"net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0", "ciuser": "root",
	}
	user, network, meta, err := ciSeed(conf, 100, n)
	if err != nil {
		t.Fatal(err)
	}
	wantUser := "#cloud-config\nhostname: win\nmanage_etc_hosts: true\nfqdn: win.example.org\nuser: root\ndisable_root: False\n" +
		"chpasswd:\n  expire: False\npackage_upgrade: true\n"
	if user != wantUser {
		t.Errorf("user-data\n%s", user)
	}
	wantNet := "auto lo\niface lo inet loopback\n\n        dns_nameservers 192.0.2.53\n        dns_search lab.local\n" +
		"auto eth0\niface eth0 inet static\n        address 10.0.0.5\n        netmask 255.255.255.0\n        gateway 10.0.0.1\n"
	if network != wantNet {
		t.Errorf("network\n%s", network)
	}
	if !strings.HasPrefix(meta, "{\n     \"uuid\": \"") {
		t.Errorf("meta %q", meta)
	}
	// nocloud with the node's DNS and DHCP
	conf = map[string]string{"ipconfig0": "ip=dhcp,ip6=dhcp", "net0": "virtio=BC:24:11:00:00:02,bridge=vmbr0"}
	_, network, _, _ = ciSeed(conf, 101, n)
	wantNet = "version: 1\nconfig:\n    - type: physical\n      name: eth0\n      mac_address: 'bc:24:11:00:00:02'\n      subnets:\n" +
		"      - type: dhcp4\n      - type: dhcp6\n    - type: nameserver\n      address:\n      - '192.0.2.53'\n      search:\n      - 'lab.local'\n"
	if network != wantNet {
		t.Errorf("nocloud network\n%s", network)
	}
}
