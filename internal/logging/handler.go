package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
)

// Handler is a slog.Handler that redacts secrets from the message and from
// every attribute (strings, errors, Stringers, other values, nested groups)
// before passing the record to the inner handler.
//
// Attributes bound with WithAttrs are kept here, not handed to the inner
// handler, and redacted on every record: a secret registered after a logger
// was derived (logger.With("token", t) runs before Add(t)) is still scrubbed.
type Handler struct {
	inner    slog.Handler
	redactor *Redactor
	bound    []boundItem // WithAttrs / WithGroup calls, in order
}

// boundItem is one WithGroup (group != "") or WithAttrs call.
type boundItem struct {
	group string
	attrs []slog.Attr
}

// NewHandler wraps inner so that nothing r knows reaches it.
func NewHandler(inner slog.Handler, r *Redactor) *Handler {
	if r == nil {
		r = &Redactor{}
	}
	return &Handler{inner: inner, redactor: r}
}

// Enabled defers to the inner handler.
func (h *Handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.inner.Enabled(ctx, level)
}

// Handle redacts rec and passes it on.
func (h *Handler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, h.redactor.Redact(rec.Message), rec.PC)
	attrs := make([]slog.Attr, 0, rec.NumAttrs())
	rec.Attrs(func(a slog.Attr) bool {
		attrs = append(attrs, a)
		return true
	})
	// Rebuild the nesting from the innermost call outwards: the record's
	// attrs belong inside every group opened before it.
	for i := len(h.bound) - 1; i >= 0; i-- {
		b := h.bound[i]
		if b.group != "" {
			attrs = []slog.Attr{{Key: b.group, Value: slog.GroupValue(attrs...)}}
			continue
		}
		attrs = append(append([]slog.Attr(nil), b.attrs...), attrs...)
	}
	for _, a := range attrs {
		out.AddAttrs(h.redactAttr(a))
	}
	return h.inner.Handle(ctx, out)
}

// WithAttrs returns a handler that adds attrs to every record.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	return h.with(boundItem{attrs: append([]slog.Attr(nil), attrs...)})
}

// WithGroup returns a handler that nests later attrs under name.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return h.with(boundItem{group: name})
}

func (h *Handler) with(b boundItem) *Handler {
	h2 := *h
	h2.bound = append(append([]boundItem(nil), h.bound...), b)
	return &h2
}

func (h *Handler) redactAttr(a slog.Attr) slog.Attr {
	return slog.Attr{Key: a.Key, Value: h.redactValue(a.Value)}
}

// redactValue scrubs v. Values that are not plain numbers, bools or times are
// turned into their redacted text: the inner handler would format them
// anyway, and only text can be checked for secrets reliably.
func (h *Handler) redactValue(v slog.Value) slog.Value {
	v = v.Resolve() // LogValuers could return secrets
	switch v.Kind() {
	case slog.KindString:
		return slog.StringValue(h.redactor.Redact(v.String()))
	case slog.KindGroup:
		group := v.Group()
		out := make([]slog.Attr, len(group))
		for i, a := range group {
			out[i] = h.redactAttr(a)
		}
		return slog.GroupValue(out...)
	case slog.KindAny:
		var text string
		switch x := v.Any().(type) {
		case nil:
			return v
		case error:
			text = x.Error()
		case fmt.Stringer:
			text = x.String()
		case []byte:
			text = string(x)
		default:
			text = fmt.Sprintf("%+v", x)
		}
		return slog.StringValue(h.redactor.Redact(text))
	default:
		return v
	}
}

// NewFileLogger opens path (creating its dir 0700 and the file 0600, or
// appending to it) and returns a logger writing redacted text lines to it
// at level and above. Close the returned Closer when done.
func NewFileLogger(path string, level slog.Level, r *Redactor) (*slog.Logger, io.Closer, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, nil, fmt.Errorf("create log dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("open log file: %w", err)
	}
	// An existing log may have been created with looser permissions.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("restrict log file %s: %w", path, err)
	}
	text := slog.NewTextHandler(f, &slog.HandlerOptions{Level: level})
	return slog.New(NewHandler(text, r)), f, nil
}
