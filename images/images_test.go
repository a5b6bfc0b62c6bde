package images

import (
	"net/url"
	"testing"
)

func TestDefinitionsAreComplete(t *testing.T) {
	defs, err := All()
	if err != nil {
		t.Fatal(err)
	}
	if len(defs) < 2 {
		t.Fatalf("want at least debian-12 and ubuntu-24.04, got %d definitions", len(defs))
	}
	for _, d := range defs {
		for field, v := range map[string]string{"url": d.URL, "checksumURL": d.ChecksumURL} {
			u, err := url.Parse(v)
			if err != nil || u.Scheme != "https" || u.Host == "" {
				t.Errorf("%s: %s %q is not an https URL", d.Name, field, v)
			}
		}
		if d.ChecksumAlgorithm != "sha256" && d.ChecksumAlgorithm != "sha512" {
			t.Errorf("%s: checksumAlgorithm %q", d.Name, d.ChecksumAlgorithm)
		}
		if d.Format != "qcow2" && d.Format != "raw" {
			t.Errorf("%s: format %q", d.Name, d.Format)
		}
	}
	if _, ok := Get("debian-12"); !ok {
		t.Error("debian-12 missing")
	}
	if got := (Definition{Name: "ubuntu-24.04", Arch: "amd64", Format: "qcow2"}).FileName(); got != "opencsp-ubuntu-24.04-amd64.qcow2" {
		t.Errorf("FileName = %q", got)
	}
}
