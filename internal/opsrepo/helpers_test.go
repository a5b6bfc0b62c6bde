package opsrepo

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/logging"
	"github.com/opencsp/installer/internal/testutil"
)

// sampleConfig loads testdata/lab.yaml (in a temp dir with its SSH key)
// after applying edits (old -> new replacements of the file text).
func sampleConfig(t *testing.T, edits ...string) *config.Config {
	t.Helper()
	dir := testutil.CorpusDir(t)
	data, err := os.ReadFile("testdata/lab.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for i := 0; i+1 < len(edits); i += 2 {
		if !strings.Contains(s, edits[i]) {
			t.Fatalf("edit %q: not in lab.yaml", edits[i])
		}
		s = strings.Replace(s, edits[i], edits[i+1], 1)
	}
	p := filepath.Join(dir, "lab.yaml")
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// fixture is one installation: config, age key, logger into a buffer.
type fixture struct {
	cfg      *config.Config
	key      *AgeKey
	log      bytes.Buffer
	redactor *logging.Redactor
}

func newFixture(t *testing.T, edits ...string) *fixture {
	t.Helper()
	f := &fixture{cfg: sampleConfig(t, edits...), redactor: &logging.Redactor{}}
	k, created, err := LoadOrCreateAgeKey(filepath.Join(t.TempDir(), "state", "age.key"))
	if err != nil || !created {
		t.Fatal(err, created)
	}
	f.key = k
	return f
}

func (f *fixture) input() RenderInput {
	return RenderInput{
		Config:           f.cfg,
		AgeKey:           f.key,
		InstallerVersion: "v0.1.0",
		Logger:           slog.New(slog.NewTextHandler(&f.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Redactor:         f.redactor,
		Now:              func() time.Time { return time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC) },
	}
}

func (f *fixture) render(t *testing.T, existing string) *Tree {
	t.Helper()
	in := f.input()
	if existing != "" {
		in.Existing = os.DirFS(existing)
	}
	tree, err := Render(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

// secretValues returns every generated value of the tree.
func treeSecrets(t *Tree) []string {
	var out []string
	for _, kv := range t.values {
		for _, v := range kv {
			out = append(out, v)
		}
	}
	return out
}

// leaks lists the secrets (or their base64 forms) found in data.
func leaks(data []byte, secrets []string) []string {
	var out []string
	for _, s := range secrets {
		for _, form := range []string{s, base64.StdEncoding.EncodeToString([]byte(s)), base64.RawStdEncoding.EncodeToString([]byte(s)), base64.URLEncoding.EncodeToString([]byte(s))} {
			if bytes.Contains(data, []byte(form)) {
				out = append(out, s[:4]+"...")
			}
		}
	}
	return out
}

// scanDir checks every file under dir for secrets.
func scanDir(t *testing.T, dir string, secrets []string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		n++
		if l := leaks(data, secrets); len(l) > 0 {
			t.Errorf("%s contains secrets %v", p, l)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatalf("no files under %s", dir)
	}
}

func configComponent(enabled *bool) config.ComponentConfig {
	return config.ComponentConfig{Enabled: enabled}
}

func slogTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
