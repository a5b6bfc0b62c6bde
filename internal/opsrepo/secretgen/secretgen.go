// Package secretgen generates the installer's secret values with crypto/rand,
// one format per manifests.KeyKind.
package secretgen

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"strings"

	"github.com/opencsp/installer/manifests"
)

const (
	upper   = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	lower   = "abcdefghijklmnopqrstuvwxyz"
	digits  = "0123456789"
	symbols = "-_.!#%+"
	alnum   = upper + lower + digits
)

// Generate returns a new value of kind read from r (crypto/rand.Reader when
// nil).
func Generate(kind manifests.KeyKind, r io.Reader) (string, error) {
	if r == nil {
		r = rand.Reader
	}
	switch kind {
	case manifests.KindPassword, manifests.KindMasterkey32:
		return chars(r, alnum, 32)
	case manifests.KindStrongPassword:
		return strongPassword(r)
	case manifests.KindHex32:
		return randHex(r, 32)
	case manifests.KindHex64:
		return randHex(r, 64)
	case manifests.KindBase64_32:
		b, err := randBytes(r, 32)
		return base64.StdEncoding.EncodeToString(b), err
	case manifests.KindS3AccessKey:
		return chars(r, upper+digits, 20)
	case manifests.KindS3SecretKey:
		return chars(r, alnum, 40)
	case manifests.KindRSA2048PEMBase64:
		key, err := rsa.GenerateKey(r, 2048)
		if err != nil {
			return "", fmt.Errorf("generate RSA key: %w", err)
		}
		p := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
		return base64.StdEncoding.EncodeToString(p), nil
	}
	return "", fmt.Errorf("unknown secret kind %q", kind)
}

func randBytes(r io.Reader, n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("read random bytes: %w", err)
	}
	return b, nil
}

func randHex(r io.Reader, n int) (string, error) {
	b, err := randBytes(r, n)
	return hex.EncodeToString(b), err
}

// chars returns n characters drawn uniformly from alphabet (rejection
// sampling: no modulo bias).
func chars(r io.Reader, alphabet string, n int) (string, error) {
	limit := 256 - 256%len(alphabet)
	var sb strings.Builder
	buf := make([]byte, 2*n)
	for sb.Len() < n {
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", fmt.Errorf("read random bytes: %w", err)
		}
		for _, b := range buf {
			if int(b) < limit && sb.Len() < n {
				sb.WriteByte(alphabet[int(b)%len(alphabet)])
			}
		}
	}
	return sb.String(), nil
}

// strongPassword: 24 characters with at least one upper, one lower, one
// digit and one symbol, starting with a letter or digit (drawn again until
// all hold). Flux's postBuild substitutes values into YAML that kustomize
// wrote without quotes, where a leading % (or ! #) cannot start a scalar:
// the layer fails to build ("found character that cannot start any token").
func strongPassword(r io.Reader) (string, error) {
	for range 1000 {
		s, err := chars(r, alnum+symbols, 24)
		if err != nil {
			return "", err
		}
		if strings.ContainsRune(alnum, rune(s[0])) &&
			strings.ContainsAny(s, upper) && strings.ContainsAny(s, lower) &&
			strings.ContainsAny(s, digits) && strings.ContainsAny(s, symbols) {
			return s, nil
		}
	}
	return "", fmt.Errorf("random source does not produce a strong password")
}

// Valid reports whether v is usable as a value of kind: non-empty, one line,
// and free of characters that break substitution into manifests. Values
// of another shape (set by an operator) are accepted.
func Valid(v string) bool {
	return v != "" && !strings.ContainsAny(v, "\n\r\"'`$\\")
}
