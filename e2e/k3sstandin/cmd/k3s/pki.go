package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// pki lives in <data-dir>/server/tls like K3s's. The CA, the admin client
// certificate and the service-account key persist across restarts; the
// serving certificate is re-issued when the wanted SANs change (K3s's
// dynamic listener does the same when tls-san changes).
type pki struct {
	dir                          string
	caCert, caKey                string
	servingCert, servingKey      string
	adminCert, adminKey          string
	saPub, saKey                 string
	caPEM, adminPEM, adminKeyPEM []byte
}

type keyPair struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func ensurePKI(dir string, ips []net.IP, dns []string) (*pki, bool, error) {
	p := &pki{dir: dir,
		caCert: filepath.Join(dir, "server-ca.crt"), caKey: filepath.Join(dir, "server-ca.key"),
		servingCert: filepath.Join(dir, "serving-kube-apiserver.crt"), servingKey: filepath.Join(dir, "serving-kube-apiserver.key"),
		adminCert: filepath.Join(dir, "client-admin.crt"), adminKey: filepath.Join(dir, "client-admin.key"),
		saPub: filepath.Join(dir, "service.pub"), saKey: filepath.Join(dir, "service.key"),
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, err
	}
	ca, err := loadOrIssue(p.caCert, p.caKey, func() (*x509.Certificate, *keyPair) {
		return &x509.Certificate{Subject: pkix.Name{CommonName: "k3s-server-ca@opencsp-standin"}, IsCA: true,
			BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature}, nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("ca: %w", err)
	}
	if _, err := loadOrIssue(p.adminCert, p.adminKey, func() (*x509.Certificate, *keyPair) {
		return &x509.Certificate{Subject: pkix.Name{CommonName: "system:admin", Organization: []string{"system:masters"}},
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, ca
	}); err != nil {
		return nil, false, fmt.Errorf("admin cert: %w", err)
	}
	reissued := false
	cur, _ := loadPair(p.servingCert, p.servingKey)
	if cur == nil || !sameSANs(cur.cert, ips, dns) {
		if err := writePair(p.servingCert, p.servingKey, &x509.Certificate{Subject: pkix.Name{CommonName: "k3s"},
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			IPAddresses: ips, DNSNames: dns}, ca, true); err != nil {
			return nil, false, fmt.Errorf("serving cert: %w", err)
		}
		reissued = true
	}
	if _, err := os.Stat(p.saKey); err != nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, false, err
		}
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		if err := os.WriteFile(p.saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600); err != nil {
			return nil, false, err
		}
		if err := os.WriteFile(p.saKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, false, err
		}
	}
	for dst, src := range map[*[]byte]string{&p.caPEM: p.caCert, &p.adminPEM: p.adminCert, &p.adminKeyPEM: p.adminKey} {
		if *dst, err = os.ReadFile(src); err != nil {
			return nil, false, err
		}
	}
	return p, reissued, nil
}

func sameSANs(c *x509.Certificate, ips []net.IP, dns []string) bool {
	if !slices.Equal(c.DNSNames, dns) || len(c.IPAddresses) != len(ips) {
		return false
	}
	for i := range ips {
		if !c.IPAddresses[i].Equal(ips[i]) {
			return false
		}
	}
	return time.Now().Before(c.NotAfter.Add(-24 * time.Hour))
}

// loadOrIssue returns the pair at certPath/keyPath, issuing it first if missing.
func loadOrIssue(certPath, keyPath string, tmpl func() (*x509.Certificate, *keyPair)) (*keyPair, error) {
	if kp, err := loadPair(certPath, keyPath); err == nil {
		return kp, nil
	}
	t, parent := tmpl()
	if err := writePair(certPath, keyPath, t, parent, false); err != nil {
		return nil, err
	}
	return loadPair(certPath, keyPath)
}

func loadPair(certPath, keyPath string) (*keyPair, error) {
	cb, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	cblk, _ := pem.Decode(cb)
	kblk, _ := pem.Decode(kb)
	if cblk == nil || kblk == nil {
		return nil, errors.New("bad PEM")
	}
	cert, err := x509.ParseCertificate(cblk.Bytes)
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(kblk.Bytes)
	if err != nil {
		return nil, err
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("not an ECDSA key")
	}
	return &keyPair{cert: cert, key: ek}, nil
}

// writePair issues tmpl (self-signed when parent is nil) and writes it; with
// chain the CA certificate is appended (what kube-apiserver serves).
func writePair(certPath, keyPath string, tmpl *x509.Certificate, parent *keyPair, chain bool) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(365 * 24 * time.Hour)
	signer, parentCert := key, tmpl
	if parent != nil {
		signer, parentCert = parent.key, parent.cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, &key.PublicKey, signer)
	if err != nil {
		return err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if chain && parent != nil {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: parent.cert.Raw})...)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(certPath, certPEM, 0o644)
}
