package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/opencsp/installer/internal/appliance"
	"github.com/opencsp/installer/internal/appliance/applinit"
	"github.com/opencsp/installer/internal/appliance/iso"
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
artifacts, Flux + Core manifests, the install config), then powers off.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.InitBinary == "" {
				exe, err := os.Executable()
				if err != nil {
					return fmt.Errorf("init binary: %w", err)
				}
				o.InitBinary = exe
			}
			if _, err := os.Stat(a.configPath); err == nil {
				o.Config = a.configPath
			} else if cmd.Flags().Changed("config") {
				return usageErrorf("config: %v", err)
			}
			if !noManifests {
				o.Manifests = manifests.FS()
			}
			if o.Settings.UserData == "" {
				o.Settings.UserData = "#cloud-config\n"
			}
			if o.Settings.MetaData == "" {
				o.Settings.MetaData = "instance-id: opencsp-appliance\n"
			}
			err := appliance.Build(cmd.Context(), o)
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
	f.StringVarP(&o.Out, "output", "o", "opencsp-appliance.iso", "ISO file to write")
	f.StringVar(&o.Kernel, "kernel", "", "kernel image (vmlinuz from a Debian linux-image package)")
	f.StringVar(&o.ModulesDir, "modules-dir", "", "lib/modules/<version> of the same kernel (uncompressed .ko)")
	f.StringVar(&o.OSImage, "os-image", "", "raw OS image (GPT) to write to the target disk")
	f.StringVar(&o.K3sDir, "k3s-dir", "", "directory with K3s artifacts to carry (optional)")
	f.StringVar(&o.InitBinary, "init-binary", "", "static opencsp binary to use as /init (default: this binary)")
	f.Int64Var(&o.TargetDiskSize, "target-disk-size", 0, "declared target disk size in bytes; the build fails if the payload does not fit")
	f.BoolVar(&o.Settings.Wipe, "wipe", false, "let the appliance overwrite a disk that already has data")
	f.StringVar(&o.Settings.After, "after", "poweroff", "what the appliance does when done: poweroff or reboot")
	f.BoolVar(&o.EFI, "uefi", true, "add the GRUB EFI boot image (needs grub-efi-amd64-bin, dosfstools, mtools)")
	f.BoolVar(&noManifests, "no-manifests", false, "leave the embedded Flux + Core manifests out")
	f.StringVar(&o.Boot.IsolinuxBin, "isolinux-bin", o.Boot.IsolinuxBin, "isolinux.bin (package isolinux)")
	f.StringVar(&o.Boot.LdlinuxC32, "ldlinux-c32", o.Boot.LdlinuxC32, "ldlinux.c32 (package syslinux-common)")
	f.StringVar(&o.Boot.IsohdpfxBin, "isohdpfx-bin", o.Boot.IsohdpfxBin, "isohdpfx.bin MBR code (package isolinux)")
	img.AddCommand(isoCmd)
	return img
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
