// Package version reports the installer's version, set at build time with
// -ldflags "-X github.com/opencsp/installer/internal/version.version=v0.1.0"
// and otherwise read from the Go build info.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

var version = "" // set by -ldflags

// Info describes this build.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit,omitempty"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// Get returns the build's version information.
func Get() Info {
	i := Info{Version: version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if i.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			i.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				i.Commit = s.Value
			}
		}
	}
	if i.Version == "" {
		i.Version = "dev"
	}
	return i
}

// String is the one-line form used in logs and commit messages.
func (i Info) String() string {
	s := "opencsp " + i.Version
	if i.Commit != "" {
		s += fmt.Sprintf(" (%.12s)", i.Commit)
	}
	return s
}
