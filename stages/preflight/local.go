package preflight

import (
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/infra"
)

// secretSink receives resolved secrets so logs can redact them.
type secretSink interface{ Add(secret string) }

// localChecks verifies what the installer needs on this machine: secrets
// resolvable, keys readable. Resolved secrets are handed to redact.
func localChecks(cfg *config.Config, redact secretSink) infra.Problems {
	var ps infra.Problems
	add := func(check, format string, args ...any) {
		ps = append(ps, infra.Problem{Check: check, Msg: fmt.Sprintf(format, args...)})
	}
	secret := func(check string, r config.SecretRef) {
		if r.IsZero() {
			return
		}
		v, err := cfg.Secret(r)
		if err != nil {
			add(check, "%s: %v", r, err)
			return
		}
		redact.Add(v)
	}
	if p := cfg.Infrastructure.Proxmox; p != nil && cfg.Infrastructure.Provider == "proxmox" {
		secret("proxmox token", p.TokenSecret)
	}
	if o := cfg.Infrastructure.OpenStack; o != nil && cfg.Infrastructure.Provider == "openstack" {
		secret("openstack credential", o.ApplicationCredentialSecret)
	}
	secret("ops repo token", cfg.OpsRepo.Auth.Token)

	sshCfg := cfg.ManagementVM.SSH
	if sshCfg.PrivateKeyFile != "" {
		if err := checkPrivateKey(cfg.ResolvePath(sshCfg.PrivateKeyFile)); err != nil {
			add("ssh key", "%v", err)
		}
	} else if err := checkAgent(); err != nil {
		add("ssh agent", "%v", err)
	}
	if _, err := cfg.AuthorizedKeys(); err != nil {
		add("ssh public key", "%v", err)
	}
	if f := cfg.OpsRepo.Auth.SSHKeyFile; f != "" {
		if err := checkPrivateKey(cfg.ResolvePath(f)); err != nil {
			add("ops repo key", "%v", err)
		}
	}
	return ps
}

func checkPrivateKey(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("cannot read %s: %w", path, err)
	}
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s is readable by others (mode %04o); run: chmod 600 %s", path, st.Mode().Perm(), path)
	}
	if _, err := ssh.ParseRawPrivateKey(b); err != nil {
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			return fmt.Errorf("%s is passphrase-protected; load it into ssh-agent and leave privateKeyFile empty", path)
		}
		return fmt.Errorf("%s is not an SSH private key: %w", path, err)
	}
	return nil
}

func checkAgent() error {
	sock := os.Getenv("SSH_AUTH_SOCK")
	if sock == "" {
		return errors.New("no privateKeyFile set and SSH_AUTH_SOCK is empty: start ssh-agent or set managementVM.ssh.privateKeyFile")
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return fmt.Errorf("ssh-agent at %s: %w", sock, err)
	}
	defer conn.Close()
	keys, err := agent.NewClient(conn).List()
	if err != nil {
		return fmt.Errorf("ssh-agent at %s: list keys: %w", sock, err)
	}
	if len(keys) == 0 {
		return fmt.Errorf("ssh-agent at %s holds no keys: ssh-add your key", sock)
	}
	return nil
}
