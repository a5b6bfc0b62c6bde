package events

import (
	"encoding/json"
	"sync"
	"testing"
	"time"
)

func TestEventJSONUsesSnakeCaseAndOmitsEmpty(t *testing.T) {
	tests := []struct {
		name string
		ev   Event
		want string
	}{
		{
			name: "minimal",
			ev:   Event{Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), Status: Info},
			want: `{"time":"2025-01-02T03:04:05Z","status":"info"}`,
		},
		{
			name: "transfer",
			ev: Event{
				Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), Stage: "images", Step: "download",
				Status: Progress, Message: "ubuntu", BytesDone: 5, BytesTotal: 10,
				Fields: map[string]string{"node": "pve1"},
			},
			want: `{"time":"2025-01-02T03:04:05Z","stage":"images","step":"download","status":"progress","message":"ubuntu","bytes_done":5,"bytes_total":10,"fields":{"node":"pve1"}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := json.Marshal(tt.ev)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestRecorderIsConcurrencySafeAndCopies(t *testing.T) {
	var r Recorder
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() { r.Emit(Event{Status: Info, Message: string(rune('a' + i%26))}) })
	}
	wg.Wait()
	got := r.Events()
	if len(got) != 50 {
		t.Fatalf("recorded %d events, want 50", len(got))
	}
	got[0].Message = "changed"
	if r.Events()[0].Message == "changed" {
		t.Error("Events() returned the internal slice, want a copy")
	}
	r.Reset()
	if n := len(r.Events()); n != 0 {
		t.Errorf("after Reset: %d events", n)
	}
}

func TestTeeForwardsToAllAndSkipsNil(t *testing.T) {
	var a, b Recorder
	var calls int
	s := Tee(&a, nil, &b, SinkFunc(func(Event) { calls++ }), Discard())
	s.Emit(Event{Status: Done})
	s.Emit(Event{Status: Failed})
	if len(a.Events()) != 2 || len(b.Events()) != 2 || calls != 2 {
		t.Errorf("a=%d b=%d func=%d, want 2 each", len(a.Events()), len(b.Events()), calls)
	}
	if a.Events()[1].Status != Failed {
		t.Errorf("order not kept: %v", a.Events())
	}
}
