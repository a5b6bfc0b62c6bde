package appliance

import (
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/opencsp/installer/internal/appliance/deb"
	"github.com/opencsp/installer/internal/appliance/initramfs"
	"github.com/opencsp/installer/internal/appliance/iso"
	"github.com/opencsp/installer/internal/appliance/kmod"
	"github.com/opencsp/installer/internal/appliance/payload"
	"github.com/opencsp/installer/internal/config"
)

// DefaultCmdline boots the appliance init on the serial console: arguments
// after "--" go to /init, which is the installer binary.
const DefaultCmdline = "console=tty0 console=ttyS0,115200 panic=-1 quiet loglevel=3 -- appliance-init"

// Options are the inputs of an appliance ISO.
type Options struct {
	Kernel     string // vmlinuz (e.g. from a dpkg -x'ed linux-image .deb)
	ModulesDir string // lib/modules/<version> of the same kernel
	// KernelDeb is a linux-image .deb to take the kernel and modules from
	// when Kernel is empty; FetchKernel, if set, provides it (a download)
	// once every other input has been checked.
	KernelDeb   string
	FetchKernel func(ctx context.Context) (string, error)
	// CacheDir, if set, keeps kernels extracted from a .deb for the next build.
	CacheDir   string
	InitBinary string // static installer binary, becomes /init
	OSImage    string // raw OS image (GPT) written to the target disk
	K3sDir     string // optional: K3s artifacts, copied to payload/k3s
	Manifests  fs.FS  // optional: Flux + Core manifests, copied to payload/manifests
	// InstallConfig is the operator's loaded install config. The build
	// carries a node config derived from it (config.NodeYAML: no host-only
	// fields or credentials) and the ops-repo credential it references, in
	// payload/secrets/, since the node cannot reach the installer host's
	// environment or files.
	InstallConfig *config.Config
	// Config is a config file carried as it is, for builds without an
	// InstallConfig (tests); it must not need anything from the host.
	Config         string
	Settings       payload.Settings // what the appliance does
	TargetDiskSize int64            // optional: declared target disk size in bytes
	Boot           iso.Boot
	EFI            bool // build the GRUB EFI image for UEFI boot
	Cmdline        string
	Out            string
}

// InputError names the field or file that is wrong; the CLI exits 2.
type InputError struct {
	Field string
	Err   error
}

func (e *InputError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

func inputErr(field string, err error) error { return &InputError{Field: field, Err: err} }

func regular(field, p string) error {
	if p == "" {
		return inputErr(field, errors.New("not set"))
	}
	fi, err := os.Stat(p)
	if err != nil {
		return inputErr(field, err)
	}
	if !fi.Mode().IsRegular() {
		return inputErr(field, fmt.Errorf("%s is not a regular file", p))
	}
	return nil
}

// Validate checks every input before anything is written.
func (o Options) Validate() error {
	fromDeb := o.Kernel == ""
	switch {
	case fromDeb && o.KernelDeb == "" && o.FetchKernel == nil:
		return inputErr("kernel", errors.New("not set: pass --kernel (vmlinuz) and --modules-dir, or set appliance.kernel in the install config (a linux-image .deb)"))
	case fromDeb && o.KernelDeb != "":
		if err := regular("kernelDeb", o.KernelDeb); err != nil {
			return err
		}
	case !fromDeb:
		if err := regular("kernel", o.Kernel); err != nil {
			return err
		}
	}
	if o.OSImage == "" {
		return inputErr("osImage", errors.New("not set: pass --os-image, or set appliance.osImage in the install config (a raw GPT image)"))
	}
	for _, c := range [][2]string{{"initBinary", o.InitBinary}, {"osImage", o.OSImage},
		{"boot.isolinuxBin", o.Boot.IsolinuxBin}, {"boot.ldlinuxC32", o.Boot.LdlinuxC32}, {"boot.isohdpfxBin", o.Boot.IsohdpfxBin}} {
		if err := regular(c[0], c[1]); err != nil {
			return err
		}
	}
	if err := checkStatic(o.InitBinary); err != nil {
		return inputErr("initBinary", err)
	}
	if o.Config != "" {
		if o.InstallConfig != nil {
			return inputErr("config", errors.New("set either InstallConfig or Config, not both"))
		}
		if err := regular("config", o.Config); err != nil {
			return err
		}
	}
	if !fromDeb && o.ModulesDir == "" {
		return inputErr("modulesDir", errors.New("not set: pass --modules-dir, lib/modules/<version> of the same kernel"))
	}
	if !fromDeb {
		if fi, err := os.Stat(o.ModulesDir); err != nil || !fi.IsDir() {
			return inputErr("modulesDir", fmt.Errorf("%q is not a directory", o.ModulesDir))
		}
	}
	if o.K3sDir != "" {
		if fi, err := os.Stat(o.K3sDir); err != nil || !fi.IsDir() {
			return inputErr("k3sDir", fmt.Errorf("%q is not a directory", o.K3sDir))
		}
	}
	if o.Settings.After != "" && o.Settings.After != "poweroff" && o.Settings.After != "reboot" {
		return inputErr("after", fmt.Errorf("must be poweroff or reboot, got %q", o.Settings.After))
	}
	if d := o.Settings.TargetDisk; d != "" && d != "auto" && (!strings.HasPrefix(d, "/dev/") || path.Clean(d) != d) {
		return inputErr("targetDisk", fmt.Errorf("%q must be auto or an absolute device path such as /dev/sda", d))
	}
	if o.Out == "" {
		return inputErr("output", errors.New("not set"))
	}
	dir := filepath.Dir(o.Out)
	probe, err := os.CreateTemp(dir, ".opencsp-probe-*")
	if err != nil {
		return inputErr("output", fmt.Errorf("%s is not writable: %w", dir, err))
	}
	probe.Close()
	os.Remove(probe.Name())
	return nil
}

// Build validates, stages the payload and writes the ISO to o.Out.
func Build(ctx context.Context, o Options) error {
	if o.Cmdline == "" {
		o.Cmdline = DefaultCmdline
	}
	if o.Settings.After == "" {
		o.Settings.After = "poweroff"
	}
	if err := o.Validate(); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "opencsp-appliance-")
	if err != nil {
		return fmt.Errorf("work dir: %w", err)
	}
	defer os.RemoveAll(work)

	files, err := StageNodeData(filepath.Join(work, "data"), NodeData{
		Binary: o.InitBinary, Config: o.InstallConfig, K3sDir: o.K3sDir, Manifests: o.Manifests,
	})
	if err != nil {
		return err
	}
	files[payload.OSImagePath] = o.OSImage
	if o.Config != "" {
		files[path.Join(payload.Dir, payload.ConfigFile)] = o.Config
	}
	// Sizes from stat, before hashing: a payload that cannot fit is
	// refused without reading gigabytes first.
	if err := checkFits(files, o.OSImage, o.Settings.SeedMiB, o.TargetDiskSize); err != nil {
		return err
	}
	m, err := payload.Build(files)
	if err != nil {
		return inputErr("payload", err)
	}
	if o.Kernel == "" {
		if o.Kernel, o.ModulesDir, err = kernelFromDeb(ctx, o, filepath.Join(work, "kernel")); err != nil {
			return err
		}
	}
	idx, err := kmod.BuildIndex(o.ModulesDir)
	if err != nil {
		return inputErr("modulesDir", err)
	}
	mods, err := idx.Resolve(kmod.ApplianceModules)
	if err != nil {
		return inputErr("modulesDir", err)
	}
	for name, v := range map[string]any{payload.ManifestFile: m, payload.SettingsFile: o.Settings} {
		b, _ := json.MarshalIndent(v, "", "  ")
		p := filepath.Join(work, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		files[path.Join(payload.Dir, name)] = p
	}
	initrd := filepath.Join(work, "initrd.gz")
	if err := initramfs.Build(ctx, o.InitBinary, mods, initrd); err != nil {
		return err
	}
	if o.EFI {
		efi := filepath.Join(work, "efi.img")
		if err := iso.BuildEFIImage(ctx, iso.EFITools{}, o.Cmdline, efi); err != nil {
			return err
		}
		o.Boot.EFIImage = efi
	}
	slog.InfoContext(ctx, "building appliance iso", "out", o.Out, "payloadFiles", len(m.Files), "payloadBytes", m.Total(), "modules", len(mods))
	if err := iso.Build(ctx, iso.Spec{Kernel: o.Kernel, Initrd: initrd, Cmdline: o.Cmdline, Files: files, Boot: o.Boot}, o.Out); err != nil {
		return err
	}
	if carriesSecret(m) {
		// The ISO is as secret as the credential in it: only its owner reads it.
		if err := os.Chmod(o.Out, 0o600); err != nil {
			return fmt.Errorf("restrict %s: %w", o.Out, err)
		}
		slog.InfoContext(ctx, "the ISO carries the ops-repo credential: keep it like that secret", "out", o.Out, "mode", "0600")
	}
	return nil
}

// carriesSecret reports whether the payload holds a file of payload/secrets/.
func carriesSecret(m payload.Manifest) bool {
	for _, f := range m.Files {
		if strings.HasPrefix(f.Path, path.Join(payload.Dir, payload.SecretsDir)+"/") {
			return true
		}
	}
	return false
}

// NodeData is what the appliance puts on the data partition for the
// installed node's first boot (opencsp node bootstrap).
type NodeData struct {
	Binary    string         // the opencsp binary the node runs
	Config    *config.Config // optional: the operator's install config
	K3sDir    string         // optional: K3s release files
	Manifests fs.FS          // optional: Flux + Core manifests
}

// StageNodeData writes the generated data-partition files (node config,
// ops-repo credential, manifests) under dir and returns every file of the
// data partition as ISO path (payload/<name>) -> source file. The node
// config is loaded back here as the node will load it, so a config the node
// would refuse fails the build instead of the first boot.
func StageNodeData(dir string, d NodeData) (map[string]string, error) {
	files := map[string]string{payload.BinaryPath: d.Binary}
	if d.Config != nil {
		if err := stageNodeConfig(dir, d.Config, files); err != nil {
			return nil, err
		}
	}
	if d.K3sDir != "" {
		if err := addDir(files, d.K3sDir, path.Join(payload.Dir, payload.K3sDir)); err != nil {
			return nil, inputErr("k3sDir", err)
		}
	}
	if d.Manifests != nil {
		if err := stageFS(d.Manifests, filepath.Join(dir, payload.ManifestsDir), files, path.Join(payload.Dir, payload.ManifestsDir)); err != nil {
			return nil, err
		}
	}
	return files, nil
}

// stageNodeConfig resolves the ops-repo credential the config references
// into dir/secrets/ and writes the node config that points at it.
func stageNodeConfig(dir string, cfg *config.Config, files map[string]string) error {
	if err := os.MkdirAll(filepath.Join(dir, payload.SecretsDir), 0o700); err != nil {
		return fmt.Errorf("stage node data: %w", err)
	}
	put := func(name string, data []byte, mode os.FileMode) error {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.WriteFile(p, data, mode); err != nil {
			return fmt.Errorf("stage %s: %w", name, err)
		}
		files[path.Join(payload.Dir, name)] = p
		return nil
	}
	const carried = "the appliance carries the ops repo credential for the node's first boot; make it available before building the ISO"
	var na config.NodeAuth
	auth := cfg.OpsRepo.Auth
	if !auth.Token.IsZero() {
		tok, err := cfg.Secret(auth.Token)
		if err != nil {
			return inputErr("opsRepo.auth.token", fmt.Errorf("%s: %w; %s", auth.Token, err, carried))
		}
		if err := put(payload.OpsRepoTokenFile, []byte(tok+"\n"), 0o600); err != nil {
			return err
		}
		na.TokenFile = payload.OpsRepoTokenFile
	}
	if auth.SSHKeyFile != "" {
		p := cfg.ResolvePath(auth.SSHKeyFile)
		key, err := os.ReadFile(p)
		if err != nil {
			return inputErr("opsRepo.auth.sshKeyFile", fmt.Errorf("%w; %s", err, carried))
		}
		if err := put(payload.OpsRepoSSHKeyFile, key, 0o600); err != nil {
			return err
		}
		na.SSHKeyFile = payload.OpsRepoSSHKeyFile
	}
	node, err := cfg.NodeYAML(na)
	if err != nil {
		return inputErr("config", fmt.Errorf("derive the node config: %w", err))
	}
	if _, err := config.ParseForNode(cfg.Source+" (as node config)", dir, node); err != nil {
		return inputErr("config", fmt.Errorf("the node config derived from it would not load on the node:\n%w", err))
	}
	return put(payload.ConfigFile, node, 0o600)
}

// kernelFromDeb fetches the .deb if needed and extracts vmlinuz and the
// modules into dir.
func kernelFromDeb(ctx context.Context, o Options, dir string) (vmlinuz, modules string, err error) {
	p := o.KernelDeb
	if p == "" {
		if p, err = o.FetchKernel(ctx); err != nil {
			return "", "", fmt.Errorf("fetch kernel: %w", err)
		}
	}
	start := time.Now()
	var k deb.Kernel
	if o.CacheDir != "" {
		k, err = deb.CachedKernel(ctx, p, o.CacheDir)
	} else {
		k, err = deb.ExtractKernel(ctx, p, dir)
	}
	if err != nil {
		return "", "", inputErr("kernelDeb", err)
	}
	slog.InfoContext(ctx, "kernel extracted", "deb", p, "version", k.Version, "modules", k.Modules, "took", time.Since(start).Round(time.Millisecond))
	return k.Vmlinuz, k.ModulesDir, nil
}

// checkFits refuses a payload the target disk cannot hold, with the same
// formula the appliance applies to the real disk (payload.DiskLayout).
func checkFits(files map[string]string, osImage string, seedMiB, diskSize int64) error {
	if diskSize <= 0 {
		return nil
	}
	var total, osBytes int64
	for _, p := range files {
		fi, err := os.Stat(p)
		if err != nil {
			return inputErr("payload", err)
		}
		total += fi.Size()
		if p == osImage {
			osBytes = fi.Size()
		}
	}
	l := payload.DiskLayout(osBytes, total, seedMiB)
	if l.Need > diskSize {
		return inputErr("targetDiskSize", fmt.Errorf("the payload does not fit: the appliance needs %d MiB on the target disk "+
			"(OS image %d MiB, seed %d MiB, data %d MiB), the target disk is %d MiB; "+
			"raise managementVM.diskGiB in the install config (or --target-disk-size), or carry a smaller OS image or fewer K3s artifacts",
			(l.Need+payload.MiB-1)/payload.MiB, (osBytes+payload.MiB-1)/payload.MiB, l.SeedMiB, l.DataMiB, diskSize/payload.MiB))
	}
	return nil
}

// checkStatic refuses a dynamically linked init binary: the initramfs has
// no dynamic loader or libc, so the kernel could not start it.
func checkStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("%s is not an ELF executable: %w", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked, but it runs as /init without a libc; "+
				"build it static: CGO_ENABLED=0 go build -o opencsp ./cmd/installer", p)
		}
	}
	return nil
}

func addDir(files map[string]string, dir, prefix string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		files[path.Join(prefix, filepath.ToSlash(rel))] = p
		return nil
	})
}

func stageFS(src fs.FS, dst string, files map[string]string, prefix string) error {
	var names []string
	err := fs.WalkDir(src, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		names = append(names, p)
		return nil
	})
	if err != nil {
		return fmt.Errorf("manifests: %w", err)
	}
	sort.Strings(names)
	for _, n := range names {
		b, err := fs.ReadFile(src, n)
		if err != nil {
			return fmt.Errorf("manifests %s: %w", n, err)
		}
		out := filepath.Join(dst, filepath.FromSlash(n))
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return fmt.Errorf("manifests: %w", err)
		}
		if err := os.WriteFile(out, b, 0o644); err != nil {
			return fmt.Errorf("manifests: %w", err)
		}
		files[path.Join(prefix, n)] = out
	}
	return nil
}
