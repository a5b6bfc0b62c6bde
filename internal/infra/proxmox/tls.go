package proxmox

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/opencsp/installer/internal/config"
)

// UntrustedCertError means the endpoint presented a certificate the
// installer does not trust. It carries the presented fingerprint so the
// message can tell the user how to pin it.
type UntrustedCertError struct {
	Fingerprint string // SHA-256 of the leaf, PVE form AB:CD:...
	Reason      string
}

func (e *UntrustedCertError) Error() string {
	return fmt.Sprintf("the Proxmox API certificate is not trusted (%s); it presented SHA-256 fingerprint %s — "+
		"if that matches `pvenode cert info` on the node, pin it with infrastructure.proxmox.tls.fingerprint: %q, "+
		"or set tls.caFile to the CA that signed it", e.Reason, e.Fingerprint, e.Fingerprint)
}

// Fingerprint renders the SHA-256 of a DER certificate the way PVE shows it.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	parts := make([]string, 0, len(sum))
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}

// parseFingerprint accepts hex with or without colons, any case.
func parseFingerprint(s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("tls.fingerprint %q is not a SHA-256 fingerprint", s)
	}
	return b, nil
}

// tlsConfig builds the client TLS config from the user's choice: a pinned
// fingerprint, a CA file, explicit insecure, or the system roots. Every
// verification failure becomes an *UntrustedCertError with the presented
// fingerprint, so preflight can say exactly what to pin.
func tlsConfig(t config.TLS, resolve func(string) string) (*tls.Config, error) {
	var roots *x509.CertPool
	switch {
	case t.Insecure:
		return &tls.Config{InsecureSkipVerify: true}, nil //nolint:gosec // the user asked for it explicitly
	case t.Fingerprint != "":
		want, err := parseFingerprint(t.Fingerprint)
		if err != nil {
			return nil, err
		}
		// Pinning needs our own check: the standard verifier would reject a
		// self-signed PVE certificate before we could compare it.
		return &tls.Config{
			InsecureSkipVerify: true, //nolint:gosec // replaced by the pin check below
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return &UntrustedCertError{Reason: "no certificate presented"}
				}
				leaf := cs.PeerCertificates[0].Raw
				if sum := sha256.Sum256(leaf); !bytes.Equal(sum[:], want) {
					return &UntrustedCertError{Fingerprint: Fingerprint(leaf), Reason: "fingerprint does not match tls.fingerprint"}
				}
				return nil
			},
		}, nil
	case t.CAFile != "":
		pem, err := os.ReadFile(resolve(t.CAFile))
		if err != nil {
			return nil, fmt.Errorf("read tls.caFile: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.caFile %s holds no PEM certificate", t.CAFile)
		}
	default:
		sys, err := x509.SystemCertPool()
		if err != nil {
			return nil, fmt.Errorf("load system CA certificates: %w", err)
		}
		roots = sys
	}
	// Verify ourselves (same rules as the standard verifier) to report the
	// presented fingerprint on failure.
	return &tls.Config{
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return &UntrustedCertError{Reason: "no certificate presented"}
			}
			opts := x509.VerifyOptions{Roots: roots, DNSName: cs.ServerName, Intermediates: x509.NewCertPool()}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
				return &UntrustedCertError{Fingerprint: Fingerprint(cs.PeerCertificates[0].Raw), Reason: err.Error()}
			}
			return nil
		},
	}, nil
}

// asUntrusted finds an *UntrustedCertError in err's chain.
func asUntrusted(err error) (*UntrustedCertError, bool) {
	var u *UntrustedCertError
	ok := errors.As(err, &u)
	return u, ok
}
