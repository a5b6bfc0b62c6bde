package remote

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"golang.org/x/crypto/ssh"
)

// HostKeyPolicy pins the server's host key. Precedence: Known, when set, must
// match exactly; Fingerprint, when set, must match one of the server's keys.
// Only when both are empty is the first key seen trusted (TOFU). A mismatch is
// never accepted.
type HostKeyPolicy struct {
	// Fingerprint is the expected "SHA256:..." fingerprint from the config
	// (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the VM).
	Fingerprint string
	// Known is the key recorded on an earlier contact, in authorized_keys
	// format ("ssh-ed25519 AAAA..."), as returned to OnFirstContact.
	Known string
	// OnFirstContact, when Known is empty, receives the key of the first
	// successful login so the caller can record it (in the install state).
	// An error aborts the connection: an unrecorded key would silently
	// weaken the next run's check.
	OnFirstContact func(key ssh.PublicKey) error
}

// HostKeyMismatchError means the server presented a host key other than the
// pinned one: possibly a man-in-the-middle, possibly a re-created VM.
type HostKeyMismatchError struct {
	Addr      string
	Expected  string   // pinned fingerprint
	Presented []string // fingerprints (and types) the server presented
	Source    string   // where the pin came from: "recorded in state" or "configured"
}

func (e *HostKeyMismatchError) Error() string {
	return fmt.Sprintf("SECURITY: the SSH host key of %s does not match the %s key: expected %s, server presented %s. "+
		"This is what a man-in-the-middle attack looks like; it also happens when the VM was re-created and generated new host keys. "+
		"If you re-created the VM on purpose, verify the new key on the VM console (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), "+
		"then update the configured fingerprint or remove the recorded host key from the state and run again; otherwise stop and investigate",
		e.Addr, e.Source, e.Expected, strings.Join(e.Presented, ", "))
}

// AuthorizedKey renders key in authorized_keys format without the newline:
// the form HostKeyPolicy.Known expects.
func AuthorizedKey(key ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key)))
}

// hostKeyPlan is the parsed policy: the algorithm sets to negotiate, one
// handshake each, and the check applied to the presented key.
type hostKeyPlan struct {
	known       ssh.PublicKey
	fingerprint string
	algoSets    [][]string
}

// Algorithm families in preference order. With only a fingerprint pinned we do
// not know which of the server's keys it names, so each family is tried in turn.
var (
	algosED25519 = []string{ssh.KeyAlgoED25519}
	algosECDSA   = []string{ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521}
	algosRSA     = []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}
)

func newHostKeyPlan(p HostKeyPolicy) (*hostKeyPlan, error) {
	plan := &hostKeyPlan{fingerprint: strings.TrimSpace(p.Fingerprint)}
	if plan.fingerprint != "" && !strings.HasPrefix(plan.fingerprint, "SHA256:") {
		return nil, fmt.Errorf("ssh host key fingerprint %q: want the SHA256:... form printed by ssh-keygen -lf", plan.fingerprint)
	}
	if k := strings.TrimSpace(p.Known); k != "" {
		key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k))
		if err != nil {
			return nil, fmt.Errorf("recorded ssh host key: %w", err)
		}
		plan.known = key
		plan.algoSets = [][]string{algorithmsFor(key.Type())}
		return plan, nil
	}
	if plan.fingerprint != "" {
		plan.algoSets = [][]string{algosED25519, algosECDSA, algosRSA}
		return plan, nil
	}
	plan.algoSets = [][]string{concat(algosED25519, algosECDSA, algosRSA)}
	return plan, nil
}

func algorithmsFor(keyType string) []string {
	// An RSA key is negotiated as one of its SHA-2 signature algorithms;
	// every other key type names its own algorithm.
	if keyType == ssh.KeyAlgoRSA {
		return algosRSA
	}
	return []string{keyType}
}

func concat(sets ...[]string) []string {
	var out []string
	for _, s := range sets {
		out = append(out, s...)
	}
	return out
}

// check verifies the presented key against the pins. nil means accepted.
func (p *hostKeyPlan) check(addr string, key ssh.PublicKey) error {
	fp := ssh.FingerprintSHA256(key)
	switch {
	case p.known != nil:
		if key.Type() != p.known.Type() || string(key.Marshal()) != string(p.known.Marshal()) {
			return &HostKeyMismatchError{Addr: addr, Expected: ssh.FingerprintSHA256(p.known) + " (" + p.known.Type() + ")",
				Presented: []string{fp + " (" + key.Type() + ")"}, Source: "recorded"}
		}
		if p.fingerprint != "" && p.fingerprint != fp {
			return &HostKeyMismatchError{Addr: addr, Expected: p.fingerprint,
				Presented: []string{fp + " (" + key.Type() + ")"}, Source: "configured"}
		}
	case p.fingerprint != "":
		if fp != p.fingerprint {
			return &HostKeyMismatchError{Addr: addr, Expected: p.fingerprint,
				Presented: []string{fp + " (" + key.Type() + ")"}, Source: "configured"}
		}
	}
	return nil
}

// callback returns the ssh callback for one handshake; it stores the key seen
// and any mismatch, because ssh wraps the callback's error in text.
func (p *hostKeyPlan) callback(seen *ssh.PublicKey, mismatch **HostKeyMismatchError) ssh.HostKeyCallback {
	return func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		*seen = key
		err := p.check(hostname, key)
		var m *HostKeyMismatchError
		if errors.As(err, &m) {
			*mismatch = m
		}
		return err
	}
}
