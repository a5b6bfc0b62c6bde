package remote

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/opencsp/installer/internal/events"
	"github.com/opencsp/installer/internal/logging"
	"github.com/opencsp/installer/internal/remote/sshdtest"
)

// env is one sshd with a root login and, on demand, sudo users.
type env struct {
	srv *sshdtest.Server
	key sshdtest.Key
	log *recordHandler
}

func newEnv(t *testing.T) *env {
	t.Helper()
	sshdtest.Require(t)
	e := &env{srv: sshdtest.Start(t, sshdtest.Options{}), key: sshdtest.NewKey(t), log: &recordHandler{}}
	e.srv.Authorize(t, "root", e.key.Public())
	return e
}

func (e *env) config(user string) Config {
	return Config{
		Host: e.srv.Host, Port: e.srv.Port, User: user, KeyFile: e.key.Path,
		ConnectTimeout: 10 * time.Second, InitialBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Logger: slog.New(e.log),
	}
}

func (e *env) dial(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// sudoUser creates a user with rights, authorizes the env's key for it and
// returns a sudo-enabled config.
func (e *env) sudoUser(t *testing.T, rights sshdtest.SudoRights) Config {
	t.Helper()
	u := sshdtest.AddUser(t, rights)
	e.srv.Authorize(t, u.Name, e.key.Public())
	cfg := e.config(u.Name)
	cfg.Sudo = true
	return cfg
}

func TestRunExitCodesAndStreamedOutput(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, e.config("root"))
	tests := []struct {
		name       string
		cmd        string
		wantCode   int // 0: success
		wantStdout string
		wantLogged []string // "stream:line"
		wantTail   string
	}{
		{name: "success", cmd: "echo one; echo two", wantStdout: "one\ntwo\n", wantLogged: []string{"stdout:one", "stdout:two"}},
		{name: "exit code and stderr", cmd: "echo out; echo 'bad thing' >&2; exit 3", wantCode: 3,
			wantStdout: "out\n", wantLogged: []string{"stdout:out", "stderr:bad thing"}, wantTail: "bad thing"},
		{name: "unterminated last line", cmd: "printf 'a\\nb'", wantStdout: "a\nb", wantLogged: []string{"stdout:a", "stdout:b"}},
		{name: "command not found", cmd: "no-such-command-xyz", wantCode: 127, wantTail: "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.log.reset()
			var out bytes.Buffer
			err := c.Exec(context.Background(), Command{Cmd: tt.cmd, Stdout: &out})
			if tt.wantCode == 0 && err != nil {
				t.Fatalf("Exec: %v", err)
			}
			if tt.wantCode != 0 {
				var ee *ExitError
				if !errors.As(err, &ee) {
					t.Fatalf("err = %v, want *ExitError", err)
				}
				if ee.Code != tt.wantCode || ee.Cmd != tt.cmd || !strings.Contains(ee.Stderr, tt.wantTail) {
					t.Errorf("ExitError = %+v, want code %d cmd %q stderr containing %q", ee, tt.wantCode, tt.cmd, tt.wantTail)
				}
			}
			if out.String() != tt.wantStdout {
				t.Errorf("stdout = %q, want %q", out.String(), tt.wantStdout)
			}
			logged := e.log.lines()
			for _, want := range tt.wantLogged {
				if !contains(logged, want) {
					t.Errorf("log lines %q lack %q", logged, want)
				}
			}
		})
	}
}

func TestOutputIsNotLoggedAndErrorsAreRedacted(t *testing.T) {
	e := newEnv(t)
	cfg := e.config("root")
	cfg.Redactor = logging.NewRedactor("s3cret-token")
	c := e.dial(t, cfg)
	out, err := c.Output(context.Background(), "echo kubeconfig-data")
	if err != nil || string(out) != "kubeconfig-data\n" {
		t.Fatalf("Output = %q, %v", out, err)
	}
	if l := e.log.lines(); contains(l, "stdout:kubeconfig-data") {
		t.Errorf("Output's stdout was logged: %q", l)
	}
	err = c.Run(context.Background(), "echo s3cret-token >&2; K3S_TOKEN=s3cret-token false")
	if err == nil || strings.Contains(err.Error(), "s3cret-token") {
		t.Fatalf("error %v must exist and not contain the secret", err)
	}
}

func TestSudo(t *testing.T) {
	e := newEnv(t)
	t.Run("passwordless sudo runs as root", func(t *testing.T) {
		c := e.dial(t, e.sudoUser(t, sshdtest.SudoNoPassword))
		out, err := c.Output(context.Background(), "id -u")
		if err != nil || strings.TrimSpace(string(out)) != "0" {
			t.Fatalf("id -u via sudo = %q, %v; want 0", out, err)
		}
		out, err = execOutput(context.Background(), c, Command{Cmd: "id -u", NoSudo: true})
		if err != nil || strings.TrimSpace(string(out)) == "0" {
			t.Fatalf("id -u without sudo = %q, %v; want non-zero", out, err)
		}
		// Quoting survives the sh -c wrapper.
		out, err = c.Output(context.Background(), `printf '%s|' "it's" "a b"`)
		if err != nil || string(out) != "it's|a b|" {
			t.Fatalf("quoted output = %q, %v", out, err)
		}
	})
	t.Run("sudo asking for a password is a clear error", func(t *testing.T) {
		cfg := e.sudoUser(t, sshdtest.SudoWithPassword)
		c := e.dial(t, cfg)
		err := c.Run(context.Background(), "true")
		var se *SudoError
		if !errors.As(err, &se) {
			t.Fatalf("err = %v, want *SudoError", err)
		}
		for _, want := range []string{cfg.User, "password", "NOPASSWD", "sudo -n"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
		var ee *ExitError
		if !errors.As(err, &ee) || ee.Code != 1 {
			t.Errorf("SudoError should wrap the ExitError (code 1), got %v", ee)
		}
	})
}

// execOutput runs cmd capturing stdout.
func execOutput(ctx context.Context, c *Client, cmd Command) ([]byte, error) {
	var out bytes.Buffer
	cmd.Stdout = &out
	err := c.Exec(ctx, cmd)
	return out.Bytes(), err
}

func TestUploadLargeFileWithProgress(t *testing.T) {
	e := newEnv(t)
	const size = 64 << 20
	tests := []struct {
		name     string
		cfg      func(t *testing.T) Config
		top, dir string // top is created by the upload (missing parents) and removed after
		mode     fs.FileMode
	}{
		{name: "root over sftp", cfg: func(*testing.T) Config { return e.config("root") }, top: "/tmp/opencsp-remote-test-" + randSuffix(), dir: "a/b", mode: 0o640},
		{name: "sudo user into root-owned dir", cfg: func(t *testing.T) Config { return e.sudoUser(t, sshdtest.SudoNoPassword) },
			top: "/opt/opencsp-remote-test-" + randSuffix(), dir: "bin", mode: 0o755},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg(t)
			c := e.dial(t, cfg)
			t.Cleanup(func() { _ = exec.Command("rm", "-rf", tt.top).Run() })
			dir := path.Join(tt.top, tt.dir)
			dst := path.Join(dir, "k3s")

			h := sha256.New()
			src := io.TeeReader(io.LimitReader(pseudoRandom(7), size), h)
			var (
				mu    sync.Mutex
				calls [][2]int64
			)
			start := time.Now()
			err := c.Upload(context.Background(), src, size, dst, tt.mode, func(done, total int64) {
				mu.Lock()
				defer mu.Unlock()
				calls = append(calls, [2]int64{done, total})
			})
			if err != nil {
				t.Fatalf("Upload: %v", err)
			}
			t.Logf("uploaded %d MiB in %s", size>>20, time.Since(start).Round(time.Millisecond))

			want := hex.EncodeToString(h.Sum(nil))
			got, err := c.SHA256(context.Background(), dst)
			if err != nil || got != want {
				t.Fatalf("remote sha256 = %q, %v; want %q", got, err, want)
			}
			checkProgress(t, calls, size)

			out, err := c.Output(context.Background(), "stat -c '%a %U' "+dst+"; ls -A "+dir)
			if err != nil {
				t.Fatal(err)
			}
			wantStat := strconv.FormatInt(int64(tt.mode), 8) + " root\nk3s\n"
			if string(out) != wantStat {
				t.Errorf("stat + listing = %q, want %q (mode, owner, no temp files)", out, wantStat)
			}
			home, err := execOutput(context.Background(), c, Command{Cmd: "ls -A ~", NoSudo: true})
			if err != nil || strings.Contains(string(home), ".opencsp-upload") {
				t.Errorf("home still holds staging dirs: %q, %v", home, err)
			}
		})
	}
}

func checkProgress(t *testing.T, calls [][2]int64, size int64) {
	t.Helper()
	if len(calls) == 0 {
		t.Fatal("no progress calls")
	}
	var prev int64
	for _, c := range calls {
		if c[0] < prev || c[1] != size {
			t.Fatalf("progress not monotonic or wrong total: %v", calls)
		}
		prev = c[0]
	}
	if last := calls[len(calls)-1]; last[0] != size {
		t.Errorf("last progress = %v, want done = %d", last, size)
	}
}

func TestUploadReplacesAtomicallyAndFailsCleanly(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, e.config("root"))
	dir := "/tmp/opencsp-remote-test-" + randSuffix()
	t.Cleanup(func() { _ = exec.Command("rm", "-rf", dir).Run() })
	dst := dir + "/f"
	ctx := context.Background()
	for _, content := range []string{"first", "second, longer"} {
		if err := c.WriteFile(ctx, dst, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := c.ReadFile(ctx, dst)
		if err != nil || string(got) != content {
			t.Fatalf("ReadFile = %q, %v; want %q", got, err, content)
		}
	}
	// A source shorter than announced must not replace the file.
	err := c.Upload(ctx, strings.NewReader("short"), 100, dst, 0o600, nil)
	if err == nil || !strings.Contains(err.Error(), "expected 100") {
		t.Fatalf("short upload err = %v", err)
	}
	// A cancelled upload neither.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.Upload(cctx, io.LimitReader(pseudoRandom(1), 1<<20), 1<<20, dst, 0o600, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled upload err = %v", err)
	}
	out, _ := c.Output(ctx, "ls -A "+dir+"; cat "+dst)
	if string(out) != "f\nsecond, longer" {
		t.Errorf("dir + content after failed uploads = %q", out)
	}
	if err := c.Upload(ctx, strings.NewReader("x"), 1, "relative/path", 0o600, nil); err == nil {
		t.Error("relative remote path accepted")
	}
}

func TestReadWriteFileViaSudo(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, e.sudoUser(t, sshdtest.SudoNoPassword))
	ctx := context.Background()
	dir := "/etc/opencsp-remote-test-" + randSuffix()
	t.Cleanup(func() { _ = exec.Command("rm", "-rf", dir).Run() })
	p := dir + "/k3s.yaml"
	content := []byte("apiVersion: v1\nkind: Config\n")
	if err := c.WriteFile(ctx, p, content, 0o600); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	got, err := c.ReadFile(ctx, p)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("ReadFile = %q, %v", got, err)
	}
	out, err := c.Output(ctx, "stat -c '%a %U' "+p)
	if err != nil || string(out) != "600 root\n" {
		t.Errorf("stat = %q, %v; want 600 root", out, err)
	}
	// The login user cannot read it: proves the read went through sudo.
	if _, err := execOutput(ctx, c, Command{Cmd: "cat " + p, NoSudo: true}); err == nil {
		t.Error("file readable without sudo; test does not prove anything")
	}
	sum := sha256.Sum256(content)
	if got, err := c.SHA256(ctx, p); err != nil || got != hex.EncodeToString(sum[:]) {
		t.Errorf("SHA256 = %q, %v", got, err)
	}
	if _, err := c.ReadFile(ctx, dir+"/missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadFile(missing) err = %v, want fs.ErrNotExist", err)
	}
	if _, err := c.SHA256(ctx, dir+"/missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("SHA256(missing) err = %v, want fs.ErrNotExist", err)
	}
}

func TestReadFileDirectMissing(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, e.config("root"))
	if _, err := c.ReadFile(context.Background(), "/nonexistent/opencsp"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("err = %v, want fs.ErrNotExist", err)
	}
}

func TestHostKeyTrustOnFirstUseThenPinned(t *testing.T) {
	e := newEnv(t)
	var recorded ssh.PublicKey
	cfg := e.config("root")
	cfg.HostKey.OnFirstContact = func(k ssh.PublicKey) error { recorded = k; return nil }
	c := e.dial(t, cfg)
	if recorded == nil {
		t.Fatal("OnFirstContact not called on first contact")
	}
	if want := e.srv.HostKeys.Keys[ssh.KeyAlgoED25519]; string(recorded.Marshal()) != string(want.Marshal()) {
		t.Errorf("recorded %s, want the ed25519 host key %s", ssh.FingerprintSHA256(recorded), ssh.FingerprintSHA256(want))
	}
	if string(c.HostKey().Marshal()) != string(recorded.Marshal()) {
		t.Error("HostKey() differs from the recorded key")
	}

	// Same server, key pinned: accepted, no new first contact.
	pinned := e.config("root")
	pinned.HostKey.Known = AuthorizedKey(recorded)
	pinned.HostKey.OnFirstContact = func(ssh.PublicKey) error { t.Error("OnFirstContact called with a known key"); return nil }
	e.dial(t, pinned)

	// The "VM" is replaced by one with other host keys on the same address.
	e.srv.Stop()
	srv2 := sshdtest.Start(t, sshdtest.Options{Port: e.srv.Port})
	srv2.Authorize(t, "root", e.key.Public())
	start := time.Now()
	_, err := Dial(context.Background(), pinned)
	var mm *HostKeyMismatchError
	if !errors.As(err, &mm) {
		t.Fatalf("err = %v, want *HostKeyMismatchError", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Errorf("mismatch took %s: it must not be retried", time.Since(start))
	}
	newFP := srv2.HostKeys.Fingerprint(ssh.KeyAlgoED25519)
	for _, want := range []string{"SECURITY", srv2.Addr(), ssh.FingerprintSHA256(recorded), newFP, "man-in-the-middle", "re-created"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}

	// A failing recorder aborts the connection.
	tofu := e.config("root")
	tofu.Port = srv2.Port
	tofu.HostKey.OnFirstContact = func(ssh.PublicKey) error { return errors.New("disk full") }
	if _, err := Dial(context.Background(), tofu); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("err = %v, want the recorder's error", err)
	}
}

func TestHostKeyFingerprintPin(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name        string
		fingerprint string
		wantErr     bool
	}{
		{name: "ed25519 key", fingerprint: e.srv.HostKeys.Fingerprint(ssh.KeyAlgoED25519)},
		{name: "ecdsa key (found by trying each key type)", fingerprint: e.srv.HostKeys.Fingerprint(ssh.KeyAlgoECDSA256)},
		{name: "wrong key", fingerprint: sshdtest.NewHostKeys(t).Fingerprint(ssh.KeyAlgoED25519), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := e.config("root")
			cfg.HostKey.Fingerprint = tt.fingerprint
			var recorded ssh.PublicKey
			cfg.HostKey.OnFirstContact = func(k ssh.PublicKey) error { recorded = k; return nil }
			c, err := Dial(context.Background(), cfg)
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("Dial: %v", err)
				}
				defer c.Close()
				if ssh.FingerprintSHA256(recorded) != tt.fingerprint {
					t.Errorf("recorded %s, want the pinned %s", ssh.FingerprintSHA256(recorded), tt.fingerprint)
				}
				return
			}
			var mm *HostKeyMismatchError
			if !errors.As(err, &mm) {
				t.Fatalf("err = %v, want *HostKeyMismatchError", err)
			}
			if mm.Expected != tt.fingerprint || len(mm.Presented) != 2 || recorded != nil {
				t.Errorf("mismatch = %+v (recorded %v); want expected %s and both server keys presented", mm, recorded, tt.fingerprint)
			}
		})
	}
}

func TestWrongClientKeyIsAnAuthError(t *testing.T) {
	e := newEnv(t)
	other := sshdtest.NewKey(t)
	cfg := e.config("root")
	cfg.KeyFile = other.Path
	cfg.AuthRetryWindow = time.Second
	start := time.Now()
	_, err := Dial(context.Background(), cfg)
	elapsed := time.Since(start)
	var ae *AuthError
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v, want *AuthError", err)
	}
	fp := ssh.FingerprintSHA256(other.Public())
	for _, want := range []string{`"root"`, other.Path, fp, "cloud-init"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if elapsed < time.Second || elapsed > 5*time.Second {
		t.Errorf("gave up after %s, want about the 1s auth retry window", elapsed)
	}

	cfg.AuthRetryWindow = -1
	start = time.Now()
	if _, err := Dial(context.Background(), cfg); !errors.As(err, &ae) || time.Since(start) > time.Second {
		t.Errorf("no-retry auth failure: %v after %s", err, time.Since(start))
	}
}

func TestKeyProblemsFailFast(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name  string
		edit  func(*Config)
		wants []string
	}{
		{name: "passphrase protected key", edit: func(c *Config) { c.KeyFile = sshdtest.NewEncryptedKey(t, "pw").Path },
			wants: []string{"passphrase", "ssh-agent", "ssh-add"}},
		{name: "missing key file", edit: func(c *Config) { c.KeyFile = "/nonexistent/id_ed25519" }, wants: []string{"/nonexistent/id_ed25519"}},
		{name: "no key and no agent", edit: func(c *Config) { c.KeyFile = ""; c.AgentSocket = "/nonexistent/agent.sock" }, wants: []string{"ssh-agent"}},
		{name: "bad fingerprint syntax", edit: func(c *Config) { c.HostKey.Fingerprint = "MD5:aa:bb" }, wants: []string{"SHA256:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := e.config("root")
			tt.edit(&cfg)
			start := time.Now()
			_, err := Dial(context.Background(), cfg)
			if err == nil {
				t.Fatal("Dial succeeded")
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
			if time.Since(start) > time.Second {
				t.Errorf("took %s: configuration errors must not be retried", time.Since(start))
			}
		})
	}
}

func TestUnreachablePortTimesOutWithDiagnosis(t *testing.T) {
	key := sshdtest.NewKey(t)
	port := sshdtest.FreePort(t)
	cfg := Config{Host: "127.0.0.1", Port: port, User: "debian", KeyFile: key.Path,
		ConnectTimeout: 2 * time.Second, InitialBackoff: 50 * time.Millisecond, MaxBackoff: 300 * time.Millisecond}
	start := time.Now()
	_, err := Dial(context.Background(), cfg)
	elapsed := time.Since(start)
	var ce *ConnectError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want *ConnectError", err)
	}
	if elapsed < 2*time.Second || elapsed > 3*time.Second {
		t.Errorf("gave up after %s, want about 2s", elapsed)
	}
	if ce.Attempts < 3 {
		t.Errorf("only %d attempts", ce.Attempts)
	}
	for _, want := range []string{"127.0.0.1:" + strconv.Itoa(port), `"debian"`, key.Path, "connection refused",
		"VM running", "cloud-init", "firewall", "port " + strconv.Itoa(port), "login user"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestServerStartingLateIsReachedByRetries(t *testing.T) {
	sshdtest.Require(t)
	key := sshdtest.NewKey(t)
	port := sshdtest.FreePort(t)
	logs := &recordHandler{}
	cfg := Config{Host: "127.0.0.1", Port: port, User: "root", KeyFile: key.Path, Logger: slog.New(logs),
		ConnectTimeout: 20 * time.Second, InitialBackoff: 100 * time.Millisecond, MaxBackoff: 500 * time.Millisecond}
	type result struct {
		c   *Client
		err error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		c, err := Dial(context.Background(), cfg)
		done <- result{c, err}
	}()
	time.Sleep(2 * time.Second)
	srv := sshdtest.Start(t, sshdtest.Options{Port: port})
	srv.Authorize(t, "root", key.Public())
	r := <-done
	if r.err != nil {
		t.Fatalf("Dial: %v", r.err)
	}
	defer r.c.Close()
	if elapsed := time.Since(start); elapsed < 2*time.Second || elapsed > 5*time.Second {
		t.Errorf("connected after %s, want shortly after the 2s start delay", elapsed)
	}
	if n := logs.count("ssh not reachable yet, retrying"); n < 3 {
		t.Errorf("%d retries logged, want several", n)
	}
	if err := r.c.Run(context.Background(), "true"); err != nil {
		t.Error(err)
	}
}

func TestCancelStopsRetriesPromptly(t *testing.T) {
	key := sshdtest.NewKey(t)
	cfg := Config{Host: "127.0.0.1", Port: sshdtest.FreePort(t), User: "root", KeyFile: key.Path,
		ConnectTimeout: time.Minute, InitialBackoff: 2 * time.Second, MaxBackoff: 5 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	_, err := Dial(ctx, cfg)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("returned %s after start, want promptly after the 300ms cancel", elapsed)
	}
}

func TestCancelStopsRunningCommand(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, e.config("root"))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.Run(ctx, "sleep 30")
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 3*time.Second {
		t.Fatalf("err = %v after %s, want deadline exceeded promptly", err, time.Since(start))
	}
	// The connection stays usable.
	if err := c.Run(context.Background(), "true"); err != nil {
		t.Errorf("connection unusable after a cancelled command: %v", err)
	}
}

// pseudoRandom is a deterministic, allocation-free byte stream.
func pseudoRandom(seed uint64) io.Reader {
	var s [32]byte
	s[0] = byte(seed)
	return rand.NewChaCha8(s)
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

// recordHandler records log records for assertions.
type recordHandler struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordHandler) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = nil
}

// lines returns "stream:line" for each logged output line.
func (h *recordHandler) lines() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.recs {
		var line string
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "line" {
				line = a.Value.String()
			}
			return true
		})
		if stream, ok := strings.CutPrefix(r.Message, "remote "); ok {
			out = append(out, stream+":"+line)
		}
	}
	return out
}

func (h *recordHandler) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.recs {
		if r.Message == msg {
			n++
		}
	}
	return n
}

func TestUploadFileAsPlainUserWithProgressEvents(t *testing.T) {
	e := newEnv(t)
	u := sshdtest.AddUser(t, sshdtest.NoSudo)
	e.srv.Authorize(t, u.Name, e.key.Public())
	c := e.dial(t, e.config(u.Name)) // Sudo false: plain SFTP as the user
	src := path.Join(t.TempDir(), "images.tar.zst")
	data, _ := io.ReadAll(io.LimitReader(pseudoRandom(3), 4<<20))
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	var rec events.Recorder
	dst := u.Home + "/images/images.tar.zst"
	err := c.UploadFile(context.Background(), src, dst, 0o644,
		ProgressEvents(&rec, events.Event{Stage: "k3s", Step: "upload", Message: "images.tar.zst"}))
	if err != nil {
		t.Fatalf("UploadFile: %v", err)
	}
	sum := sha256.Sum256(data)
	if got, err := c.SHA256(context.Background(), dst); err != nil || got != hex.EncodeToString(sum[:]) {
		t.Errorf("remote sha256 = %q, %v", got, err)
	}
	evs := rec.Events()
	if len(evs) == 0 {
		t.Fatal("no events")
	}
	last := evs[len(evs)-1]
	if last.Status != events.Progress || last.Stage != "k3s" || last.Step != "upload" || last.BytesDone != int64(len(data)) || last.BytesTotal != int64(len(data)) {
		t.Errorf("last event = %+v", last)
	}
	// Without sudo a root-owned destination is refused, not silently skipped.
	if err := c.WriteFile(context.Background(), "/etc/opencsp-should-not-exist", []byte("x"), 0o644); err == nil {
		t.Error("plain user wrote into /etc")
	}
}
