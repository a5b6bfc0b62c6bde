package config

import (
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestErrorFormat(t *testing.T) {
	for _, tc := range []struct {
		e    FieldError
		want string
	}{
		{FieldError{Pos: Pos{File: "opencsp.yaml", Line: 14, Col: 5}, Field: "infrastructure.proxmox.endpoint", Msg: "must be an https URL"},
			"opencsp.yaml:14:5: infrastructure.proxmox.endpoint: must be an https URL"},
		{FieldError{Pos: Pos{File: "opencsp.yaml", Line: 3}, Msg: "YAML syntax error: x"}, "opencsp.yaml:3: YAML syntax error: x"},
		{FieldError{Pos: Pos{File: "opencsp.yaml"}, Msg: "cannot read"}, "opencsp.yaml: cannot read"},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
	list := ErrorList{
		{Pos: Pos{File: "b", Line: 1}},
		{Pos: Pos{File: "a", Line: 9, Col: 2}},
		{Pos: Pos{File: "a", Line: 9, Col: 1}},
		{Pos: Pos{File: "a", Line: 2}},
	}.sorted()
	var order []string
	for _, e := range list {
		order = append(order, e.Pos.String())
	}
	if got := strings.Join(order, " "); got != "a:2 a:9:1 a:9:2 b:1" {
		t.Errorf("sorted = %s", got)
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "opencsp.yaml")
	_, err := Load(path)
	var list ErrorList
	if !errors.As(err, &list) || len(list) != 1 {
		t.Fatalf("err = %#v", err)
	}
	if s := err.Error(); !strings.HasPrefix(s, path+": cannot read config file: no such file or directory") || !strings.Contains(s, "opencsp config init") {
		t.Errorf("err = %q", s)
	}
}

func TestParseUsesGivenName(t *testing.T) {
	_, err := Parse("given/name.yaml", t.TempDir(), []byte("apiVersion: 1\n"))
	if err == nil || !strings.HasPrefix(err.Error(), "given/name.yaml:1:1: apiVersion: must be a string") {
		t.Errorf("err = %v", err)
	}
}

func TestValidBranch(t *testing.T) {
	for b, want := range map[string]bool{
		"main": true, "release/2025.1": true, "feature-x_y": true,
		"": false, "-x": false, "/x": false, "x/": false, "x.lock": false, "x.": false, "a..b": false,
		"a@{b": false, "a//b": false, "a b": false, "a~b": false, "a^b": false, "a:b": false, "a?b": false,
		"a*b": false, "a[b": false, "a\\b": false, "a\x7fb": false, "a\tb": false,
	} {
		if got := validBranch(b); got != want {
			t.Errorf("validBranch(%q) = %v", b, got)
		}
	}
}

// TestCorpusIsHermetic keeps the testdata usable by the CLI test, which
// copies each file next to an id_ed25519 key pair, sets only
// OPENCSP_TEST_PVE_SECRET and unsets SSH_AUTH_SOCK.
func TestCorpusIsHermetic(t *testing.T) {
	files, _ := filepath.Glob("testdata/*/*.yaml")
	envRE := regexp.MustCompile(`env:([A-Za-z0-9_-]+)`)
	for _, f := range files {
		b := readFile(t, f)
		for _, m := range envRE.FindAllStringSubmatch(string(b), -1) {
			if m[1] != testSecretEnv && !(filepath.Base(f) == "missing-env-secret.yaml" && m[1] == "OPENCSP_TEST_UNSET_SECRET") &&
				!(filepath.Base(f) == "bad-env-name.yaml") {
				t.Errorf("%s refers to env:%s", f, m[1])
			}
		}
		for _, bad := range []string{"~/", ": /", "- /", "file:/"} {
			if strings.Contains(string(b), bad) && filepath.Base(f) != "absolute-ops-path.yaml" && filepath.Base(f) != "several-errors.yaml" {
				t.Errorf("%s contains %q: depends on the machine", f, bad)
			}
		}
	}
}
