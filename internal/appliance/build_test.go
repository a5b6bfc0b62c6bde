package appliance

import (
	"debug/elf"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/opencsp/installer/internal/appliance/iso"
	"github.com/opencsp/installer/internal/appliance/payload"
)

// hasInterp reports whether p is a dynamically linked ELF executable.
func hasInterp(t *testing.T, p string) bool {
	t.Helper()
	f, err := elf.Open(p)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return true
		}
	}
	return false
}

// validOptions are inputs that pass Validate: regular files and a static
// init binary (gofmt of the running toolchain, which is built without cgo).
func validOptions(t *testing.T) Options {
	t.Helper()
	dir := t.TempDir()
	file := func(name string, size int64) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		if size > 0 {
			if err := os.Truncate(p, size); err != nil { // sparse: free on disk
				t.Fatal(err)
			}
		}
		return p
	}
	static := filepath.Join(runtime.GOROOT(), "bin", "gofmt")
	if hasInterp(t, static) {
		t.Fatalf("%s is dynamically linked; the test needs a static binary", static)
	}
	mods := filepath.Join(dir, "modules")
	if err := os.Mkdir(mods, 0o755); err != nil {
		t.Fatal(err)
	}
	return Options{
		Kernel: file("vmlinuz", 0), ModulesDir: mods, InitBinary: static, OSImage: file("os.img", 0),
		Boot: iso.Boot{IsolinuxBin: file("isolinux.bin", 0), LdlinuxC32: file("ldlinux.c32", 0), IsohdpfxBin: file("isohdpfx.bin", 0)},
		Out:  filepath.Join(dir, "out.iso"),
	}
}

func TestValidate(t *testing.T) {
	const dynamic = "/bin/true"
	if !hasInterp(t, dynamic) {
		t.Fatalf("%s is static here; the test needs a dynamically linked binary", dynamic)
	}
	tests := []struct {
		name   string
		change func(*Options)
		field  string
		msg    []string
	}{
		{"valid", func(*Options) {}, "", nil},
		{"no kernel", func(o *Options) { o.Kernel = "" }, "kernel", []string{"not set", "--kernel", "appliance.kernel"}},
		{"kernel missing", func(o *Options) { o.Kernel = "/nonexistent/vmlinuz" }, "kernel", []string{"/nonexistent/vmlinuz", "no such file"}},
		{"kernel .deb missing", func(o *Options) { o.Kernel, o.KernelDeb = "", "/nonexistent/linux-image.deb" }, "kernelDeb",
			[]string{"/nonexistent/linux-image.deb", "no such file"}},
		{"kernel from .deb needs no modules dir", func(o *Options) { o.KernelDeb, o.Kernel, o.ModulesDir = o.Kernel, "", "" }, "", nil},
		{"os image missing", func(o *Options) { o.OSImage += ".gone" }, "osImage", []string{"os.img.gone", "no such file"}},
		{"dynamic init binary", func(o *Options) { o.InitBinary = dynamic }, "initBinary",
			[]string{dynamic, "dynamically linked", "CGO_ENABLED=0"}},
		{"init binary not ELF", func(o *Options) { o.InitBinary = o.Kernel }, "initBinary", []string{"not an ELF executable"}},
		{"relative target disk", func(o *Options) { o.Settings.TargetDisk = "sda" }, "targetDisk", []string{`"sda"`, "/dev/sda"}},
		{"no modules dir", func(o *Options) { o.ModulesDir = "" }, "modulesDir", []string{"--modules-dir"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := validOptions(t)
			tt.change(&o)
			err := o.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var ie *InputError
			if !errors.As(err, &ie) || ie.Field != tt.field {
				t.Fatalf("Validate = %v, want an InputError for %s", err, tt.field)
			}
			for _, m := range tt.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q lacks %q", err, m)
				}
			}
		})
	}
}

// TestCheckFits uses the formula the appliance applies at install time.
func TestCheckFits(t *testing.T) {
	o := validOptions(t)
	if err := os.Truncate(o.OSImage, 100*payload.MiB); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{payload.OSImagePath: o.OSImage, payload.BinaryPath: o.InitBinary}
	fi, _ := os.Stat(o.InitBinary)
	need := payload.DiskLayout(100*payload.MiB, 100*payload.MiB+fi.Size(), 0).Need
	if err := checkFits(files, o.OSImage, 0, need); err != nil {
		t.Errorf("a disk of exactly %d bytes is refused: %v", need, err)
	}
	err := checkFits(files, o.OSImage, 0, need-1)
	var ie *InputError
	if !errors.As(err, &ie) || ie.Field != "targetDiskSize" || !strings.Contains(err.Error(), "managementVM.diskGiB") {
		t.Errorf("a disk one byte short: %v, want a targetDiskSize error naming managementVM.diskGiB", err)
	}
	if err := checkFits(files, o.OSImage, 0, 0); err != nil {
		t.Errorf("no declared size: %v", err)
	}
}
