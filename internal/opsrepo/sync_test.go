package opsrepo

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencsp/installer/e2e/gitserver"
	"github.com/opencsp/installer/internal/opsrepo/gitrepo"
)

func gitEnv() []string {
	return append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=Alice", "GIT_AUTHOR_EMAIL=alice@example.net", "GIT_COMMITTER_NAME=Alice", "GIT_COMMITTER_EMAIL=alice@example.net")
}

// git runs the git CLI and returns its trimmed output.
func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = gitEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// bareRepo makes an empty bare repository (HEAD main) and returns its dir
// and file:// URL.
func bareRepo(t *testing.T) (string, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ops.git")
	git(t, "", "init", "--quiet", "--bare", "--initial-branch=main", dir)
	return dir, "file://" + dir
}

// pushAs commits files (nil deletes) to the bare repo's main as Alice.
func pushAs(t *testing.T, bare string, files map[string]string) {
	t.Helper()
	work := t.TempDir()
	git(t, "", "clone", "--quiet", bare, work)
	git(t, work, "checkout", "--quiet", "-B", "main")
	for p, s := range files {
		full := filepath.Join(work, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git(t, work, "add", "--all")
	git(t, work, "commit", "--quiet", "-m", "alice was here")
	git(t, work, "push", "--quiet", "origin", "main")
}

func commits(t *testing.T, bare string) int {
	t.Helper()
	out := git(t, "", "--git-dir="+bare, "rev-list", "--count", "main")
	n := 0
	for _, c := range out {
		n = n*10 + int(c-'0')
	}
	return n
}

func remoteFiles(t *testing.T, bare string) []string {
	t.Helper()
	return strings.Split(git(t, "", "--git-dir="+bare, "ls-tree", "-r", "--name-only", "main"), "\n")
}

func (f *fixture) sync(t *testing.T, url string, mod func(*RepoOptions)) (Result, error) {
	t.Helper()
	opts := RepoOptions{URL: url, Branch: "main"}
	if mod != nil {
		mod(&opts)
	}
	return Sync(context.Background(), f.render(t, ""), opts)
}

func mustSync(t *testing.T, f *fixture, url string, mod func(*RepoOptions)) Result {
	t.Helper()
	res, err := f.sync(t, url, mod)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestSyncFileRemote(t *testing.T) {
	bare, url := bareRepo(t)
	f := newFixture(t)

	first := mustSync(t, f, url, nil)
	if !first.Changed || !first.Pushed || commits(t, bare) != 1 {
		t.Fatalf("first sync: %+v, %d commits", first, commits(t, bare))
	}
	head := git(t, "", "--git-dir="+bare, "rev-parse", "main")
	if first.Commit != head {
		t.Errorf("result commit %s, remote %s", first.Commit, head)
	}
	who := git(t, "", "--git-dir="+bare, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%s", "main")
	if who != "OpenCSP Installer <installer@opencsp.invalid>|OpenCSP Installer <installer@opencsp.invalid>|opencsp v0.1.0: render cluster lab" {
		t.Errorf("commit %q", who)
	}
	files := remoteFiles(t, bare)
	if !slices.Contains(files, "clusters/lab/secrets/zitadel-secrets.sops.yaml") || !slices.Contains(files, "components/zitadel/zitadel/kustomization.yaml") {
		t.Errorf("remote files %v", files)
	}
	clone := t.TempDir()
	git(t, "", "clone", "--quiet", bare, clone)
	scanDir(t, clone, append(treeSecrets(first.Tree), f.key.Secret()))

	// Same input: nothing to do.
	again := mustSync(t, f, url, nil)
	if again.Changed || again.Pushed || again.Commit != head || commits(t, bare) != 1 {
		t.Fatalf("second sync: %+v", again)
	}

	// Changed input: one commit, only cluster-vars.
	f.cfg.Cluster.Domain = "new.example.net"
	third := mustSync(t, f, url, nil)
	if !third.Changed || !third.Pushed || commits(t, bare) != 2 {
		t.Fatalf("third sync: %+v", third)
	}
	if diff := git(t, "", "--git-dir="+bare, "diff", "--name-only", "main~1", "main"); diff != "clusters/lab/cluster-vars.yaml" {
		t.Errorf("changed files: %q", diff)
	}
	if !strings.Contains(third.Message, "Files updated: cluster-vars.yaml") {
		t.Errorf("message:\n%s", third.Message)
	}

	// Disabling a component removes its layer from the repo.
	off := false
	f.cfg.Components["lago"] = configComponent(&off)
	fourth := mustSync(t, f, url, nil)
	if !fourth.Changed || slices.Contains(remoteFiles(t, bare), "clusters/lab/layers/lago.yaml") {
		t.Errorf("disable lago: %+v", fourth.Changes)
	}
	if !strings.Contains(git(t, "", "--git-dir="+bare, "log", "-1", "--format=%B", "main"), "Layers removed: lago") {
		t.Error("commit body does not name the removed layer")
	}
}

func TestSyncRemoteAdvanced(t *testing.T) {
	bare, url := bareRepo(t)
	f := newFixture(t)
	work := filepath.Join(t.TempDir(), "wc")
	persistent := func(o *RepoOptions) { o.WorkDir = work }
	mustSync(t, f, url, persistent)

	// Someone else commits an unrelated file; our working copy is behind.
	pushAs(t, bare, map[string]string{"README.md": "ours\n"})
	f.cfg.Cluster.Domain = "new.example.net"
	res := mustSync(t, f, url, persistent)
	if !res.Pushed || commits(t, bare) != 3 {
		t.Fatalf("sync after remote moved: %+v", res)
	}
	if got := git(t, "", "--git-dir="+bare, "show", "main:README.md"); got != "ours" {
		t.Errorf("README.md = %q", got)
	}

	// The remote moves between our fetch and our push: a git-receive-pack
	// wrapper pushes Alice's commit first. Sync fetches, renders again on
	// her commit and pushes on top of it.
	bin := t.TempDir()
	real, err := exec.LookPath("git-receive-pack")
	if err != nil {
		real = filepath.Join(git(t, "", "--exec-path"), "git-receive-pack")
	}
	clone := t.TempDir()
	git(t, "", "clone", "--quiet", bare, clone)
	script := `#!/bin/sh
if [ ! -e "$MARK" ]; then
  touch "$MARK"
  cd "$CLONE" && git pull --quiet origin main && echo race > race.txt && git add race.txt && git commit --quiet -m race && git push --quiet origin HEAD:main >/dev/null 2>&1
fi
exec "$REAL" "$@"
`
	if err := os.WriteFile(filepath.Join(bin, "git-receive-pack"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	mark := filepath.Join(t.TempDir(), "mark")
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("MARK", mark)
	t.Setenv("CLONE", clone)
	t.Setenv("REAL", real)
	for _, kv := range gitEnv()[len(os.Environ()):] {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	f.cfg.Cluster.Domain = "race.example.net"
	var logs strings.Builder
	res = mustSync(t, f, url, func(o *RepoOptions) { persistent(o); o.Logger = slogTo(&logs) })
	if _, err := os.Stat(mark); err != nil {
		t.Fatal("the race wrapper did not run")
	}
	if !res.Pushed || commits(t, bare) != 5 {
		t.Fatalf("race: %+v, %d commits", res, commits(t, bare))
	}
	if got := git(t, "", "--git-dir="+bare, "show", "main:race.txt"); got != "race" {
		t.Errorf("race.txt = %q", got)
	}
	if !strings.Contains(git(t, "", "--git-dir="+bare, "show", "main:clusters/lab/cluster-vars.yaml"), "race.example.net") {
		t.Error("render not pushed on top of the race commit")
	}
	if !strings.Contains(logs.String(), "remote moved") {
		t.Errorf("no retry logged:\n%s", logs.String())
	}
}

func TestSyncRefusesDirtyAndDiverged(t *testing.T) {
	bare, url := bareRepo(t)
	f := newFixture(t)
	work := filepath.Join(t.TempDir(), "wc")
	persistent := func(o *RepoOptions) { o.WorkDir = work }
	mustSync(t, f, url, persistent)
	head := git(t, "", "--git-dir="+bare, "rev-parse", "main")
	f.cfg.Cluster.Domain = "new.example.net"

	// Dirty: a modified tracked file.
	vars := filepath.Join(work, "clusters/lab/cluster-vars.yaml")
	orig, _ := os.ReadFile(vars)
	if err := os.WriteFile(vars, []byte("hand edit\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.sync(t, url, persistent); !errors.Is(err, ErrDirty) || !strings.Contains(err.Error(), "clusters/lab/cluster-vars.yaml") {
		t.Errorf("dirty: %v", err)
	}
	if err := os.WriteFile(vars, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	// Dirty: an untracked file.
	if err := os.WriteFile(filepath.Join(work, "stray.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.sync(t, url, persistent); !errors.Is(err, ErrDirty) {
		t.Errorf("untracked: %v", err)
	}
	os.Remove(filepath.Join(work, "stray.txt"))

	// Diverged: Alice committed in the working copy and the remote moved.
	if err := os.WriteFile(filepath.Join(work, "alice.txt"), []byte("local\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	git(t, work, "add", "alice.txt")
	git(t, work, "commit", "--quiet", "-m", "local work")
	pushAs(t, bare, map[string]string{"README.md": "remote\n"})
	remoteHead := git(t, "", "--git-dir="+bare, "rev-parse", "main")
	_, err := f.sync(t, url, persistent)
	if !errors.Is(err, ErrDiverged) || !strings.Contains(err.Error(), "alice@example.net") {
		t.Errorf("diverged: %v", err)
	}
	t.Logf("diverged: %v", err)
	if got := git(t, "", "--git-dir="+bare, "rev-parse", "main"); got != remoteHead || got == head {
		t.Errorf("remote changed after a refusal")
	}

	// Unpushed commits of opencsp itself are dropped and rendered again.
	git(t, work, "reset", "--quiet", "--hard", "HEAD~1")
	if err := os.WriteFile(filepath.Join(work, "clusters/lab/leftover.txt"), []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	git(t, work, "add", "clusters/lab/leftover.txt")
	git(t, work, "-c", "user.name=x", "commit", "--quiet", "--author=OpenCSP Installer <installer@opencsp.invalid>", "-m", "unpushed")
	res := mustSync(t, f, url, persistent)
	if !res.Pushed || slices.Contains(remoteFiles(t, bare), "clusters/lab/leftover.txt") || !slices.Contains(remoteFiles(t, bare), "README.md") {
		t.Errorf("unpushed own commit: %+v %v", res, remoteFiles(t, bare))
	}
}

func TestSyncUnknownFilesAndRejectedPush(t *testing.T) {
	bare, url := bareRepo(t)
	f := newFixture(t)
	mustSync(t, f, url, nil)
	pushAs(t, bare, map[string]string{"clusters/lab/by-hand.yaml": "x\n"})
	before := commits(t, bare)
	if _, err := f.sync(t, url, nil); !errors.Is(err, ErrUnknownFiles) || !strings.Contains(err.Error(), "clusters/lab/by-hand.yaml") {
		t.Fatalf("unknown: %v", err)
	}
	if commits(t, bare) != before {
		t.Fatal("refused sync pushed")
	}
	res := mustSync(t, f, url, func(o *RepoOptions) { o.Adopt = true })
	if !res.Pushed || slices.Contains(remoteFiles(t, bare), "clusters/lab/by-hand.yaml") {
		t.Errorf("adopt: %+v", res)
	}

	// A protected branch (pre-receive hook) refuses the push.
	hook := filepath.Join(bare, "hooks", "pre-receive")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\necho 'main is protected' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	f.cfg.Cluster.Domain = "new.example.net"
	_, err := f.sync(t, url, nil)
	if !errors.Is(err, gitrepo.ErrRejected) || !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), "main is protected") {
		t.Errorf("protected: %v", err)
	}
	t.Logf("protected: %v", err)
}

func TestSyncHTTPToken(t *testing.T) {
	const token = "tok-3f9a8c7e1d"
	srv, err := gitserver.Start(gitserver.Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	if _, err := srv.NewRepo("ops", "main"); err != nil {
		t.Fatal(err)
	}
	url := srv.URL("ops")
	f := newFixture(t)
	t.Setenv("OPS_TOKEN", token)
	f.cfg.OpsRepo.URL = url
	f.cfg.OpsRepo.Auth.Token = "env:OPS_TOKEN"
	opts, err := RepoOptionsFromConfig(f.cfg, f.redactor)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Auth.Token != token || f.redactor.Redact(token) != "[REDACTED]" {
		t.Fatal("token not resolved or not registered")
	}
	res := mustSync(t, f, url, func(o *RepoOptions) { *o = opts })
	if !res.Pushed {
		t.Fatalf("%+v", res)
	}
	if _, err := srv.Commit(context.Background(), "ops", "main", "unrelated", map[string][]byte{"docs/notes.md": []byte("hi\n")}); err != nil {
		t.Fatal(err)
	}
	res = mustSync(t, f, url, func(o *RepoOptions) { *o = opts })
	if res.Changed || res.Pushed {
		t.Errorf("no-op over HTTP: %+v", res)
	}
	f.cfg.Cluster.Domain = "new.example.net"
	res = mustSync(t, f, url, func(o *RepoOptions) { *o = opts })
	if !res.Pushed {
		t.Errorf("change over HTTP: %+v", res)
	}

	bad := opts
	bad.Auth.Token = "wrong-token-77"
	_, err = f.sync(t, url, func(o *RepoOptions) { *o = bad })
	if !errors.Is(err, gitrepo.ErrAuth) || !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), "authentication") ||
		strings.Contains(err.Error(), "wrong-token-77") || strings.Contains(err.Error(), token) {
		t.Errorf("wrong token: %v", err)
	}
	t.Logf("wrong token: %v", err)
	none := opts
	none.Auth.Token = ""
	if _, err := f.sync(t, url, func(o *RepoOptions) { *o = none }); !errors.Is(err, gitrepo.ErrAuth) {
		t.Errorf("no token: %v", err)
	}
}
