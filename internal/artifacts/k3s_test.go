package artifacts

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	const v = "v1.33.5+k3s1"
	gh := "https://github.com/k3s-io/k3s/releases/download/v1.33.5%2Bk3s1/"
	tests := []struct {
		name                                   string
		version                                string
		mirror                                 Mirror
		binary, images, sums, script, checksum string
		wantErr                                string
	}{
		{
			name: "GitHub default", version: v,
			binary: gh + "k3s", images: gh + "k3s-airgap-images-amd64.tar.zst", sums: gh + "sha256sum-amd64.txt",
			script: "https://get.k3s.io",
		},
		{
			name: "GitHub arm64", version: v, mirror: Mirror{Arch: "arm64"},
			binary: gh + "k3s-arm64", images: gh + "k3s-airgap-images-arm64.tar.zst", sums: gh + "sha256sum-arm64.txt",
			script: "https://get.k3s.io",
		},
		{
			name: "mirror base template with trailing slash", version: v, mirror: Mirror{Release: "https://mirror.example/k3s/{{.Version}}/"},
			binary: "https://mirror.example/k3s/v1.33.5%2Bk3s1/k3s", images: "https://mirror.example/k3s/v1.33.5%2Bk3s1/k3s-airgap-images-amd64.tar.zst",
			sums: "https://mirror.example/k3s/v1.33.5%2Bk3s1/sha256sum-amd64.txt", script: "https://mirror.example/k3s/v1.33.5%2Bk3s1/install.sh",
		},
		{
			name: "mirror full template, own script URL", version: v,
			mirror: Mirror{Release: "https://m.example/{{.Arch}}/{{.File}}?v={{.Version}}", Script: "https://m.example/install.sh"},
			binary: "https://m.example/amd64/k3s?v=v1.33.5%2Bk3s1", images: "https://m.example/amd64/k3s-airgap-images-amd64.tar.zst?v=v1.33.5%2Bk3s1",
			sums: "https://m.example/amd64/sha256sum-amd64.txt?v=v1.33.5%2Bk3s1", script: "https://m.example/install.sh",
		},
		{
			name: "file URL directory", version: v, mirror: Mirror{Release: "file:///srv/k3s/v1.33.5+k3s1/"},
			binary: "file:///srv/k3s/v1.33.5+k3s1/k3s", images: "file:///srv/k3s/v1.33.5+k3s1/k3s-airgap-images-amd64.tar.zst",
			sums: "file:///srv/k3s/v1.33.5+k3s1/sha256sum-amd64.txt", script: "file:///srv/k3s/v1.33.5+k3s1/install.sh",
		},
		{
			name: "plain directory template keeps +", version: v, mirror: Mirror{Release: "/srv/k3s/{{.Version}}"},
			binary: "/srv/k3s/v1.33.5+k3s1/k3s", images: "/srv/k3s/v1.33.5+k3s1/k3s-airgap-images-amd64.tar.zst",
			sums: "/srv/k3s/v1.33.5+k3s1/sha256sum-amd64.txt", script: "/srv/k3s/v1.33.5+k3s1/install.sh",
		},
		{name: "rc version", version: "v1.34.0-rc1+k3s1", binary: "https://github.com/k3s-io/k3s/releases/download/v1.34.0-rc1%2Bk3s1/k3s",
			images: "https://github.com/k3s-io/k3s/releases/download/v1.34.0-rc1%2Bk3s1/k3s-airgap-images-amd64.tar.zst",
			sums:   "https://github.com/k3s-io/k3s/releases/download/v1.34.0-rc1%2Bk3s1/sha256sum-amd64.txt", script: "https://get.k3s.io"},
		{name: "bad version", version: "1.33.5", wantErr: "release tag"},
		{name: "bad version with path", version: "v1.33.5+k3s1/../x", wantErr: "release tag"},
		{name: "bad arch", version: v, mirror: Mirror{Arch: "s390x"}, wantErr: "architecture"},
		{name: "bad template", version: v, mirror: Mirror{Release: "https://m/{{.Nope}}/"}, wantErr: "template"},
		{name: "bad script digest", version: v, mirror: Mirror{ScriptDigest: "sha256:zz"}, wantErr: "digest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Resolve(tt.version, tt.mirror)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := []string{r.Binary.URL, r.Images.URL, r.Checksums.URL, r.Script.URL}
			want := []string{tt.binary, tt.images, tt.sums, tt.script}
			for i := range got {
				if got[i] != want[i] {
					t.Errorf("url %d = %s\n          want %s", i, got[i], want[i])
				}
			}
			if r.Binary.ChecksumURL != r.Checksums.URL || r.Images.ChecksumURL != r.Checksums.URL {
				t.Error("binary and images must be verified against the release checksum file")
			}
			if !r.Checksums.Digest.IsZero() || r.Checksums.ChecksumURL != "" || !r.Script.Digest.IsZero() {
				t.Errorf("checksum file and script are unpinned by default: %+v %+v", r.Checksums, r.Script)
			}
		})
	}
	r, err := Resolve(v, Mirror{ScriptDigest: "sha256:" + strings.Repeat("ab", 32)})
	if err != nil || r.Script.Digest.Hex != strings.Repeat("ab", 32) {
		t.Errorf("pinned script digest = %+v, %v", r.Script.Digest, err)
	}
}

// k3sRelease is a fake release: small stand-ins for the real files.
func k3sRelease() map[string][]byte {
	bin := randomBytes(20, 3<<20)
	images := randomBytes(21, 5<<20)
	script := []byte("#!/bin/sh\necho install k3s\n")
	sums := sha256Of(bin).Hex + "  k3s\n" + sha256Of(images).Hex + "  k3s-airgap-images-amd64.tar.zst\n"
	return map[string][]byte{
		"k3s": bin, "k3s-airgap-images-amd64.tar.zst": images, "sha256sum-amd64.txt": []byte(sums), "install.sh": script,
	}
}

func TestFetchK3sFromMirrorThenFromCache(t *testing.T) {
	files := k3sRelease()
	served := map[string][]byte{}
	for name, b := range files {
		served["k3s/v1.33.5+k3s1/"+name] = b
	}
	srv := newFileServer(t, served)
	r, err := Resolve("v1.33.5+k3s1", Mirror{Release: srv.URL + "/k3s/{{.Version}}/"})
	if err != nil {
		t.Fatal(err)
	}
	c, rec := newCache(t)
	lf, err := c.Fetch(context.Background(), r)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	checkLocalFiles(t, lf, files)
	for _, req := range srv.requests() {
		if !strings.Contains(req.Path, "v1.33.5%2Bk3s1") {
			t.Errorf("request path %s: version not escaped", req.Path)
		}
	}
	names := map[string]bool{}
	for _, e := range rec.Events() {
		names[e.Message] = true
	}
	for _, n := range []string{"k3s", "k3s-airgap-images-amd64.tar.zst", "sha256sum-amd64.txt", "install.sh"} {
		if !names[n] {
			t.Errorf("no progress events for %s", n)
		}
	}

	srv.reset()
	lf2, err := c.Fetch(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if reqs := srv.requests(); len(reqs) != 0 {
		t.Errorf("second Fetch made %d requests: %v", len(reqs), reqs)
	}
	if !lf2.Binary.Cached || !lf2.Images.Cached || !lf2.Checksums.Cached || !lf2.Script.Cached {
		t.Errorf("second Fetch not all cached: %+v", lf2)
	}

	// A pinned script digest that does not match is refused.
	r.Script.Digest = sha256Of([]byte("another script"))
	if _, err := c.Fetch(context.Background(), r); !errors.As(err, new(*ChecksumError)) {
		t.Errorf("wrong script pin: err = %v", err)
	}
}

func TestFetchK3sFromAirgappedDirectory(t *testing.T) {
	files := k3sRelease()
	dir := filepath.Join(t.TempDir(), "v1.33.5+k3s1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, mirror := range []string{"file://" + dir + "/", filepath.Dir(dir) + "/{{.Version}}"} {
		t.Run(mirror, func(t *testing.T) {
			r, err := Resolve("v1.33.5+k3s1", Mirror{Release: mirror})
			if err != nil {
				t.Fatal(err)
			}
			c, _ := newCache(t)
			lf, err := c.Fetch(context.Background(), r)
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			checkLocalFiles(t, lf, files)
		})
	}
}

func TestFetchK3sRejectsTamperedBinary(t *testing.T) {
	files := k3sRelease()
	files["k3s"] = append([]byte("evil"), files["k3s"][4:]...)
	srv := newFileServer(t, files)
	r, err := Resolve("v1.33.5+k3s1", Mirror{Release: srv.URL + "/"})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := newCache(t)
	_, err = c.Fetch(context.Background(), r)
	var ce *ChecksumError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "k3s v1.33.5+k3s1") || !strings.HasSuffix(ce.URL, "/k3s") {
		t.Fatalf("err = %v, want a checksum error for the binary", err)
	}
}

func checkLocalFiles(t *testing.T, lf LocalFiles, files map[string][]byte) {
	t.Helper()
	for name, f := range map[string]File{
		"k3s": lf.Binary, "k3s-airgap-images-amd64.tar.zst": lf.Images, "sha256sum-amd64.txt": lf.Checksums, "install.sh": lf.Script,
	} {
		got, err := os.ReadFile(f.Path)
		if err != nil || !bytes.Equal(got, files[name]) {
			t.Errorf("%s: content differs (%v)", name, err)
		}
		if f.SHA256 != sha256Of(files[name]).Hex {
			t.Errorf("%s: SHA256 = %s", name, f.SHA256)
		}
	}
}
