//go:build linux

package applinit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencsp/installer/internal/appliance/iso"
	"github.com/opencsp/installer/internal/appliance/payload"
)

func TestMediumLabelIsTheISOLabel(t *testing.T) {
	if MediumLabel != iso.Label {
		t.Fatalf("applinit looks for %q, the ISO is labelled %q", MediumLabel, iso.Label)
	}
}

func TestChooseTarget(t *testing.T) {
	stick := func(n string) Disk { return Disk{Name: n, Label: MediumLabel} }
	for _, tc := range []struct {
		name   string
		disks  []Disk
		medium string
		want   string // targetDisk setting
		wipe   bool
		chosen string   // device chosen, "" for a refusal
		errHas []string // refusal must say these
	}{
		{"only empty disk, medium is a CD", []Disk{{Name: "sda", Empty: true}, {Name: "sr0"}}, "sr0", "", false, "/dev/sda", nil},
		{"hybrid ISO as a disk is never the target", []Disk{stick("sda"), {Name: "sdb", Empty: true}}, "sda", "", false, "/dev/sdb", nil},
		{"hybrid ISO as a disk not chosen even with wipe", []Disk{stick("sda")}, "sda", "", true, "", []string{"no target disk", "attach an empty disk"}},
		{"a second appliance stick is not a target", []Disk{stick("sda"), stick("sdb"), {Name: "vda"}}, "sda", "", true, "/dev/vda", nil},
		{"used disk without wipe refused with the fix", []Disk{{Name: "sda"}, {Name: "sr0"}}, "sr0", "", false, "",
			[]string{"/dev/sda", "not empty", "appliance.wipe: true", "--wipe", "left untouched"}},
		{"used disk with wipe", []Disk{{Name: "sda"}}, "sr0", "", true, "/dev/sda", nil},
		{"empty wins over used", []Disk{{Name: "sda"}, {Name: "sdb", Empty: true}}, "sr0", "", true, "/dev/sdb", nil},
		{"two used disks with wipe refused", []Disk{{Name: "sda"}, {Name: "sdb"}}, "sr0", "", true, "", []string{"/dev/sda, /dev/sdb"}},
		{"targetDisk names an empty disk among two", []Disk{{Name: "sda", Empty: true}, {Name: "vda", Empty: true}}, "sr0", "/dev/vda", false, "/dev/vda", nil},
		{"targetDisk with data needs wipe", []Disk{{Name: "sda"}, {Name: "sdb", Empty: true}}, "sr0", "/dev/sda", false, "",
			[]string{"targetDisk /dev/sda is not empty", "appliance.wipe: true", "--wipe"}},
		{"targetDisk with data and wipe", []Disk{{Name: "sda"}, {Name: "sdb", Empty: true}}, "sr0", "/dev/sda", true, "/dev/sda", nil},
		{"targetDisk is the medium", []Disk{stick("sda"), {Name: "sdb", Empty: true}}, "sda", "/dev/sda", true, "",
			[]string{"targetDisk /dev/sda is the appliance medium"}},
		{"targetDisk missing", []Disk{{Name: "sda", Empty: true}}, "sr0", "/dev/nvme0n1", false, "",
			[]string{"targetDisk /dev/nvme0n1 not found (disks: /dev/sda)", "--target-disk"}},
		{"auto is the default rule", []Disk{{Name: "sda", Empty: true}}, "sr0", "auto", false, "/dev/sda", nil},
		{"two empty disks refused", []Disk{{Name: "sda", Empty: true}, {Name: "vda", Empty: true}}, "sr0", "", false, "",
			[]string{"2 empty disks", "/dev/sda, /dev/vda"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := chooseTarget(tc.disks, tc.medium, tc.want, tc.wipe)
			if got != tc.chosen {
				t.Fatalf("target %q, want %q (err %v)", got, tc.chosen, err)
			}
			if (err != nil) != (tc.chosen == "") {
				t.Fatalf("err = %v", err)
			}
			for _, s := range tc.errHas {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("refusal %q lacks %q", err, s)
				}
			}
		})
	}
}

func TestVerifyPayloadNamesTheFile(t *testing.T) {
	root := t.TempDir()
	files := map[string]string{}
	for _, n := range []string{"payload/a", "payload/k3s/k3s"} {
		p := filepath.Join(root, filepath.FromSlash(n))
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte("content of "+n), 0o644); err != nil {
			t.Fatal(err)
		}
		files[n] = p
	}
	m, err := payload.Build(files)
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyPayload(root, m); err != nil {
		t.Fatalf("intact payload: %v", err)
	}
	// Same size, one byte flipped: only the checksum can tell.
	if err := os.WriteFile(files["payload/k3s/k3s"], []byte("content of payload/k3s/k3S"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = verifyPayload(root, m)
	if err == nil || !strings.Contains(err.Error(), "payload file payload/k3s/k3s: checksum mismatch") {
		t.Fatalf("err = %v", err)
	}
	os.Remove(files["payload/a"])
	if err := verifyPayload(root, m); err == nil || !strings.Contains(err.Error(), "payload file payload/a:") {
		t.Fatalf("missing file: err = %v", err)
	}
}

// TestISOLabelOnAnyDevice: the medium is found by the ISO label in its
// primary volume descriptor, whether it is a CD or the hybrid image as a
// disk (a plain file here stands in for either device node).
func TestISOLabelOnAnyDevice(t *testing.T) {
	pvd := func(magic, label string) []byte {
		b := make([]byte, 17*2048)
		copy(b[16*2048+1:], magic)
		copy(b[16*2048+40:], label+strings.Repeat(" ", 32-len(label)))
		return b
	}
	for _, tc := range []struct {
		name string
		img  []byte
		want string
	}{
		{"appliance ISO", pvd("CD001", MediumLabel), MediumLabel},
		{"other ISO", pvd("CD001", "DEBIAN"), "DEBIAN"},
		{"not an ISO", pvd("XXXXX", MediumLabel), ""},
		{"empty disk", make([]byte, 17*2048), ""},
		{"too small", make([]byte, 4096), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "dev")
			if err := os.WriteFile(p, tc.img, 0o644); err != nil {
				t.Fatal(err)
			}
			if got := isoLabel(p); got != tc.want {
				t.Fatalf("label %q, want %q", got, tc.want)
			}
		})
	}
}
