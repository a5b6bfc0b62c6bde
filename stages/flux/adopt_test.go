package flux

import "testing"

func TestCommitOf(t *testing.T) {
	for _, tc := range []struct{ rev, want string }{
		{"main@sha1:0123abcd", "0123abcd"},
		{"main/0123abcd", "0123abcd"},
		{"release/v1@sha1:89ef", "89ef"},
		{"0123abcd", "0123abcd"},
	} {
		if got := commitOf(tc.rev); got != tc.want {
			t.Errorf("commitOf(%q) = %q, want %q", tc.rev, got, tc.want)
		}
	}
}
