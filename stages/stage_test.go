package stages_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/stages"
)

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestFingerprint(t *testing.T) {
	cfg := &config.Config{}
	cfg.Cluster.Name = "lab"
	other := &config.Config{}
	other.Cluster.Name = "prod"
	type vm struct {
		Name  string
		Cores int
	}
	var nilPtr *vm
	tests := []struct {
		name string
		in   any
		want string // exact hash, or "" to compare with same/diff below
		same any    // must hash equal to in
		diff any    // must hash differently
	}{
		{name: "nil hashes null", in: nil, want: sha("null")},
		{name: "typed nil pointer hashes null", in: nilPtr, want: sha("null")},
		{name: "struct is canonical JSON", in: vm{"mgmt", 4}, want: sha(`{"Name":"mgmt","Cores":4}`)},
		{name: "map key order does not matter", in: map[string]int{"a": 1, "b": 2}, same: map[string]int{"b": 2, "a": 1}},
		{name: "value change matters", in: vm{"mgmt", 4}, diff: vm{"mgmt", 8}},
		{name: "config slice", in: cfg.Cluster, same: config.Cluster{Name: "lab"}, diff: other.Cluster},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := stages.Fingerprint(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want != "" && got != tt.want {
				t.Errorf("Fingerprint = %s, want %s", got, tt.want)
			}
			if tt.same != nil {
				if s, _ := stages.Fingerprint(tt.same); s != got {
					t.Errorf("equal inputs hash differently: %s vs %s", got, s)
				}
			}
			if tt.diff != nil {
				if d, _ := stages.Fingerprint(tt.diff); d == got {
					t.Errorf("different inputs hash the same: %s", got)
				}
			}
		})
	}
	if _, err := stages.Fingerprint(func() {}); err == nil {
		t.Error("unencodable inputs: no error")
	}
}

func TestChangeString(t *testing.T) {
	tests := []struct {
		c    stages.Change
		want string
	}{
		{stages.Change{Action: "create", Target: "vm opencsp-lab-mgmt", Detail: "clone from template 9000"}, "create vm opencsp-lab-mgmt (clone from template 9000)"},
		{stages.Change{Action: "upload", Target: "noble.img"}, "upload noble.img"},
		{stages.Change{Action: "bootstrap flux"}, "bootstrap flux"},
	}
	for _, tt := range tests {
		if got := tt.c.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}

func TestStageErrorMessages(t *testing.T) {
	cause := errors.New("clone template 9000 on pve1: lock timeout")
	tests := []struct {
		err  *stages.StageError
		want string
	}{
		{&stages.StageError{Stage: "provision", Err: cause}, "stage provision failed: clone template 9000 on pve1: lock timeout"},
		{&stages.StageError{Stage: "k3s", Err: fmt.Errorf("%w: context canceled", stages.ErrInterrupted)}, "stage k3s interrupted"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	if !errors.Is(tests[0].err, cause) {
		t.Error("StageError does not unwrap to its cause")
	}
}
