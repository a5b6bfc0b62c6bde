package ui

import (
	"bufio"
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/opencsp/installer/internal/events"
)

func TestJSONOneObjectPerLine(t *testing.T) {
	in := []events.Event{
		{Time: at(0), Stage: "provision", Step: "clone", Status: events.Started, Message: "clone template 9000 -> vm 101"},
		{Time: at(1), Stage: "images", Step: "download", Status: events.Progress, BytesDone: 10, BytesTotal: 100, Fields: map[string]string{"node": "pve1"}},
		{Time: at(2), Stage: "provision", Status: events.Failed, Message: "boom <html>"},
	}
	var buf bytes.Buffer
	s := NewJSON(&buf)
	for _, e := range in {
		s.Emit(e)
	}
	if !strings.Contains(buf.String(), "-> vm 101") || !strings.Contains(buf.String(), "<html>") {
		t.Errorf("HTML-escaped output: %s", buf.String())
	}
	sc := bufio.NewScanner(&buf)
	var got []events.Event
	for sc.Scan() {
		var e events.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		got = append(got, e)
	}
	if !reflect.DeepEqual(got, in) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, in)
	}
}

func TestJSONConcurrentLinesStayWhole(t *testing.T) {
	var buf bytes.Buffer
	s := NewJSON(&buf)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			for range 100 {
				s.Emit(events.Event{Time: at(0), Stage: "x", Status: events.Info, Message: strings.Repeat("m", 200)})
			}
		})
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 1000 {
		t.Fatalf("%d lines", len(lines))
	}
	for _, l := range lines {
		if !json.Valid([]byte(l)) {
			t.Fatalf("invalid line %q", l)
		}
	}
}
