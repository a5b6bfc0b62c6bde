package k3s

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestRenderConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     nodeConfig
		want    []string // lines that must appear
		wantErr string
	}{
		{
			name: "basics",
			cfg:  nodeConfig{NodeName: "mgmt", TLSSANs: []string{"10.0.0.5", "k8s.example.net"}, Disable: []string{"traefik", "servicelb"}},
			want: []string{"node-name: mgmt", `write-kubeconfig-mode: "0600"`, "tls-san:", "    - 10.0.0.5", "    - k8s.example.net", "disable:", "    - traefik"},
		},
		{
			name: "extra args become config keys",
			cfg: nodeConfig{NodeName: "n", TLSSANs: []string{"10.0.0.5"},
				ExtraArgs: []string{"--kube-apiserver-arg=audit-log-maxage=30", "--tls-san=10.0.0.5", "--tls-san=extra.example", "--secrets-encryption", "--cluster-cidr=10.42.0.0/16"}},
			want: []string{"kube-apiserver-arg:", "    - audit-log-maxage=30", "    - extra.example", `secrets-encryption: "true"`, "cluster-cidr: 10.42.0.0/16"},
		},
		{name: "managed key refused", cfg: nodeConfig{NodeName: "n", ExtraArgs: []string{"--node-name=x"}}, wantErr: "managed by the installer"},
		{name: "not a flag", cfg: nodeConfig{NodeName: "n", ExtraArgs: []string{"foo"}}, wantErr: "want --name=value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.cfg.render()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(got), w+"\n") {
					t.Errorf("missing line %q in:\n%s", w, got)
				}
			}
			var m map[string]any
			if err := yaml.Unmarshal(got, &m); err != nil {
				t.Fatalf("not YAML: %v", err)
			}
			if m["write-kubeconfig-mode"] != "0600" {
				t.Errorf("write-kubeconfig-mode = %#v, want the string 0600", m["write-kubeconfig-mode"])
			}
			again, _ := tt.cfg.render()
			if digest(again) != digest(got) {
				t.Error("render is not deterministic")
			}
		})
	}
}
