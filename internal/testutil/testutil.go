// Package testutil holds fixtures shared by tests of several packages.
// It is imported only from _test.go files.
package testutil

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// Conventions of internal/config/testdata: a config refers to its key as
// "privateKeyFile: id_ed25519" (next to the config) and to its secret as
// "env:OPENCSP_TEST_PVE_SECRET". Nothing else on the machine is used.
const (
	SecretEnv   = "OPENCSP_TEST_PVE_SECRET"
	SecretValue = "s3cret"
)

// CorpusDir makes a temporary directory holding an unencrypted ed25519 key
// pair (id_ed25519, id_ed25519.pub), sets OPENCSP_TEST_PVE_SECRET and unsets
// SSH_AUTH_SOCK for the test. Copy a corpus file into it and load it there.
func CorpusDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	WriteKeyPair(t, filepath.Join(dir, "id_ed25519"), "opencsp-test")
	t.Setenv(SecretEnv, SecretValue)
	t.Setenv("SSH_AUTH_SOCK", "")
	return dir
}

// WriteKeyPair writes an unencrypted OpenSSH ed25519 private key at path
// (0600) and its public half at path+".pub"; it returns the authorized_keys line.
func WriteKeyPair(t testing.TB, path, comment string) string {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " " + comment
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".pub", []byte(line+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return line
}

// CopyInto copies a file into dir and returns the new path.
func CopyInto(t testing.TB, dir, src string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, filepath.Base(src))
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

// Expectation is one line of internal/config/testdata/bad/expect.txt.
type Expectation struct {
	File, Field, Substring string
	Line                   int
}

// ReadExpectations parses an expect.txt table: FILE<TAB>LINE<TAB>FIELD<TAB>SUBSTRING,
// '#' comments and blank lines ignored; FIELD "-" means a file-level error.
func ReadExpectations(t testing.TB, path string) []Expectation {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []Expectation
	for n, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 4 {
			t.Fatalf("%s:%d: want 4 tab-separated columns, got %d", path, n+1, len(f))
		}
		e := Expectation{File: f[0], Field: f[2], Substring: f[3]}
		if e.Line, err = strconv.Atoi(f[1]); err != nil || e.Line < 1 {
			t.Fatalf("%s:%d: bad line number %q", path, n+1, f[1])
		}
		if e.Substring == "" {
			t.Fatalf("%s:%d: empty substring", path, n+1)
		}
		if e.Field == "-" {
			e.Field = ""
		}
		out = append(out, e)
	}
	return out
}
