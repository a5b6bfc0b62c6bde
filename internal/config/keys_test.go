package config

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// keyBody is "type base64" without the comment.
func keyBody(line string) string {
	f := strings.Fields(line)
	return f[0] + " " + f[1]
}

func TestAuthorizedKeys(t *testing.T) {
	dir := setupCorpusDir(t)
	own := readFile(t, filepath.Join(dir, "id_ed25519.pub"))
	ownLine := strings.TrimSpace(string(own))
	other := writeKeyPair(t, filepath.Join(t.TempDir(), "other"), "colleague@example")

	load := func(keys ...string) []string {
		t.Helper()
		doc := baseYAML
		if len(keys) > 0 {
			doc = edit(t, doc, "    privateKeyFile: id_ed25519\n", "    privateKeyFile: id_ed25519\n    publicKeys:\n      - \""+strings.Join(keys, "\"\n      - \"")+"\"\n")
		}
		cfg, errs := loadYAML(t, dir, doc)
		if errs != nil {
			t.Fatal(errs)
		}
		got, err := cfg.AuthorizedKeys()
		if err != nil {
			t.Fatal(err)
		}
		return got
	}

	// Derived from the private key alone.
	got := load()
	if len(got) != 1 || keyBody(got[0]) != keyBody(ownLine) {
		t.Errorf("derived keys = %q, want the public half %q", got, ownLine)
	}
	// Configured keys come first; the derived key is added.
	got = load(other)
	if len(got) != 2 || got[0] != other || keyBody(got[1]) != keyBody(ownLine) {
		t.Errorf("keys = %q", got)
	}
	// The same key with another comment is not added twice.
	renamed := keyBody(ownLine) + " laptop"
	got = load(other, renamed)
	if !slices.Equal(got, []string{other, renamed}) {
		t.Errorf("keys = %q, want the configured ones only", got)
	}
	// Keys listed twice in the file are authorized once.
	got = load(other, other+" again", ownLine)
	if !slices.Equal(got, []string{other, ownLine}) {
		t.Errorf("keys = %q, want duplicates removed", got)
	}
}

func TestAuthorizedKeysEncryptedKey(t *testing.T) {
	dir := setupCorpusDir(t)
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "enc", []byte("passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "id_enc")
	if err := os.WriteFile(key, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := edit(t, baseYAML, "privateKeyFile: id_ed25519", "privateKeyFile: id_enc")
	// An encrypted key passes validation (the agent or a prompt opens it),
	cfg, errs := loadYAML(t, dir, doc)
	if errs != nil {
		t.Fatal(errs)
	}
	// but its public half must come from the .pub file.
	if _, err := cfg.AuthorizedKeys(); err == nil || !strings.Contains(err.Error(), "id_enc.pub") {
		t.Errorf("AuthorizedKeys without .pub: err = %v", err)
	}
	sshPub, _ := ssh.NewPublicKey(priv.Public())
	pubLine := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " enc"
	if err := os.WriteFile(key+".pub", []byte(pubLine+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := cfg.AuthorizedKeys()
	if err != nil || !slices.Equal(got, []string{pubLine}) {
		t.Errorf("AuthorizedKeys = %q, %v", got, err)
	}
}

func TestAuthorizedKeysErrorsAndAgent(t *testing.T) {
	dir := setupCorpusDir(t)
	cfg := &Config{baseDir: dir}
	cfg.ManagementVM.SSH.PrivateKeyFile = "gone"
	if _, err := cfg.AuthorizedKeys(); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "gone")) {
		t.Errorf("missing key: err = %v", err)
	}
	// With an agent there is no key file: only the configured keys.
	t.Setenv("SSH_AUTH_SOCK", "/run/agent.sock")
	other := writeKeyPair(t, filepath.Join(t.TempDir(), "other"), "c")
	cfg, errs := loadYAML(t, dir, edit(t, baseYAML, "    privateKeyFile: id_ed25519\n", "    publicKeys: [\""+other+"\"]\n"))
	if errs != nil {
		t.Fatal(errs)
	}
	if got, err := cfg.AuthorizedKeys(); err != nil || !slices.Equal(got, []string{other}) {
		t.Errorf("AuthorizedKeys = %q, %v", got, err)
	}
}
