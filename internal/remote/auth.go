package remote

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// credentials are the keys offered to the server plus a description of where
// they came from, for error messages.
type credentials struct {
	method  ssh.AuthMethod
	source  string   // "key /path/id_ed25519" or "ssh-agent /run/..."
	offered []string // fingerprints of the public keys offered
	close   func()
}

// loadCredentials reads the key file, or connects to the agent when there is
// no key file. Problems here are configuration errors, never retried.
func loadCredentials(c Config) (*credentials, error) {
	if c.KeyFile != "" {
		return keyFileCredentials(c.KeyFile)
	}
	sock := c.AgentSocket
	if sock == "" {
		sock = os.Getenv("SSH_AUTH_SOCK")
	}
	if sock == "" {
		return nil, errors.New("ssh: no private key file configured and SSH_AUTH_SOCK is not set: " +
			"set the key file in the config or start ssh-agent and add the key (ssh-add)")
	}
	return agentCredentials(sock)
}

func keyFileCredentials(path string) (*credentials, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ssh: read private key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			return nil, fmt.Errorf("ssh: private key %s is passphrase protected; the installer does not "+
				"prompt for passphrases: load it into ssh-agent (ssh-add %s) and leave the key file unset "+
				"so the agent is used", path, path)
		}
		return nil, fmt.Errorf("ssh: parse private key %s: %w", path, err)
	}
	return &credentials{
		method:  ssh.PublicKeys(signer),
		source:  "key " + path,
		offered: []string{ssh.FingerprintSHA256(signer.PublicKey())},
		close:   func() {},
	}, nil
}

func agentCredentials(sock string) (*credentials, error) {
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("ssh: connect to ssh-agent at %s: %w", sock, err)
	}
	ag := agent.NewClient(conn)
	keys, err := ag.List()
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("ssh: list ssh-agent keys: %w", err)
	}
	if len(keys) == 0 {
		_ = conn.Close()
		return nil, fmt.Errorf("ssh: ssh-agent at %s holds no keys: add one with ssh-add", sock)
	}
	fps := make([]string, 0, len(keys))
	for _, k := range keys {
		fps = append(fps, ssh.FingerprintSHA256(k))
	}
	return &credentials{
		method:  ssh.PublicKeysCallback(ag.Signers),
		source:  "ssh-agent " + sock,
		offered: fps,
		close:   func() { _ = conn.Close() },
	}, nil
}

// AuthError means the server refused every key offered. It names the user and
// the keys so the operator can compare them with the VM's authorized_keys.
type AuthError struct {
	Addr   string
	User   string
	Source string   // key file or agent
	Keys   []string // SHA256 fingerprints offered
	Err    error
}

func (e *AuthError) Error() string {
	return fmt.Sprintf("ssh: %s@%s refused the key(s) offered by %s (%s): %v; "+
		"check that the VM's cloud-init installed this public key for user %q "+
		"(ssh-keygen -lf on the .pub file shows the fingerprint) and that %q is the right login user for the image",
		e.User, e.Addr, e.Source, strings.Join(e.Keys, ", "), e.Err, e.User, e.User)
}

func (e *AuthError) Unwrap() error { return e.Err }

// isAuthFailure recognises x/crypto/ssh's authentication failure, which has
// no exported type.
func isAuthFailure(err error) bool {
	return err != nil && strings.Contains(err.Error(), "unable to authenticate")
}
