package pvesim

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
)

//go:generate go run ./cmd/pvesim-schemagen

//go:embed apischema.json
var apiSchemaJSON []byte

// apiSchema holds the facts of the official API schema the emulator
// validates requests against (see internal/schemagen).
type apiSchema struct {
	Endpoints   []*endpoint                    `json:"endpoints"`
	PropFormats map[string]map[string]*subProp `json:"propformats"`
}

type endpoint struct {
	Method               string            `json:"method"`
	Path                 string            `json:"path"`
	Name                 string            `json:"name"`
	AllowToken           bool              `json:"allowtoken"`
	Protected            bool              `json:"protected"`
	ProxyTo              string            `json:"proxyto"`
	AdditionalProperties bool              `json:"additionalProperties"`
	Params               map[string]*param `json:"params"`
	Returns              *returnsSpec      `json:"returns"`

	segments []string
	rest     bool // the last path parameter captures the rest of the path
	indexed  map[string]*param
}

type param struct {
	Type       string   `json:"type"`
	Optional   bool     `json:"optional"`
	Enum       []string `json:"enum"`
	Pattern    string   `json:"pattern"`
	Format     string   `json:"format"`
	PropFormat string   `json:"propformat"`
	Minimum    *float64 `json:"minimum"`
	Maximum    *float64 `json:"maximum"`
	MinLength  *int     `json:"minLength"`
	MaxLength  *int     `json:"maxLength"`
	Requires   string   `json:"requires"`
	Indexed    []int    `json:"indexed"`

	re *regexp.Regexp
}

type subProp struct {
	Type       string   `json:"type"`
	Optional   bool     `json:"optional"`
	Enum       []string `json:"enum"`
	Pattern    string   `json:"pattern"`
	Format     string   `json:"format"`
	Minimum    *float64 `json:"minimum"`
	Maximum    *float64 `json:"maximum"`
	MinLength  *int     `json:"minLength"`
	MaxLength  *int     `json:"maxLength"`
	DefaultKey bool     `json:"default_key"`
	Alias      string   `json:"alias"`
	KeyAlias   string   `json:"keyAlias"`

	re *regexp.Regexp
}

type returnsSpec struct {
	Type       string                  `json:"type"`
	Optional   bool                    `json:"optional"`
	Enum       []string                `json:"enum"`
	Pattern    string                  `json:"pattern"`
	Format     string                  `json:"format"`
	Properties map[string]*returnsSpec `json:"properties"`
	Items      *returnsSpec            `json:"items"`
}

var (
	schemaOnce sync.Once
	schemaVal  *apiSchema
	schemaErr  error
)

// loadSchema parses the embedded schema facts once.
func loadSchema() (*apiSchema, error) {
	schemaOnce.Do(func() {
		var s apiSchema
		if err := json.Unmarshal(apiSchemaJSON, &s); err != nil {
			schemaErr = fmt.Errorf("pvesim: embedded schema: %w", err)
			return
		}
		for _, ep := range s.Endpoints {
			ep.segments = splitPath(ep.Path)
			if n := len(ep.segments); n > 0 && ep.segments[n-1] == "{volume}" {
				ep.rest = true
			}
			ep.indexed = map[string]*param{}
			for name, p := range ep.Params {
				if p.Pattern != "" {
					re, err := compilePerlPattern(p.Pattern)
					if err != nil {
						schemaErr = fmt.Errorf("pvesim: %s %s %s: %w", ep.Method, ep.Path, name, err)
						return
					}
					p.re = re
				}
				if strings.HasSuffix(name, "[n]") {
					ep.indexed[strings.TrimSuffix(name, "[n]")] = p
				}
			}
		}
		for fname, f := range s.PropFormats {
			for k, sp := range f {
				if sp.Pattern != "" {
					re, err := compilePerlPattern(sp.Pattern)
					if err != nil {
						schemaErr = fmt.Errorf("pvesim: property format %s key %s: %w", fname, k, err)
						return
					}
					sp.re = re
				}
			}
		}
		schemaVal = &s
	})
	return schemaVal, schemaErr
}

func mustSchema() *apiSchema {
	s, err := loadSchema()
	if err != nil {
		panic(err)
	}
	return s
}

// compilePerlPattern turns a PVE (Perl) pattern into an anchored Go regexp,
// the way JSONSchema.pm applies it: m/^$pattern$/.
func compilePerlPattern(p string) (*regexp.Regexp, error) {
	p = strings.ReplaceAll(p, "(?^:", "(?:")
	p = strings.ReplaceAll(p, "(?^i:", "(?i:")
	p = regexp.MustCompile(`\{,(\d+)\}`).ReplaceAllString(p, "{0,$1}")
	return regexp.Compile(`^(?:` + p + `)$`)
}

func splitPath(p string) []string {
	var out []string
	for _, s := range strings.Split(p, "/") {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// route finds the endpoint for method and path (relative to /api2/json) and
// the path parameters. known reports whether the path exists for any method.
func (s *apiSchema) route(method, path string) (ep *endpoint, pathParams map[string]string) {
	segs := splitPath(path)
	for _, e := range s.Endpoints {
		if e.Method != method {
			continue
		}
		if pp, ok := e.match(segs); ok {
			return e, pp
		}
	}
	return nil, nil
}

func (e *endpoint) match(segs []string) (map[string]string, bool) {
	if len(segs) < len(e.segments) || (!e.rest && len(segs) != len(e.segments)) {
		return nil, false
	}
	pp := map[string]string{}
	for i, t := range e.segments {
		if strings.HasPrefix(t, "{") {
			name := strings.Trim(t, "{}")
			if e.rest && i == len(e.segments)-1 {
				pp[name] = strings.Join(segs[i:], "/")
			} else {
				pp[name] = segs[i]
			}
			continue
		}
		if segs[i] != t {
			return nil, false
		}
	}
	return pp, true
}

func (s *apiSchema) endpoint(method, path string) *endpoint {
	for _, e := range s.Endpoints {
		if e.Method == method && e.Path == path {
			return e
		}
	}
	return nil
}

// lookup finds the schema of a parameter, expanding numbered parameters
// ("net3" -> "net[n]") within their index range.
func (e *endpoint) lookup(name string) *param {
	if p, ok := e.Params[name]; ok {
		return p
	}
	i := len(name)
	for i > 0 && name[i-1] >= '0' && name[i-1] <= '9' {
		i--
	}
	if i == len(name) || i == 0 {
		return nil
	}
	digits := name[i:]
	if len(digits) > 1 && digits[0] == '0' {
		return nil
	}
	p, ok := e.indexed[name[:i]]
	if !ok {
		return nil
	}
	n, err := strconv.Atoi(digits)
	if err != nil || n < p.Indexed[0] || n > p.Indexed[1] {
		return nil
	}
	return p
}

// valKind is the JSON type of a request parameter (form data is all strings).
type valKind int

const (
	kindString valKind = iota
	kindNumber
	kindBool
	kindNull
	kindObject
	kindArray
)

// pval is a request parameter value as PVE's Perl code sees it.
type pval struct {
	kind valKind
	s    string // the value stringified the way Perl would
}

func strVal(s string) pval { return pval{kind: kindString, s: s} }

// perlRef is what Perl's ref() returns for a decoded JSON value.
func (v pval) perlRef() string {
	switch v.kind {
	case kindBool:
		return "JSON::PP::Boolean"
	case kindObject:
		return "HASH"
	case kindArray:
		return "ARRAY"
	}
	return ""
}

// paramErrors collects validation errors keyed by parameter, joining several
// errors for one key the way PVE does (with a literal backslash-n).
type paramErrors map[string]string

func (pe paramErrors) add(key, msg string) {
	if key == "" {
		key = "_root"
	}
	if old, ok := pe[key]; ok {
		pe[key] = old + `\n` + msg
		return
	}
	pe[key] = msg
}

// validate checks params against the endpoint's schema facts like
// PVE::JSONSchema::validate does and returns the errors (nil when valid).
func (e *endpoint) validate(params map[string]pval) paramErrors {
	errs := paramErrors{}
	// schema properties first (missing, type, format, ...)
	names := make([]string, 0, len(e.Params))
	for n := range e.Params {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := e.Params[n]
		if p.Indexed != nil {
			continue
		}
		v, ok := params[n]
		checkParam(e, n, p, v, ok && v.kind != kindNull, errs)
	}
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := params[k]
		p := e.lookup(k)
		if p != nil && p.Indexed != nil {
			checkParam(e, k, p, v, v.kind != kindNull, errs)
		}
		if p != nil {
			if p.Requires != "" {
				if rv, ok := params[p.Requires]; !ok || rv.kind == kindNull {
					errs.add(p.Requires, "missing property - '"+k+"' requires this property")
				}
			}
			continue
		}
		if !e.AdditionalProperties {
			errs.add(k, "property is not defined in schema and the schema does not allow additional properties")
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return errs
}

func checkParam(e *endpoint, name string, p *param, v pval, present bool, errs paramErrors) {
	if !present {
		if !p.Optional {
			errs.add(name, "property is missing and it is not optional")
		}
		return
	}
	if msg, ok := checkType(p.Type, v); !ok {
		errs.add(name, msg)
		return
	}
	if v.kind == kindObject || v.kind == kindArray {
		return
	}
	val := v.s
	if p.PropFormat != "" {
		if err := checkPropertyString(mustSchema().PropFormats[p.PropFormat], val, name); err != nil {
			errs.add(name, "invalid format - "+err.Error())
			return
		}
	} else if p.Format != "" {
		if err := checkFormat(e, p.Format, val, name); err != nil {
			errs.add(name, "invalid format - "+err.Error())
			return
		}
	}
	if msg := checkConstraints(val, p.re, p.MaxLength, p.MinLength, p.Minimum, p.Maximum, p.Enum); msg != "" {
		errs.add(name, msg)
	}
}

// checkType mirrors JSONSchema.pm check_type for scalar types.
func checkType(typ string, v pval) (string, bool) {
	if ref := v.perlRef(); ref != "" {
		if typ == "boolean" && v.kind == kindBool {
			return "", true
		}
		switch typ {
		case "object":
			if v.kind == kindObject {
				return "", true
			}
			return fmt.Sprintf("type check ('%s') failed", typ), false
		case "array":
			if v.kind == kindArray {
				return "", true
			}
			return fmt.Sprintf("type check ('%s') failed", typ), false
		case "any", "":
			return "", true
		}
		return fmt.Sprintf("type check ('%s') failed - got %s", typ, ref), false
	}
	switch typ {
	case "boolean":
		if v.s == "1" || v.s == "0" {
			return "", true
		}
	case "integer":
		if isInteger(v.s) {
			return "", true
		}
	case "number":
		if isNumber(v.s) {
			return "", true
		}
	case "object", "array":
		return fmt.Sprintf("type check ('%s') failed", typ), false
	default:
		return "", true
	}
	return fmt.Sprintf("type check ('%s') failed - got '%s'", typ, v.s), false
}

var (
	integerRE = regexp.MustCompile(`^[+-]?\d+$`)
	numberRE  = regexp.MustCompile(`^[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?$`)
)

func isInteger(s string) bool { return integerRE.MatchString(s) }
func isNumber(s string) bool  { return numberRE.MatchString(s) }

// checkConstraints applies pattern, length, range and enum checks in the
// order JSONSchema.pm check_prop does; it returns the first error.
func checkConstraints(val string, re *regexp.Regexp, maxLen, minLen *int, min, max *float64, enum []string) string {
	if re != nil && !re.MatchString(val) {
		return "value does not match the regex pattern"
	}
	if maxLen != nil && len([]rune(val)) > *maxLen {
		return fmt.Sprintf("value may only be %d characters long", *maxLen)
	}
	if minLen != nil && len([]rune(val)) < *minLen {
		return fmt.Sprintf("value must be at least %d characters long", *minLen)
	}
	if isNumber(val) {
		f, _ := strconv.ParseFloat(val, 64)
		if max != nil && f > *max {
			return fmt.Sprintf("value must have a maximum value of %s", perlNum(*max))
		}
		if min != nil && f < *min {
			return fmt.Sprintf("value must have a minimum value of %s", perlNum(*min))
		}
	}
	if enum != nil {
		for _, ev := range enum {
			if ev == val {
				return ""
			}
		}
		return fmt.Sprintf("value '%s' does not have a value in the enumeration '%s'", val, strings.Join(enum, ", "))
	}
	return ""
}

// perlNum stringifies a number like Perl does (%.15g).
func perlNum(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1e15 {
		return strconv.FormatInt(int64(f), 10)
	}
	return strconv.FormatFloat(f, 'g', 15, 64)
}

// formatError is a die() message of a format check (with its trailing
// newline, as PVE puts it into the error text).
type formatError struct{ msg string }

func (f *formatError) Error() string { return f.msg }

func dief(format string, a ...any) error { return &formatError{msg: fmt.Sprintf(format, a...) + "\n"} }

// checkPropertyString mirrors JSONSchema.pm parse_property_string plus the
// check_object of the parsed keys (additional keys are never allowed).
func checkPropertyString(format map[string]*subProp, data, path string) error {
	_, err := parsePropertyString(format, data, path, true)
	return err
}

// parsePropertyString parses "k=v,k2=v2" (with an optional default key) into
// a map. When validate is set, each key is checked against its schema.
func parsePropertyString(format map[string]*subProp, data, path string, validate bool) (map[string]string, error) {
	res := map[string]string{}
	defaultKey := ""
	for _, part := range strings.Split(data, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		if i := strings.IndexByte(part, '='); i > 0 && i < len(part)-1 {
			k, v := part[:i], part[i+1:]
			if _, dup := res[k]; dup {
				return nil, dief("duplicate key in comma-separated list property: %s", k)
			}
			schema := format[k]
			if schema != nil && schema.Alias != "" {
				if schema.KeyAlias != "" {
					if _, dup := res[schema.KeyAlias]; dup {
						return nil, dief("key alias '%s' is already defined", schema.KeyAlias)
					}
					res[schema.KeyAlias] = k
				}
				k = schema.Alias
				schema = format[k]
			}
			if schema == nil {
				return nil, dief("invalid key in comma-separated list property: %s", k)
			}
			if schema.Type == "boolean" {
				if b, ok := parseBoolean(v); ok {
					v = b
				}
			}
			res[k] = v
		} else if !strings.Contains(part, "=") {
			if defaultKey != "" {
				return nil, dief("duplicate key in comma-separated list property: %s", defaultKey)
			}
			keys := make([]string, 0, len(format))
			for k := range format {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				if format[k].DefaultKey {
					defaultKey = k
					if _, set := res[k]; set {
						return nil, dief("duplicate key in comma-separated list property: %s", k)
					}
					res[k] = part
					break
				}
			}
			if defaultKey == "" {
				return nil, dief("value without key, but schema does not define a default key")
			}
		} else {
			return nil, dief("missing key in comma-separated list property")
		}
	}
	if !validate {
		return res, nil
	}
	errs := paramErrors{}
	keys := make([]string, 0, len(format))
	for k := range format {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		sp := format[k]
		sub := k
		if path != "" {
			sub = path + "." + k
		}
		v, ok := res[k]
		if !ok {
			if !sp.Optional && sp.Alias == "" {
				errs.add(sub, "property is missing and it is not optional")
			}
			continue
		}
		if sp.Alias != "" {
			continue
		}
		if msg, ok := checkType(sp.Type, strVal(v)); !ok {
			errs.add(sub, msg)
			continue
		}
		if sp.Format != "" {
			if err := checkFormat(nil, sp.Format, v, sub); err != nil {
				errs.add(sub, "invalid format - "+err.Error())
				continue
			}
		}
		if msg := checkConstraints(v, sp.re, sp.MaxLength, sp.MinLength, sp.Minimum, sp.Maximum, sp.Enum); msg != "" {
			errs.add(sub, msg)
		}
	}
	if len(errs) > 0 {
		msg := "format error\n"
		ek := make([]string, 0, len(errs))
		for k := range errs {
			ek = append(ek, k)
		}
		sort.Strings(ek)
		for _, k := range ek {
			msg += k + ": " + errs[k] + "\n"
		}
		return nil, &formatError{msg: msg}
	}
	return res, nil
}

// parseBoolean mirrors JSONSchema.pm parse_boolean.
func parseBoolean(s string) (string, bool) {
	switch strings.ToLower(s) {
	case "1", "on", "yes", "true":
		return "1", true
	case "0", "off", "no", "false":
		return "0", true
	}
	return "", false
}

// printPropertyString renders a parsed property string the way PVE's
// print_property_string does: the default key's value first (bare), then
// the other keys sorted; a keyAlias pair ("virtio=MAC") replaces the default key.
func printPropertyString(format map[string]*subProp, data map[string]string) string {
	var parts []string
	defaultKey := ""
	for k, sp := range format {
		if sp.DefaultKey {
			defaultKey = k
		}
	}
	skip := map[string]bool{}
	// keyAlias: e.g. net model=virtio,macaddr=X -> virtio=X
	for k, sp := range format {
		if sp.KeyAlias == "" || sp.Alias == "" {
			continue
		}
		if data[sp.KeyAlias] == k {
			if v, ok := data[sp.Alias]; ok {
				parts = append(parts, k+"="+v)
				skip[sp.KeyAlias] = true
				skip[sp.Alias] = true
			}
			break
		}
	}
	if defaultKey != "" && !skip[defaultKey] {
		if v, ok := data[defaultKey]; ok {
			parts = append(parts, v)
		}
		skip[defaultKey] = true
	}
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if skip[k] {
			continue
		}
		parts = append(parts, k+"="+data[k])
	}
	return strings.Join(parts, ",")
}
