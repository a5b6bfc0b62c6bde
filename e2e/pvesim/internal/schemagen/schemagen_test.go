package schemagen

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// TestCommittedSchemaIsUpToDate regenerates the schema facts from the
// reference API description and requires the committed file to be identical.
func TestCommittedSchemaIsUpToDate(t *testing.T) {
	ref, err := ReferencePath(".")
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.ReadFile(ref)
	if errors.Is(err, fs.ErrNotExist) {
		t.Skipf("reference API description %s is absent (expected as a sibling checkout of shared/); cannot verify apischema.json", ref)
	}
	if err != nil {
		t.Fatal(err)
	}
	gen, err := Generate(in)
	if err != nil {
		t.Fatal(err)
	}
	root, err := ModuleRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadFile(filepath.Join(root, OutputRel))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gen, committed) {
		t.Fatalf("%s is stale: run `go run ./e2e/pvesim/cmd/pvesim-schemagen` (generated %d bytes, committed %d)", OutputRel, len(gen), len(committed))
	}
}

func TestGenerateFacts(t *testing.T) {
	api := []byte(`{
	  "/nodes/{node}/qemu": {"POST": {
	    "name": "create_vm", "allowtoken": 1, "proxyto": "node",
	    "parameters": {"additionalProperties": 0, "properties": {
	      "vmid": {"type": "integer", "format": "pve-vmid", "minimum": 100, "maximum": 999999999, "description": "x"},
	      "net[n]": {"type": "string", "optional": 1, "description": "nets",
	        "format": {"model": {"type": "string", "default_key": 1, "enum": ["virtio", "e1000"]},
	                   "virtio": {"alias": "macaddr", "keyAlias": "model"},
	                   "macaddr": {"type": "string", "optional": 1, "format": "mac-addr"}}},
	      "scsi[n]": {"type": "string", "optional": 1, "description": "disk (n is 0 to 30).", "format": {"file": {"type": "string", "default_key": 1}}},
	      "bwlimit": {"type": "integer", "optional": 1, "minimum": "0"}
	    }},
	    "returns": {"type": "string"}
	  }}
	}`)
	saved := Endpoints
	Endpoints = []Endpoint{{"POST", "/nodes/{node}/qemu"}}
	defer func() { Endpoints = saved }()
	out, err := Generate(api)
	if err != nil {
		t.Fatal(err)
	}
	var s Schema
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatal(err)
	}
	m := s.Endpoints[0]
	if m.Name != "create_vm" || !m.AllowToken || m.ProxyTo != "node" || m.AdditionalProperties {
		t.Errorf("method facts wrong: %+v", m)
	}
	if p := m.Params["vmid"]; p.Type != "integer" || p.Optional || *p.Minimum != 100 || p.Format != "pve-vmid" {
		t.Errorf("vmid facts wrong: %+v", p)
	}
	if p := m.Params["net[n]"]; p.PropFormat != "net" || len(p.Indexed) != 2 || p.Indexed[1] != 31 {
		t.Errorf("net[n] facts wrong: %+v", p)
	}
	if p := m.Params["scsi[n]"]; p.Indexed[1] != 30 {
		t.Errorf("scsi[n] range from description wrong: %+v", p)
	}
	if p := m.Params["bwlimit"]; p.Minimum == nil || *p.Minimum != 0 {
		t.Errorf("string minimum not converted: %+v", p)
	}
	if sp := s.PropFormats["net"]["virtio"]; sp.Alias != "macaddr" || sp.KeyAlias != "model" {
		t.Errorf("alias facts wrong: %+v", sp)
	}
	if bytes.Contains(out, []byte(`"description"`)) {
		t.Error("descriptions must not be copied")
	}
}
