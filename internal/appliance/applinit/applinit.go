//go:build linux

// Package applinit is the appliance mode: it runs as PID 1 from the
// initramfs, finds the ISO, verifies the payload, writes the OS image, a
// NoCloud seed (CIDATA) and a data partition with the payload to the target
// disk, then powers off or reboots. Every step prints one line on the console
// starting with "opencsp-appliance: ". On refusal it leaves the disk untouched.
package applinit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/opencsp/installer/internal/appliance/initramfs"
	"github.com/opencsp/installer/internal/appliance/payload"
)

// Prefix starts every console line.
const Prefix = "opencsp-appliance: "

// MediumDir is where the ISO is mounted.
const MediumDir = "/mnt/medium"

// MediumLabel is the ISO volume label of the appliance (iso.Label; not
// imported so that PID 1 does not link the ISO writer).
const MediumLabel = "OPENCSP"

// Runner holds the console and the clock-free state of one run.
type Runner struct {
	Out io.Writer
}

func (r *Runner) say(format string, a ...any) {
	fmt.Fprintf(r.Out, Prefix+format+"\n", a...)
}

// Main is the PID 1 entry point; it never returns normally.
func Main(ctx context.Context) {
	r := &Runner{Out: os.Stdout}
	settings, err := r.run(ctx)
	after := "poweroff"
	if settings != nil && settings.After == "reboot" {
		after = "reboot"
	}
	if err != nil {
		r.say("FAILED: %v", err)
		after = "poweroff"
	} else {
		r.say("done")
	}
	unix.Sync()
	r.say("%s", map[string]string{"poweroff": "powering off", "reboot": "rebooting"}[after])
	cmd := unix.LINUX_REBOOT_CMD_POWER_OFF
	if after == "reboot" {
		cmd = unix.LINUX_REBOOT_CMD_RESTART
	}
	_ = unix.Reboot(cmd)
	select {} // PID 1 must not exit
}

func (r *Runner) run(ctx context.Context) (*payload.Settings, error) {
	r.say("starting (pid %d)", os.Getpid())
	if err := mountBasics(); err != nil {
		return nil, err
	}
	fw := "BIOS"
	if _, err := os.Stat("/sys/firmware/efi"); err == nil {
		fw = "UEFI"
	}
	r.say("booted via %s", fw)
	if err := r.loadModules(); err != nil {
		return nil, err
	}
	medium, err := r.findMedium(ctx, 60*time.Second)
	if err != nil {
		return nil, err
	}
	if err := unix.Mount(medium, MediumDir, "iso9660", unix.MS_RDONLY, ""); err != nil {
		return nil, fmt.Errorf("mount %s: %w", medium, err)
	}
	r.say("medium %s mounted", medium)
	var m payload.Manifest
	if err := payload.ReadJSON(filepath.Join(MediumDir, payload.ManifestPath), &m); err != nil {
		return nil, fmt.Errorf("payload manifest: %w", err)
	}
	var s payload.Settings
	if err := payload.ReadJSON(filepath.Join(MediumDir, payload.SettingsPath), &s); err != nil {
		return nil, fmt.Errorf("appliance settings: %w", err)
	}
	// The target choice only reads, so a refusal comes before hashing a
	// payload of hundreds of MiB.
	target, note, err := chooseTarget(scanDisks(), filepath.Base(medium), s.TargetDisk, s.Wipe)
	if err != nil {
		return &s, err
	}
	r.say("target disk %s (%s)", target, note)
	// Sizes come from the manifest, so a too-small disk is refused before
	// the payload is hashed too; Install checks again.
	if _, _, err := fits(target, m, s); err != nil {
		return &s, err
	}
	if err := verifyPayload(MediumDir, m); err != nil {
		return &s, err
	}
	r.say("payload verified (%d files, %d bytes)", len(m.Files), m.Total())
	return &s, Install(ctx, r, target, MediumDir, m, s)
}

func mountBasics() error {
	for _, mt := range []struct{ src, dst, typ string }{{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"}} {
		_ = os.MkdirAll(mt.dst, 0o755)
		if err := unix.Mount(mt.src, mt.dst, mt.typ, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s: %w", mt.dst, err)
		}
	}
	return nil
}

func (r *Runner) loadModules() error {
	b, err := os.ReadFile("/" + initramfs.OrderFile)
	if err != nil {
		return fmt.Errorf("module list: %w", err)
	}
	n := 0
	for _, name := range strings.Fields(string(b)) {
		f, err := os.Open("/" + initramfs.ModuleDir + "/" + name + ".ko")
		if err != nil {
			return fmt.Errorf("module %s: %w", name, err)
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			r.say("module %s: %v (continuing)", name, err)
			continue
		}
		n++
	}
	r.say("loaded %d kernel modules", n)
	return nil
}

// blockDevices lists /sys/block names that can hold a medium or a target.
func blockDevices() []string {
	ents, _ := os.ReadDir("/sys/block")
	var out []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, "loop") || strings.HasPrefix(n, "ram") || strings.HasPrefix(n, "zram") {
			continue
		}
		out = append(out, n)
	}
	return out
}

// isoLabel reads the primary volume descriptor's volume identifier.
func isoLabel(dev string) string {
	f, err := os.Open(dev)
	if err != nil {
		return ""
	}
	defer f.Close()
	b := make([]byte, 2048)
	if _, err := f.ReadAt(b, 16*2048); err != nil || string(b[1:6]) != "CD001" {
		return ""
	}
	return strings.TrimRight(string(b[40:72]), " \x00")
}

func (r *Runner) findMedium(ctx context.Context, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		for _, n := range blockDevices() {
			if isoLabel("/dev/"+n) == MediumLabel {
				return "/dev/" + n, nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no medium with ISO label %s among %v (is the appliance ISO attached?)", MediumLabel, blockDevices())
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// IsEmpty reports whether the first MiB of a device is all zero.
func IsEmpty(dev string) (bool, error) {
	f, err := os.Open(dev)
	if err != nil {
		return false, err
	}
	defer f.Close()
	b := make([]byte, 1<<20)
	n, err := io.ReadFull(f, b)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return false, fmt.Errorf("read %s: %w", dev, err)
	}
	return bytes.Count(b[:n], []byte{0}) == n, nil
}

// Disk is what the target choice knows about one whole block device.
type Disk struct {
	Name  string // /sys/block name, e.g. sda
	Empty bool   // first MiB all zero
	Label string // ISO volume label, "" if none
}

// scanDisks reads every block device that could be a target.
func scanDisks() []Disk {
	var out []Disk
	for _, n := range blockDevices() {
		dev := "/dev/" + n
		empty, err := IsEmpty(dev)
		if err != nil {
			continue // no medium in the drive, or unreadable: never a target
		}
		out = append(out, Disk{Name: n, Empty: empty, Label: isoLabel(dev)})
	}
	return out
}

// chooseTarget applies the rule: the only empty disk; a disk with data only
// when wipe is set and it is the only candidate. want ("" or "auto", else a
// /dev path from targetDisk) names the disk instead; the same emptiness rule
// holds for it. The medium is never a candidate, neither are CD drives nor
// any other disk holding an appliance ISO (a second stick), so a hybrid image
// attached as a disk is safe even with wipe. It returns the device path and
// a note for the console.
func chooseTarget(disks []Disk, medium, want string, wipe bool) (string, string, error) {
	candidate := func(d Disk) bool {
		return d.Name != medium && !strings.HasPrefix(d.Name, "sr") && d.Label != MediumLabel
	}
	if want != "" && want != "auto" {
		for _, d := range disks {
			if "/dev/"+d.Name != want {
				continue
			}
			switch {
			case !candidate(d):
				return "", "", fmt.Errorf("refusing: targetDisk %s is the appliance medium (or a CD drive); name another disk or use targetDisk: auto; disks left untouched", want)
			case d.Empty:
				return want, "empty, targetDisk", nil
			case wipe:
				return want, "not empty, targetDisk, wipe: true", nil
			default:
				return "", "", fmt.Errorf("refusing: targetDisk %s is not empty (has data or partitions) and wipe is false; "+
					"to overwrite it set appliance.wipe: true in the install config (or pass --wipe to opencsp image iso) and rebuild the ISO; disk left untouched", want)
			}
		}
		names := make([]string, 0, len(disks))
		for _, d := range disks {
			names = append(names, "/dev/"+d.Name)
		}
		return "", "", fmt.Errorf("refusing: targetDisk %s not found (disks: %s); fix appliance.targetDisk (or --target-disk) and rebuild the ISO", want, strings.Join(names, ", "))
	}
	var empty, used []string
	for _, d := range disks {
		if !candidate(d) {
			continue
		}
		if d.Empty {
			empty = append(empty, "/dev/"+d.Name)
		} else {
			used = append(used, "/dev/"+d.Name)
		}
	}
	switch {
	case len(empty) == 1:
		return empty[0], "empty", nil
	case len(empty) > 1:
		return "", "", fmt.Errorf("refusing: %d empty disks %s, cannot choose; attach only the target disk; disks left untouched", len(empty), strings.Join(empty, ", "))
	case len(used) == 1 && wipe:
		return used[0], "not empty, wipe: true", nil
	case len(used) >= 1:
		return "", "", fmt.Errorf("refusing: disk %s is not empty (has data or partitions) and wipe is false; "+
			"to overwrite it set appliance.wipe: true in the install config (or pass --wipe to opencsp image iso) and rebuild the ISO; disk left untouched",
			strings.Join(used, ", "))
	default:
		return "", "", fmt.Errorf("refusing: no target disk found (only the medium %s); attach an empty disk", medium)
	}
}

// verifyPayload checks every manifest file on the medium before any disk is
// touched, naming the first file that does not match.
func verifyPayload(root string, m payload.Manifest) error {
	for _, f := range m.Files {
		n, sum, err := payload.Hash(filepath.Join(root, filepath.FromSlash(f.Path)))
		if err != nil {
			return fmt.Errorf("refusing: payload file %s: %w; the medium is incomplete: rebuild the ISO or write it again; disk left untouched", f.Path, err)
		}
		if sum != f.SHA256 || n != f.Size {
			return fmt.Errorf("refusing: payload file %s: checksum mismatch: sha256 %s (%d bytes), manifest says %s (%d bytes); "+
				"the medium is damaged: rebuild the ISO or write it again; disk left untouched", f.Path, sum, n, f.SHA256, f.Size)
		}
	}
	return nil
}

// sha returns the hex sha256 of what r yields.
func sha(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
