// Package seed renders the NoCloud seed (user-data, meta-data,
// network-config) the appliance writes to the CIDATA partition, from the
// install config. The seed only holds public data: the SSH public keys, the
// host name and the network; secrets stay references in the install config
// on the data partition.
package seed

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"path"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/opencsp/installer/internal/appliance/applinit"
	"github.com/opencsp/installer/internal/appliance/payload"
	"github.com/opencsp/installer/internal/config"
)

// DataMount is where the installed system mounts the data partition
// (label applinit.DataLabel) with the payload: K3s artifacts, manifests,
// the install config and the opencsp binary.
const DataMount = "/var/lib/opencsp/data"

// binaryPath is the opencsp binary inside the data partition: applinit
// copies payload/X to X on it.
var binaryPath = strings.TrimPrefix(payload.BinaryPath, payload.Dir+"/")

// Seed is the content of the three NoCloud files.
type Seed struct {
	UserData      string
	MetaData      string
	NetworkConfig string
}

// Render builds the seed for the management node of cfg.
func Render(cfg *config.Config) (Seed, error) {
	m := cfg.ManagementVM
	if m.Name == "" {
		return Seed{}, errors.New("managementVM.name: empty; it becomes the appliance's host name")
	}
	keys, err := cfg.AuthorizedKeys()
	if err != nil {
		return Seed{}, fmt.Errorf("managementVM.ssh: %w", err)
	}
	if len(keys) == 0 {
		return Seed{}, errors.New("managementVM.ssh.publicKeys: none; the appliance would have no way to log in")
	}
	net, err := networkConfig(m.Network)
	if err != nil {
		return Seed{}, err
	}
	ud, err := marshal("#cloud-config\n", userData(m.Name, m.SSH.User, m.SSH.Port, keys))
	if err != nil {
		return Seed{}, fmt.Errorf("user-data: %w", err)
	}
	nc, err := marshal("", net)
	if err != nil {
		return Seed{}, fmt.Errorf("network-config: %w", err)
	}
	// The instance id changes whenever the seed does, so cloud-init treats
	// a changed config as a new instance and applies it; the same config
	// always yields the same id.
	sum := sha256.Sum256([]byte(m.Name + "\x00" + ud + "\x00" + nc))
	md, err := marshal("", metaData{
		InstanceID:    "opencsp-" + cfg.Cluster.Name + "-" + hex.EncodeToString(sum[:6]),
		LocalHostname: m.Name,
	})
	if err != nil {
		return Seed{}, fmt.Errorf("meta-data: %w", err)
	}
	return Seed{UserData: ud, MetaData: md, NetworkConfig: nc}, nil
}

type metaData struct {
	InstanceID    string `yaml:"instance-id"`
	LocalHostname string `yaml:"local-hostname"`
}

type cloudConfig struct {
	Hostname         string     `yaml:"hostname"`
	PreserveHostname bool       `yaml:"preserve_hostname"`
	ManageEtcHosts   bool       `yaml:"manage_etc_hosts"`
	DisableRoot      bool       `yaml:"disable_root"`
	SSHPwauth        bool       `yaml:"ssh_pwauth"`
	Users            []user     `yaml:"users"`
	WriteFiles       []file     `yaml:"write_files,omitempty"`
	Mounts           [][]string `yaml:"mounts"`
	Runcmd           [][]string `yaml:"runcmd"`
}

type file struct {
	Path        string `yaml:"path"`
	Permissions string `yaml:"permissions"`
	Content     string `yaml:"content"`
}

type user struct {
	Name              string   `yaml:"name"`
	Groups            []string `yaml:"groups"`
	Shell             string   `yaml:"shell"`
	Sudo              string   `yaml:"sudo"`
	LockPasswd        bool     `yaml:"lock_passwd"`
	SSHAuthorizedKeys []string `yaml:"ssh_authorized_keys"`
}

func userData(host, name string, port int, keys []string) cloudConfig {
	cc := cloudConfig{
		Hostname:       host,
		ManageEtcHosts: true,
		DisableRoot:    true,
		Users: []user{{
			Name: name, Groups: []string{"sudo"}, Shell: "/bin/bash",
			Sudo: "ALL=(ALL) NOPASSWD:ALL", LockPasswd: true, SSHAuthorizedKeys: keys,
		}},
		// cloud-init's mounts module (init stage) creates the mount point
		// and mounts the data partition before runcmd (final stage) runs;
		// nofail keeps a missing partition from blocking boot.
		Mounts: [][]string{{"LABEL=" + applinit.DataLabel, DataMount, "vfat", "defaults,nofail,umask=0077", "0", "2"}},
		Runcmd: [][]string{Command()},
	}
	if port != 0 && port != 22 {
		// The installer logs in on managementVM.ssh.port. write_files runs
		// in cloud-init's network stage, which is ordered before sshd, so
		// sshd starts on that port; Debian reads sshd_config.d/*.conf.
		cc.WriteFiles = []file{{Path: "/etc/ssh/sshd_config.d/60-opencsp-port.conf", Permissions: "0644",
			Content: fmt.Sprintf("Port %d\n", port)}}
	}
	return cc
}

// Command is what the installed system runs once on first boot.
func Command() []string {
	return []string{path.Join(DataMount, binaryPath), "node", "bootstrap", "--data", DataMount}
}

// netplan is cloud-init network-config version 2.
type netplan struct {
	Version   int                 `yaml:"version"`
	Ethernets map[string]ethernet `yaml:"ethernets"`
}

type ethernet struct {
	Match       map[string]string `yaml:"match"`
	DHCP4       bool              `yaml:"dhcp4,omitempty"`
	DHCP6       bool              `yaml:"dhcp6,omitempty"`
	Addresses   []string          `yaml:"addresses,omitempty"`
	Routes      []route           `yaml:"routes,omitempty"`
	Nameservers *nameservers      `yaml:"nameservers,omitempty"`
}

type route struct {
	To  string `yaml:"to"`
	Via string `yaml:"via"`
}

type nameservers struct {
	Addresses []string `yaml:"addresses,omitempty"`
	Search    []string `yaml:"search,omitempty"`
}

func networkConfig(n config.VMNetwork) (netplan, error) {
	// The appliance cannot know the NIC's name in advance; "e*" matches
	// ethN and the predictable enp*/ens* names.
	e := ethernet{Match: map[string]string{"name": "e*"}}
	if n.DHCP {
		e.DHCP4 = true
	} else {
		p, err := netip.ParsePrefix(n.Address)
		if err != nil {
			return netplan{}, fmt.Errorf("managementVM.network.address: %q is not an address in CIDR form", n.Address)
		}
		gw, err := netip.ParseAddr(n.Gateway)
		if err != nil {
			return netplan{}, fmt.Errorf("managementVM.network.gateway: %q is not an IP address", n.Gateway)
		}
		to := "0.0.0.0/0"
		if p.Addr().Is6() {
			to = "::/0"
		}
		e.Addresses = []string{p.String()}
		e.Routes = []route{{To: to, Via: gw.String()}}
	}
	if len(n.DNS) > 0 || n.SearchDomain != "" {
		e.Nameservers = &nameservers{Addresses: n.DNS}
		if n.SearchDomain != "" {
			e.Nameservers.Search = []string{n.SearchDomain}
		}
	}
	return netplan{Version: 2, Ethernets: map[string]ethernet{"primary": e}}, nil
}

func marshal(header string, v any) (string, error) {
	var b bytes.Buffer
	b.WriteString(header)
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	if err := enc.Close(); err != nil {
		return "", err
	}
	return b.String(), nil
}
