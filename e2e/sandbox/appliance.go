package sandbox

// Appliance mode (Options.Appliance): the config says provision method
// appliance, and the sandbox acts as the appliance ISO when pvesim boots it
// (onApplianceBoot): it reads the uploaded ISO with go-diskfs, verifies the
// payload against its manifest like applinit, and keeps the seed and the
// data-partition files. When the installer then boots the VM's disk, the VM
// stand-in starts with that seed and with the data files already at
// seed.DataMount (applianceSpec), so cloud-init runs the ISO's own first-boot
// command (opencsp node bootstrap). e2e/README.md says what differs from a
// real appliance run.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"go.yaml.in/yaml/v3"

	"github.com/opencsp/installer/e2e/k3sstandin"
	"github.com/opencsp/installer/e2e/pvesim"
	"github.com/opencsp/installer/e2e/standin"
	"github.com/opencsp/installer/internal/appliance/payload"
	"github.com/opencsp/installer/internal/appliance/seed"
	"github.com/opencsp/installer/internal/config"
)

// Files of appliance mode in the sandbox directory.
const (
	ApplianceISOFile = "opencsp-appliance.iso" // written by `opencsp image iso -c opencsp.yaml`
	OSImageFile      = "os.img"                // the small raw GPT image the ISO carries
	applianceDir     = "appliance"             // what each appliance run wrote, by VM
)

// installedDisk is what an appliance run wrote to a VM's disk: the seed
// (CIDATA) and the data partition's files (a directory here).
type installedDisk struct {
	disk     string // the VM config key, e.g. scsi0
	iso      string // volid it was installed from
	settings payload.Settings
	data     string // directory holding the data partition's files
}

// prepareAppliance finds the appliance build inputs: the K3s release the
// ISO carries (the K3s stand-in's) and a Debian kernel .deb.
func (s *Sandbox) prepareAppliance(ctx context.Context, rel *k3sstandin.Release) error {
	deb, err := KernelDeb(ctx)
	if err != nil {
		return err
	}
	s.k3sDir, s.kernelDeb = rel.Dir, deb
	return writeOSImage(filepath.Join(s.Dir, OSImageFile))
}

// KernelDeb returns a Debian linux-image .deb in <repo>/.cache/appliance,
// fetching one with apt-get download on first use (as the appliance's
// QEMU tests do, which extract the same .deb there).
func KernelDeb(ctx context.Context) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	cache := filepath.Join(root, ".cache", "appliance")
	if debs, _ := filepath.Glob(filepath.Join(cache, "linux-image-*.deb")); len(debs) > 0 {
		return debs[len(debs)-1], nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	sh := `apt-get download "$(apt-cache search --names-only '^linux-image-6.1.0-[0-9]+-amd64$' | sort -V | tail -1 | cut -d' ' -f1)"`
	cmd := exec.CommandContext(ctx, "sh", "-c", sh)
	cmd.Dir = cache
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("sandbox: fetch a Debian kernel .deb into %s (apt-get download): %w: %s", cache, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(cache, "linux-image-*.deb"))
	if len(debs) == 0 {
		return "", fmt.Errorf("sandbox: apt-get download left no linux-image .deb in %s", cache)
	}
	return debs[len(debs)-1], nil
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/opencsp/installer") {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("sandbox: no github.com/opencsp/installer go.mod above %s", dir)
		}
	}
}

// writeOSImage writes an 8 MiB raw GPT image with one partition: the
// sandbox never boots it (the VM stand-in is the installed system), so
// it only has to be what the ISO build accepts, and small.
func writeOSImage(p string) error {
	d, err := diskfs.Create(p, 8<<20, diskfs.SectorSizeDefault)
	if err != nil {
		return fmt.Errorf("sandbox: OS image %s: %w", p, err)
	}
	defer d.Close()
	err = d.Partition(&gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true,
		Partitions: []*gpt.Partition{{Index: 1, Start: 2048, End: 2048 + 4096 - 1, Type: gpt.LinuxFilesystem, Name: "root"}}})
	if err != nil {
		return fmt.Errorf("sandbox: OS image %s: partition table: %w", p, err)
	}
	return nil
}

// applianceConfig turns the cloud-image config into one for provision
// method appliance: the ISO in the sandbox dir, the kernel .deb, the small
// OS image, and the K3s stand-in release as the ISO's K3s artifacts.
func (s *Sandbox) applianceConfig(cfg string) string {
	cfg = strings.Replace(cfg, "managementVM:\n", "managementVM:\n  provision:\n    method: appliance\n", 1)
	cfg = strings.Replace(cfg, "  artifacts:\n", "  artifacts:\n    airgapDir: "+s.k3sDir+"\n", 1)
	return cfg + fmt.Sprintf(`appliance:
  iso: ./%s
  osImage: ./%s
  kernel:
    deb: %s
`, ApplianceISOFile, OSImageFile, s.kernelDeb)
}

// onApplianceBoot is the appliance run of a VM booting the ISO: read the
// payload from the uploaded ISO, verify it, keep the seed and the data
// files for the VM's next (disk) boot. Nothing runs in a stand-in.
func (s *Sandbox) onApplianceBoot(ctx context.Context, ev pvesim.ApplianceBoot) error {
	begin := time.Now()
	if ev.Disk == "" {
		return errors.New("no empty disk to install to (targetDisk auto needs exactly one)")
	}
	dir := filepath.Join(s.Dir, applianceDir, fmt.Sprintf("vm%d", ev.VMID))
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	st, err := ReadApplianceISO(ctx, ev.ISOFile, dir)
	if err != nil {
		s.log.Printf("VM %d: appliance run from %s FAILED: %v", ev.VMID, ev.ISO, err)
		return err
	}
	if t := st.TargetDisk; t != "" && t != config.TargetDiskAuto {
		// A /dev path names a disk of a real machine; the sandbox cannot map it.
		return fmt.Errorf("appliance.targetDisk %q: the sandbox appliance installs to auto (the only blank disk) only", t)
	}
	s.mu.Lock()
	s.installed[ev.VMID] = &installedDisk{disk: ev.Disk, iso: ev.ISO, settings: st, data: filepath.Join(dir, "data")}
	s.mu.Unlock()
	s.log.Printf("VM %d: appliance from %s installed %s (payload verified) in %s", ev.VMID, ev.ISO, ev.Disk, time.Since(begin).Round(100*time.Millisecond))
	return nil
}

// ReadApplianceISO reads the payload of the ISO at isoFile into dir/iso (by
// ISO path), verifies it against payload/manifest.json, and lays out the
// data partition in dir/data as applinit writes it: every manifest file but
// the OS image at its payload.DataPath, plus the manifest. It returns the
// appliance settings (the seed).
func ReadApplianceISO(ctx context.Context, isoFile, dir string) (payload.Settings, error) {
	var st payload.Settings
	d, err := diskfs.Open(isoFile, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		return st, fmt.Errorf("open ISO %s: %w", isoFile, err)
	}
	defer d.Close()
	fsys, err := d.GetFilesystem(0)
	if err != nil {
		return st, fmt.Errorf("ISO %s: no ISO 9660 filesystem: %w", isoFile, err)
	}
	tree := filepath.Join(dir, "iso")
	for _, p := range []string{payload.ManifestPath, payload.SettingsPath} {
		if err := extract(fsys, p, tree); err != nil {
			return st, err
		}
	}
	var m payload.Manifest
	if err := payload.ReadJSON(filepath.Join(tree, payload.ManifestPath), &m); err != nil {
		return st, fmt.Errorf("payload manifest: %w", err)
	}
	if err := payload.ReadJSON(filepath.Join(tree, payload.SettingsPath), &st); err != nil {
		return st, fmt.Errorf("appliance settings: %w", err)
	}
	for _, f := range m.Files {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		if err := extract(fsys, f.Path, tree); err != nil {
			return st, err
		}
	}
	if err := m.Verify(tree); err != nil {
		return st, err
	}
	data := filepath.Join(dir, "data")
	for _, f := range m.Files {
		name, ok := payload.DataPath(f.Path)
		if !ok {
			continue // the OS image is the disk itself
		}
		dst := filepath.Join(data, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return st, err
		}
		if err := os.Rename(filepath.Join(tree, filepath.FromSlash(f.Path)), dst); err != nil {
			return st, err
		}
	}
	if err := os.Rename(filepath.Join(tree, payload.ManifestPath), filepath.Join(data, payload.ManifestFile)); err != nil {
		return st, err
	}
	return st, os.RemoveAll(tree)
}

// extract copies the ISO file p (an ISO path) to root/p.
func extract(fsys filesystem.FileSystem, p, root string) error {
	in, err := fsys.OpenFile("/"+p, os.O_RDONLY)
	if err != nil {
		return fmt.Errorf("ISO file %s: %w", p, err)
	}
	defer in.Close()
	dst := filepath.Join(root, filepath.FromSlash(p))
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.CopyBuffer(out, in, make([]byte, 4<<20)); err != nil {
		out.Close()
		return fmt.Errorf("ISO file %s: %w", p, err)
	}
	return out.Close()
}

// applianceSpec is the stand-in of a VM booting a disk an appliance run
// wrote: the ISO's seed, the address of its network-config, and a Prepare
// that puts the data files at seed.DataMount before boot. false: the VM
// boots no appliance-installed disk.
func (s *Sandbox) applianceSpec(ev pvesim.VMEvent) (standin.InstanceSpec, bool, error) {
	s.mu.Lock()
	d := s.installed[ev.VMID]
	s.mu.Unlock()
	if d == nil || ev.Boot != d.disk {
		return standin.InstanceSpec{}, false, nil
	}
	addr, gw, err := staticAddress(d.settings.NetworkConfig)
	if err != nil {
		return standin.InstanceSpec{}, true, fmt.Errorf("the appliance seed's network-config: %w", err)
	}
	spec := standin.InstanceSpec{Address: addr, Gateway: gw,
		Seed: standin.Seed{UserData: []byte(d.settings.UserData), MetaData: []byte(d.settings.MetaData)},
		Prepare: func(root string) error {
			return copyTree(d.data, filepath.Join(root, filepath.FromSlash(seed.DataMount)))
		}}
	if d.settings.NetworkConfig != "" {
		spec.Seed.NetworkConfig = []byte(d.settings.NetworkConfig)
	}
	return spec, true, nil
}

// staticAddress reads the address and gateway of the first ethernet of a
// netplan (network-config v2) document: the stand-in needs them to wire its
// NIC; cloud-init still configures the network from the seed itself.
func staticAddress(nc string) (netip.Prefix, netip.Addr, error) {
	var doc struct {
		Ethernets map[string]struct {
			Addresses []string `yaml:"addresses"`
			Routes    []struct {
				To  string `yaml:"to"`
				Via string `yaml:"via"`
			} `yaml:"routes"`
		} `yaml:"ethernets"`
	}
	if err := yaml.Unmarshal([]byte(nc), &doc); err != nil {
		return netip.Prefix{}, netip.Addr{}, err
	}
	for _, e := range doc.Ethernets {
		if len(e.Addresses) == 0 {
			return netip.Prefix{}, netip.Addr{}, errors.New("no static address (the stand-in bridge has no DHCP server)")
		}
		addr, err := netip.ParsePrefix(e.Addresses[0])
		if err != nil {
			return netip.Prefix{}, netip.Addr{}, err
		}
		var gw netip.Addr
		for _, r := range e.Routes {
			if r.To == "0.0.0.0/0" || r.To == "default" {
				gw, _ = netip.ParseAddr(r.Via)
			}
		}
		return addr, gw, nil
	}
	return netip.Prefix{}, netip.Addr{}, errors.New("no ethernets")
}

// copyTree copies the data files into the stand-in's root with the modes
// the data partition shows there: vfat mounted with umask=0077 (the seed's
// mounts entry) makes every file and directory root's, 0700.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if e.IsDir() {
			if err := os.MkdirAll(to, 0o700); err != nil {
				return err
			}
			return os.Chmod(to, 0o700)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o700)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return fmt.Errorf("copy %s: %w", path.Clean(rel), err)
		}
		return out.Close()
	})
}

// addressUp reports the stand-in's address to the guest agent once its
// network answers (SSH), as qemu-guest-agent does early in a boot; the
// appliance node's cloud-init (node bootstrap) runs for a while after.
func (s *Sandbox) addressUp(v *vm) {
	addr := net.JoinHostPort(v.inst.Address().Addr().String(), "22")
	for s.ctx.Err() == nil && v.inst.Running() {
		d := net.Dialer{Timeout: 500 * time.Millisecond}
		if c, err := d.DialContext(s.ctx, "tcp", addr); err == nil {
			c.Close()
			s.mu.Lock()
			if v.err == nil {
				v.ready = true
			}
			s.mu.Unlock()
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ApplianceDisk reports which disk of VM vmid an appliance run wrote and
// from which ISO volid ("" when none).
func (s *Sandbox) ApplianceDisk(vmid int) (disk, iso string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d := s.installed[vmid]; d != nil {
		return d.disk, d.iso
	}
	return "", ""
}
