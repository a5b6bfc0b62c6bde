// Package remote runs commands on and copies files to a machine over SSH and
// SFTP: the management VM the installer provisions. Connections retry while
// the VM boots, host keys are pinned, and non-root users work through
// non-interactive sudo.
package remote

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/opencsp/installer/internal/logging"
)

// Config says how to reach and log in to one machine.
type Config struct {
	Host string // IP address or DNS name
	Port int    // default 22
	User string

	// KeyFile is an unencrypted private key (OpenSSH or PEM). Empty means
	// use the ssh-agent at AgentSocket.
	KeyFile string
	// AgentSocket is the ssh-agent socket used when KeyFile is empty;
	// default $SSH_AUTH_SOCK.
	AgentSocket string

	// Sudo runs commands, privileged uploads and reads through `sudo -n`
	// when User is not root (cloud images log in as a default user).
	Sudo bool

	HostKey HostKeyPolicy

	// ConnectTimeout bounds the whole connect-with-retries (the VM may still
	// be booting); default 5m. The context may end it sooner.
	ConnectTimeout time.Duration
	// AttemptTimeout bounds one TCP connect + SSH handshake; default 15s.
	AttemptTimeout time.Duration
	// AuthRetryWindow is how long "unable to authenticate" is retried after
	// it was first seen: cloud-init may not have installed the key yet.
	// Default 30s; a negative value disables retries.
	AuthRetryWindow time.Duration
	// Backoff between attempts: starts at InitialBackoff (default 500ms),
	// doubles up to MaxBackoff (default 10s), with jitter.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration

	// KeepAlive sends an SSH keepalive this often so NAT and firewalls do
	// not drop a connection idle during a long, quiet command (the K3s
	// install); default 30s, negative disables.
	KeepAlive time.Duration

	// Logger receives connection attempts and command output (debug level).
	// Default: discard.
	Logger *slog.Logger
	// Redactor, when set, scrubs secrets from commands and stderr quoted in
	// errors (errors end up on the terminal, not only in the redacted log).
	Redactor *logging.Redactor
}

// Defaults for the zero values of Config.
const (
	DefaultPort            = 22
	DefaultConnectTimeout  = 5 * time.Minute
	DefaultAttemptTimeout  = 15 * time.Second
	DefaultAuthRetryWindow = 30 * time.Second
	DefaultInitialBackoff  = 500 * time.Millisecond
	DefaultMaxBackoff      = 10 * time.Second
	DefaultKeepAlive       = 30 * time.Second
)

func (c Config) withDefaults() Config {
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.AttemptTimeout <= 0 {
		c.AttemptTimeout = DefaultAttemptTimeout
	}
	if c.AuthRetryWindow == 0 {
		c.AuthRetryWindow = DefaultAuthRetryWindow
	}
	if c.InitialBackoff <= 0 {
		c.InitialBackoff = DefaultInitialBackoff
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.MaxBackoff < c.InitialBackoff {
		c.MaxBackoff = c.InitialBackoff
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	if c.Host == "" {
		return fmt.Errorf("ssh config: host is empty")
	}
	if c.User == "" {
		return fmt.Errorf("ssh config: user is empty")
	}
	if c.Port < 0 || c.Port > 65535 {
		return fmt.Errorf("ssh config: port %d out of range", c.Port)
	}
	return nil
}

// Addr is host:port.
func (c Config) Addr() string {
	port := c.Port
	if port == 0 {
		port = DefaultPort
	}
	return net.JoinHostPort(c.Host, strconv.Itoa(port))
}

// useSudo reports whether privileged operations go through sudo.
func (c Config) useSudo() bool { return c.Sudo && c.User != "root" }

func (c Config) redact(s string) string {
	if c.Redactor == nil {
		return s
	}
	return c.Redactor.Redact(s)
}
