package config

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"
)

// AuthorizedKeys returns the keys to authorize on the management VM: the
// configured ones, plus the public half of the installer's own key so the
// installer can always log in.
func (c *Config) AuthorizedKeys() ([]string, error) {
	var keys []string
	for _, k := range c.ManagementVM.SSH.PublicKeys {
		keys = appendKey(keys, strings.TrimSpace(k))
	}
	if f := c.ManagementVM.SSH.PrivateKeyFile; f != "" {
		p := c.ResolvePath(f)
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read SSH key %s: %w", p, err)
		}
		signer, err := ssh.ParsePrivateKey(b)
		if err != nil {
			// An encrypted key cannot be opened here; its .pub must exist.
			pub, perr := os.ReadFile(p + ".pub")
			if perr != nil {
				return nil, fmt.Errorf("derive public key from %s: %w (and no %s.pub)", p, err, p)
			}
			keys = appendKey(keys, strings.TrimSpace(string(pub)))
			return keys, nil
		}
		keys = appendKey(keys, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))))
	}
	return keys, nil
}

// appendKey adds k unless the same key (ignoring comments) is present.
func appendKey(keys []string, k string) []string {
	body := func(s string) string {
		f := strings.Fields(s)
		if len(f) < 2 {
			return s
		}
		return f[0] + " " + f[1]
	}
	for _, have := range keys {
		if body(have) == body(k) {
			return keys
		}
	}
	return append(keys, k)
}
