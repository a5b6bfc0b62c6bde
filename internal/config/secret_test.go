package config

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestSecretRefResolve(t *testing.T) {
	dir := t.TempDir()
	home := t.TempDir()
	t.Setenv("HOME", home)
	write := func(path, content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(dir, "token"), "from-file\n")
	write(filepath.Join(dir, "crlf"), "windows\r\n")
	write(filepath.Join(dir, "empty"), "\n")
	write(filepath.Join(home, "pve.token"), "from-home")
	abs := filepath.Join(t.TempDir(), "abs")
	write(abs, "absolute")
	t.Setenv("OPENCSP_TEST_SET", "from-env")
	t.Setenv("OPENCSP_TEST_EMPTY", "")
	t.Setenv("OPENCSP_TEST_UNSET", "") // restored after the test
	os.Unsetenv("OPENCSP_TEST_UNSET")

	tests := []struct {
		ref     SecretRef
		want    string
		wantErr string
	}{
		{"env:OPENCSP_TEST_SET", "from-env", ""},
		{"env:OPENCSP_TEST_UNSET", "", "environment variable OPENCSP_TEST_UNSET is not set"},
		{"env:OPENCSP_TEST_EMPTY", "", "environment variable OPENCSP_TEST_EMPTY is empty"},
		{"env:_X9", "", "_X9 is not set"},
		{"file:token", "from-file", ""},
		{"file:./token", "from-file", ""},
		{"file:crlf", "windows", ""},
		{SecretRef("file:" + abs), "absolute", ""},
		{"file:~/pve.token", "from-home", ""},
		{"file:missing", "", "read secret file " + filepath.Join(dir, "missing") + ": no such file or directory"},
		{"file:empty", "", "is empty"},
		{"file:.", "", "is a directory"},
		{"hunter2", "", "not a literal secret"},
		{"env:", "", "not a literal secret"},
		{"file:", "", "not a literal secret"},
		{"vault:secret/pve", "", "not a literal secret"},
		{"ENV:X", "", "not a literal secret"},
		{"env:1X", "", `"1X" is not a valid environment variable name`},
		{"env:A-B", "", "is not a valid environment variable name"},
		{"env:A B", "", "is not a valid environment variable name"},
	}
	for _, tc := range tests {
		got, err := tc.ref.Resolve(dir)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.ref, err)
		case tc.wantErr == "" && got != tc.want:
			t.Errorf("%s = %q, want %q", tc.ref, got, tc.want)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: err = %v, want %q", tc.ref, err, tc.wantErr)
		case tc.wantErr != "" && got != "":
			t.Errorf("%s: value %q returned with an error", tc.ref, got)
		}
		if cerr := tc.ref.Check(dir); (cerr == nil) != (err == nil) {
			t.Errorf("%s: Check = %v, Resolve = %v", tc.ref, cerr, err)
		}
	}
	if r := SecretRef("env:X"); r.String() != "env:X" || r.IsZero() || !SecretRef("").IsZero() {
		t.Errorf("String/IsZero")
	}
}

func TestConfigSecretRelativeToConfigDir(t *testing.T) {
	dir := setupCorpusDir(t)
	if err := os.WriteFile(filepath.Join(dir, "pve.token"), []byte("tok-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, errs := loadYAML(t, dir, edit(t, baseYAML, "env:OPENCSP_TEST_PVE_SECRET", "file:pve.token"))
	if errs != nil {
		t.Fatal(errs)
	}
	// Resolve from another working directory: the path is anchored at the
	// config file, not the process.
	t.Chdir(t.TempDir())
	got, err := cfg.Secret(cfg.Infrastructure.Proxmox.TokenSecret)
	if err != nil || got != "tok-123" {
		t.Errorf("Secret = %q, %v", got, err)
	}
	// Load does not keep the secret: only the reference.
	if cfg.Infrastructure.Proxmox.TokenSecret != "file:pve.token" {
		t.Errorf("tokenSecret = %q", cfg.Infrastructure.Proxmox.TokenSecret)
	}
}

// TestSecretsNeverInErrors puts recognizable secrets in a file, in the
// environment and literally in the config, triggers errors around them and
// checks no error text, nor the loaded config, ever contains them.
func TestSecretsNeverInErrors(t *testing.T) {
	const (
		fileSecret    = "FILE-SECRET-7c1f9a2b"
		envSecret     = "ENV-SECRET-3e8d5b60"
		literalSecret = "LITERAL-SECRET-91aa04"
		numberSecret  = "73519046284"
	)
	dir := setupCorpusDir(t)
	if err := os.WriteFile(filepath.Join(dir, "leak.secret"), []byte(fileSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("OPENCSP_TEST_LEAK", envSecret)
	t.Setenv(testSecretEnv, envSecret)

	breakage := []string{
		"https://pve1.example.net:8006", "http://pve1.example.net:8006",
		"managementVM:\n", "managementVM:\n  memoryMiB: 1\n",
	}
	docs := map[string]string{
		"env ref":       edit(t, baseYAML, append([]string{"env:OPENCSP_TEST_PVE_SECRET", "env:OPENCSP_TEST_LEAK"}, breakage...)...),
		"file ref":      edit(t, baseYAML, append([]string{"env:OPENCSP_TEST_PVE_SECRET", "file:leak.secret"}, breakage...)...),
		"literal":       edit(t, baseYAML, append([]string{"env:OPENCSP_TEST_PVE_SECRET", literalSecret}, breakage...)...),
		"quoted number": edit(t, baseYAML, "env:OPENCSP_TEST_PVE_SECRET", `"`+numberSecret+`"`),
		"number":        edit(t, baseYAML, "env:OPENCSP_TEST_PVE_SECRET", numberSecret),
		"literal token": edit(t, baseYAML, "  url: ssh://git@git.example.net/ops/opencsp.git\n",
			"  url: https://git.example.net/ops/opencsp.git\n  auth:\n    token: "+literalSecret+"\n"),
		"number token": edit(t, baseYAML, "  url: ssh://git@git.example.net/ops/opencsp.git\n",
			"  url: https://git.example.net/ops/opencsp.git\n  auth:\n    token: "+numberSecret+"\n"),
		"literal app credential": edit(t, baseYAML, "kind: InstallConfig\n", "kind: InstallConfig\nprofile: openstack\n",
			"  proxmox:\n    endpoint: https://pve1.example.net:8006\n    tokenID: opencsp@pve!installer\n    tokenSecret: env:OPENCSP_TEST_PVE_SECRET\n",
			"  openstack:\n    applicationCredentialSecret: "+literalSecret+"\n"),
		// The secret file misused as other files: errors name the path only.
		"secret file elsewhere": edit(t, baseYAML,
			"    privateKeyFile: id_ed25519\n", "    privateKeyFile: leak.secret\n    publicKeys: [leak.secret]\n",
			"    tokenSecret: env:OPENCSP_TEST_PVE_SECRET\n", "    tokenSecret: env:OPENCSP_TEST_PVE_SECRET\n    tls: {caFile: leak.secret}\n",
			"  url: ssh://git@git.example.net/ops/opencsp.git\n", "  url: ssh://git@git.example.net/ops/opencsp.git\n  auth: {sshKeyFile: leak.secret, token: file:leak.secret}\n",
		),
		"missing secret file": edit(t, baseYAML, "env:OPENCSP_TEST_PVE_SECRET", "file:"+dir+"/missing/"+"x"),
	}
	for name, doc := range docs {
		_, errs := loadYAML(t, dir, doc)
		if len(errs) == 0 {
			t.Errorf("%s: no errors", name)
			continue
		}
		text := errs.Error() + fmt.Sprintf("%v %+v %#v", errs, errs, errs)
		for _, s := range []string{fileSecret, envSecret, literalSecret, numberSecret} {
			if strings.Contains(text, s) {
				t.Errorf("%s: error text contains a secret:\n%s", name, errs)
			}
		}
	}

	// A valid config that references the secrets holds and prints only the
	// references.
	cfg, errs := loadYAML(t, dir, edit(t, baseYAML, "env:OPENCSP_TEST_PVE_SECRET", "file:leak.secret",
		"  url: ssh://git@git.example.net/ops/opencsp.git\n", "  url: https://git.example.net/ops/opencsp.git\n  auth:\n    token: env:OPENCSP_TEST_LEAK\n"))
	if errs != nil {
		t.Fatal(errs)
	}
	y, _ := yaml.Marshal(cfg)
	j, _ := json.Marshal(cfg)
	printed := fmt.Sprintf("%v %+v %#v %s %s", cfg, cfg, *cfg, y, j)
	for _, s := range []string{fileSecret, envSecret} {
		if strings.Contains(printed, s) {
			t.Errorf("printed config contains a secret")
		}
	}
	if v, err := cfg.Secret(cfg.OpsRepo.Auth.Token); err != nil || v != envSecret {
		t.Errorf("token = %q, %v", v, err)
	}
}
