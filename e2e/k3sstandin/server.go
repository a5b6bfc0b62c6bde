package k3sstandin

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"sync"
)

// Server serves a Release over HTTP on loopback, like a K3s release mirror:
// <URL>/<version>/<file>. The installer fetches on the host and uploads to the
// VM, so the VM never needs to reach it.
type Server struct {
	rel *Release
	srv *httptest.Server

	mu       sync.Mutex
	corrupt  map[string]bool
	requests map[string]int
}

// Serve starts the server; Close stops it.
func Serve(rel *Release) *Server {
	s := &Server{rel: rel, corrupt: map[string]bool{}, requests: map[string]int{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.handle))
	return s
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// Mirror is the value for config k3s.artifacts.mirror: the release files
// are under it, named as on GitHub (internal/artifacts appends the file).
func (s *Server) Mirror() string { return s.srv.URL + "/k3s/{{.Version}}/" }

// Corrupt makes the server send different bytes for name than the checksum
// file lists (a damaged mirror or a tampered download), or stop doing so.
func (s *Server) Corrupt(name string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.corrupt[name] = on
}

// Requests is how many GETs name received.
func (s *Server) Requests(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[name]
}

// SHA256 is the published checksum of a release file.
func (s *Server) SHA256(name string) (string, error) { return fileSHA256(s.rel.Path(name)) }

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	name := path.Base(r.URL.Path)
	if path.Base(path.Dir(r.URL.Path)) != s.rel.Version {
		http.NotFound(w, r)
		return
	}
	switch name {
	case BinaryName, ImagesName, ChecksumsName, ScriptName:
	default:
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	bad := s.corrupt[name]
	if r.Method == http.MethodGet {
		s.requests[name]++
	}
	s.mu.Unlock()
	if !bad {
		http.ServeFile(w, r, s.rel.Path(name))
		return
	}
	// Same size, different content: only the checksum can tell.
	f, err := os.Open(s.rel.Path(name))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer f.Close()
	fi, _ := f.Stat()
	w.Header().Set("Content-Length", fmt.Sprint(fi.Size()))
	if r.Method == http.MethodHead {
		return
	}
	sum := sha256.Sum256([]byte(name))
	_, _ = io.WriteString(w, hex.EncodeToString(sum[:4])) // 8 bytes of garbage first
	_, _ = f.Seek(8, io.SeekStart)
	_, _ = io.Copy(w, f)
}
