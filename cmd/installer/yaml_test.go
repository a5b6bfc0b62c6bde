package main

import (
	"encoding/json"

	"go.yaml.in/yaml/v3"
)

// yamlToJSONValue turns a YAML document into the value a JSON decoder
// would produce, for schema validation.
func yamlToJSONValue(doc string) (any, error) {
	var v any
	if err := yaml.Unmarshal([]byte(doc), &v); err != nil {
		return nil, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	return out, json.Unmarshal(b, &out)
}
