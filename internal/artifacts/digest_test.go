package artifacts

import (
	"strings"
	"testing"
)

func TestParseDigest(t *testing.T) {
	h64, h128 := strings.Repeat("a", 64), strings.Repeat("b", 128)
	tests := []struct {
		in      string
		want    Digest
		wantErr bool
	}{
		{in: "sha256:" + h64, want: Digest{SHA256, h64}},
		{in: h64, want: Digest{SHA256, h64}},
		{in: "SHA256:" + strings.ToUpper(h64), want: Digest{SHA256, h64}},
		{in: "sha512:" + h128, want: Digest{SHA512, h128}},
		{in: " " + h128 + "\n", want: Digest{SHA512, h128}},
		{in: "sha512:" + h64, wantErr: true},
		{in: "md5:" + strings.Repeat("c", 32), wantErr: true},
		{in: "sha256:xyz", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseDigest(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseDigest(%q) = %v, %v; want %v (err %v)", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestFindChecksum(t *testing.T) {
	a, b, c := strings.Repeat("a", 64), strings.Repeat("b", 64), strings.Repeat("c", 128)
	file := strings.Join([]string{
		"# comment",
		a + "  k3s",
		b + " *k3s-airgap-images-amd64.tar.zst",
		a + "  ./dist/only-in-dir",
		"SHA512 (bsd-file.img) = " + c,
		"garbage line",
		a + "  dup/x",
		b + "  other/x",
		"",
	}, "\n")
	tests := []struct {
		name    string
		want    Digest
		wantErr string
	}{
		{name: "k3s", want: Digest{SHA256, a}},
		{name: "k3s-airgap-images-amd64.tar.zst", want: Digest{SHA256, b}},
		{name: "only-in-dir", want: Digest{SHA256, a}},
		{name: "bsd-file.img", want: Digest{SHA512, c}},
		{name: "missing", wantErr: "no entry"},
		{name: "x", wantErr: "more than once"},
		{name: "k3", wantErr: "no entry"},
	}
	for _, tt := range tests {
		got, err := FindChecksum(strings.NewReader(file), tt.name)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("FindChecksum(%q) err = %v, want %q", tt.name, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("FindChecksum(%q) = %v, %v; want %v", tt.name, got, err, tt.want)
		}
	}
}
