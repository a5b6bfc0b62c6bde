package config

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/opencsp/installer/profiles"
)

// compileSchema compiles JSONSchema() with a draft 2020-12 compiler; the
// compiler checks the document against the meta-schema and every pattern.
func compileSchema(t *testing.T) (*jsonschema.Schema, map[string]any) {
	t.Helper()
	b, err := JSONSchema()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("schema is not JSON: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	const url = "https://opencsp.io/schemas/installconfig-v1alpha1.json"
	if err := c.AddResource(url, doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(url)
	if err != nil {
		t.Fatalf("schema does not compile: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return sch, m
}

// yamlToJSON converts a YAML document to the JSON value a schema validator
// (or an editor) sees.
func yamlToJSON(t *testing.T, y []byte) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(y, &v); err != nil {
		t.Fatalf("yaml: %v", err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("json: %v", err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return inst
}

func TestJSONSchemaIsValid(t *testing.T) {
	_, m := compileSchema(t)
	if m["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
		t.Errorf("$schema = %v", m["$schema"])
	}
	if m["additionalProperties"] != false {
		t.Errorf("top level must forbid unknown fields")
	}
	props := m["properties"].(map[string]any)
	for _, f := range []string{"apiVersion", "kind", "profile", "cluster", "infrastructure", "images", "managementVM", "k3s", "opsRepo", "components", "secrets"} {
		if _, ok := props[f]; !ok {
			t.Errorf("schema lacks property %s", f)
		}
	}
	if _, ok := props["Source"]; ok {
		t.Errorf("schema shows the internal Source field")
	}
	// The profile enum and component names must not drift from the code.
	var enum []string
	for _, e := range props["profile"].(map[string]any)["enum"].([]any) {
		enum = append(enum, e.(string))
	}
	slices.Sort(enum)
	if !slices.Equal(enum, profiles.Names()) {
		t.Errorf("schema profiles %v, want %v", enum, profiles.Names())
	}
	var comps []string
	for _, e := range props["components"].(map[string]any)["propertyNames"].(map[string]any)["enum"].([]any) {
		comps = append(comps, e.(string))
	}
	if !slices.Equal(comps, ComponentNames()) {
		t.Errorf("schema components %v, want %v", comps, ComponentNames())
	}
	// Descriptions with commas must survive the struct-tag syntax.
	ep := props["infrastructure"].(map[string]any)["properties"].(map[string]any)["proxmox"].(map[string]any)["properties"].(map[string]any)["endpoint"].(map[string]any)
	if d, _ := ep["description"].(string); !strings.Contains(d, "e.g. https://") {
		t.Errorf("endpoint description truncated: %q", d)
	}
}

func TestJSONSchemaAcceptsExamples(t *testing.T) {
	sch, _ := compileSchema(t)
	for _, p := range profiles.Names() {
		out, err := Example(ExampleOptions{Profile: p, PrivateKeyFile: "/home/me/.ssh/id_ed25519", PublicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEx4mPle me@example"})
		if err != nil {
			t.Fatal(err)
		}
		if err := sch.Validate(yamlToJSON(t, out)); err != nil {
			t.Errorf("schema rejects the %s example: %v\n---\n%s", p, err, out)
		}
	}
}

func TestJSONSchemaAcceptsGoodCorpus(t *testing.T) {
	sch, _ := compileSchema(t)
	files, _ := filepath.Glob("testdata/good/*.yaml")
	for _, f := range files {
		if err := sch.Validate(yamlToJSON(t, readFile(t, f))); err != nil {
			t.Errorf("schema rejects %s: %v", f, err)
		}
	}
}

// TestJSONSchemaRejectsShapeErrors checks the schema catches what an editor
// can: unknown fields, wrong types, enums and ranges.
func TestJSONSchemaRejectsShapeErrors(t *testing.T) {
	sch, _ := compileSchema(t)
	base, err := Example(ExampleOptions{Profile: "standalone"})
	if err != nil {
		t.Fatal(err)
	}
	unknownTop := append(append([]byte(nil), base...), "colour: blue\n"...)
	if err := sch.Validate(yamlToJSON(t, unknownTop)); err == nil {
		t.Errorf("schema accepts an unknown top-level field")
	}
	for _, name := range []string{
		"unknown-field.yaml", "typo-field-suggests.yaml", "wrong-type-cores.yaml", "float-cores.yaml",
		"wrong-type-bool.yaml", "wrong-type-list.yaml", "wrong-type-mapping.yaml", "wrong-type-string.yaml",
		"wrong-type-profile.yaml", "bad-profile.yaml", "wrong-api-version.yaml", "wrong-kind.yaml",
		"number-secret.yaml", "literal-secret.yaml", "bad-env-name.yaml", "missing-cluster-name.yaml",
		"bad-cluster-name.yaml", "bad-vlan.yaml", "bad-ssh-port.yaml", "small-memory.yaml", "small-disk.yaml",
		"too-many-cores.yaml", "unknown-component.yaml", "provider-unknown.yaml",
		"appliance-after-sleep.yaml", "appliance-wipe-text.yaml", "bad-provision-method.yaml",
	} {
		if err := sch.Validate(yamlToJSON(t, readFile(t, "testdata/bad/"+name))); err == nil {
			t.Errorf("schema accepts testdata/bad/%s", name)
		}
	}
}
