package artifacts

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"text/template"
)

// K3s release file locations.
const (
	// DefaultK3sReleaseURL is where GitHub serves release files.
	DefaultK3sReleaseURL = "https://github.com/k3s-io/k3s/releases/download/{{.Version}}/{{.File}}"
	// DefaultK3sScriptURL serves the install script (not a release file).
	DefaultK3sScriptURL = "https://get.k3s.io"
)

// Mirror says where K3s release files come from.
type Mirror struct {
	// Release locates the release files: a URL template or base. Fields:
	// {{.Version}} (URL-escaped, "+" becomes "%2B", in URLs; as is in plain
	// paths), {{.RawVersion}}, {{.File}}, {{.Arch}}. Without {{.File}} the
	// file name is appended, so "https://mirror/k3s/{{.Version}}/",
	// "file:///srv/k3s/v1.33.5+k3s1/" and "/srv/k3s/v1.33.5+k3s1" (an
	// air-gapped directory) all work. Default DefaultK3sReleaseURL.
	Release string
	// Script is install.sh's URL. Default: DefaultK3sScriptURL with the
	// default Release, else "install.sh" next to the release files (an
	// air-gapped mirror must carry it).
	Script string
	// ScriptDigest pins install.sh ("sha256:<hex>"). K3s publishes no
	// checksum for the script, so without a pin it is trusted as served by
	// Script (over HTTPS) on first download, and the cache keeps serving
	// that same copy afterwards.
	ScriptDigest string
	// Arch is amd64 (default), arm64 or arm.
	Arch string
}

// Release is a resolved K3s release: the four files to fetch. Binary and
// Images are verified against Checksums.
type Release struct {
	Version   string
	Arch      string
	Binary    Source // k3s (k3s-arm64, k3s-armhf)
	Images    Source // k3s-airgap-images-<arch>.tar.zst
	Checksums Source // sha256sum-<arch>.txt
	Script    Source // install.sh
}

// LocalFiles are a release's files in the cache.
type LocalFiles struct {
	Binary, Images, Checksums, Script File
}

var k3sVersionRE = regexp.MustCompile(`^v\d+\.\d+\.\d+(-rc\d+)?\+k3s\d+$`)

var k3sBinaryByArch = map[string]string{"amd64": "k3s", "arm64": "k3s-arm64", "arm": "k3s-armhf"}

// Resolve computes the URLs of a K3s release (e.g. v1.33.5+k3s1) on m.
func Resolve(version string, m Mirror) (Release, error) {
	if !k3sVersionRE.MatchString(version) {
		return Release{}, fmt.Errorf("k3s version %q: want a release tag like v1.33.5+k3s1", version)
	}
	arch := m.Arch
	if arch == "" {
		arch = "amd64"
	}
	binary, ok := k3sBinaryByArch[arch]
	if !ok {
		return Release{}, fmt.Errorf("k3s architecture %q: want amd64, arm64 or arm", arch)
	}
	tmpl := m.Release
	if tmpl == "" {
		tmpl = DefaultK3sReleaseURL
	}
	t, err := template.New("k3s").Option("missingkey=error").Parse(tmpl)
	if err != nil {
		return Release{}, fmt.Errorf("k3s mirror template %q: %w", tmpl, err)
	}
	locate := func(file string) (string, error) { return renderLocation(t, tmpl, version, arch, file) }

	r := Release{Version: version, Arch: arch}
	files := []struct {
		dst  *Source
		file string
	}{
		{&r.Checksums, "sha256sum-" + arch + ".txt"},
		{&r.Binary, binary},
		{&r.Images, "k3s-airgap-images-" + arch + ".tar.zst"},
	}
	for _, f := range files {
		u, err := locate(f.file)
		if err != nil {
			return Release{}, err
		}
		*f.dst = Source{URL: u, Name: f.file}
	}
	r.Binary.ChecksumURL = r.Checksums.URL
	r.Images.ChecksumURL = r.Checksums.URL

	script := m.Script
	switch {
	case script != "":
	case m.Release == "":
		script = DefaultK3sScriptURL
	default:
		if script, err = locate("install.sh"); err != nil {
			return Release{}, err
		}
	}
	r.Script = Source{URL: script, Name: "install.sh"}
	if m.ScriptDigest != "" {
		if r.Script.Digest, err = ParseDigest(m.ScriptDigest); err != nil {
			return Release{}, fmt.Errorf("k3s install script digest: %w", err)
		}
	}
	return r, nil
}

// renderLocation fills the template; the version is escaped for URLs, where
// a literal "+" may be read as a space, and left alone in plain paths.
func renderLocation(t *template.Template, tmpl, version, arch, file string) (string, error) {
	isURL := strings.Contains(tmpl, "://")
	v := version
	if isURL {
		v = strings.ReplaceAll(url.PathEscape(version), "+", "%2B")
	}
	var b strings.Builder
	data := map[string]string{"Version": v, "RawVersion": version, "File": file, "Arch": arch}
	if err := t.Execute(&b, data); err != nil {
		return "", fmt.Errorf("k3s mirror template %q: %w", tmpl, err)
	}
	out := b.String()
	if strings.Contains(tmpl, ".File") {
		return out, nil
	}
	if !isURL {
		return filepath.Join(out, file), nil
	}
	return strings.TrimRight(out, "/") + "/" + file, nil
}

// Fetch makes the release's files available in the cache, downloading what
// is missing. When everything is cached it makes no network request.
func (c *Cache) Fetch(ctx context.Context, r Release) (LocalFiles, error) {
	var lf LocalFiles
	for _, f := range []struct {
		dst *File
		src Source
	}{
		{&lf.Checksums, r.Checksums},
		{&lf.Binary, r.Binary},
		{&lf.Images, r.Images},
		{&lf.Script, r.Script},
	} {
		got, err := c.Get(ctx, f.src)
		if err != nil {
			return LocalFiles{}, fmt.Errorf("k3s %s: %w", r.Version, err)
		}
		*f.dst = got
	}
	return lf, nil
}
