// Package logging provides secret redaction and the install log: a slog
// handler that scrubs registered secrets from every record before it is
// written to <state-dir>/install.log.
package logging

import (
	"cmp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Redacted replaces every secret in redacted text.
const Redacted = "[REDACTED]"

// Redactor replaces known secret values in text. Stages register secrets as
// soon as they resolve them. The zero value is ready to use and it is safe
// for concurrent use.
//
// Every non-empty secret is redacted, however short: a leaked credential is
// worse than an over-redacted log line, and rejecting trivially short secrets
// is the job of config validation, not of the logger.
type Redactor struct {
	mu       sync.Mutex // serialises Add
	secrets  map[string]struct{}
	replacer atomic.Pointer[strings.Replacer] // nil while no secrets; read lock-free
}

// NewRedactor returns a Redactor that already knows secrets.
func NewRedactor(secrets ...string) *Redactor {
	r := &Redactor{}
	for _, s := range secrets {
		r.Add(s)
	}
	return r
}

// Add registers a secret. Empty strings are ignored.
func (r *Redactor) Add(secret string) {
	if secret == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.secrets[secret]; ok {
		return
	}
	if r.secrets == nil {
		r.secrets = map[string]struct{}{}
	}
	r.secrets[secret] = struct{}{}

	// Longest first: strings.Replacer tries old strings in argument order at
	// each position, so a secret that contains another is replaced whole.
	all := make([]string, 0, len(r.secrets))
	for s := range r.secrets {
		all = append(all, s)
	}
	slices.SortFunc(all, func(a, b string) int {
		return cmp.Or(cmp.Compare(len(b), len(a)), strings.Compare(a, b))
	})
	pairs := make([]string, 0, 2*len(all))
	for _, s := range all {
		pairs = append(pairs, s, Redacted)
	}
	r.replacer.Store(strings.NewReplacer(pairs...))
}

// Redact returns s with every registered secret replaced by [REDACTED].
// A nil Redactor redacts nothing.
func (r *Redactor) Redact(s string) string {
	if r == nil || s == "" {
		return s
	}
	rep := r.replacer.Load()
	if rep == nil {
		return s
	}
	return rep.Replace(s)
}
