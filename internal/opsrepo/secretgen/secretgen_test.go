package secretgen

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"regexp"
	"strings"
	"testing"

	"github.com/opencsp/installer/manifests"
)

func TestGenerate(t *testing.T) {
	cases := []struct {
		kind manifests.KeyKind
		re   string
	}{
		{manifests.KindPassword, `^[A-Za-z0-9]{32}$`},
		{manifests.KindMasterkey32, `^[A-Za-z0-9]{32}$`},
		{manifests.KindStrongPassword, `^[A-Za-z0-9\-_.!#%+]{24}$`},
		{manifests.KindHex32, `^[0-9a-f]{64}$`},
		{manifests.KindHex64, `^[0-9a-f]{128}$`},
		{manifests.KindBase64_32, `^[A-Za-z0-9+/]{43}=$`},
		{manifests.KindS3AccessKey, `^[A-Z0-9]{20}$`},
		{manifests.KindS3SecretKey, `^[A-Za-z0-9]{40}$`},
		{manifests.KindRSA2048PEMBase64, `^[A-Za-z0-9+/]+=*$`},
	}
	for _, tc := range cases {
		t.Run(string(tc.kind), func(t *testing.T) {
			seen := map[string]bool{}
			n := 20
			if tc.kind == manifests.KindRSA2048PEMBase64 {
				n = 2
			}
			for range n {
				v, err := Generate(tc.kind, nil)
				if err != nil {
					t.Fatal(err)
				}
				if !regexp.MustCompile(tc.re).MatchString(v) || !Valid(v) {
					t.Fatalf("%q does not match %s", v, tc.re)
				}
				if seen[v] {
					t.Fatalf("repeated value %q", v)
				}
				seen[v] = true
				if tc.kind == manifests.KindStrongPassword {
					for _, class := range []string{upper, lower, digits, symbols} {
						if !strings.ContainsAny(v, class) {
							t.Errorf("%q lacks one of %q", v, class)
						}
					}
				}
				if tc.kind == manifests.KindRSA2048PEMBase64 {
					p, _ := base64.StdEncoding.DecodeString(v)
					block, _ := pem.Decode(p)
					if block == nil || block.Type != "RSA PRIVATE KEY" {
						t.Fatalf("not a PKCS#1 PEM: %q", p)
					}
					k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
					if err != nil || k.N.BitLen() != 2048 {
						t.Fatalf("key: %v", err)
					}
				}
			}
		})
	}
	// Every kind used by the manifests is known.
	for _, s := range manifests.Secrets() {
		for _, k := range s.Keys {
			if _, err := Generate(k.Kind, nil); err != nil {
				t.Errorf("%s/%s: %v", s.Name, k.Name, err)
			}
		}
	}
	if _, err := Generate("nope", nil); err == nil {
		t.Error("unknown kind accepted")
	}
}

func TestUniformAndShortReader(t *testing.T) {
	// A reader of 255s is rejected entirely for a 62-letter alphabet
	// (248 is the limit), so generation fails instead of looping forever.
	if _, err := Generate(manifests.KindPassword, bytes.NewReader(bytes.Repeat([]byte{255}, 64))); err == nil {
		t.Error("exhausted reader gave a value")
	}
	v, err := Generate(manifests.KindPassword, bytes.NewReader(bytes.Repeat([]byte{0, 255}, 64)))
	if err != nil || v != strings.Repeat("A", 32) {
		t.Errorf("rejection sampling: %q %v", v, err)
	}
}

func TestValid(t *testing.T) {
	for v, want := range map[string]bool{"abc": true, "": false, "a$b": false, "a\nb": false, `a"b`: false} {
		if Valid(v) != want {
			t.Errorf("Valid(%q) = %v", v, !want)
		}
	}
}
