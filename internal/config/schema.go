package config

import (
	"encoding/json"
	"reflect"
	"slices"

	"github.com/invopop/jsonschema"
)

// secretRefPattern mirrors SecretRef.parse for editors.
const secretRefPattern = `^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$`

// JSONSchema returns a JSON Schema (draft 2020-12) of the install config,
// generated from the Go types so it cannot drift from what Load accepts.
// It only describes shape; Load also checks references and cross-field rules.
func JSONSchema() ([]byte, error) {
	r := &jsonschema.Reflector{
		FieldNameTag:               "yaml",
		RequiredFromJSONSchemaTags: true,
		DoNotReference:             true,
		Mapper: func(t reflect.Type) *jsonschema.Schema {
			if t == reflect.TypeFor[SecretRef]() {
				return &jsonschema.Schema{Type: "string", Pattern: secretRefPattern,
					Description: "Secret reference: env:NAME or file:PATH"}
			}
			return nil
		},
	}
	s := r.Reflect(&Config{})
	s.ID = "https://opencsp.io/schemas/installconfig-v1alpha1.json"
	s.Title = "OpenCSP InstallConfig"
	if names, ok := s.Properties.Get("components"); ok {
		names.PropertyNames = &jsonschema.Schema{Enum: toAny(componentNames)}
	}
	allowNull(s)
	return json.MarshalIndent(s, "", "  ")
}

// allowNull lets optional fields be null, as Load does: "key:" with nothing
// after it (e.g. a section whose lines are all commented out, as in the
// config init example) leaves the value as the profile set it. Required
// fields and enums stay non-null.
func allowNull(s *jsonschema.Schema) {
	if s.Items != nil {
		allowNull(s.Items)
	}
	if s.AdditionalProperties != nil {
		allowNull(s.AdditionalProperties)
	}
	if s.Properties == nil {
		return
	}
	for name, p := range s.Properties.FromOldest() {
		allowNull(p)
		if p.Type == "" || len(p.Enum) > 0 || slices.Contains(s.Required, name) {
			continue
		}
		if p.Extras == nil {
			p.Extras = map[string]any{}
		}
		// invopop/jsonschema has a single-valued Type; Extras are written as-is.
		p.Extras["type"] = []string{p.Type, "null"}
		p.Type = ""
	}
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
