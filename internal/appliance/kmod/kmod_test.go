package kmod

import (
	"path/filepath"
	"testing"
)

// kernelModulesDir finds an extracted Debian kernel under .cache/appliance
// (see e2e/README.md) or the running system's modules.
func kernelModulesDir(t *testing.T) string {
	t.Helper()
	m, _ := filepath.Glob("../../../.cache/appliance/kernel/lib/modules/*")
	if len(m) == 0 {
		t.Skip("SKIP (loud): no extracted kernel in .cache/appliance/kernel; run the appliance QEMU test once or see e2e/README.md")
	}
	return m[0]
}

func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{"crc-t10dif": "crc_t10dif", "/a/b/sd_mod.ko": "sd_mod", "isofs": "isofs"} {
		if got := Normalize(in); got != want {
			t.Errorf("Normalize(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResolveOrdersDependencies(t *testing.T) {
	idx, err := BuildIndex(kernelModulesDir(t))
	if err != nil {
		t.Fatal(err)
	}
	mods, err := idx.Resolve(ApplianceModules)
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, m := range mods {
		pos[m.Name] = i
	}
	for _, m := range mods {
		for _, d := range m.Depends {
			if pos[d] >= pos[m.Name] {
				t.Errorf("%s loaded before its dependency %s", m.Name, d)
			}
		}
	}
	for _, must := range []string{"scsi_mod", "sr_mod", "isofs", "ata_piix", "crc_t10dif", "t10_pi"} {
		if _, ok := pos[must]; !ok {
			t.Errorf("missing %s in %v", must, pos)
		}
	}
	if _, err := idx.Resolve([]string{"no_such_mod"}); err == nil {
		t.Error("unknown module: want error")
	}
	if _, err := ReadInfo(filepath.Join(t.TempDir(), "x.ko")); err == nil {
		t.Error("missing file: want error")
	}
}
