package opsrepo

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/opencsp/installer/internal/opsrepo/gitrepo"
)

// DefaultCheckTimeout bounds CheckReachable when the context has no
// earlier deadline: a filtered port must not hang the preflight.
const DefaultCheckTimeout = 30 * time.Second

// CheckReachable lists the ops repo's branches (git ls-remote) with the
// configured auth, reading and writing nothing: the repository must exist
// and accept the credentials. An empty repository or a missing branch is
// fine (the flux stage creates the branch with its first push). The error
// names opsRepo.url and wraps gitrepo.ErrNotFound, ErrUnreachable or ErrAuth.
func CheckReachable(ctx context.Context, opts RepoOptions) (branches []string, err error) {
	ctx, cancel := context.WithTimeout(ctx, DefaultCheckTimeout)
	defer cancel()
	branches, err = gitrepo.ListBranches(ctx, opts.URL, opts.Auth)
	if err != nil {
		return nil, fmt.Errorf("opsRepo.url: %w", err)
	}
	return branches, nil
}

// DescribeBranches says what CheckReachable found, for logs and events.
func DescribeBranches(branches []string, branch string) string {
	switch {
	case len(branches) == 0:
		return "empty repository: the flux stage pushes branch " + branch + " first"
	case slices.Contains(branches, branch):
		return "branch " + branch + " exists"
	}
	return fmt.Sprintf("no branch %s yet (branches: %s): the flux stage creates it", branch, strings.Join(branches, ", "))
}
