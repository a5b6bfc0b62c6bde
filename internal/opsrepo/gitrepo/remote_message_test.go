package gitrepo

import "testing"

// TestRemoteMessage: what a server's hook prints reaches the push error; progress does not.
func TestRemoteMessage(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"GL-HOOK-ERR: main is protected\n", "GL-HOOK-ERR: main is protected"},
		{"Resolving deltas:  50% (1/2)\rResolving deltas: 100% (2/2), done.\nmain is frozen\nask an admin\n", "main is frozen | ask an admin"},
	} {
		if got := remoteMessage(tc.in); got != tc.want {
			t.Errorf("remoteMessage(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
