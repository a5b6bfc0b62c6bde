// Package pvetest runs what a Proxmox install test needs on loopback: the
// PVE API emulator and a cloud-image mirror.
// It is imported only from _test.go files.
package pvetest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencsp/installer/e2e/pvesim"
)

// PVE is an emulated Proxmox VE reachable at URL with certificate Fingerprint.
type PVE struct {
	Sim         *pvesim.Server
	URL         string
	Fingerprint string
}

// Start starts the emulator on loopback. bridges, when not nil, replaces
// the bridges every node reports (default vmbr0).
func Start(t testing.TB, opts pvesim.Options, bridges []string) *PVE {
	t.Helper()
	if bridges != nil {
		opts.Bridges = bridges
	}
	sim, err := pvesim.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	return &PVE{Sim: sim, URL: sim.URL(), Fingerprint: sim.Fingerprint()}
}

// ImageFile is the file name the mirror serves.
const ImageFile = "debian-12-genericcloud-amd64.qcow2"

// Mirror serves a fake qcow2 and its SHA256SUMS on loopback, like a
// cloud-image mirror, and writes an image definition file for it into dir.
// It returns the definition file's path.
func Mirror(t testing.TB, dir string) string {
	t.Helper()
	image := append(pvesim.FakeQCOW2(2<<30), make([]byte, 4096)...)
	sum := sha256.Sum256(image)
	mux := http.NewServeMux()
	mux.HandleFunc("/"+ImageFile, func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, ImageFile, time.Time{}, strings.NewReader(string(image)))
	})
	mux.HandleFunc("/SHA256SUMS", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s  %s\n", hex.EncodeToString(sum[:]), ImageFile)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	def := fmt.Sprintf("name: debian-12\nos: debian\nrelease: \"12\"\narch: amd64\nurl: %s/%s\nchecksumURL: %s/SHA256SUMS\nchecksumAlgorithm: sha256\nformat: qcow2\n",
		srv.URL, ImageFile, srv.URL)
	path := filepath.Join(dir, "debian-12.yaml")
	if err := os.WriteFile(path, []byte(def), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
