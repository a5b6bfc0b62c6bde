// Package ui renders install events for people (concise lines, progress bars
// on a terminal) or for machines (JSON lines).
package ui

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/opencsp/installer/internal/events"
)

// NewText returns a sink that writes one concise line per event, e.g.
//
//	[provision] clone template 9000 -> vm 101 ...
//	[provision] clone template 9000 -> vm 101 ... done (3.2s)
//
// Transfers (Progress events with BytesTotal > 0) get a progress bar when
// isTTY, otherwise a line every 10%. It is safe for concurrent use; write
// errors are ignored, as a renderer has nobody to report them to.
func NewText(w io.Writer, isTTY bool) events.Sink {
	return &textSink{w: w, tty: isTTY, open: map[key]*open{}, throttle: 100 * time.Millisecond}
}

type key struct{ stage, step string }

// open is what the renderer remembers about a started stage or step.
type open struct {
	started    time.Time
	label      string
	bar        *progressbar.ProgressBar // tty transfers
	lastDecile int                      // non-tty transfers: last 10% mark printed
	lastNote   string                   // last size-less progress message printed
}

type textSink struct {
	mu       sync.Mutex
	w        io.Writer
	tty      bool
	open     map[key]*open
	throttle time.Duration // minimum time between bar redraws
	// drawn is the bar currently on the terminal's last line; it is wiped
	// before any other output so lines never run into it.
	drawn *progressbar.ProgressBar
}

func (t *textSink) Emit(e events.Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := key{e.Stage, e.Step}
	o := t.open[k]

	switch e.Status {
	case events.Started:
		o = &open{started: e.Time, label: e.Message, lastDecile: -1}
		t.open[k] = o
	case events.Progress:
		if o == nil {
			o = &open{started: e.Time, label: e.Message, lastDecile: -1}
			t.open[k] = o
		}
		t.progress(e, o)
		return
	case events.Done, events.Failed, events.Skipped:
		delete(t.open, k)
		if o != nil && o.bar != nil {
			t.dropBar(o.bar)
		}
	}
	t.println(t.line(e, o))
}

// line formats a non-progress event.
func (t *textSink) line(e events.Event, o *open) string {
	var b strings.Builder
	if e.Stage != "" {
		fmt.Fprintf(&b, "[%s] ", e.Stage)
	}
	elapsed := ""
	if o != nil && !o.started.IsZero() && !e.Time.IsZero() && !e.Time.Before(o.started) {
		elapsed = " (" + formatDuration(e.Time.Sub(o.started)) + ")"
	}
	remembered := ""
	if o != nil {
		remembered = o.label
	}
	stepLevel := e.Step != ""

	switch e.Status {
	case events.Started:
		switch {
		case stepLevel:
			b.WriteString(firstOf(e.Message, e.Step) + " ...")
		case e.Message != "":
			b.WriteString("started (" + e.Message + ")")
		default:
			b.WriteString("started")
		}
	case events.Done:
		if stepLevel {
			b.WriteString(firstOf(e.Message, remembered, e.Step) + " ... ")
		}
		b.WriteString("done" + elapsed)
	case events.Skipped:
		if stepLevel {
			b.WriteString(firstOf(e.Message, remembered, e.Step) + " ... skipped")
		} else {
			b.WriteString("skipped")
			if e.Message != "" {
				b.WriteString(" (" + e.Message + ")")
			}
		}
	case events.Failed:
		if stepLevel {
			b.WriteString(firstOf(remembered, e.Step) + " ... ")
		}
		// Duration before the message: error text may span several lines.
		b.WriteString("FAILED" + elapsed)
		if e.Message != "" {
			b.WriteString(": " + e.Message)
		}
	case events.Warning:
		b.WriteString("WARNING: " + e.Message)
	default: // Info and anything newer than this renderer
		b.WriteString(e.Message)
	}
	for _, k := range slices.Sorted(maps.Keys(e.Fields)) {
		fmt.Fprintf(&b, " %s=%s", k, e.Fields[k])
	}
	// Indent continuation lines (e.g. an attached task log) under the event.
	return strings.ReplaceAll(b.String(), "\n", "\n    ")
}

func (t *textSink) progress(e events.Event, o *open) {
	if e.Message != "" {
		o.label = e.Message
	}
	label := firstOf(o.label, e.Step)
	prefix := ""
	if e.Stage != "" {
		prefix = "[" + e.Stage + "] "
	}
	if e.BytesTotal <= 0 {
		// Unknown size: show notes, but only when they change.
		if e.Message != "" && e.Message != o.lastNote {
			o.lastNote = e.Message
			t.println(prefix + e.Message)
		}
		return
	}
	done := min(max(e.BytesDone, 0), e.BytesTotal)

	if !t.tty {
		decile := int(done * 10 / e.BytesTotal)
		if decile > o.lastDecile {
			o.lastDecile = decile
			t.println(fmt.Sprintf("%s%s: %d%% (%s of %s)", prefix, label, decile*10, formatBytes(done), formatBytes(e.BytesTotal)))
		}
		return
	}

	if o.bar == nil || o.bar.GetMax64() != e.BytesTotal {
		if o.bar != nil {
			t.dropBar(o.bar)
		}
		o.bar = t.newBar(prefix+label, e.BytesTotal)
	}
	if t.drawn != nil && t.drawn != o.bar {
		t.drawn.Clear()
	}
	t.drawn = o.bar
	_ = o.bar.Set64(done)
	if done == e.BytesTotal {
		// The bar clears itself on completion; the step's Done line follows.
		t.drawn = nil
		o.bar = nil
	}
}

func (t *textSink) newBar(description string, total int64) *progressbar.ProgressBar {
	return progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(t.w),
		progressbar.OptionSetDescription(description),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionUseIECUnits(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(t.throttle),
		progressbar.OptionClearOnFinish(),
	)
}

func (t *textSink) dropBar(bar *progressbar.ProgressBar) {
	if t.drawn == bar {
		bar.Clear()
		t.drawn = nil
	}
}

func (t *textSink) println(s string) {
	if t.drawn != nil {
		t.drawn.Clear()
	}
	io.WriteString(t.w, s+"\n")
}

func firstOf(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// formatDuration keeps one decimal for short steps and whole seconds beyond
// a minute, which is as precise as anyone reads an install log.
func formatDuration(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	return d.Round(time.Second).String()
}

func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
