package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/opencsp/installer/internal/appliance"
	"github.com/opencsp/installer/internal/appliance/applinit"
	"github.com/opencsp/installer/internal/appliance/iso"
	"github.com/opencsp/installer/internal/appliance/seed"
	"github.com/opencsp/installer/internal/artifacts"
	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/manifests"
)

// newImageCmd is `opencsp image iso`: the bootable appliance ISO.
func newImageCmd(a *app) *cobra.Command {
	img := &cobra.Command{Use: "image", Short: "Build installation media"}
	o := appliance.Options{Boot: iso.DefaultBoot()}
	var noManifests bool
	isoCmd := &cobra.Command{
		Use:   "iso",
		Short: "Build the bootable appliance ISO (BIOS + UEFI, hybrid for USB)",
		Long: `Builds an ISO that, booted on a machine with an empty disk, writes the OS
image, a NoCloud seed (CIDATA) and a data partition with the payload (K3s
artifacts, Flux + Core manifests, a node config, this binary), then powers
off or reboots.

The node config is derived from the install config: the fields only this
machine uses (Proxmox/OpenStack credentials, the installer's SSH key, the
age key path) are left out; the Proxmox token is never on the ISO.
The ops-repo credential (opsRepo.auth.token or sshKeyFile) IS carried, in
payload/secrets/, because the node pushes to and syncs from the ops repo on
first boot: make it a deploy key or token scoped to that one repository, and
handle the ISO like that secret (it is written with mode 0600). A credential
the config names but that cannot be read now (unset env:, missing file:)
fails the build.

The install config (-c) is required: the seed (host name, SSH user and keys,
network, first-boot "opencsp node bootstrap") is rendered from it, and its
appliance section (iso, kernel, osImage, targetDisk, wipe, after),
managementVM.diskGiB and k3s.artifacts.airgapDir fill every flag not given.
Every input is checked before anything is written; bad input exits 2.`,
		Example: `  opencsp config init --profile appliance -f opencsp.yaml
  opencsp image iso -c opencsp.yaml --os-image debian-12.raw
  opencsp image iso -c opencsp.yaml --kernel-deb linux-image-6.1.0-56-amd64.deb -o /tmp/a.iso`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.InitBinary == "" {
				exe, err := os.Executable()
				if err != nil {
					return fmt.Errorf("init binary: %w", err)
				}
				o.InitBinary = exe
			}
			if _, err := os.Stat(a.configPath); err != nil {
				// The seed (user, SSH key, host name, network) comes from the
				// config: without it the installed node could not be reached.
				return usageErrorf("config %s: not readable (%v); the appliance's NoCloud seed is rendered from the install config: "+
					"create one with opencsp config init --profile appliance, or pass -c FILE", a.configPath, errors.Unwrap(err))
			}
			cfg, err := loadConfigWith(a, config.LoadForImage)
			if err != nil {
				return err
			}
			if err := fromConfig(&o, cfg, cmd.Flags().Changed, filepath.Join(a.stateDir, "cache")); err != nil {
				return err
			}
			if !noManifests {
				o.Manifests = manifests.FS()
			}
			err = appliance.Build(cmd.Context(), o)
			var ie *appliance.InputError
			if errors.As(err, &ie) {
				return usageErrorf("%v", err)
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, "wrote", o.Out)
			return nil
		},
	}
	f := isoCmd.Flags()
	f.StringVarP(&o.Out, "output", "o", "opencsp-appliance.iso", "ISO file to write (default: the config's appliance.iso, relative to the config file)")
	f.StringVar(&o.Kernel, "kernel", "", "kernel image (vmlinuz from a Debian linux-image package)")
	f.StringVar(&o.ModulesDir, "modules-dir", "", "lib/modules/<version> of the same kernel (uncompressed .ko)")
	f.StringVar(&o.KernelDeb, "kernel-deb", "", "Debian linux-image .deb to take kernel and modules from (instead of --kernel and --modules-dir)")
	f.StringVar(&o.OSImage, "os-image", "", "raw OS image (GPT) to write to the target disk")
	f.StringVar(&o.K3sDir, "k3s-dir", "", "directory with K3s artifacts to carry (optional)")
	f.StringVar(&o.InitBinary, "init-binary", "", "static opencsp binary to use as /init (default: this binary)")
	f.Int64Var(&o.TargetDiskSize, "target-disk-size", 0, "declared target disk size in bytes; the build fails if the payload does not fit")
	f.BoolVar(&o.Settings.Wipe, "wipe", false, "let the appliance overwrite a disk that already has data")
	f.StringVar(&o.Settings.After, "after", "poweroff", "what the appliance does when done: poweroff or reboot")
	f.StringVar(&o.Settings.TargetDisk, "target-disk", "auto", "disk the appliance installs to: auto (the only empty disk) or a /dev path")
	f.BoolVar(&o.EFI, "uefi", true, "add the GRUB EFI boot image (needs grub-efi-amd64-bin, dosfstools, mtools)")
	f.BoolVar(&noManifests, "no-manifests", false, "leave the embedded Flux + Core manifests out")
	f.StringVar(&o.Boot.IsolinuxBin, "isolinux-bin", o.Boot.IsolinuxBin, "isolinux.bin (package isolinux)")
	f.StringVar(&o.Boot.LdlinuxC32, "ldlinux-c32", o.Boot.LdlinuxC32, "ldlinux.c32 (package syslinux-common)")
	f.StringVar(&o.Boot.IsohdpfxBin, "isohdpfx-bin", o.Boot.IsohdpfxBin, "isohdpfx.bin MBR code (package isolinux)")
	img.AddCommand(isoCmd)
	return img
}

// fromConfig fills what the command line left unset from the install config
// (appliance section, managementVM, k3s artifacts) and renders the seed.
func fromConfig(o *appliance.Options, cfg *config.Config, changed func(flag string) bool, cacheDir string) error {
	ap := cfg.Appliance
	set := func(flag string, dst *string, v string) {
		if !changed(flag) && v != "" {
			*dst = v
		}
	}
	set("output", &o.Out, cfg.ApplianceISO())
	set("os-image", &o.OSImage, cfg.ResolvePath(ap.OSImage))
	set("k3s-dir", &o.K3sDir, cfg.ResolvePath(cfg.K3s.Artifacts.AirgapDir))
	set("after", &o.Settings.After, ap.After)
	set("target-disk", &o.Settings.TargetDisk, ap.TargetDisk)
	if !changed("wipe") {
		o.Settings.Wipe = ap.Wipe
	}
	if !changed("target-disk-size") {
		o.TargetDiskSize = int64(cfg.ManagementVM.DiskGiB) << 30
	}
	if k := ap.Kernel; !changed("kernel") && !changed("modules-dir") && !changed("kernel-deb") {
		switch {
		case k.Deb != "":
			o.KernelDeb = cfg.ResolvePath(k.Deb)
			if fi, err := os.Stat(o.KernelDeb); err != nil || !fi.Mode().IsRegular() {
				return usageErrorf("%s: appliance.kernel.deb: %s is not a readable file; download a linux-image .deb "+
					"(apt-get download linux-image-amd64), set appliance.kernel.url and sha256, or pass --kernel and --modules-dir",
					cfg.Source, o.KernelDeb)
			}
		case k.URL != "":
			// Fetched by Build once every other input has been checked.
			o.FetchKernel = func(ctx context.Context) (string, error) {
				c := &artifacts.Cache{Dir: cacheDir, Logger: slog.Default()}
				f, err := c.Get(ctx, artifacts.Source{URL: k.URL, Digest: artifacts.Digest{Algo: "sha256", Hex: k.SHA256}})
				if err != nil {
					return "", fmt.Errorf("appliance.kernel.url %s: %w", k.URL, err)
				}
				return f.Path, nil
			}
		}
	}
	o.CacheDir = cacheDir
	o.InstallConfig = cfg
	s, err := seed.Render(cfg)
	if err != nil {
		return usageErrorf("%s: seed: %v", cfg.Source, err)
	}
	o.Settings.UserData, o.Settings.MetaData, o.Settings.NetworkConfig = s.UserData, s.MetaData, s.NetworkConfig
	return nil
}

// newApplianceInitCmd is what /init runs in the appliance initramfs (the
// kernel passes "appliance-init" after "--" on its command line).
func newApplianceInitCmd(_ *app) *cobra.Command {
	return &cobra.Command{
		Use:    "appliance-init",
		Short:  "Appliance mode (PID 1 in the appliance initramfs)",
		Hidden: true,
		Args:   cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Getpid() != 1 {
				return usageErrorf("appliance-init only runs as PID 1 in the appliance initramfs")
			}
			applinit.Main(cmd.Context())
			return nil
		},
	}
}
