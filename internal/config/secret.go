package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// SecretRef points at a secret without holding it: "env:NAME" or "file:PATH".
// It is resolved only at the moment of use and never printed.
type SecretRef string

// IsZero reports whether no reference is set.
func (r SecretRef) IsZero() bool { return r == "" }

// String shows the reference itself (never the secret), so it is safe to log.
func (r SecretRef) String() string { return string(r) }

// parse splits the reference into its scheme and target.
func (r SecretRef) parse() (scheme, target string, err error) {
	s := string(r)
	scheme, target, ok := strings.Cut(s, ":")
	if !ok || target == "" || (scheme != "env" && scheme != "file") {
		return "", "", errors.New(`must be a secret reference "env:NAME" or "file:PATH", not a literal secret`)
	}
	if scheme == "env" && !validEnvName(target) {
		return "", "", fmt.Errorf("env:%s: %q is not a valid environment variable name", target, target)
	}
	return scheme, target, nil
}

// CheckForm verifies the reference is well-formed, without resolving it.
func (r SecretRef) CheckForm() error {
	_, _, err := r.parse()
	return err
}

// Check verifies the reference can be resolved, without returning the value.
func (r SecretRef) Check(baseDir string) error {
	_, err := r.Resolve(baseDir)
	return err
}

// Resolve returns the secret value. Relative file paths are taken from baseDir.
// Errors name the reference, never the value.
func (r SecretRef) Resolve(baseDir string) (string, error) {
	scheme, target, err := r.parse()
	if err != nil {
		return "", err
	}
	switch scheme {
	case "env":
		v, ok := os.LookupEnv(target)
		if !ok {
			return "", fmt.Errorf("environment variable %s is not set: export it before running opencsp", target)
		}
		if v == "" {
			return "", fmt.Errorf("environment variable %s is empty", target)
		}
		return v, nil
	default:
		p := resolvePath(baseDir, target)
		b, err := os.ReadFile(p)
		if err != nil {
			return "", fmt.Errorf("read secret file %s: %w", p, unwrapPathErr(err))
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			return "", fmt.Errorf("secret file %s is empty", p)
		}
		return v, nil
	}
}

func validEnvName(s string) bool {
	for i, c := range s {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return s != ""
}

// unwrapPathErr drops the path from *fs.PathError, which callers already name.
func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
