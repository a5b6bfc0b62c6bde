package gitrepo

import (
	"context"
	"errors"
	"net"
	"slices"
	"syscall"

	"github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/memory"
)

// More causes of errors (errors.Is).
var (
	// ErrNotFound: the server answers but has no such repository.
	ErrNotFound = errors.New("repository not found")
	// ErrUnreachable: no connection to the server (refused, no route,
	// unknown host, timeout).
	ErrUnreachable = errors.New("git server unreachable")
)

// ListBranches asks the remote for its branches without a working copy
// (git ls-remote --heads), so a caller learns before anything is created
// that the repository exists and the credentials work. An empty
// repository has no branches and is no error.
func ListBranches(ctx context.Context, url string, auth Auth) ([]string, error) {
	method, _, err := auth.method(url)
	if err != nil {
		return nil, err
	}
	rem := git.NewRemote(memory.NewStorage(), &gitconfig.RemoteConfig{Name: remoteName, URLs: []string{url}})
	refs, err := rem.ListContext(ctx, &git.ListOptions{Auth: method})
	if errors.Is(err, transport.ErrEmptyRemoteRepository) {
		return nil, nil
	}
	if err != nil {
		return nil, wrapErr("list branches of", url, err)
	}
	var branches []string
	for _, r := range refs {
		if r.Name().IsBranch() {
			branches = append(branches, r.Name().Short())
		}
	}
	slices.Sort(branches)
	return branches, nil
}

// unreachable recognises failures below git: nothing answers at the
// URL's host and port (wrong host or port, server down, filtered).
func unreachable(err error) bool {
	var dns *net.DNSError
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.ETIMEDOUT) || errors.As(err, &dns)
}
