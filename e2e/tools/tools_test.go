package tools

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

func pinsDir(t *testing.T) string {
	t.Helper()
	wd, _ := os.Getwd()
	repo, err := FindRepo(wd)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(repo, "e2e", "tools", "pins")
}

// directives returns "module version" of the require lines and "old => new version" of the
// replace lines of a go.mod (stdlib only: block and single-line forms).
func directives(data string) (require, replace map[string]string) {
	require, replace = map[string]string{}, map[string]string{}
	block := ""
	for _, line := range strings.Split(data, "\n") {
		line, _, _ = strings.Cut(line, "//")
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
			continue
		case len(f) == 2 && f[1] == "(":
			block = f[0]
			continue
		case f[0] == ")":
			block = ""
			continue
		}
		kind := block
		if kind == "" {
			kind, f = f[0], f[1:]
		}
		switch kind {
		case "require":
			if len(f) >= 2 {
				require[f[0]] = f[1]
			}
		case "replace":
			if i := indexOf(f, "=>"); i > 0 {
				replace[f[0]] = strings.Join(f[i+1:], " ")
			}
		}
	}
	return require, replace
}

func indexOf(f []string, s string) int {
	for i, x := range f {
		if x == s {
			return i
		}
	}
	return -1
}

// TestKubeReplaces checks that pins/kube replaces exactly the staging modules k8s.io/kubernetes
// replaces with ./staging/src/..., each with the published module at the matching v0.x version.
func TestKubeReplaces(t *testing.T) {
	pins := pinsDir(t)
	cmd := exec.Command("go", "mod", "download", "-json", "k8s.io/kubernetes@"+KubeVersion)
	cmd.Dir = filepath.Join(pins, "kube")
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=readonly", "GOWORK=off")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download k8s.io/kubernetes: %v", err)
	}
	var info struct{ GoMod string }
	if err := json.Unmarshal(out, &info); err != nil || info.GoMod == "" {
		t.Fatalf("go mod download: %v %s", err, out)
	}
	upstream, err := os.ReadFile(info.GoMod)
	if err != nil {
		t.Fatal(err)
	}
	_, upRepl := directives(string(upstream))
	staging := "v0." + strings.SplitN(KubeVersion, ".", 2)[1]
	var want []string
	for mod, target := range upRepl {
		if strings.HasPrefix(target, "./staging/src/") {
			want = append(want, mod+" => "+mod+" "+staging)
		}
	}
	pin, err := os.ReadFile(filepath.Join(pins, "kube", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	req, repl := directives(string(pin))
	var got []string
	for mod, target := range repl {
		got = append(got, mod+" => "+target)
	}
	sort.Strings(want)
	sort.Strings(got)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("pins/kube/go.mod replaces:\n%s\nwant (derived from k8s.io/kubernetes %s):\n%s", strings.Join(got, "\n"), KubeVersion, strings.Join(want, "\n"))
	}
	if len(want) < 30 {
		t.Errorf("only %d staging replaces derived", len(want))
	}
	if req["k8s.io/kubernetes"] != KubeVersion {
		t.Errorf("pins/kube requires k8s.io/kubernetes %s, want %s", req["k8s.io/kubernetes"], KubeVersion)
	}
}

// TestPinsMatchVersions checks that each pin requires the version the manifest advertises.
func TestPinsMatchVersions(t *testing.T) {
	pins := pinsDir(t)
	mods := map[string]string{
		"etcd":                 "go.etcd.io/etcd/server/v3",
		"kube-apiserver":       "k8s.io/kubernetes",
		"kubectl":              "k8s.io/kubernetes",
		"source-controller":    "github.com/fluxcd/source-controller",
		"kustomize-controller": "github.com/fluxcd/kustomize-controller",
	}
	for _, tool := range Tools {
		data, err := os.ReadFile(filepath.Join(pins, tool.Pin, "go.mod"))
		if err != nil {
			t.Fatal(err)
		}
		req, _ := directives(string(data))
		if got := req[mods[tool.Name]]; got != tool.Version {
			t.Errorf("%s: pins/%s requires %s %s, want %s", tool.Name, tool.Pin, mods[tool.Name], got, tool.Version)
		}
		if !regexp.MustCompile(`(?m)^\s*(tool\s+)?` + regexp.QuoteMeta(tool.Package) + `\s*$`).Match(data) {
			t.Errorf("%s: pins/%s/go.mod has no tool directive for %s", tool.Name, tool.Pin, tool.Package)
		}
	}
}

// TestStampChangesWithInputs checks the rebuild trigger.
func TestStampChangesWithInputs(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "p"), 0o755)
	os.WriteFile(filepath.Join(dir, "p", "go.mod"), []byte("module x\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "p", "go.sum"), []byte(""), 0o644)
	b := &Builder{PinsDir: dir}
	tool := Tool{Name: "x", Version: "v1", Pin: "p", Package: "x"}
	s1, err := b.Stamp(tool, "go1.26.8")
	if err != nil {
		t.Fatal(err)
	}
	if s2, _ := b.Stamp(tool, "go1.26.9"); s2 == s1 {
		t.Error("stamp ignores the Go version")
	}
	tool2 := tool
	tool2.LDFlags = "-X a.b=c"
	if s2, _ := b.Stamp(tool2, "go1.26.8"); s2 == s1 {
		t.Error("stamp ignores ldflags")
	}
	os.WriteFile(filepath.Join(dir, "p", "go.sum"), []byte("x v1 h1:abc\n"), 0o644)
	if s2, _ := b.Stamp(tool, "go1.26.8"); s2 == s1 {
		t.Error("stamp ignores go.sum")
	}
	bin := filepath.Join(dir, "bin")
	if upToDate(bin, bin+".stamp", s1) {
		t.Error("missing binary is up to date")
	}
	os.WriteFile(bin, nil, 0o755)
	os.WriteFile(bin+".stamp", []byte(s1+"\n"), 0o644)
	if !upToDate(bin, bin+".stamp", s1) {
		t.Error("built binary is not up to date")
	}
}
