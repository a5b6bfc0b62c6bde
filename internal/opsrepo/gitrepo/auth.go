package gitrepo

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Auth says how to authenticate to the remote.
type Auth struct {
	// Username for HTTPS (default "git") and for SSH when the URL names no
	// user (default "git").
	Username string
	// Token is the HTTPS password or access token.
	Token string
	// SSHKeyFile is the private key for ssh:// and scp-like URLs.
	SSHKeyFile string
	// HostKeyFingerprint pins the SSH server's key (SHA256:...).
	HostKeyFingerprint string
	// KnownHostKey is the known_hosts line recorded at the first contact
	// (trust on first use); a different key is refused.
	KnownHostKey string
}

// ErrHostKey means the SSH server's host key is not the pinned one.
var ErrHostKey = errors.New("SSH host key mismatch")

// hostKeys remembers the SSH host key the server presented.
type hostKeys struct {
	mu   sync.Mutex
	line string
}

func (h *hostKeys) seen() string {
	if h == nil {
		return ""
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.line
}

// method returns the go-git auth for rawURL.
func (a Auth) method(rawURL string) (transport.AuthMethod, *hostKeys, error) {
	ep, err := transport.NewEndpoint(rawURL)
	if err != nil {
		return nil, nil, fmt.Errorf("git URL %s: %w", SafeURL(rawURL), err)
	}
	switch ep.Protocol {
	case "http", "https":
		if a.SSHKeyFile != "" {
			return nil, nil, fmt.Errorf("git URL %s: an SSH key is set for an %s URL", SafeURL(rawURL), ep.Protocol)
		}
		if a.Token == "" {
			return nil, nil, nil
		}
		user := a.Username
		if user == "" {
			user = "git"
		}
		return &githttp.BasicAuth{Username: user, Password: a.Token}, nil, nil
	case "ssh":
		if a.Token != "" {
			return nil, nil, fmt.Errorf("git URL %s: a token is set for an ssh URL", SafeURL(rawURL))
		}
		if a.SSHKeyFile == "" {
			return nil, nil, fmt.Errorf("git URL %s: ssh needs a key file (opsRepo.auth.sshKeyFile)", SafeURL(rawURL))
		}
		user := ep.User
		if user == "" {
			user = a.Username
		}
		if user == "" {
			user = "git"
		}
		pk, err := gitssh.NewPublicKeysFromFile(user, a.SSHKeyFile, "")
		if err != nil {
			return nil, nil, fmt.Errorf("SSH key %s: %w", a.SSHKeyFile, err)
		}
		hk := &hostKeys{}
		pk.HostKeyCallback = hostKeyCallback(a.HostKeyFingerprint, a.KnownHostKey, hk)
		return pk, hk, nil
	case "file":
		return nil, nil, nil
	}
	return nil, nil, fmt.Errorf("git URL %s: unsupported protocol %q", SafeURL(rawURL), ep.Protocol)
}

// hostKeyCallback accepts the pinned fingerprint, else the recorded
// known_hosts line, else (first contact) any key; it records what it saw.
func hostKeyCallback(fingerprint, known string, rec *hostKeys) ssh.HostKeyCallback {
	return func(hostname string, _ net.Addr, key ssh.PublicKey) error {
		line := knownhosts.Line([]string{knownhosts.Normalize(hostname)}, key)
		rec.mu.Lock()
		rec.line = line
		rec.mu.Unlock()
		got := ssh.FingerprintSHA256(key)
		switch {
		case fingerprint != "":
			if got != fingerprint {
				return fmt.Errorf("%w: %s presented %s, opsRepo.auth.hostKeyFingerprint pins %s", ErrHostKey, hostname, got, fingerprint)
			}
		case known != "":
			if line != strings.TrimSpace(known) {
				return fmt.Errorf("%w: %s presented %s, which differs from the key recorded at the first contact (%s)", ErrHostKey, hostname, got, known)
			}
		}
		return nil
	}
}

// SafeURL drops credentials from a URL for messages.
func SafeURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	u.User = url.User(u.User.Username())
	return u.String()
}
