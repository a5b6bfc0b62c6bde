package opsrepo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/logging"
	"github.com/opencsp/installer/internal/opsrepo/gitrepo"
)

// Causes of Sync errors (errors.Is); see also gitrepo.ErrAuth,
// gitrepo.ErrRejected, gitrepo.ErrHostKey and ErrUnknownFiles.
var (
	// ErrDirty: the working copy has uncommitted changes.
	ErrDirty = errors.New("working copy has uncommitted changes")
	// ErrDiverged: the local branch has commits opencsp did not write that
	// the remote lacks.
	ErrDiverged = errors.New("local branch diverged from the remote")
	// ErrRemoteMoving: the remote moved again on every attempt.
	ErrRemoteMoving = errors.New("remote branch kept moving")
)

// Default commit identity.
const (
	DefaultAuthorName  = "OpenCSP Installer"
	DefaultAuthorEmail = "installer@opencsp.invalid"
)

// RepoOptions says where and how Sync writes.
type RepoOptions struct {
	URL    string
	Branch string
	Auth   gitrepo.Auth
	// WorkDir is a persistent working copy (e.g. <state-dir>/opsrepo); ""
	// uses a temporary one, removed afterwards.
	WorkDir string
	// AuthorName and AuthorEmail sign the commits (author and committer);
	// defaults DefaultAuthorName, DefaultAuthorEmail. Local commits by this
	// email that never reached the remote are discarded and rendered again.
	AuthorName, AuthorEmail string
	// Adopt lets opencsp delete unknown files under its folders.
	Adopt bool
	// MaxAttempts bounds the fetch-render-push rounds when the remote
	// moves during a sync (default 3).
	MaxAttempts int
	Logger      *slog.Logger
	// Now stamps commits (default time.Now).
	Now func() time.Time
}

// RepoOptionsFromConfig reads opsRepo of the config: URL, branch, and the
// auth (the token is resolved now and registered with redactor).
func RepoOptionsFromConfig(cfg *config.Config, redactor *logging.Redactor) (RepoOptions, error) {
	r := cfg.OpsRepo
	o := RepoOptions{URL: r.URL, Branch: r.Branch, Auth: gitrepo.Auth{
		Username:           r.Auth.Username,
		HostKeyFingerprint: r.Auth.HostKeyFingerprint,
	}}
	if o.Branch == "" {
		o.Branch = "main"
	}
	if r.Auth.SSHKeyFile != "" {
		o.Auth.SSHKeyFile = cfg.ResolvePath(r.Auth.SSHKeyFile)
	}
	if !r.Auth.Token.IsZero() {
		tok, err := cfg.Secret(r.Auth.Token)
		if err != nil {
			return o, fmt.Errorf("%w: opsRepo.auth.token: %v", ErrInvalidInput, err)
		}
		if redactor != nil {
			redactor.Add(tok)
		}
		o.Auth.Token = tok
	}
	return o, nil
}

// Result of a Sync.
type Result struct {
	// Commit is the branch head after the sync (on the remote).
	Commit string
	// Changed: a commit was made; Pushed: it reached the remote.
	Changed, Pushed bool
	// Changes are the files of the commit.
	Changes []Change
	// Message is the commit message.
	Message string
	// HostKey is the SSH server's known_hosts line (store it and pass it
	// back as Auth.KnownHostKey to pin it).
	HostKey string
	// Tree is the tree as written: tree re-rendered on the remote head.
	Tree *Tree
}

// Sync writes tree into the ops repo: fetch the branch, refuse a dirty or
// diverged working copy, reset to the remote head, render again on it
// (Secrets already in the repo win), write under the ownership rules,
// commit only when something changed and push, never forced. When the
// remote moved meanwhile, the round is repeated on the new head (up to
// MaxAttempts).
func Sync(ctx context.Context, tree *Tree, opts RepoOptions) (res Result, err error) {
	if opts.Branch == "" {
		opts.Branch = "main"
	}
	if opts.AuthorName == "" {
		opts.AuthorName = DefaultAuthorName
	}
	if opts.AuthorEmail == "" {
		opts.AuthorEmail = DefaultAuthorEmail
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 3
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger.With("repo", gitrepo.SafeURL(opts.URL), "branch", opts.Branch)
	dir := opts.WorkDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "opencsp-opsrepo-"); err != nil {
			return res, err
		}
		defer os.RemoveAll(dir)
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return res, fmt.Errorf("create working copy %s: %w", dir, err)
	}
	repo, err := gitrepo.Open(dir, opts.URL, opts.Branch, opts.Auth)
	if err != nil {
		return res, err
	}
	defer func() { res.HostKey = repo.HostKey() }()
	dirty, err := repo.Dirty()
	if err != nil {
		return res, err
	}
	if len(dirty) > 0 {
		return res, fmt.Errorf("%w: %s: %s; opencsp never overwrites or force-pushes them: commit and push, or discard them (or remove the folder)",
			ErrDirty, dir, strings.Join(firstN(dirty, 10), ", "))
	}
	for attempt := 1; attempt <= opts.MaxAttempts; attempt++ {
		remote, err := repo.Fetch(ctx)
		if err != nil {
			return res, err
		}
		local, err := repo.LocalOnly(remote)
		if err != nil {
			return res, err
		}
		for _, c := range local {
			if c.Author.Email != opts.AuthorEmail {
				return res, fmt.Errorf("%w: %s has commit %s by %s <%s> that %s lacks; push or drop it by hand (opencsp never force-pushes)",
					ErrDiverged, dir, c.Hash.String()[:12], c.Author.Name, c.Author.Email, gitrepo.SafeURL(opts.URL))
			}
		}
		if len(local) > 0 {
			log.Info("dropping unpushed opencsp commits; rendering again on the remote head", "commits", len(local))
		}
		if err := repo.ResetTo(remote); err != nil {
			return res, err
		}
		t, err := tree.Rerender(ctx, os.DirFS(dir))
		if err != nil {
			return res, err
		}
		changes, err := WriteDir(dir, t, opts.Adopt)
		if err != nil {
			return res, err
		}
		res = Result{Commit: remote.String(), Tree: t}
		if remote.IsZero() {
			res.Commit = ""
		}
		if len(changes) == 0 {
			log.Info("ops repo up to date", "commit", res.Commit)
			return res, nil
		}
		msg := CommitMessage(t, changes)
		sig := gitrepo.Signature{Name: opts.AuthorName, Email: opts.AuthorEmail, When: opts.Now()}
		h, err := repo.Commit(ChangedPaths(changes), msg, sig)
		if err != nil {
			return res, err
		}
		res.Changed, res.Changes, res.Message = true, changes, msg
		err = repo.Push(ctx)
		if errors.Is(err, gitrepo.ErrNonFastForward) {
			log.Info("remote moved during the sync; fetching and rendering again", "attempt", attempt)
			continue
		}
		if err != nil {
			return res, err
		}
		res.Commit, res.Pushed = h.String(), true
		log.Info("pushed ops repo", "commit", res.Commit, "files", len(changes))
		return res, nil
	}
	return res, fmt.Errorf("push to %s: %w after %d attempts", gitrepo.SafeURL(opts.URL), ErrRemoteMoving, opts.MaxAttempts)
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("(and %d more)", len(s)-n))
	}
	return s
}
