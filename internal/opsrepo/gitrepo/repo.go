// Package gitrepo keeps a git working copy of one branch of a remote with
// go-git: fetch, inspect, reset to the remote head, commit, and push
// without ever forcing. Errors name the URL (without credentials) and a
// cause the caller can test with errors.Is.
package gitrepo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/index"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
)

// Causes of errors.
var (
	ErrAuth           = errors.New("authentication failed")
	ErrNonFastForward = errors.New("remote branch moved (non-fast-forward)")
	ErrRejected       = errors.New("push rejected by the remote")
	ErrOtherRemote    = errors.New("working copy belongs to another remote")
)

const remoteName = "origin"

// Repo is a working copy tracking one branch of a remote.
type Repo struct {
	dir, url, branch string
	auth             transport.AuthMethod
	hostKeys         *hostKeys
	r                *git.Repository
}

// Open opens the working copy in dir, or initialises one (with the remote
// origin = url) when dir holds none. A working copy of another remote is
// refused.
func Open(dir, url, branch string, auth Auth) (*Repo, error) {
	method, hk, err := auth.method(url)
	if err != nil {
		return nil, err
	}
	repo := &Repo{dir: dir, url: url, branch: branch, auth: method, hostKeys: hk}
	r, err := git.PlainOpen(dir)
	switch {
	case errors.Is(err, git.ErrRepositoryNotExists):
		if r, err = git.PlainInit(dir, false); err != nil {
			return nil, fmt.Errorf("init working copy %s: %w", dir, err)
		}
		if _, err := r.CreateRemote(&gitconfig.RemoteConfig{Name: remoteName, URLs: []string{url}}); err != nil {
			return nil, fmt.Errorf("init working copy %s: %w", dir, err)
		}
	case err != nil:
		return nil, fmt.Errorf("open working copy %s: %w", dir, err)
	default:
		rem, err := r.Remote(remoteName)
		if err != nil {
			return nil, fmt.Errorf("working copy %s: %w", dir, err)
		}
		if urls := rem.Config().URLs; len(urls) != 1 || urls[0] != url {
			return nil, fmt.Errorf("%w: %s pulls from %v, not %s", ErrOtherRemote, dir, safeURLs(urls), SafeURL(url))
		}
	}
	repo.r = r
	return repo, nil
}

func safeURLs(urls []string) []string {
	out := make([]string, 0, len(urls))
	for _, u := range urls {
		out = append(out, SafeURL(u))
	}
	return out
}

// Dir is the working copy's directory.
func (r *Repo) Dir() string { return r.dir }

// HostKey is the SSH host key line seen on the last connection ("" for
// other protocols or before any connection).
func (r *Repo) HostKey() string { return r.hostKeys.seen() }

// Dirty lists the paths whose worktree or index differ from HEAD,
// untracked files included.
func (r *Repo) Dirty() ([]string, error) {
	w, err := r.r.Worktree()
	if err != nil {
		return nil, err
	}
	st, err := w.Status()
	if err != nil {
		return nil, fmt.Errorf("status of %s: %w", r.dir, err)
	}
	var out []string
	for p, s := range st {
		if s.Staging != git.Unmodified || s.Worktree != git.Unmodified {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out, nil
}

func (r *Repo) branchRef() plumbing.ReferenceName { return plumbing.NewBranchReferenceName(r.branch) }
func (r *Repo) trackingRef() plumbing.ReferenceName {
	return plumbing.NewRemoteReferenceName(remoteName, r.branch)
}

// Fetch updates the remote-tracking branch and returns the remote head;
// the zero hash when the remote is empty or lacks the branch.
func (r *Repo) Fetch(ctx context.Context) (plumbing.Hash, error) {
	spec := gitconfig.RefSpec(fmt.Sprintf("+%s:%s", r.branchRef(), r.trackingRef()))
	err := r.r.FetchContext(ctx, &git.FetchOptions{RemoteName: remoteName, RefSpecs: []gitconfig.RefSpec{spec}, Auth: r.auth, Tags: git.NoTags})
	var noMatch git.NoMatchingRefSpecError
	switch {
	case err == nil, errors.Is(err, git.NoErrAlreadyUpToDate):
	case errors.Is(err, transport.ErrEmptyRemoteRepository), errors.As(err, &noMatch):
		if err := r.r.Storer.RemoveReference(r.trackingRef()); err != nil {
			return plumbing.ZeroHash, err
		}
		return plumbing.ZeroHash, nil
	default:
		return plumbing.ZeroHash, r.wrap("fetch from", err)
	}
	ref, err := r.r.Reference(r.trackingRef(), true)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("fetch from %s: %w", SafeURL(r.url), err)
	}
	return ref.Hash(), nil
}

// LocalHead is the local branch's commit (zero when it has none).
func (r *Repo) LocalHead() (plumbing.Hash, error) {
	ref, err := r.r.Reference(r.branchRef(), true)
	if errors.Is(err, plumbing.ErrReferenceNotFound) {
		return plumbing.ZeroHash, nil
	}
	if err != nil {
		return plumbing.ZeroHash, err
	}
	return ref.Hash(), nil
}

// LocalOnly returns the commits of the local branch that remote (a hash
// from Fetch) does not contain.
func (r *Repo) LocalOnly(remote plumbing.Hash) ([]*object.Commit, error) {
	local, err := r.LocalHead()
	if err != nil || local.IsZero() || local == remote {
		return nil, err
	}
	onRemote := map[plumbing.Hash]bool{}
	if !remote.IsZero() {
		it, err := r.r.Log(&git.LogOptions{From: remote})
		if err != nil {
			return nil, fmt.Errorf("history of %s: %w", remote, err)
		}
		if err := it.ForEach(func(c *object.Commit) error { onRemote[c.Hash] = true; return nil }); err != nil {
			return nil, err
		}
	}
	it, err := r.r.Log(&git.LogOptions{From: local})
	if err != nil {
		return nil, fmt.Errorf("history of %s: %w", local, err)
	}
	var out []*object.Commit
	err = it.ForEach(func(c *object.Commit) error {
		if !onRemote[c.Hash] {
			out = append(out, c)
		}
		return nil
	})
	return out, err
}

// ResetTo points the local branch (checked out) at h and makes index and
// worktree equal to it, like `git checkout -B branch h && git reset
// --hard`; the zero hash leaves an unborn branch and removes the tracked
// files. Untracked files are left alone (callers check Dirty first).
func (r *Repo) ResetTo(h plumbing.Hash) error {
	if err := r.r.Storer.SetReference(plumbing.NewSymbolicReference(plumbing.HEAD, r.branchRef())); err != nil {
		return err
	}
	if h.IsZero() {
		idx, err := r.r.Storer.Index()
		if err != nil {
			return err
		}
		for _, e := range idx.Entries {
			if err := os.Remove(filepath.Join(r.dir, filepath.FromSlash(e.Name))); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		if err := r.r.Storer.SetIndex(&index.Index{Version: 2}); err != nil {
			return err
		}
		if err := r.r.Storer.RemoveReference(r.branchRef()); err != nil {
			return err
		}
		return nil
	}
	if err := r.r.Storer.SetReference(plumbing.NewHashReference(r.branchRef(), h)); err != nil {
		return err
	}
	w, err := r.r.Worktree()
	if err != nil {
		return err
	}
	if err := w.Reset(&git.ResetOptions{Commit: h, Mode: git.HardReset}); err != nil {
		return fmt.Errorf("reset %s to %s: %w", r.dir, h, err)
	}
	return nil
}

// Signature is a commit author or committer.
type Signature = object.Signature

// Commit stages the given changed paths (added, updated or removed in the
// worktree) and commits them.
func (r *Repo) Commit(changed []string, message string, sig Signature) (plumbing.Hash, error) {
	w, err := r.r.Worktree()
	if err != nil {
		return plumbing.ZeroHash, err
	}
	for _, p := range changed {
		if _, err := os.Lstat(filepath.Join(r.dir, filepath.FromSlash(p))); errors.Is(err, fs.ErrNotExist) {
			if _, err := w.Remove(p); err != nil {
				return plumbing.ZeroHash, fmt.Errorf("stage removal of %s: %w", p, err)
			}
			continue
		}
		if err := w.AddWithOptions(&git.AddOptions{Path: p, SkipStatus: true}); err != nil {
			return plumbing.ZeroHash, fmt.Errorf("stage %s: %w", p, err)
		}
	}
	h, err := w.Commit(message, &git.CommitOptions{Author: &sig, Committer: &sig})
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("commit: %w", err)
	}
	return h, nil
}

// Push pushes the local branch to the remote branch of the same name,
// never forced: a remote that moved fails with ErrNonFastForward.
func (r *Repo) Push(ctx context.Context) error {
	spec := gitconfig.RefSpec(fmt.Sprintf("%s:%s", r.branchRef(), r.branchRef()))
	// With a progress writer go-git asks for the sideband, on which the server sends what its
	// hooks print: the reason a protected branch refuses the push.
	var remote bytes.Buffer
	err := r.r.PushContext(ctx, &git.PushOptions{RemoteName: remoteName, RefSpecs: []gitconfig.RefSpec{spec}, Auth: r.auth, Progress: &remote})
	if err == nil || errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil
	}
	if msg := remoteMessage(remote.String()); msg != "" {
		err = fmt.Errorf("%w; the server said: %s", err, msg)
	}
	return r.wrap("push "+r.branch+" to", err)
}

// progressLine is a transfer progress update ("Resolving deltas:  50% (1/2)").
var progressLine = regexp.MustCompile(`^[A-Za-z ]+: +\d+% \(`)

// remoteMessage is the server's sideband text without progress updates, on one line.
func remoteMessage(s string) string {
	var lines []string
	for _, l := range strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' }) {
		if l = strings.TrimSpace(l); l != "" && !progressLine.MatchString(l) {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, " | ")
}

// wrap classifies go-git and server errors.
func (r *Repo) wrap(op string, err error) error { return wrapErr(op, r.url, err) }

// wrapErr classifies go-git and server errors of op on url.
func wrapErr(op, url string, err error) error {
	where := fmt.Sprintf("%s %s", op, SafeURL(url))
	msg := err.Error()
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", where, err)
	case errors.Is(err, transport.ErrRepositoryNotFound):
		return fmt.Errorf("%s: %w (check opsRepo.url: the repository must exist on the server; opencsp does not create it)", where, ErrNotFound)
	case unreachable(err):
		return fmt.Errorf("%s: %w (check opsRepo.url's host and port, and that the git server is up): %v", where, ErrUnreachable, err)
	case errors.Is(err, transport.ErrAuthenticationRequired), errors.Is(err, transport.ErrAuthorizationFailed):
		return fmt.Errorf("%s: %w (check opsRepo.auth: user name and token or key): %v", where, ErrAuth, err)
	case strings.Contains(msg, "unable to authenticate"), strings.Contains(msg, "no supported methods remain"):
		return fmt.Errorf("%s: %w (check opsRepo.auth.sshKeyFile): %v", where, ErrAuth, err)
	case strings.Contains(msg, "non-fast-forward"), strings.Contains(msg, "fetch first"):
		return fmt.Errorf("%s: %w: %v", where, ErrNonFastForward, err)
	case strings.Contains(msg, "command error on"), strings.Contains(msg, "unpack error"):
		return fmt.Errorf("%s: %w: %v", where, ErrRejected, err)
	}
	return fmt.Errorf("%s: %w", where, err)
}
