package logging

import (
	"strings"
	"sync"
	"testing"
)

func TestRedact(t *testing.T) {
	tests := []struct {
		name    string
		secrets []string
		in      string
		want    string
	}{
		{"no secrets", nil, "token=abcd", "token=abcd"},
		{"empty secret ignored", []string{""}, "token=abcd", "token=abcd"},
		{"every occurrence", []string{"s3cr3t"}, "a s3cr3t b s3cr3ts3cr3t", "a [REDACTED] b [REDACTED][REDACTED]"},
		{"short secrets are redacted too", []string{"xyz"}, "pw xyz", "pw [REDACTED]"},
		{"longer secret wins over contained one", []string{"abc", "abcdef"}, "k=abcdef j=abc", "k=[REDACTED] j=[REDACTED]"},
		{"added in the other order", []string{"abcdef", "abc"}, "k=abcdef", "k=[REDACTED]"},
		{"multi-line secret", []string{"-----BEGIN KEY-----\nAAAA\n-----END KEY-----"}, "key: -----BEGIN KEY-----\nAAAA\n-----END KEY-----\n", "key: [REDACTED]\n"},
		{"duplicates harmless", []string{"tok1", "tok1"}, "tok1", "[REDACTED]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRedactor(tt.secrets...)
			if got := r.Redact(tt.in); got != tt.want {
				t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestRedactNilAndZeroValue(t *testing.T) {
	var nilR *Redactor
	if got := nilR.Redact("x"); got != "x" {
		t.Errorf("nil redactor changed text: %q", got)
	}
	var zero Redactor
	zero.Add("hunter2")
	if got := zero.Redact("pw=hunter2"); got != "pw=[REDACTED]" {
		t.Errorf("zero-value redactor: %q", got)
	}
}

func TestRedactorConcurrentAddAndRedact(t *testing.T) {
	r := NewRedactor()
	var wg sync.WaitGroup
	for i := range 20 {
		secret := "secret-" + strings.Repeat("x", i+1)
		wg.Go(func() {
			r.Add(secret)
			for range 100 {
				if got := r.Redact("v=" + secret); strings.Contains(got, secret) {
					t.Errorf("secret %q leaked after its own Add: %q", secret, got)
					return
				}
			}
		})
	}
	wg.Wait()
}
