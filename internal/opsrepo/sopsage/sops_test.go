package sopsage

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/getsops/sops/v3/decrypt"
)

const plain = `apiVersion: v1
kind: Secret
metadata:
  name: demo
  namespace: flux-system
type: Opaque
stringData:
  PASSWORD: "hunter2hunter2"
  OTHER: "0123"
`

func key(t *testing.T) *Key {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestRoundTrip(t *testing.T) {
	k := key(t)
	enc, err := Encrypt([]byte(plain), k.Recipient(), time.Unix(1700000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	for _, leak := range []string{"hunter2hunter2", "0123"} {
		if bytes.Contains(enc, []byte(leak)) {
			t.Errorf("ciphertext contains %q:\n%s", leak, enc)
		}
	}
	for _, want := range []string{"name: demo", "namespace: flux-system", "encrypted_regex: ^(data|stringData)$", "recipient: " + k.Recipient(), "lastmodified: \"2023-11-14T22:13:20Z\"", "ENC[AES256_GCM,"} {
		if !bytes.Contains(enc, []byte(want)) {
			t.Errorf("ciphertext lacks %q:\n%s", want, enc)
		}
	}
	got, meta, err := Decrypt(enc, k)
	if err != nil {
		t.Fatal(err)
	}
	norm, err := Normalize([]byte(plain))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, norm) {
		t.Errorf("decrypted\n%s\nwant\n%s", got, norm)
	}
	if !meta.Matches(k.Recipient()) || meta.Matches(key(t).Recipient()) {
		t.Errorf("metadata %+v", meta)
	}
	if m, err := Inspect(enc); err != nil || !m.Matches(k.Recipient()) {
		t.Errorf("Inspect: %+v %v", m, err)
	}

	// The public sops API (as kustomize-controller uses) agrees.
	t.Setenv("SOPS_AGE_KEY", k.Secret())
	viaSops, err := decrypt.Data(enc, "yaml")
	if err != nil {
		t.Fatal(err)
	}
	if viaSops, err = Normalize(viaSops); err != nil || !bytes.Equal(viaSops, norm) {
		t.Errorf("sops decrypt\n%s\nwant\n%s", viaSops, norm)
	}
}

func TestDecryptErrors(t *testing.T) {
	k := key(t)
	enc, err := Encrypt([]byte(plain), k.Recipient(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Decrypt(enc, key(t)); !errors.Is(err, ErrNotRecipient) {
		t.Errorf("other key: %v", err)
	}
	// Tamper with the (unencrypted, MAC-covered) metadata name.
	tampered := bytes.Replace(enc, []byte("name: demo"), []byte("name: evil"), 1)
	if _, _, err := Decrypt(tampered, k); err == nil || !strings.Contains(err.Error(), "MAC") {
		t.Errorf("tampered: %v", err)
	}
	if _, _, err := Decrypt([]byte(plain), k); err == nil {
		t.Error("plaintext decrypted")
	}
	if _, err := Encrypt(enc, k.Recipient(), time.Now()); err == nil {
		t.Error("encrypted twice")
	}
	if _, err := Encrypt([]byte(plain), "age1nope", time.Now()); err == nil {
		t.Error("bad recipient accepted")
	}
}

func TestParseKey(t *testing.T) {
	k := key(t)
	file := k.File(time.Unix(0, 0))
	back, err := ParseKey(file)
	if err != nil {
		t.Fatal(err)
	}
	if back.Secret() != k.Secret() || back.Recipient() != k.Recipient() || back.String() != k.Recipient() {
		t.Error("round trip changed the key")
	}
	for name, in := range map[string]string{
		"empty":     "# nothing\n",
		"two":       k.Secret() + "\n" + k.Secret() + "\n",
		"malformed": "AGE-SECRET-KEY-1NOTAKEY\n",
	} {
		_, err := ParseKey([]byte(in))
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), "AGE-SECRET-KEY-1NOTAKEY") {
			t.Errorf("%s: error quotes the input: %v", name, err)
		}
	}
}
