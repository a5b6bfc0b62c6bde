package provision

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/infra"
	"github.com/opencsp/installer/stages"
)

// appliance reports whether the management VM is installed from the
// appliance ISO instead of cloned from a cloud-image template.
func appliance(cfg *config.Config) bool {
	return cfg.ManagementVM.Provision.Method == config.ProvisionAppliance
}

// runAppliance is method appliance: upload the ISO, create a VM with an
// empty disk that boots it, start it, wait until the appliance has written
// the disk and powered off, switch the VM to boot from its disk, start it.
// Every phase is read back from the cloud first (infra.InstallPhase), so a
// rerun continues where an interrupted one stopped and a finished VM gets
// no mutating call.
func (s *Stage) runAppliance(ctx context.Context, env *stages.Env, spec infra.VMSpec) error {
	cfg := env.Config
	inst, ok := s.provider.(infra.ApplianceInstaller)
	if !ok {
		return fmt.Errorf("managementVM.provision.method appliance: the %s provider cannot install from the appliance ISO; use method cloudimage",
			cfg.Infrastructure.Provider)
	}
	vm, node, err := s.locate(ctx, env)
	if err != nil {
		return err
	}
	phase := infra.InstallPending
	if vm.ID != 0 {
		if phase, err = inst.InstallPhase(ctx, vm); err != nil {
			return err
		}
		env.Info(fmt.Sprintf("VM %s exists as %d on %s: %s", vm.Name, vm.ID, vm.Node, phase))
	}
	spec.Node = node
	out := Outputs{VMID: vm.ID, Node: vm.Node, Name: vm.Name, Method: config.ProvisionAppliance}

	if phase == infra.InstallPending {
		iso, err := isoFile(cfg.ApplianceISO())
		if err != nil {
			return err
		}
		storage := cfg.Infrastructure.Proxmox.Storage.ISO
		done := env.Step("upload", fmt.Sprintf("appliance ISO %s on %s (%s)", iso.FileName, storage, node))
		volid, err := inst.EnsureISO(ctx, node, storage, iso, env, env.Events)
		done(err)
		if err != nil {
			return err
		}
		done = env.Step("vm", fmt.Sprintf("VM %s on %s booting %s", spec.Name, node, volid))
		vm, err = inst.EnsureApplianceVM(ctx, spec, volid, env, env.Events)
		done(err)
		if err != nil {
			return err
		}
		out.VMID, out.Node, out.Name = vm.ID, vm.Node, vm.Name
		if err := env.SetOutputs(out); err != nil { // known even if the install fails
			return err
		}
		done = env.Step("boot-iso", fmt.Sprintf("start VM %d from the appliance ISO", vm.ID))
		err = s.provider.StartVM(ctx, vm, env)
		done(err)
		if err != nil {
			return err
		}
		phase = infra.InstallRunning
	}
	if phase == infra.InstallRunning {
		timeout := cmpOr(s.InstallTimeout, 30*time.Minute)
		done := env.Step("install", fmt.Sprintf("the appliance installs VM %d and powers it off (up to %s)", vm.ID, timeout))
		wctx, cancel := context.WithTimeout(ctx, timeout)
		err := inst.WaitPowerOff(wctx, vm)
		cancel()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		done(err)
		if err != nil {
			return err
		}
		phase = infra.InstallPoweredOff
	}
	if phase == infra.InstallPoweredOff {
		done := env.Step("boot-disk", fmt.Sprintf("VM %d: detach the ISO, boot from the disk", vm.ID))
		err := inst.BootFromDisk(ctx, vm, env)
		done(err)
		if err != nil {
			return err
		}
	}
	return s.startAndAddress(ctx, env, vm, spec, out)
}

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

var unsafeNameRE = regexp.MustCompile(`[^a-zA-Z0-9\-.+=_]`)

// isoFile hashes the ISO and names it on the storage after its content
// (opencsp-appliance-<12 hex>.iso): a rebuilt ISO, even of the same size,
// never passes for the one already uploaded. Characters PVE would replace
// in an upload's name are replaced here, so the volume id is predictable.
func isoFile(path string) (infra.ISO, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return infra.ISO{}, fmt.Errorf("appliance.iso: %s does not exist; build it with `opencsp image iso` (same config) or set appliance.iso to the ISO's path", path)
	}
	if err != nil {
		return infra.ISO{}, fmt.Errorf("appliance.iso: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return infra.ISO{}, fmt.Errorf("appliance.iso: hash %s: %w", path, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	base := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	name := unsafeNameRE.ReplaceAllString(base, "_") + "-" + sum[:12] + ".iso"
	return infra.ISO{LocalPath: path, FileName: name, Size: n, Checksum: sum, ChecksumAlgorithm: "sha256"}, nil
}
