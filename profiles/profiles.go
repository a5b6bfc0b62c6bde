// Package profiles holds the embedded install presets. A profile is a partial
// install config merged under the user's file: the user always wins.
package profiles

import (
	"embed"
	"sort"
	"strings"
)

//go:embed *.yaml
var files embed.FS

// Default is the profile used when a config names none.
const Default = "standalone"

// Get returns the profile document and its display file name.
func Get(name string) (data []byte, file string, ok bool) {
	file = name + ".yaml"
	b, err := files.ReadFile(file)
	if err != nil || strings.ContainsAny(name, "/.") {
		return nil, "", false
	}
	return b, "profiles/" + file, true
}

// Names lists the profiles, sorted.
func Names() []string {
	entries, _ := files.ReadDir(".")
	var names []string
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	sort.Strings(names)
	return names
}
