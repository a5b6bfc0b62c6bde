package seed

import (
	"strings"
	"testing"
)

const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB+/=example opencsp@test"

func TestRenderLikeProxmox(t *testing.T) {
	no := false
	c := VMConfig{
		VMID:       101,
		Name:       "mgmt-1",
		CIUser:     "opencsp",
		SSHKeys:    EncodeSSHKeys(testKey, "", "ssh-rsa AAAAB3 second"),
		CIUpgrade:  &no,
		Nets:       map[int]string{0: "virtio=BC:24:11:2E:1A:01,bridge=vmbr0,firewall=1"},
		IPConfigs:  map[int]string{0: "ip=10.213.0.10/24,gw=10.213.0.1"},
		Nameserver: "10.213.0.1",
		Host:       HostDNS{Search: "host.example", Servers: []string{"192.0.2.53"}},
	}
	f, err := Render(c)
	if err != nil {
		t.Fatal(err)
	}
	wantUser := `#cloud-config
hostname: mgmt-1
manage_etc_hosts: true
user: opencsp
ssh_authorized_keys:
  - ` + testKey + `
  - ssh-rsa AAAAB3 second
chpasswd:
  expire: False
users:
  - default
`
	if got := string(f.UserData); got != wantUser {
		t.Errorf("user-data:\n%s\nwant:\n%s", got, wantUser)
	}
	wantNet := `version: 1
config:
    - type: physical
      name: eth0
      mac_address: 'bc:24:11:2e:1a:01'
      subnets:
      - type: static
        address: '10.213.0.10'
        netmask: '255.255.255.0'
        gateway: '10.213.0.1'
    - type: nameserver
      address:
      - '10.213.0.1'
      search:
      - 'host.example'
`
	if got := string(f.NetworkConfig); got != wantNet {
		t.Errorf("network-config:\n%s\nwant:\n%s", got, wantNet)
	}
	// sha1_hex(user-data . network-config), as PVE computes the instance-id.
	if got := string(f.MetaData); !strings.HasPrefix(got, "instance-id: ") || len(got) != len("instance-id: ")+40+1 {
		t.Errorf("meta-data = %q", got)
	}
	if got := MetaData(string(f.UserData), string(f.NetworkConfig)); got != string(f.MetaData) {
		t.Errorf("meta-data not deterministic: %q vs %q", got, f.MetaData)
	}
	if len(f.VendorData) != 0 {
		t.Errorf("vendor-data = %q, want empty", f.VendorData)
	}
}

func TestUserDataDefaultsAndRoot(t *testing.T) {
	ud, err := UserData(VMConfig{VMID: 7, Searchdomain: "lab.example"})
	if err != nil {
		t.Fatal(err)
	}
	want := "#cloud-config\nhostname: VM7\nmanage_etc_hosts: true\nfqdn: VM7.lab.example\n" +
		"chpasswd:\n  expire: False\nusers:\n  - default\npackage_upgrade: true\n"
	if ud != want {
		t.Errorf("got:\n%s\nwant:\n%s", ud, want)
	}
	ud, _ = UserData(VMConfig{Name: "a.b.example", CIUser: "root", CIPassword: "$6$x$y"})
	want = "#cloud-config\nhostname: a\nmanage_etc_hosts: true\nfqdn: a.b.example\nuser: root\n" +
		"disable_root: False\npassword: $6$x$y\nchpasswd:\n  expire: False\npackage_upgrade: true\n"
	if ud != want {
		t.Errorf("got:\n%s\nwant:\n%s", ud, want)
	}
}

func TestNetworkConfigOrderDHCPAndV6(t *testing.T) {
	nc, err := NetworkConfig(VMConfig{
		Nets: map[int]string{
			0:  "virtio=BC:24:11:00:00:00",
			2:  "e1000=BC:24:11:00:00:02",
			10: "macaddr=BC:24:11:00:00:0A,model=virtio",
			3:  "virtio=BC:24:11:00:00:03", // no ipconfig3: skipped
		},
		IPConfigs: map[int]string{
			0:  "ip=dhcp,ip6=auto",
			2:  "ip6=fd00::5/64,gw6=fd00::1",
			10: "ip6=dhcp",
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `version: 1
config:
    - type: physical
      name: eth0
      mac_address: 'bc:24:11:00:00:00'
      subnets:
      - type: dhcp4
      - type: ipv6_slaac
    - type: physical
      name: eth10
      mac_address: 'bc:24:11:00:00:0a'
      subnets:
      - type: dhcp6
    - type: physical
      name: eth2
      mac_address: 'bc:24:11:00:00:02'
      subnets:
      - type: static6
        address: 'fd00::5/64'
        gateway: 'fd00::1'
    - type: nameserver
`
	if nc != want {
		t.Errorf("got:\n%s\nwant:\n%s", nc, want)
	}
	if _, err := NetworkConfig(VMConfig{Nets: map[int]string{0: "bridge=vmbr0"}, IPConfigs: map[int]string{0: "ip=dhcp"}}); err == nil {
		t.Error("want an error for a NIC without MAC")
	}
}
