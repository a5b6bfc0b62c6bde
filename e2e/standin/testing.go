package standin

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// hostTools are what a stand-in needs on the host; hostPackages bring them.
var (
	hostTools    = []string{"debootstrap", "systemd-nspawn", "nsenter", "unshare", "ip", "chroot"}
	hostPackages = []string{"debootstrap", "systemd-container", "iproute2", "util-linux"}
)

// RequireHost skips the test LOUDLY ("<suite> SKIPPED: why") when stand-ins
// cannot run here: -short, OPENCSP_SKIP_STANDIN, not root, or a host tool
// missing. extra names more tools the suite needs, each also the Debian
// package that brings it (e.g. git). Every suite booting stand-ins shares it.
func RequireHost(t testing.TB, suite string, extra ...string) {
	t.Helper()
	skip := func(why string) {
		t.Helper()
		t.Skip(suite + " SKIPPED: " + why)
	}
	if testing.Short() {
		skip("-short")
	}
	if os.Getenv("OPENCSP_SKIP_STANDIN") != "" {
		skip("OPENCSP_SKIP_STANDIN is set")
	}
	if os.Geteuid() != 0 {
		skip("they need root (network namespaces, overlayfs, systemd-nspawn)")
	}
	packages := strings.Join(append(append([]string(nil), hostPackages...), extra...), " ")
	for _, tool := range append(append([]string(nil), hostTools...), extra...) {
		if _, err := exec.LookPath(tool); err != nil {
			skip(tool + " not found (apt-get install " + packages + ")")
		}
	}
}

// RunTests is a TestMain for suites that boot stand-ins: as root it first
// removes what crashed earlier runs left behind, then runs the tests.
func RunTests(m *testing.M) {
	if os.Geteuid() == 0 {
		if cleaned, err := CleanupStale(context.Background()); len(cleaned) > 0 || err != nil {
			fmt.Fprintf(os.Stderr, "standin: cleaned leftovers of crashed runs %v (err: %v)\n", cleaned, err)
		}
	}
	os.Exit(m.Run())
}
