// Package payload describes what the appliance writes: the manifest of payload
// files with their sha256 sums, and the settings the appliance init follows.
package payload

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Names on the data partition: the appliance copies payload/<name> from the
// ISO to <name> there, and opencsp node bootstrap reads them on first boot.
const (
	ConfigFile   = "opencsp.yaml"  // the node config derived from the install config
	K3sDir       = "k3s"           // K3s release files
	ManifestsDir = "manifests"     // Flux + Core manifests
	ManifestFile = "manifest.json" // sha256 of every payload file
	SettingsFile = "appliance.json"
	// SecretsDir holds the credentials the node needs (the ops repo's);
	// node bootstrap copies them to its state dir with mode 0600, since the
	// data partition is FAT and has no modes.
	SecretsDir        = "secrets"
	OpsRepoTokenFile  = SecretsDir + "/ops-repo-token"
	OpsRepoSSHKeyFile = SecretsDir + "/ops-repo-ssh-key"
)

// Paths inside the ISO.
const (
	Dir          = "payload"
	ManifestPath = Dir + "/" + ManifestFile
	SettingsPath = Dir + "/" + SettingsFile
	OSImagePath  = Dir + "/os.img"
	// BinaryPath is the opencsp binary the installed system runs on first
	// boot (opencsp node bootstrap) from the data partition.
	BinaryPath = Dir + "/bin/opencsp"
)

// DataPath is where the appliance puts the ISO file p on the data partition
// (payload/<name> becomes <name>); false for the OS image, which is the
// disk itself, and for files outside the payload.
func DataPath(p string) (string, bool) {
	rel, ok := strings.CutPrefix(path.Clean(p), Dir+"/")
	if !ok || path.Clean(p) == OSImagePath || rel == "" {
		return "", false
	}
	return rel, true
}

// File is one payload file.
type File struct {
	Path   string `json:"path"` // ISO path, relative
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Manifest lists every payload file, sorted by path.
type Manifest struct {
	Files []File `json:"files"`
}

// Settings tell the appliance init what to do.
type Settings struct {
	Wipe          bool   `json:"wipe"`                 // allow overwriting a disk with partitions
	TargetDisk    string `json:"targetDisk,omitempty"` // "" or "auto": the only empty disk; else a /dev path
	After         string `json:"after"`                // "poweroff" or "reboot"
	SeedMiB       int64  `json:"seedMiB"`              // CIDATA partition size
	UserData      string `json:"userData"`             // NoCloud user-data
	MetaData      string `json:"metaData"`             // NoCloud meta-data
	NetworkConfig string `json:"networkConfig"`        // NoCloud network-config (may be empty)
}

// Hash returns size and hex sha256 of a file.
func Hash(p string) (int64, string, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", fmt.Errorf("hash %s: %w", p, err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// Build hashes the sources (ISO path -> source file) into a manifest.
func Build(files map[string]string) (Manifest, error) {
	keys := make([]string, 0, len(files))
	for k := range files {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var m Manifest
	for _, k := range keys {
		n, sum, err := Hash(files[k])
		if err != nil {
			return Manifest{}, fmt.Errorf("payload file %s: %w", k, err)
		}
		m.Files = append(m.Files, File{Path: path.Clean(k), Size: n, SHA256: sum})
	}
	return m, nil
}

// Total is the sum of the file sizes.
func (m Manifest) Total() int64 {
	var t int64
	for _, f := range m.Files {
		t += f.Size
	}
	return t
}

// Find returns the entry for an ISO path.
func (m Manifest) Find(p string) (File, bool) {
	for _, f := range m.Files {
		if f.Path == p {
			return f, true
		}
	}
	return File{}, false
}

// Verify checks every file below root against the manifest.
func (m Manifest) Verify(root string) error {
	for _, f := range m.Files {
		n, sum, err := Hash(filepath.Join(root, filepath.FromSlash(f.Path)))
		if err != nil {
			return fmt.Errorf("payload %s: %w", f.Path, err)
		}
		if n != f.Size || sum != f.SHA256 {
			return fmt.Errorf("payload %s corrupted: sha256 %s (%d bytes), manifest says %s (%d bytes)", f.Path, sum, n, f.SHA256, f.Size)
		}
	}
	return nil
}

// ReadJSON decodes a JSON file into v.
func ReadJSON(p string, v any) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}
