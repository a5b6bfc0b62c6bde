// Package sopsage encrypts and decrypts YAML documents in the SOPS format
// with a single age (X25519) key, the way Flux's kustomize-controller
// decrypts them: only the values under data/stringData are encrypted.
package sopsage

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	"filippo.io/age"
)

// Key is an age X25519 identity (private key). Its String form is the
// public recipient, so printing a Key never leaks the private half.
type Key struct {
	id *age.X25519Identity
}

// GenerateKey returns a new random key.
func GenerateKey() (*Key, error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, fmt.Errorf("generate age key: %w", err)
	}
	return &Key{id: id}, nil
}

// ParseKey reads an age key file (age-keygen format: "#" comments and one
// AGE-SECRET-KEY-1... line). Exactly one identity is required.
func ParseKey(data []byte) (*Key, error) {
	var found []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		found = append(found, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read age key: %w", err)
	}
	switch len(found) {
	case 0:
		return nil, errors.New("no age identity (AGE-SECRET-KEY-1...) found")
	case 1:
	default:
		return nil, fmt.Errorf("%d lines that are not comments; want exactly one AGE-SECRET-KEY-1... line", len(found))
	}
	id, err := age.ParseX25519Identity(found[0])
	if err != nil {
		// The parser's message may quote the input: keep it out.
		return nil, errors.New("malformed age identity: want an AGE-SECRET-KEY-1... line as written by age-keygen")
	}
	return &Key{id: id}, nil
}

// Recipient is the public key (age1...) files are encrypted to.
func (k *Key) Recipient() string { return k.id.Recipient().String() }

// Secret is the private key (AGE-SECRET-KEY-1...). Register it with the log
// redactor before logging anything near it.
func (k *Key) Secret() string { return k.id.String() }

// String returns the recipient: formatting a Key is safe.
func (k *Key) String() string { return k.Recipient() }

// File is the key in age-keygen's file format, as SOPS and Flux read it.
func (k *Key) File(created time.Time) []byte {
	return fmt.Appendf(nil, "# created: %s\n# public key: %s\n%s\n",
		created.UTC().Format(time.RFC3339), k.Recipient(), k.Secret())
}

func (k *Key) identity() *age.X25519Identity { return k.id }
