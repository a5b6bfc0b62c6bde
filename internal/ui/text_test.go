package ui

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencsp/installer/internal/events"
)

var t0 = time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func TestTextLines(t *testing.T) {
	tests := []struct {
		name   string
		events []events.Event
		want   []string
	}{
		{
			name: "step started and done",
			events: []events.Event{
				{Time: at(0), Stage: "provision", Step: "clone", Status: events.Started, Message: "clone template 9000 -> vm 101"},
				{Time: at(3200 * time.Millisecond), Stage: "provision", Step: "clone", Status: events.Done},
			},
			want: []string{
				"[provision] clone template 9000 -> vm 101 ...",
				"[provision] clone template 9000 -> vm 101 ... done (3.2s)",
			},
		},
		{
			name: "stage lifecycle with rerun reason",
			events: []events.Event{
				{Time: at(0), Stage: "provision", Status: events.Started, Message: "config changed"},
				{Time: at(62 * time.Second), Stage: "provision", Status: events.Done},
				{Time: at(62 * time.Second), Stage: "k3s", Status: events.Started},
			},
			want: []string{
				"[provision] started (config changed)",
				"[provision] done (1m2s)",
				"[k3s] started",
			},
		},
		{
			name: "skipped stage and step",
			events: []events.Event{
				{Time: at(0), Stage: "images", Status: events.Skipped, Message: "done and verified"},
				{Time: at(0), Stage: "images", Step: "upload", Status: events.Skipped, Message: "upload ubuntu-24.04"},
			},
			want: []string{
				"[images] skipped (done and verified)",
				"[images] upload ubuntu-24.04 ... skipped",
			},
		},
		{
			name: "failures are marked",
			events: []events.Event{
				{Time: at(0), Stage: "provision", Status: events.Started},
				{Time: at(time.Second), Stage: "provision", Step: "clone", Status: events.Started, Message: "clone template 9000 -> vm 101"},
				{Time: at(2 * time.Second), Stage: "provision", Step: "clone", Status: events.Failed, Message: "task failed\ntask log line 1"},
				{Time: at(3 * time.Second), Stage: "provision", Status: events.Failed, Message: "clone template 9000 on pve1: task failed"},
			},
			want: []string{
				"[provision] started",
				"[provision] clone template 9000 -> vm 101 ...",
				"[provision] clone template 9000 -> vm 101 ... FAILED (1.0s): task failed",
				"    task log line 1",
				"[provision] FAILED (3.0s): clone template 9000 on pve1: task failed",
			},
		},
		{
			name: "warning, info and fields",
			events: []events.Event{
				{Time: at(0), Stage: "k3s", Status: events.Warning, Message: "host key changed"},
				{Time: at(0), Status: events.Info, Message: "state dir .opencsp", Fields: map[string]string{"z": "1", "a": "2"}},
			},
			want: []string{
				"[k3s] WARNING: host key changed",
				"state dir .opencsp a=2 z=1",
			},
		},
		{
			name: "done without a start has no duration",
			events: []events.Event{
				{Time: at(0), Stage: "flux", Step: "push", Status: events.Done, Message: "push ops repo"},
			},
			want: []string{"[flux] push ops repo ... done"},
		},
		{
			name: "size-less progress prints changed notes only",
			events: []events.Event{
				{Time: at(0), Stage: "rollout", Step: "wait", Status: events.Progress, Message: "3/12 ready"},
				{Time: at(1), Stage: "rollout", Step: "wait", Status: events.Progress, Message: "3/12 ready"},
				{Time: at(2), Stage: "rollout", Step: "wait", Status: events.Progress, Message: "5/12 ready"},
				{Time: at(3), Stage: "rollout", Step: "wait", Status: events.Progress},
			},
			want: []string{"[rollout] 3/12 ready", "[rollout] 5/12 ready"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			s := NewText(&buf, false)
			for _, e := range tt.events {
				s.Emit(e)
			}
			want := strings.Join(tt.want, "\n") + "\n"
			if got := buf.String(); got != want {
				t.Errorf("output:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestTextTransferWithoutTTYPrintsEveryTenPercent(t *testing.T) {
	var buf bytes.Buffer
	s := NewText(&buf, false)
	const total = 2 << 30 // 2 GiB
	s.Emit(events.Event{Time: at(0), Stage: "images", Step: "download", Status: events.Started, Message: "download ubuntu-24.04"})
	for i := int64(0); i <= 40; i++ { // 2.5% steps: several events per decile
		s.Emit(events.Event{Time: at(time.Duration(i) * time.Second), Stage: "images", Step: "download", Status: events.Progress, BytesDone: total * i / 40, BytesTotal: total})
	}
	s.Emit(events.Event{Time: at(41 * time.Second), Stage: "images", Step: "download", Status: events.Done})

	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 13 { // started + 0%..100% + done
		t.Fatalf("got %d lines, want 13:\n%s", len(lines), buf.String())
	}
	for i, l := range lines[1:12] {
		if want := fmt.Sprintf("[images] download ubuntu-24.04: %d%% (", i*10); !strings.HasPrefix(l, want) {
			t.Errorf("line %q, want prefix %q", l, want)
		}
	}
	if lines[6] != "[images] download ubuntu-24.04: 50% (1.0 GiB of 2.0 GiB)" {
		t.Errorf("50%% line = %q", lines[6])
	}
	if lines[12] != "[images] download ubuntu-24.04 ... done (41.0s)" {
		t.Errorf("last line = %q", lines[12])
	}
}

func TestTextTransferOnTTYDrawsBar(t *testing.T) {
	var buf bytes.Buffer
	s := NewText(&buf, true).(*textSink)
	s.throttle = 0 // draw every update, so the test does not depend on timing
	s.Emit(events.Event{Time: at(0), Stage: "images", Step: "upload", Status: events.Started, Message: "upload noble.img"})
	for _, done := range []int64{0, 250, 500, 999} {
		s.Emit(events.Event{Time: at(time.Second), Stage: "images", Step: "upload", Status: events.Progress, BytesDone: done, BytesTotal: 1000})
	}
	s.Emit(events.Event{Time: at(2 * time.Second), Stage: "images", Status: events.Warning, Message: "slow link"})
	s.Emit(events.Event{Time: at(3 * time.Second), Stage: "images", Step: "upload", Status: events.Progress, BytesDone: 5000, BytesTotal: 1000}) // overshoot is clamped
	s.Emit(events.Event{Time: at(4 * time.Second), Stage: "images", Step: "upload", Status: events.Done})

	out := buf.String()
	for _, want := range []string{"[images] upload noble.img", " 50% ", "\r", "[images] WARNING: slow link\n", "[images] upload noble.img ... done (4.0s)\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%q", want, out)
		}
	}
	// The warning must start on a clean line, not glued to the bar.
	if i := strings.Index(out, "[images] WARNING"); i > 0 && out[i-1] != '\r' && out[i-1] != '\n' {
		t.Errorf("warning not on its own line: %q", out[max(0, i-20):i+10])
	}
	if s.drawn != nil || len(s.open) != 0 {
		t.Errorf("renderer kept state after done: drawn=%v open=%v", s.drawn, s.open)
	}
}

func TestTextIsConcurrencySafe(t *testing.T) {
	var buf bytes.Buffer
	s := NewText(&buf, false)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			stage := fmt.Sprintf("s%d", g)
			for i := range 50 {
				step := fmt.Sprintf("step%d", i)
				s.Emit(events.Event{Time: at(0), Stage: stage, Step: step, Status: events.Started, Message: "work"})
				s.Emit(events.Event{Time: at(time.Second), Stage: stage, Step: step, Status: events.Done})
			}
		})
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 8*50*2 {
		t.Fatalf("%d lines, want %d", len(lines), 8*50*2)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "[s") || !(strings.HasSuffix(l, "work ...") || strings.HasSuffix(l, "work ... done (1.0s)")) {
			t.Fatalf("garbled line %q", l)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"}, {5 << 20, "5.0 MiB"}, {3 << 30, "3.0 GiB"}}
	for _, tt := range tests {
		if got := formatBytes(tt.n); got != tt.want {
			t.Errorf("formatBytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}
