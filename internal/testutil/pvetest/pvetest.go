// Package pvetest runs what a Proxmox install test needs on loopback: the
// PVE API emulator behind its own HTTPS front, and a cloud-image mirror.
// It is imported only from _test.go files.
package pvetest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opencsp/installer/e2e/pvesim"
	"github.com/opencsp/installer/internal/infra/proxmox"
)

// PVE is an emulated Proxmox VE reachable at URL with certificate Fingerprint.
type PVE struct {
	Sim         *pvesim.Server
	URL         string
	Fingerprint string
}

// Start starts the emulator and its front. bridges is what the front lists
// for GET /nodes/{node}/network (nil: vmbr0).
func Start(t testing.TB, opts pvesim.Options, bridges []string) *PVE {
	t.Helper()
	sim, err := pvesim.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	front := networkShim(t, sim, bridges)
	return &PVE{Sim: sim, URL: front.URL, Fingerprint: proxmox.Fingerprint(front.Certificate().Raw)}
}

// networkShim serves the emulator over its own HTTPS listener and answers
// GET /nodes/{node}/network itself: pvesim does not emulate that endpoint
// yet (its schema facts lack it), and real PVE serves it. Every other
// request goes to the emulator, so its request log and ValidateLog cover
// them.
func networkShim(t testing.TB, sim *pvesim.Server, bridges []string) *httptest.Server {
	if bridges == nil {
		bridges = []string{"vmbr0"}
	}
	netRE := regexp.MustCompile(`^/api2/json/nodes/[^/]+/network$`)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && netRE.MatchString(r.URL.Path) {
			if r.Header.Get("Authorization") != sim.AuthHeader() {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			var list []map[string]any
			for _, b := range bridges {
				list = append(list, map[string]any{"iface": b, "type": "bridge", "active": 1})
			}
			w.Header().Set("Content-Type", "application/json;charset=UTF-8")
			json.NewEncoder(w).Encode(map[string]any{"data": list})
			return
		}
		sim.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
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
