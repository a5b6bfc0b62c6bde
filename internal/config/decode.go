package config

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// decoder decodes a yaml.Node tree onto a Go value strictly: unknown fields,
// wrong types and malformed scalars are all collected, none stops the walk.
// Decoding overlays: fields absent from the node keep their current value, so
// a profile decoded first and the user's file decoded on top merge naturally.
type decoder struct {
	file string
	errs ErrorList
	pos  map[string]Pos // field path -> where it was set
}

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, FieldError{Pos: d.at(n), Field: path, Msg: fmt.Sprintf(format, args...)})
}

func (d *decoder) at(n *yaml.Node) Pos { return Pos{File: d.file, Line: n.Line, Col: n.Column} }

// decode walks n onto v. key is the mapping key node naming this value (nil
// for sequence items and the root); its position is where errors point.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string, key *yaml.Node) {
	anchor := n
	if key != nil {
		anchor = key
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	if path != "" {
		d.pos[path] = d.at(anchor)
	}
	if isNull(n) {
		return // "key:" or "key: ~" leaves the value as it was
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem(), path, key)
	case reflect.Struct:
		d.decodeStruct(n, v, path, anchor)
	case reflect.Map:
		d.decodeMap(n, v, path, anchor)
	case reflect.Slice:
		d.decodeSlice(n, v, path, anchor)
	case reflect.Interface:
		var x any
		if err := n.Decode(&x); err != nil {
			d.fail(anchor, path, "%v", err)
			return
		}
		if old, ok := v.Interface().(map[string]any); ok {
			if nx, ok := x.(map[string]any); ok {
				x = mergeValues(old, nx)
			}
		}
		v.Set(reflect.ValueOf(&x).Elem())
	case reflect.String:
		if v.Type() == reflect.TypeFor[SecretRef]() && (n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str") {
			// Never echo what may be a literal secret.
			d.fail(anchor, path, `must be a secret reference "env:NAME" or "file:PATH", got %s`, describe(n))
			return
		}
		if s, ok := d.scalar(n, path, anchor, "!!str", "a string"); ok {
			v.SetString(s)
		}
	case reflect.Bool:
		if s, ok := d.scalar(n, path, anchor, "!!bool", "true or false"); ok {
			b, _ := strconv.ParseBool(strings.ToLower(s))
			v.SetBool(b)
		}
	case reflect.Int, reflect.Int64, reflect.Int32:
		if s, ok := d.scalar(n, path, anchor, "!!int", "a whole number"); ok {
			i, err := strconv.ParseInt(s, 0, 64)
			if err != nil || i > math.MaxInt32 || i < math.MinInt32 {
				d.fail(anchor, path, "%s is out of range", s)
				return
			}
			v.SetInt(i)
		}
	default:
		d.fail(anchor, path, "internal error: cannot decode into %s", v.Type())
	}
}

// scalar checks that n is a scalar with the wanted YAML tag.
func (d *decoder) scalar(n *yaml.Node, path string, anchor *yaml.Node, tag, want string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.fail(anchor, path, "must be %s, got %s", want, describe(n))
		return "", false
	}
	if n.ShortTag() != tag {
		hint := ""
		if tag == "!!str" {
			hint = ` (put it in quotes to use it as text)`
		}
		d.fail(anchor, path, "must be %s, got %s %q%s", want, describe(n), n.Value, hint)
		return "", false
	}
	return n.Value, true
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string, anchor *yaml.Node) {
	if n.Kind != yaml.MappingNode {
		d.fail(anchor, path, "must be a mapping of fields, got %s", describe(n))
		return
	}
	fields := structFields(v.Type())
	d.pairs(n, path, func(k, val *yaml.Node) {
		name := k.Value
		idx, ok := fields[name]
		if !ok {
			d.fail(k, join(path, name), "unknown field%s", suggest(name, fields))
			return
		}
		d.decode(val, v.Field(idx), join(path, name), k)
	})
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string, anchor *yaml.Node) {
	if n.Kind != yaml.MappingNode {
		d.fail(anchor, path, "must be a mapping, got %s", describe(n))
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	d.pairs(n, path, func(k, val *yaml.Node) {
		if k.Kind != yaml.ScalarNode {
			d.fail(k, path, "keys must be plain names, got %s", describe(k))
			return
		}
		mk := reflect.ValueOf(k.Value).Convert(v.Type().Key())
		// Decode onto a copy of the existing entry so profiles merge per key.
		elem := reflect.New(v.Type().Elem()).Elem()
		if old := v.MapIndex(mk); old.IsValid() {
			elem.Set(old)
		}
		d.decode(val, elem, join(path, k.Value), k)
		v.SetMapIndex(mk, elem)
	})
}

// pairs calls fn for each key/value of a mapping. YAML merge keys
// (<<: *anchor or <<: [*a, *b]) are applied first so the mapping's own keys
// win, as the YAML spec says; a key given twice is an error, not "last wins".
func (d *decoder) pairs(n *yaml.Node, path string, fn func(k, val *yaml.Node)) {
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if isMergeKey(k) {
			d.merge(k, val, path, fn)
			continue
		}
		if k.Kind == yaml.ScalarNode {
			if first, dup := seen[k.Value]; dup {
				d.fail(k, join(path, k.Value), "duplicate key: already set at line %d", first.Line)
				continue
			}
			seen[k.Value] = k
		}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if isMergeKey(k) || (k.Kind == yaml.ScalarNode && seen[k.Value] != k) {
			continue
		}
		fn(k, val)
	}
}

// merge applies the value of a merge key: a mapping or a list of mappings,
// where earlier mappings win over later ones.
func (d *decoder) merge(k, val *yaml.Node, path string, fn func(k, val *yaml.Node)) {
	if val.Kind == yaml.AliasNode {
		val = val.Alias
	}
	switch val.Kind {
	case yaml.MappingNode:
		d.pairs(val, path, fn)
	case yaml.SequenceNode:
		for i := len(val.Content) - 1; i >= 0; i-- {
			item := val.Content[i]
			if item.Kind == yaml.AliasNode {
				item = item.Alias
			}
			if item.Kind != yaml.MappingNode {
				d.fail(k, join(path, "<<"), "merge key needs a mapping or a list of mappings, got %s", describe(item))
				continue
			}
			d.pairs(item, path, fn)
		}
	default:
		d.fail(k, join(path, "<<"), "merge key needs a mapping or a list of mappings, got %s", describe(val))
	}
}

func isMergeKey(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge"
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value, path string, anchor *yaml.Node) {
	if n.Kind != yaml.SequenceNode {
		d.fail(anchor, path, "must be a list, got %s", describe(n))
		return
	}
	// Lists replace: a list in the user's file overrides the profile's list.
	out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		d.decode(item, out.Index(i), fmt.Sprintf("%s[%d]", path, i), nil)
	}
	v.Set(out)
}

// structFields maps YAML names to field indexes.
func structFields(t reflect.Type) map[string]int {
	m := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = i
	}
	return m
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return "text"
		case "!!int":
			return "a number"
		case "!!float":
			return "a decimal number"
		case "!!bool":
			return "a boolean"
		case "!!null":
			return "nothing"
		}
		return "a value"
	}
	return "an unsupported YAML node"
}

// suggest proposes the closest known field name for a typo.
func suggest(name string, fields map[string]int) string {
	best, bestDist := "", 3
	for f := range fields {
		if dist := levenshtein(strings.ToLower(name), strings.ToLower(f)); dist < bestDist || (dist == bestDist && f < best) {
			best, bestDist = f, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// mergeValues deep-merges free-form Helm values: maps merge, anything else
// from over replaces base.
func mergeValues(base, over map[string]any) map[string]any {
	out := make(map[string]any, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		if bm, ok := out[k].(map[string]any); ok {
			if om, ok := v.(map[string]any); ok {
				out[k] = mergeValues(bm, om)
				continue
			}
		}
		out[k] = v
	}
	return out
}
