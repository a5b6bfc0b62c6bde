package logging

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const secret = "tok-9f8e7d6c"

type stringer struct{}

func (stringer) String() string { return "stringer(" + secret + ")" }

type valuer struct{}

func (valuer) LogValue() slog.Value { return slog.StringValue("valuer " + secret) }

type creds struct{ User, Password string }

func TestHandlerRedactsEverywhere(t *testing.T) {
	tests := []struct {
		name string
		log  func(l *slog.Logger)
		want string // must appear (redacted structure is kept)
	}{
		{"message", func(l *slog.Logger) { l.Info("using token " + secret) }, `msg="using token [REDACTED]"`},
		{"string attr", func(l *slog.Logger) { l.Info("x", "token", secret) }, `token=[REDACTED]`},
		{"wrapped error attr", func(l *slog.Logger) {
			err := fmt.Errorf("call api: %w", fmt.Errorf("401 for token %s", secret))
			l.Error("failed", "err", err)
		}, `err="call api: 401 for token [REDACTED]"`},
		{"joined error", func(l *slog.Logger) { l.Info("x", "err", errors.Join(errors.New("a"), errors.New(secret))) }, `[REDACTED]`},
		{"nested group", func(l *slog.Logger) {
			l.Info("x", slog.Group("outer", slog.Group("inner", slog.String("k", secret), slog.Int("n", 7))))
		}, `outer.inner.k=[REDACTED] outer.inner.n=7`},
		{"WithAttrs", func(l *slog.Logger) { l.With("token", secret).Info("x") }, `token=[REDACTED]`},
		{"WithGroup then attrs", func(l *slog.Logger) {
			l.WithGroup("api").With("auth", secret).Info("x", "url", "https://u:"+secret+"@h")
		}, `api.auth=[REDACTED] api.url=https://u:[REDACTED]@h`},
		{"stringer", func(l *slog.Logger) { l.Info("x", "s", stringer{}) }, `s=stringer([REDACTED])`},
		{"log valuer", func(l *slog.Logger) { l.Info("x", "v", valuer{}) }, `v="valuer [REDACTED]"`},
		{"bytes", func(l *slog.Logger) { l.Info("x", "b", []byte(secret)) }, `b=[REDACTED]`},
		{"struct", func(l *slog.Logger) { l.Info("x", "c", creds{"root", secret}) }, `c="{User:root Password:[REDACTED]}"`},
		{"non-string kinds untouched", func(l *slog.Logger) { l.Info("x", "n", 42, "ok", true) }, `n=42 ok=true`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			l := slog.New(NewHandler(slog.NewTextHandler(&buf, nil), NewRedactor(secret)))
			tt.log(l)
			out := buf.String()
			if strings.Contains(out, secret) {
				t.Errorf("secret leaked: %s", out)
			}
			if !strings.Contains(out, tt.want) {
				t.Errorf("output %q does not contain %q", out, tt.want)
			}
		})
	}
}

func TestHandlerRedactsSecretAddedAfterWith(t *testing.T) {
	var buf bytes.Buffer
	r := NewRedactor()
	l := slog.New(NewHandler(slog.NewTextHandler(&buf, nil), r)).With("token", secret)
	r.Add(secret) // registered only after the logger was derived
	l.Info("late")
	if strings.Contains(buf.String(), secret) {
		t.Errorf("secret bound before Add leaked: %s", buf.String())
	}
}

func TestHandlerRespectsLevelAndEmptyGroups(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(NewHandler(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}), nil))
	l.Info("hidden")
	l.WithGroup("g").Warn("shown")
	out := buf.String()
	if strings.Contains(out, "hidden") || !strings.Contains(out, "msg=shown") {
		t.Errorf("output %q", out)
	}
	if strings.Contains(out, " g=") || strings.Contains(out, " g.") {
		t.Errorf("empty group rendered: %q", out)
	}
}

func TestFileLoggerNeverWritesSecrets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "install.log")
	r := NewRedactor()
	// A first session appends; a second must not truncate it.
	for i, msg := range []string{"first session", "second session"} {
		l, closer, err := NewFileLogger(path, slog.LevelDebug, r)
		if err != nil {
			t.Fatal(err)
		}
		r.Add(secret)
		l = l.With("session", i)
		l.Debug(msg, "token", secret)
		l.Info("connect", "err", fmt.Errorf("dial: %w", errors.New("bad password "+secret)))
		l.Warn("retry", slog.Group("api", slog.Group("auth", "secret", secret)))
		l.Error("msg with " + secret)
		if err := closer.Close(); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := string(data)
	if strings.Contains(out, secret) {
		t.Fatalf("secret reached the log file:\n%s", out)
	}
	for _, want := range []string{"first session", "second session", "token=[REDACTED]", `bad password [REDACTED]`, "api.auth.secret=[REDACTED]", "level=DEBUG"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("log mode %o, want 600", fi.Mode().Perm())
	}
}

func TestFileLoggerTightensExistingMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "install.log")
	if err := os.WriteFile(path, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, closer, err := NewFileLogger(path, slog.LevelInfo, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Debug("below level")
	l.Info("new")
	closer.Close()
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), "old\n") || !strings.Contains(string(data), "msg=new") || strings.Contains(string(data), "below level") {
		t.Errorf("log content %q", data)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %o, want 600", fi.Mode().Perm())
	}
}
