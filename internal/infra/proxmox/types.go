package proxmox

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// jsonInt decodes PVE integers, which sometimes travel as strings
// (/cluster/nextid returns "100").
type jsonInt int64

func (i *jsonInt) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*i = 0
		return nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("not an integer: %s", b)
	}
	*i = jsonInt(f)
	return nil
}

// jsonBool decodes PVE booleans: 0/1, "0"/"1" or true/false.
type jsonBool bool

func (v *jsonBool) UnmarshalJSON(b []byte) error {
	switch strings.Trim(string(b), `"`) {
	case "1", "true":
		*v = true
	case "0", "false", "", "null":
		*v = false
	default:
		var x bool
		if err := json.Unmarshal(b, &x); err != nil {
			return fmt.Errorf("not a boolean: %s", b)
		}
		*v = jsonBool(x)
	}
	return nil
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
