package standin

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// DefaultSupernet is the private test range the harness picks free /24 subnets from. Traffic only
// ever flows between the host end of the bridge and namespaces the harness created: the bridge
// never forwards to other interfaces (forwarding is switched off on it).
var DefaultSupernet = netip.MustParsePrefix("10.213.0.0/16")

// Network is a Linux bridge owned by the harness, with a host address on it so that the host —
// and the installer under test — reaches the stand-ins attached to it.
type Network struct {
	store    *stateStore
	prefix   string
	bridge   string
	hostAddr netip.Prefix
}

// NetworkConfig configures NewNetwork.
type NetworkConfig struct {
	// Prefix names the harness (see ValidPrefix); the bridge is "<prefix>-br".
	Prefix string
	// Subnet is an IPv4 /8../30 for the bridge; zero picks the first /24 of DefaultSupernet that
	// no host address or route overlaps.
	Subnet netip.Prefix
}

// NewNetwork creates the bridge "<prefix>-br" with the subnet's first address as the host address
// (the natural gateway for the stand-ins), IPv4 forwarding off and IPv6 off on it.
func NewNetwork(ctx context.Context, cfg NetworkConfig) (*Network, error) {
	store, err := openStore(cfg.Prefix)
	if err != nil {
		return nil, err
	}
	return newNetwork(ctx, store, cfg.Subnet)
}

func newNetwork(ctx context.Context, store *stateStore, subnet netip.Prefix) (*Network, error) {
	prefix := store.st.Prefix
	n := &Network{store: store, prefix: prefix, bridge: prefix + "-br"}
	// Serialise subnet choice between harness processes.
	if err := os.MkdirAll(StateRoot(), 0o755); err != nil {
		return nil, err
	}
	unlock, err := lockFile(ctx, filepath.Join(StateRoot(), "subnets.lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()
	if !subnet.IsValid() {
		subnet, err = freeSubnet(ctx)
		if err != nil {
			return nil, err
		}
	}
	subnet = subnet.Masked()
	if !subnet.Addr().Is4() || subnet.Bits() > 30 {
		return nil, fmt.Errorf("subnet %s: want an IPv4 prefix of at most /30", subnet)
	}
	n.hostAddr = netip.PrefixFrom(subnet.Addr().Next(), subnet.Bits())
	if err := store.update(func(st *hostState) {
		st.Bridge, st.Subnet, st.HostAddr = n.bridge, subnet.String(), n.hostAddr.String()
	}); err != nil {
		return nil, err
	}
	steps := [][]string{
		{"link", "add", n.bridge, "type", "bridge", "forward_delay", "0"},
	}
	for _, s := range steps {
		if err := run(ctx, "ip", s...); err != nil {
			return nil, err
		}
	}
	// No routing through the host: frames stay on the bridge, packets for other networks are
	// dropped at the host end.
	if err := errors.Join(
		writeSysctl("net/ipv4/conf/"+n.bridge+"/forwarding", "0"),
		writeSysctl("net/ipv6/conf/"+n.bridge+"/disable_ipv6", "1"),
	); err != nil {
		_ = run(ctx, "ip", "link", "delete", n.bridge)
		return nil, err
	}
	for _, s := range [][]string{
		{"addr", "add", n.hostAddr.String(), "dev", n.bridge},
		{"link", "set", n.bridge, "up"},
	} {
		if err := run(ctx, "ip", s...); err != nil {
			_ = run(ctx, "ip", "link", "delete", n.bridge)
			return nil, err
		}
	}
	return n, nil
}

// Bridge is the bridge's interface name.
func (n *Network) Bridge() string { return n.bridge }

// HostAddress is the host's address on the bridge, with the subnet's length (e.g. 10.213.4.1/24).
func (n *Network) HostAddress() netip.Prefix { return n.hostAddr }

// Gateway is the host address, the gateway to put in the stand-ins' ipconfig.
func (n *Network) Gateway() netip.Addr { return n.hostAddr.Addr() }

// Subnet is the bridge's subnet.
func (n *Network) Subnet() netip.Prefix { return n.hostAddr.Masked() }

// Address returns the i-th address of the subnet (0 is the network address, 1 the host) with the
// subnet's length, e.g. Address(10) = 10.213.4.10/24.
func (n *Network) Address(i int) netip.Prefix {
	a := n.Subnet().Addr()
	for ; i > 0; i-- {
		a = a.Next()
	}
	return netip.PrefixFrom(a, n.hostAddr.Bits())
}

// Close deletes the bridge (the stand-ins attached to it should be destroyed first).
func (n *Network) Close(ctx context.Context) error {
	if linkExists(n.bridge) {
		if err := run(ctx, "ip", "link", "delete", n.bridge); err != nil {
			return err
		}
	}
	return n.store.update(func(st *hostState) { st.Bridge = "" })
}

// freeSubnet returns the first /24 of DefaultSupernet that overlaps no address or route of the host.
func freeSubnet(ctx context.Context) (netip.Prefix, error) {
	used, err := usedPrefixes(ctx)
	if err != nil {
		return netip.Prefix{}, err
	}
	base := DefaultSupernet.Masked().Addr().As4()
	for x := 0; x < 256; x++ {
		cand := netip.PrefixFrom(netip.AddrFrom4([4]byte{base[0], base[1], byte(x), 0}), 24)
		if !DefaultSupernet.Contains(cand.Addr()) {
			break
		}
		free := true
		for _, u := range used {
			if u.Overlaps(cand) {
				free = false
				break
			}
		}
		if free {
			return cand, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("no free /24 left in %s", DefaultSupernet)
}

func usedPrefixes(ctx context.Context) ([]netip.Prefix, error) {
	var out []netip.Prefix
	addrs, err := exec.CommandContext(ctx, "ip", "-4", "-o", "addr", "show").Output()
	if err != nil {
		return nil, fmt.Errorf("ip addr: %w", err)
	}
	for _, l := range strings.Split(string(addrs), "\n") {
		f := strings.Fields(l)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "inet" {
				if p, err := netip.ParsePrefix(f[i+1]); err == nil {
					out = append(out, p.Masked())
				}
			}
		}
	}
	routes, err := exec.CommandContext(ctx, "ip", "-4", "route", "show", "table", "all").Output()
	if err != nil {
		return nil, fmt.Errorf("ip route: %w", err)
	}
	for _, l := range strings.Split(string(routes), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		d := f[0]
		if d == "local" || d == "broadcast" || d == "unicast" {
			if len(f) < 2 {
				continue
			}
			d = f[1]
		}
		if d == "default" {
			continue
		}
		if !strings.Contains(d, "/") {
			d += "/32"
		}
		if p, err := netip.ParsePrefix(d); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out, nil
}
