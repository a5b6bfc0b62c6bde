//go:build linux

package applinit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/opencsp/installer/internal/appliance/payload"
)

// TestInstallToDiskImage runs Install against a file-backed disk (the same
// code path as a block device: deviceSize seeks to the end) with a payload
// holding a large binary, then reads everything back with go-diskfs.
func TestInstallToDiskImage(t *testing.T) {
	root := t.TempDir()
	write := func(rel string, b []byte) string {
		p := filepath.Join(root, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	osImg := filepath.Join(root, filepath.FromSlash(payload.OSImagePath))
	_ = os.MkdirAll(filepath.Dir(osImg), 0o755)
	d, err := diskfs.Create(osImg, 4<<20, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Partition(&gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true,
		Partitions: []*gpt.Partition{{Index: 1, Start: 2048, End: 4095, Type: gpt.LinuxFilesystem, Name: "root"}}}); err != nil {
		t.Fatal(err)
	}
	d.Close()
	// A big file is what made go-diskfs FAT writes slow (one FAT rewrite per
	// Write call: 3 s here with a 32 KiB copy, 0.15 s with 16 MiB writes).
	big := bytes.Repeat([]byte("opencsp binary "), 24<<20/15)
	files := map[string]string{
		payload.OSImagePath:      osImg,
		"payload/bin/opencsp":    write("payload/bin/opencsp", big),
		"payload/k3s/k3s":        write("payload/k3s/k3s", []byte("k3s\n")),
		"payload/manifests/a/b":  write("payload/manifests/a/b", []byte("resources: []\n")),
		"payload/opencsp.yaml":   write("payload/opencsp.yaml", []byte("kind: InstallConfig\n")),
		"payload/appliance.json": write("payload/appliance.json", []byte("{}")),
	}
	m, err := payload.Build(files)
	if err != nil {
		t.Fatal(err)
	}
	mj, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	write(payload.ManifestPath, mj)

	target := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(target, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(target, 256<<20); err != nil {
		t.Fatal(err)
	}
	var console bytes.Buffer
	start := time.Now()
	err = Install(context.Background(), &Runner{Out: &console}, target, root, m,
		payload.Settings{UserData: "#cloud-config\n", MetaData: "instance-id: x\n"})
	t.Logf("install %v", time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("install: %v\nconsole:\n%s", err, console.String())
	}

	out, err := diskfs.Open(target, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	data, err := out.GetFilesystem(3)
	if err != nil {
		t.Fatalf("data partition: %v", err)
	}
	for rel, want := range map[string][]byte{"/manifest.json": mj, "/bin/opencsp": big, "/k3s/k3s": []byte("k3s\n"), "/manifests/a/b": []byte("resources: []\n")} {
		f, err := data.OpenFile(rel, os.O_RDONLY)
		if err != nil {
			t.Fatalf("data %s: %v", rel, err)
		}
		got, err := readWhole(f)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("data %s: %d bytes (err %v), want %d bytes", rel, len(got), err, len(want))
		}
	}
	if !strings.Contains(console.String(), "data partition 3 (OPENCSPDATA) written (5 files)") {
		t.Errorf("console:\n%s", console.String())
	}
}

// readWhole reads a go-diskfs file in one Read: v1.9.4's FAT Read returns
// bytes past the end of the file when a read starts mid-cluster (as
// io.ReadAll's growing buffer does), so read exactly the size.
func readWhole(f io.ReadSeeker) ([]byte, error) {
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	b := make([]byte, n)
	_, err = io.ReadFull(f, b)
	return b, err
}

// TestFitsBoundary: a disk of exactly the layout's size is enough, one byte
// less is refused naming the disk and the size to attach; Install refuses
// the same disk without writing to it.
func TestFitsBoundary(t *testing.T) {
	m := payload.Manifest{Files: []payload.File{
		{Path: payload.OSImagePath, Size: 3<<20 + 1, SHA256: "x"},
		{Path: "payload/bin/opencsp", Size: 5 << 20, SHA256: "y"},
	}}
	s := payload.Settings{SeedMiB: 8}
	need := payload.DiskLayout(3<<20+1, m.Total(), 8).Need
	disk := filepath.Join(t.TempDir(), "disk.raw")
	for _, size := range []int64{need, need - 1} {
		if err := os.WriteFile(disk, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(disk, size); err != nil {
			t.Fatal(err)
		}
		_, _, err := fits(disk, m, s)
		if size == need && err != nil {
			t.Fatalf("exact size refused: %v", err)
		}
		if size < need {
			want := fmt.Sprintf("refusing: target %s has %d bytes, the appliance needs %d", disk, size, need)
			if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), fmt.Sprintf("at least %d MiB", (need+mib-1)/mib)) {
				t.Fatalf("err = %v, want %q", err, want)
			}
			if err := Install(context.Background(), &Runner{Out: io.Discard}, disk, t.TempDir(), m, s); err == nil {
				t.Fatal("Install wrote to a disk that is too small")
			}
			b, _ := os.ReadFile(disk)
			if int64(len(b)) != size || bytes.Count(b, []byte{0}) != len(b) {
				t.Fatal("refused disk was written to")
			}
		}
	}
}
