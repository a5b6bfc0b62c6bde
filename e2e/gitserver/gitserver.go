// Package gitserver is a real git server for tests: `git http-backend` (git's own smart-HTTP
// server) behind net/http/cgi on a loopback port, serving bare repositories from a directory,
// with optional HTTP basic auth. Flux's source-controller and the git CLI clone and push over it
// exactly as they would against a hosted git server over plain HTTP.
package gitserver

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/cgi"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Options configures a Server.
type Options struct {
	// Dir holds the bare repositories (<Dir>/<name>.git). A temporary directory, removed by
	// Close, when empty.
	Dir string
	// Token, when set, is required as the password of HTTP basic auth on every request
	// (any user name unless User is set); wrong or missing credentials get 401.
	Token string
	// User, when set together with Token, is the only accepted user name.
	User string
	// Addr is the listen address; 127.0.0.1:0 (a free loopback port) when empty.
	Addr string
	// Logf, when set, receives one line per request.
	Logf func(format string, args ...any)
}

// Server is a running git server.
type Server struct {
	opts    Options
	dir     string
	tempDir bool
	git     string
	ln      net.Listener
	srv     *http.Server
	done    chan struct{}

	mu       sync.Mutex
	requests int
	denied   int
}

// Start starts a server on a loopback port.
func Start(opts Options) (*Server, error) {
	gitPath, err := exec.LookPath("git")
	if err != nil {
		return nil, fmt.Errorf("gitserver: the git CLI is required: %w", err)
	}
	s := &Server{opts: opts, dir: opts.Dir, git: gitPath, done: make(chan struct{})}
	if s.dir == "" {
		if s.dir, err = os.MkdirTemp("", "gitserver-"); err != nil {
			return nil, err
		}
		s.tempDir = true
	} else if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, err
	}
	if s.dir, err = filepath.Abs(s.dir); err != nil {
		return nil, err
	}
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	if s.ln, err = net.Listen("tcp", addr); err != nil {
		s.cleanup()
		return nil, err
	}
	backend := &cgi.Handler{
		Path: gitPath,
		Args: []string{"http-backend"},
		Root: "/",
		Dir:  s.dir,
		Env: []string{
			"GIT_PROJECT_ROOT=" + s.dir,
			"GIT_HTTP_EXPORT_ALL=1",
			"GIT_CONFIG_NOSYSTEM=1",
			"HOME=" + s.dir,
		},
		// git's own stderr (hook output included, which clients also get) goes to the log, not
		// to the test binary's stderr.
		Stderr: logWriter{s},
	}
	s.srv = &http.Server{Handler: s.handler(backend), ReadHeaderTimeout: 30 * time.Second}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(s.ln)
	}()
	return s, nil
}

func (s *Server) handler(backend *cgi.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests++
		s.mu.Unlock()
		if s.opts.Token != "" && !s.authorized(r) {
			s.mu.Lock()
			s.denied++
			s.mu.Unlock()
			s.logf("gitserver: %s %s -> 401", r.Method, r.URL.Path)
			w.Header().Set("WWW-Authenticate", `Basic realm="opencsp-gitserver"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		s.logf("gitserver: %s %s?%s", r.Method, r.URL.Path, r.URL.RawQuery)
		h := *backend
		if u, _, ok := r.BasicAuth(); ok && s.opts.Token != "" {
			// git http-backend records REMOTE_USER as the pusher, as behind a real web server.
			h.Env = append(append([]string(nil), backend.Env...), "REMOTE_USER="+u)
		}
		h.ServeHTTP(w, r)
	})
}

func (s *Server) authorized(r *http.Request) bool {
	u, p, ok := r.BasicAuth()
	if !ok {
		return false
	}
	if s.opts.User != "" && subtle.ConstantTimeCompare([]byte(u), []byte(s.opts.User)) != 1 {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(p), []byte(s.opts.Token)) == 1
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}

// logWriter passes the CGI's stderr to Options.Logf line by line.
type logWriter struct{ s *Server }

func (w logWriter) Write(b []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		w.s.logf("gitserver: git: %s", line)
	}
	return len(b), nil
}

// Close stops the server and removes a temporary Dir.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	<-s.done
	s.cleanup()
	return err
}

func (s *Server) cleanup() {
	if s.tempDir {
		os.RemoveAll(s.dir)
	}
}

// Dir is the directory holding the bare repositories.
func (s *Server) Dir() string { return s.dir }

// BaseURL is http://127.0.0.1:PORT, without credentials.
func (s *Server) BaseURL() string { return "http://" + s.ln.Addr().String() }

// Addr is the listen address (host:port).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Stats returns the number of requests served and of requests refused with 401.
func (s *Server) Stats() (requests, denied int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests, s.denied
}

func repoPath(name string) (string, error) {
	name = strings.TrimSuffix(strings.Trim(name, "/"), ".git")
	if name == "" {
		return "", errors.New("gitserver: empty repository name")
	}
	for _, part := range strings.Split(name, "/") {
		if part == "" || part == "." || part == ".." || strings.HasPrefix(part, ".") {
			return "", fmt.Errorf("gitserver: invalid repository name %q", name)
		}
	}
	return name + ".git", nil
}

// URL is the clone URL of repository name (http://127.0.0.1:PORT/<name>.git), without credentials.
func (s *Server) URL(name string) string {
	p, err := repoPath(name)
	if err != nil {
		p = name
	}
	return s.BaseURL() + "/" + p
}

// AuthURL is URL(name) with the configured user (default "git") and token embedded, for the git
// CLI. Without a token it equals URL(name).
func (s *Server) AuthURL(name string) string {
	if s.opts.Token == "" {
		return s.URL(name)
	}
	u, _ := url.Parse(s.URL(name))
	u.User = url.UserPassword(s.user(), s.opts.Token)
	return u.String()
}

func (s *Server) user() string {
	if s.opts.User != "" {
		return s.opts.User
	}
	return "git"
}

// Credentials returns the user name and token clients must send (empty without auth).
func (s *Server) Credentials() (user, token string) {
	if s.opts.Token == "" {
		return "", ""
	}
	return s.user(), s.opts.Token
}

// NewRepo creates an empty bare repository whose HEAD points at branch ("main" if empty) and
// that accepts pushes over HTTP. It returns the repository's directory.
func (s *Server) NewRepo(name, branch string) (string, error) {
	p, err := repoPath(name)
	if err != nil {
		return "", err
	}
	if branch == "" {
		branch = "main"
	}
	dir := filepath.Join(s.dir, p)
	if _, err := os.Stat(dir); err == nil {
		return "", fmt.Errorf("gitserver: repository %s exists", name)
	}
	if err := runGit(context.Background(), "", nil, "init", "--quiet", "--bare", "--initial-branch="+branch, dir); err != nil {
		return "", err
	}
	if err := runGit(context.Background(), dir, nil, "config", "http.receivepack", "true"); err != nil {
		return "", err
	}
	return dir, nil
}

// Commit writes files into branch of repository name through a real clone and push over HTTP
// (so it exercises the server like any client) and returns the new commit's hash. A nil value
// deletes the file. The branch is created when it does not exist yet.
func (s *Server) Commit(ctx context.Context, name, branch, message string, files map[string][]byte) (string, error) {
	work, err := os.MkdirTemp("", "gitserver-work-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	env := gitEnv()
	if err := runGit(ctx, "", env, "clone", "--quiet", s.AuthURL(name), work); err != nil {
		return "", err
	}
	if err := runGit(ctx, work, env, "checkout", "--quiet", "-B", branch); err != nil {
		return "", err
	}
	// Follow the remote branch when it exists (the clone checked out HEAD, maybe another one).
	if runGit(ctx, work, env, "rev-parse", "--verify", "--quiet", "refs/remotes/origin/"+branch) == nil {
		if err := runGit(ctx, work, env, "reset", "--quiet", "--hard", "origin/"+branch); err != nil {
			return "", err
		}
	}
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		full := filepath.Join(work, filepath.FromSlash(p))
		if !strings.HasPrefix(full, work+string(filepath.Separator)) {
			return "", fmt.Errorf("gitserver: path %q escapes the repository", p)
		}
		if files[p] == nil {
			if err := os.Remove(full); err != nil && !os.IsNotExist(err) {
				return "", err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(full, files[p], 0o644); err != nil {
			return "", err
		}
	}
	if err := runGit(ctx, work, env, "add", "--all"); err != nil {
		return "", err
	}
	if err := runGit(ctx, work, env, "commit", "--quiet", "--allow-empty", "-m", message); err != nil {
		return "", err
	}
	if err := runGit(ctx, work, env, "push", "--quiet", "origin", "HEAD:refs/heads/"+branch); err != nil {
		return "", err
	}
	out, err := outputGit(ctx, work, env, "rev-parse", "HEAD")
	return strings.TrimSpace(out), err
}

// gitEnv is a hermetic environment for the git CLI: no prompts, no user or system config, a
// fixed identity.
func gitEnv() []string {
	return append(os.Environ(),
		"GIT_TERMINAL_PROMPT=0",
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=opencsp-e2e", "GIT_AUTHOR_EMAIL=e2e@opencsp.invalid",
		"GIT_COMMITTER_NAME=opencsp-e2e", "GIT_COMMITTER_EMAIL=e2e@opencsp.invalid",
	)
}

func runGit(ctx context.Context, dir string, env []string, args ...string) error {
	_, err := outputGit(ctx, dir, env, args...)
	return err
}

func outputGit(ctx context.Context, dir string, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	if env == nil {
		env = gitEnv()
	}
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s: %v: %s", redact(strings.Join(args, " ")), err, redact(strings.TrimSpace(stderr.String())))
	}
	return stdout.String(), nil
}

// redact hides credentials embedded in URLs in error messages.
func redact(s string) string {
	for {
		i := strings.Index(s, "://")
		if i < 0 {
			return s
		}
		rest := s[i+3:]
		end := strings.IndexAny(rest, " /\n")
		if end < 0 {
			end = len(rest)
		}
		at := strings.LastIndex(rest[:end], "@")
		if at < 0 {
			return s[:i+3] + redact(rest)
		}
		return s[:i+3] + "***@" + redact(rest[at+1:])
	}
}

// Files in a bare repository that drive its pre-receive hook (see RejectPushes).
const (
	rejectCountFile   = "opencsp-reject-pushes"
	rejectMessageFile = "opencsp-reject-message"
)

// preReceiveHook declines a push while the count file holds a positive number, decrementing it,
// with the message on stderr (which receive-pack relays to the client as "remote: ..." lines).
// Hooks run in the bare repository's directory.
const preReceiveHook = `#!/bin/sh
# Installed by gitserver.RejectPushes.
cat >/dev/null
n=$(cat ` + rejectCountFile + ` 2>/dev/null)
case "$n" in ''|*[!0-9]*|0) exit 0 ;; esac
echo $((n - 1)) >` + rejectCountFile + `
cat ` + rejectMessageFile + ` >&2
exit 1
`

// RejectPushes makes the next n pushes to repository name fail as a hosted git server's branch
// protection or server-side policy does: receive-pack runs the repository's pre-receive hook,
// which prints message (git clients show it as "remote: <message>") and declines, so no ref
// moves ("! [remote rejected] ... (pre-receive hook declined)"). n <= 0 disarms. The count is
// kept in the repository, so it holds for every client and survives a server restart.
func (s *Server) RejectPushes(name string, n int, message string) error {
	dir, err := s.repoDir(name)
	if err != nil {
		return err
	}
	hook := filepath.Join(dir, "hooks", "pre-receive")
	if err := os.MkdirAll(filepath.Dir(hook), 0o755); err != nil {
		return fmt.Errorf("gitserver: %w", err)
	}
	if err := os.WriteFile(hook, []byte(preReceiveHook), 0o755); err != nil {
		return fmt.Errorf("gitserver: install pre-receive hook of %s: %w", name, err)
	}
	if message == "" {
		message = "push rejected by the server"
	}
	// The message first: an armed count never shows an old message.
	if err := os.WriteFile(filepath.Join(dir, rejectMessageFile), []byte(strings.TrimRight(message, "\n")+"\n"), 0o644); err != nil {
		return fmt.Errorf("gitserver: %w", err)
	}
	return os.WriteFile(filepath.Join(dir, rejectCountFile), []byte(fmt.Sprintf("%d\n", max(n, 0))), 0o644)
}

// PendingRejections is how many pushes to repository name RejectPushes will still decline.
func (s *Server) PendingRejections(name string) (int, error) {
	dir, err := s.repoDir(name)
	if err != nil {
		return 0, err
	}
	b, err := os.ReadFile(filepath.Join(dir, rejectCountFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("gitserver: %w", err)
	}
	var n int
	if _, err := fmt.Sscan(string(b), &n); err != nil {
		return 0, fmt.Errorf("gitserver: %s of %s: %q: %w", rejectCountFile, name, b, err)
	}
	return n, nil
}

// repoDir is the directory of an existing repository.
func (s *Server) repoDir(name string) (string, error) {
	p, err := repoPath(name)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(s.dir, p)
	if _, err := os.Stat(filepath.Join(dir, "HEAD")); err != nil {
		return "", fmt.Errorf("gitserver: no repository %s: %w", name, err)
	}
	return dir, nil
}
