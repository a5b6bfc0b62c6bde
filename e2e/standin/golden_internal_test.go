package standin

import (
	"net/netip"
	"testing"
)

func TestPickMirrorDeb822AndOneLine(t *testing.T) {
	deb822 := `Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /nonexistent/keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
`
	entries := parseDeb822("debian.sources", deb822)
	if len(entries) != 2 {
		t.Fatalf("parsed %d entries, want 2: %+v", len(entries), entries)
	}
	m, ok := pickMirror(entries, "bookworm")
	if !ok || m.URI != "http://mirror.example/debian" || m.Keyring != "" {
		t.Errorf("deb822: got %+v, %v", m, ok)
	}

	oneLine := `# comment
deb-src http://src.example/debian bookworm main
deb [arch=amd64 signed-by=/x.gpg] https://other.example/debian bookworm contrib
deb http://ftp.example/debian/ bookworm main contrib # trailing
`
	m, ok = pickMirror(parseOneLine("sources.list", oneLine), "bookworm")
	if !ok || m.URI != "http://ftp.example/debian" {
		t.Errorf("one-line: got %+v, %v", m, ok)
	}

	disabled := "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\nComponents: main\n"
	if m, ok := pickMirror(parseDeb822("x.sources", disabled), "bookworm"); ok {
		t.Errorf("disabled entry picked: %+v", m)
	}
	if _, ok := pickMirror(parseOneLine("x.list", "deb http://a.example/debian trixie main\n"), "bookworm"); ok {
		t.Error("picked another suite")
	}
}

func TestValidPrefix(t *testing.T) {
	for p, want := range map[string]bool{"st1a2b3c": true, "a": true, "ocsp": true, "": false, "1abc": false,
		"toolongxx": false, "Upper": false, "a-b": false} {
		if got := ValidPrefix(p); got != want {
			t.Errorf("ValidPrefix(%q) = %v, want %v", p, got, want)
		}
	}
}

func TestNetworkAddresses(t *testing.T) {
	n := &Network{hostAddr: netip.MustParsePrefix("10.213.7.1/24")}
	if got := n.Subnet().String(); got != "10.213.7.0/24" {
		t.Errorf("Subnet = %s", got)
	}
	if got := n.Address(10).String(); got != "10.213.7.10/24" {
		t.Errorf("Address(10) = %s", got)
	}
	if got := n.Gateway().String(); got != "10.213.7.1" {
		t.Errorf("Gateway = %s", got)
	}
}

func TestMountinfoUnescape(t *testing.T) {
	if got := unescapeMountinfo(`/run/a\040b`); got != "/run/a b" {
		t.Errorf("got %q", got)
	}
}
