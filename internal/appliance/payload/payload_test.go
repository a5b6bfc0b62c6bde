package payload

import "testing"

func TestDataPath(t *testing.T) {
	tests := []struct {
		iso, want string
		ok        bool
	}{
		{ConfigFile, "", false}, // not under payload/
		{Dir + "/" + ConfigFile, ConfigFile, true},
		{Dir + "/" + OpsRepoTokenFile, "secrets/ops-repo-token", true},
		{Dir + "//k3s/./k3s", "k3s/k3s", true},
		{BinaryPath, "bin/opencsp", true},
		{OSImagePath, "", false}, // the OS image is the disk itself
		{Dir, "", false},
		{"payloadx/a", "", false},
	}
	for _, tt := range tests {
		got, ok := DataPath(tt.iso)
		if got != tt.want || ok != tt.ok {
			t.Errorf("DataPath(%q) = %q, %v; want %q, %v", tt.iso, got, ok, tt.want, tt.ok)
		}
	}
}
