package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencsp/installer/internal/testutil"
)

type expectedError = testutil.Expectation

// readExpectations groups testdata/bad/expect.txt by file.
func readExpectations(t *testing.T) map[string][]expectedError {
	t.Helper()
	out := map[string][]expectedError{}
	for _, e := range testutil.ReadExpectations(t, "testdata/bad/expect.txt") {
		out[e.File] = append(out[e.File], e)
	}
	return out
}

// TestBadCorpus loads every file in testdata/bad and checks it fails with
// exactly the errors expect.txt lists: position, field path and message.
func TestBadCorpus(t *testing.T) {
	want := readExpectations(t)
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 35 {
		t.Fatalf("corpus has %d files, want at least 35", len(files))
	}
	seen := map[string]bool{}
	for _, src := range files {
		name := filepath.Base(src)
		seen[name] = true
		t.Run(name, func(t *testing.T) {
			exp := want[name]
			if len(exp) == 0 {
				t.Fatalf("no expectation for %s in expect.txt", name)
			}
			dir := setupCorpusDir(t)
			path := copyInto(t, dir, src)
			cfg, err := Load(path)
			if err == nil {
				t.Fatalf("Load succeeded (%+v), want %d error(s)", cfg, len(exp))
			}
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("Load returned %T (%v), want ErrorList", err, err)
			}
			if cfg != nil {
				t.Errorf("Load returned a config together with errors")
			}
			used := make([]bool, len(list))
			for _, e := range exp {
				prefix := fmt.Sprintf("%s:%d", path, e.Line)
				found := false
				for i, got := range list {
					s := got.Error()
					if used[i] || got.Field != e.Field || got.Pos.Line != e.Line ||
						!strings.HasPrefix(s, prefix) || !strings.Contains(s, e.Substring) {
						continue
					}
					if e.Field != "" && !strings.Contains(s, ": "+e.Field+": ") {
						t.Errorf("error %q does not show field %s", s, e.Field)
					}
					used[i], found = true, true
					break
				}
				if !found {
					t.Errorf("missing error %s:%d field %q containing %q", name, e.Line, e.Field, e.Substring)
				}
			}
			if len(list) != len(exp) {
				t.Errorf("got %d errors, expect.txt lists %d", len(list), len(exp))
			}
			if t.Failed() {
				t.Logf("all errors:\n%s", err)
			}
		})
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("expect.txt names %s, which is not in testdata/bad", name)
		}
	}
}

// TestGoodCorpus loads every file in testdata/good: all must pass.
func TestGoodCorpus(t *testing.T) {
	files, err := filepath.Glob("testdata/good/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	profilesSeen := map[string]bool{}
	for _, src := range files {
		t.Run(filepath.Base(src), func(t *testing.T) {
			dir := setupCorpusDir(t)
			cfg, err := Load(copyInto(t, dir, src))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			profilesSeen[cfg.Profile] = true
			if cfg.BaseDir() != dir {
				t.Errorf("BaseDir = %q, want %q", cfg.BaseDir(), dir)
			}
			keys, err := cfg.AuthorizedKeys()
			if err != nil || len(keys) == 0 {
				t.Errorf("AuthorizedKeys = %v, %v", keys, err)
			}
		})
	}
	for _, p := range []string{"standalone", "cluster", "openstack", "appliance", "minimal"} {
		if !profilesSeen[p] {
			t.Errorf("no good config uses profile %s", p)
		}
	}
}
