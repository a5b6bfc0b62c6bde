// Package schemagen derives the emulator's compact schema facts from the
// official Proxmox VE API description (the API viewer's apidata, flattened to
// {path: {METHOD: {parameters, returns, ...}}}).
//
// Only the endpoints the emulator serves are kept, and for each of them only
// the facts request validation needs: parameter names, types, optionality,
// enums, patterns, formats (named or property-string), ranges, lengths,
// "requires" links, the index range of numbered parameters ("net[n]") and
// additionalProperties, plus a shallow description of the returned data so
// tests can check the emulator's responses against it. Descriptions, type
// texts, defaults and permissions are dropped: the output is the project's
// own data, not a copy of the upstream file.
package schemagen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
)

// Endpoint names one method on one API path.
type Endpoint struct {
	Method string
	Path   string
}

// Endpoints is the API surface of the emulator: every endpoint an installer
// needs (reference/pve-api/installer-endpoints.md) plus the storage status
// read go-proxmox uses for Node.Storage and the node network list (bridges).
var Endpoints = []Endpoint{
	{"GET", "/version"},
	{"POST", "/access/ticket"},
	{"GET", "/cluster/status"},
	{"GET", "/cluster/resources"},
	{"GET", "/cluster/nextid"},
	{"GET", "/nodes"},
	{"GET", "/nodes/{node}/status"},
	{"GET", "/nodes/{node}/network"},
	{"GET", "/nodes/{node}/storage"},
	{"GET", "/nodes/{node}/storage/{storage}/status"},
	{"GET", "/nodes/{node}/storage/{storage}/content"},
	{"POST", "/nodes/{node}/storage/{storage}/content"},
	{"GET", "/nodes/{node}/storage/{storage}/content/{volume}"},
	{"DELETE", "/nodes/{node}/storage/{storage}/content/{volume}"},
	{"POST", "/nodes/{node}/storage/{storage}/upload"},
	{"POST", "/nodes/{node}/storage/{storage}/download-url"},
	{"GET", "/nodes/{node}/qemu"},
	{"POST", "/nodes/{node}/qemu"},
	{"DELETE", "/nodes/{node}/qemu/{vmid}"},
	{"GET", "/nodes/{node}/qemu/{vmid}/config"},
	{"POST", "/nodes/{node}/qemu/{vmid}/config"},
	{"PUT", "/nodes/{node}/qemu/{vmid}/config"},
	{"GET", "/nodes/{node}/qemu/{vmid}/pending"},
	{"POST", "/nodes/{node}/qemu/{vmid}/clone"},
	{"POST", "/nodes/{node}/qemu/{vmid}/template"},
	{"PUT", "/nodes/{node}/qemu/{vmid}/resize"},
	{"POST", "/nodes/{node}/qemu/{vmid}/status/start"},
	{"POST", "/nodes/{node}/qemu/{vmid}/status/stop"},
	{"POST", "/nodes/{node}/qemu/{vmid}/status/shutdown"},
	{"GET", "/nodes/{node}/qemu/{vmid}/status/current"},
	{"POST", "/nodes/{node}/qemu/{vmid}/agent/ping"},
	{"GET", "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces"},
	{"GET", "/nodes/{node}/qemu/{vmid}/cloudinit"},
	{"PUT", "/nodes/{node}/qemu/{vmid}/cloudinit"},
	{"GET", "/nodes/{node}/qemu/{vmid}/cloudinit/dump"},
	{"GET", "/nodes/{node}/tasks"},
	{"DELETE", "/nodes/{node}/tasks/{upid}"},
	{"GET", "/nodes/{node}/tasks/{upid}/status"},
	{"GET", "/nodes/{node}/tasks/{upid}/log"},
}

// indexMax holds the highest index of numbered parameters whose description
// does not state it ("(n is 0 to N)"). The values are qemu-server's limits:
// MAX_NETS (32), MAX_UNUSED_DISKS (256), MAX_HOSTPCI_DEVICES (16),
// MAX_NUMA (8), MAX_USB_DEVICES (14) and max_virtiofs (10).
var indexMax = map[string]int{
	"net":      31,
	"ipconfig": 31,
	"unused":   255,
	"hostpci":  15,
	"numa":     7,
	"usb":      13,
	"virtiofs": 9,
}

// Schema is the generated document.
type Schema struct {
	Comment     string                         `json:"comment"`
	Endpoints   []*Method                      `json:"endpoints"`
	PropFormats map[string]map[string]*SubProp `json:"propformats"`
}

// Method holds the facts of one endpoint.
type Method struct {
	Method               string            `json:"method"`
	Path                 string            `json:"path"`
	Name                 string            `json:"name"`
	AllowToken           bool              `json:"allowtoken"`
	Protected            bool              `json:"protected,omitempty"`
	ProxyTo              string            `json:"proxyto,omitempty"`
	AdditionalProperties bool              `json:"additionalProperties"`
	Params               map[string]*Param `json:"params"`
	Returns              *Returns          `json:"returns,omitempty"`
}

// Param holds the facts of one parameter.
type Param struct {
	Type       string   `json:"type"`
	Optional   bool     `json:"optional,omitempty"`
	Enum       []string `json:"enum,omitempty"`
	Pattern    string   `json:"pattern,omitempty"`
	Format     string   `json:"format,omitempty"`
	PropFormat string   `json:"propformat,omitempty"`
	Minimum    *float64 `json:"minimum,omitempty"`
	Maximum    *float64 `json:"maximum,omitempty"`
	MinLength  *int     `json:"minLength,omitempty"`
	MaxLength  *int     `json:"maxLength,omitempty"`
	Requires   string   `json:"requires,omitempty"`
	Indexed    []int    `json:"indexed,omitempty"`
}

// SubProp holds the facts of one key of a property string.
type SubProp struct {
	Type       string   `json:"type,omitempty"`
	Optional   bool     `json:"optional,omitempty"`
	Enum       []string `json:"enum,omitempty"`
	Pattern    string   `json:"pattern,omitempty"`
	Format     string   `json:"format,omitempty"`
	Minimum    *float64 `json:"minimum,omitempty"`
	Maximum    *float64 `json:"maximum,omitempty"`
	MinLength  *int     `json:"minLength,omitempty"`
	MaxLength  *int     `json:"maxLength,omitempty"`
	DefaultKey bool     `json:"default_key,omitempty"`
	Alias      string   `json:"alias,omitempty"`
	KeyAlias   string   `json:"keyAlias,omitempty"`
}

// Returns describes returned data one level deep.
type Returns struct {
	Type       string              `json:"type,omitempty"`
	Optional   bool                `json:"optional,omitempty"`
	Enum       []string            `json:"enum,omitempty"`
	Pattern    string              `json:"pattern,omitempty"`
	Format     string              `json:"format,omitempty"`
	Properties map[string]*Returns `json:"properties,omitempty"`
	Items      *Returns            `json:"items,omitempty"`
}

var rangeRE = regexp.MustCompile(`\(n is 0 to (\d+)`)

// Generate reads the flattened API description and returns the compact
// schema document (indented JSON with a trailing newline).
func Generate(apidata []byte) ([]byte, error) {
	var api map[string]map[string]map[string]any
	if err := json.Unmarshal(apidata, &api); err != nil {
		return nil, fmt.Errorf("schemagen: decode API description: %w", err)
	}
	out := &Schema{
		Comment: "Generated by e2e/pvesim/cmd/pvesim-schemagen from the PVE 9.1 API description " +
			"(pve-docs api-viewer apidata). Facts for request validation only; do not edit.",
		PropFormats: map[string]map[string]*SubProp{},
	}
	for _, ep := range Endpoints {
		methods, ok := api[ep.Path]
		if !ok {
			return nil, fmt.Errorf("schemagen: path %s not in API description", ep.Path)
		}
		info, ok := methods[ep.Method]
		if !ok {
			return nil, fmt.Errorf("schemagen: %s %s not in API description", ep.Method, ep.Path)
		}
		m, err := convertMethod(out, ep, info)
		if err != nil {
			return nil, err
		}
		out.Endpoints = append(out.Endpoints, m)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", " ")
	if err := enc.Encode(out); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func convertMethod(out *Schema, ep Endpoint, info map[string]any) (*Method, error) {
	m := &Method{
		Method:     ep.Method,
		Path:       ep.Path,
		Name:       str(info["name"]),
		AllowToken: truthy(info["allowtoken"], true),
		Protected:  truthy(info["protected"], false),
		ProxyTo:    str(info["proxyto"]),
		Params:     map[string]*Param{},
	}
	params, _ := info["parameters"].(map[string]any)
	m.AdditionalProperties = truthy(params["additionalProperties"], true)
	props, _ := params["properties"].(map[string]any)
	for _, name := range sortedKeys(props) {
		raw, _ := props[name].(map[string]any)
		p, err := convertParam(out, name, raw)
		if err != nil {
			return nil, fmt.Errorf("schemagen: %s %s param %s: %w", ep.Method, ep.Path, name, err)
		}
		m.Params[name] = p
	}
	if ret, ok := info["returns"].(map[string]any); ok {
		m.Returns = convertReturns(ret, 2)
	}
	return m, nil
}

func convertParam(out *Schema, name string, raw map[string]any) (*Param, error) {
	p := &Param{
		Type:     str(raw["type"]),
		Optional: truthy(raw["optional"], false),
		Enum:     strList(raw["enum"]),
		Pattern:  str(raw["pattern"]),
		Requires: str(raw["requires"]),
	}
	if p.Type == "" {
		p.Type = "string"
	}
	var err error
	if p.Minimum, err = num(raw["minimum"]); err != nil {
		return nil, err
	}
	if p.Maximum, err = num(raw["maximum"]); err != nil {
		return nil, err
	}
	p.MinLength = intp(raw["minLength"])
	p.MaxLength = intp(raw["maxLength"])
	switch f := raw["format"].(type) {
	case string:
		p.Format = f
	case map[string]any:
		base := name
		if len(base) > 3 && base[len(base)-3:] == "[n]" {
			base = base[:len(base)-3]
		}
		ref, err := addPropFormat(out, base, f)
		if err != nil {
			return nil, err
		}
		p.PropFormat = ref
	}
	if len(name) > 3 && name[len(name)-3:] == "[n]" {
		base := name[:len(name)-3]
		max, ok := indexMax[base]
		if !ok {
			mm := rangeRE.FindStringSubmatch(str(raw["description"]))
			if mm == nil {
				return nil, fmt.Errorf("no index range known for %s", name)
			}
			max, _ = strconv.Atoi(mm[1])
		}
		p.Indexed = []int{0, max}
	}
	return p, nil
}

func addPropFormat(out *Schema, base string, f map[string]any) (string, error) {
	sub := map[string]*SubProp{}
	for _, k := range sortedKeys(f) {
		raw, _ := f[k].(map[string]any)
		sp := &SubProp{
			Type:       str(raw["type"]),
			Optional:   truthy(raw["optional"], false),
			Enum:       strList(raw["enum"]),
			Pattern:    str(raw["pattern"]),
			DefaultKey: truthy(raw["default_key"], false),
			Alias:      str(raw["alias"]),
			KeyAlias:   str(raw["keyAlias"]),
		}
		if s, ok := raw["format"].(string); ok {
			sp.Format = s
		}
		var err error
		if sp.Minimum, err = num(raw["minimum"]); err != nil {
			return "", err
		}
		if sp.Maximum, err = num(raw["maximum"]); err != nil {
			return "", err
		}
		sp.MinLength = intp(raw["minLength"])
		sp.MaxLength = intp(raw["maxLength"])
		sub[k] = sp
	}
	want, _ := json.Marshal(sub)
	for i := 1; ; i++ {
		ref := base
		if i > 1 {
			ref = fmt.Sprintf("%s#%d", base, i)
		}
		have, ok := out.PropFormats[ref]
		if !ok {
			out.PropFormats[ref] = sub
			return ref, nil
		}
		got, _ := json.Marshal(have)
		if bytes.Equal(got, want) {
			return ref, nil
		}
	}
}

func convertReturns(raw map[string]any, depth int) *Returns {
	r := &Returns{
		Type:     str(raw["type"]),
		Optional: truthy(raw["optional"], false),
		Enum:     strList(raw["enum"]),
		Pattern:  str(raw["pattern"]),
	}
	if s, ok := raw["format"].(string); ok {
		r.Format = s
	}
	if depth <= 0 {
		return r
	}
	if props, ok := raw["properties"].(map[string]any); ok && len(props) > 0 {
		r.Properties = map[string]*Returns{}
		for _, k := range sortedKeys(props) {
			if sub, ok := props[k].(map[string]any); ok {
				r.Properties[k] = convertReturns(sub, depth-1)
			}
		}
	}
	if items, ok := raw["items"].(map[string]any); ok {
		r.Items = convertReturns(items, depth)
	}
	return r
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func str(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return ""
}

func strList(v any) []string {
	l, ok := v.([]any)
	if !ok {
		return nil
	}
	out := make([]string, 0, len(l))
	for _, e := range l {
		if e == nil {
			out = append(out, "")
			continue
		}
		out = append(out, str(e))
	}
	return out
}

func truthy(v any, def bool) bool {
	switch x := v.(type) {
	case float64:
		return x != 0
	case bool:
		return x
	case string:
		return x != "" && x != "0"
	}
	return def
}

func num(v any) (*float64, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case float64:
		return &x, nil
	case string:
		f, err := strconv.ParseFloat(x, 64)
		if err != nil {
			return nil, fmt.Errorf("bad number %q", x)
		}
		return &f, nil
	}
	return nil, fmt.Errorf("bad number %v", v)
}

func intp(v any) *int {
	if f, ok := v.(float64); ok {
		i := int(f)
		return &i
	}
	if s, ok := v.(string); ok {
		if i, err := strconv.Atoi(s); err == nil {
			return &i
		}
	}
	return nil
}
