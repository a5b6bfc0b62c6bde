package sopsage

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/getsops/sops/v3"
	"github.com/getsops/sops/v3/aes"
	sopsagekey "github.com/getsops/sops/v3/age"
	sopsconfig "github.com/getsops/sops/v3/config"
	sopsyaml "github.com/getsops/sops/v3/stores/yaml"
	sopsversion "github.com/getsops/sops/v3/version"
)

// EncryptedRegex selects the keys whose values are encrypted: the data of a
// Kubernetes Secret (Flux's recommendation); metadata stays readable.
const EncryptedRegex = "^(data|stringData)$"

// ErrNotRecipient means a file is not encrypted for the given key.
var ErrNotRecipient = errors.New("not encrypted for this age key")

// Metadata describes how a SOPS file is encrypted.
type Metadata struct {
	// Recipients are the age public keys of the file, sorted.
	Recipients []string
	// OtherKeys counts master keys that are not age (PGP, KMS, ...).
	OtherKeys int
	// KeyGroups is the number of key groups (Shamir); this package
	// writes one.
	KeyGroups      int
	EncryptedRegex string
}

// Matches reports whether the file is encrypted exactly as Encrypt would
// encrypt it for recipient.
func (m Metadata) Matches(recipient string) bool {
	return m.KeyGroups == 1 && m.OtherKeys == 0 && slices.Equal(m.Recipients, []string{recipient}) &&
		m.EncryptedRegex == EncryptedRegex
}

func store() *sopsyaml.Store { return sopsyaml.NewStore(&sopsconfig.YAMLStoreConfig{Indent: 2}) }

// Normalize parses a plaintext YAML document and emits it the way Decrypt
// returns plaintext, so the two can be compared byte for byte.
func Normalize(plain []byte) ([]byte, error) {
	s := store()
	branches, err := s.LoadPlainFile(plain)
	if err != nil {
		return nil, fmt.Errorf("parse YAML: %w", err)
	}
	return s.EmitPlainFile(branches)
}

// Encrypt returns plain (a YAML document) SOPS-encrypted for the age
// recipient, with a fresh data key, IVs and lastmodified time now.
func Encrypt(plain []byte, recipient string, now time.Time) ([]byte, error) {
	s := store()
	branches, err := s.LoadPlainFile(plain)
	if err != nil {
		return nil, fmt.Errorf("parse YAML: %w", err)
	}
	if len(branches) != 1 {
		return nil, fmt.Errorf("want one YAML document, got %d", len(branches))
	}
	if s.HasSopsTopLevelKey(branches[0]) {
		return nil, errors.New("document already has a sops key")
	}
	mk, err := sopsagekey.MasterKeyFromRecipient(recipient)
	if err != nil {
		return nil, fmt.Errorf("age recipient %s: %w", recipient, err)
	}
	tree := sops.Tree{
		Branches: branches,
		Metadata: sops.Metadata{
			EncryptedRegex: EncryptedRegex,
			Version:        sopsversion.Version,
			KeyGroups:      []sops.KeyGroup{{mk}},
		},
	}
	dataKey, errs := tree.GenerateDataKey()
	if len(errs) > 0 {
		return nil, fmt.Errorf("encrypt data key: %w", errors.Join(errs...))
	}
	cipher := aes.NewCipher()
	mac, err := tree.Encrypt(dataKey, cipher)
	if err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	// As sops' own EncryptTree: the MAC is encrypted with the timestamp as
	// additional data.
	tree.Metadata.LastModified = now.UTC().Truncate(time.Second)
	tree.Metadata.MessageAuthenticationCode, err = cipher.Encrypt(mac, dataKey, tree.Metadata.LastModified.Format(time.RFC3339))
	if err != nil {
		return nil, fmt.Errorf("encrypt MAC: %w", err)
	}
	out, err := s.EmitEncryptedFile(tree)
	if err != nil {
		return nil, fmt.Errorf("write SOPS file: %w", err)
	}
	return out, nil
}

// Inspect reads the metadata of a SOPS file without decrypting it.
func Inspect(enc []byte) (Metadata, error) {
	tree, err := store().LoadEncryptedFile(enc)
	if err != nil {
		return Metadata{}, fmt.Errorf("not a SOPS file: %w", err)
	}
	return metadata(tree), nil
}

func metadata(tree sops.Tree) Metadata {
	m := Metadata{KeyGroups: len(tree.Metadata.KeyGroups), EncryptedRegex: tree.Metadata.EncryptedRegex}
	for _, g := range tree.Metadata.KeyGroups {
		for _, k := range g {
			if ak, ok := k.(*sopsagekey.MasterKey); ok {
				m.Recipients = append(m.Recipients, ak.Recipient)
			} else {
				m.OtherKeys++
			}
		}
	}
	slices.Sort(m.Recipients)
	return m
}

// Decrypt opens a SOPS YAML file with key, verifies its MAC and returns the
// plaintext (in Normalize's form) and the file's metadata. A file that is
// not encrypted for key fails with ErrNotRecipient.
func Decrypt(enc []byte, key *Key) ([]byte, Metadata, error) {
	s := store()
	tree, err := s.LoadEncryptedFile(enc)
	if err != nil {
		return nil, Metadata{}, fmt.Errorf("not a SOPS file: %w", err)
	}
	meta := metadata(tree)
	if meta.KeyGroups != 1 {
		return nil, meta, fmt.Errorf("%d key groups (Shamir) are not supported", meta.KeyGroups)
	}
	var dataKey []byte
	for _, k := range tree.Metadata.KeyGroups[0] {
		ak, ok := k.(*sopsagekey.MasterKey)
		if !ok || ak.Recipient != key.Recipient() {
			continue
		}
		sopsagekey.ParsedIdentities{key.identity()}.ApplyToMasterKey(ak)
		if dataKey, err = ak.Decrypt(); err != nil {
			return nil, meta, fmt.Errorf("decrypt data key: %w", err)
		}
		break
	}
	if dataKey == nil {
		return nil, meta, fmt.Errorf("%w (recipient %s; file recipients: %s)", ErrNotRecipient, key.Recipient(), strings.Join(meta.Recipients, ", "))
	}
	cipher := aes.NewCipher()
	mac, err := tree.Decrypt(dataKey, cipher)
	if err != nil {
		return nil, meta, fmt.Errorf("decrypt: %w", err)
	}
	want, err := cipher.Decrypt(tree.Metadata.MessageAuthenticationCode, dataKey, tree.Metadata.LastModified.Format(time.RFC3339))
	if err != nil {
		return nil, meta, fmt.Errorf("decrypt MAC: %w", err)
	}
	if want != mac {
		return nil, meta, errors.New("MAC mismatch: the file was modified after encryption")
	}
	plain, err := s.EmitPlainFile(tree.Branches)
	if err != nil {
		return nil, meta, fmt.Errorf("write plaintext: %w", err)
	}
	return plain, meta, nil
}
