// Package kmod reads the .modinfo section of Linux kernel modules and orders a
// set of modules so that each one comes after the modules it depends on.
package kmod

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"
)

// Info is what the appliance needs from a module's .modinfo.
type Info struct {
	Name    string   // normalised name (dashes become underscores)
	Path    string   // file path of the .ko
	Depends []string // hard dependencies (normalised)
}

// Normalize maps a module name to the kernel's canonical form.
func Normalize(name string) string {
	return strings.ReplaceAll(strings.TrimSuffix(filepath.Base(name), ".ko"), "-", "_")
}

// ReadInfo reads the .modinfo section of an uncompressed .ko file.
func ReadInfo(path string) (Info, error) {
	f, err := elf.Open(path)
	if err != nil {
		return Info{}, fmt.Errorf("kmod: open %s: %w", path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return Info{}, fmt.Errorf("kmod: %s has no .modinfo section", path)
	}
	data, err := sec.Data()
	if err != nil {
		return Info{}, fmt.Errorf("kmod: read .modinfo of %s: %w", path, err)
	}
	info := Info{Name: Normalize(path), Path: path}
	for _, kv := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "name":
			info.Name = Normalize(v)
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					info.Depends = append(info.Depends, Normalize(d))
				}
			}
		}
	}
	return info, nil
}

// Index maps module names to files below a modules directory
// (lib/modules/<version>).
type Index map[string]string

// BuildIndex walks dir for *.ko files.
func BuildIndex(dir string) (Index, error) {
	idx := Index{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".ko") {
			idx[Normalize(p)] = p
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kmod: index %s: %w", dir, err)
	}
	if len(idx) == 0 {
		return nil, fmt.Errorf("kmod: no uncompressed .ko modules under %s", dir)
	}
	return idx, nil
}

// Resolve returns the wanted modules plus their dependencies, each after all
// of its dependencies. Unknown names are an error naming the module.
func (idx Index) Resolve(wanted []string) ([]Info, error) {
	var (
		out   []Info
		state = map[string]int{} // 1 visiting, 2 done
		visit func(name, from string) error
	)
	visit = func(name, from string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("kmod: dependency cycle at %s", name)
		case 2:
			return nil
		}
		p, ok := idx[name]
		if !ok {
			if from != "" {
				return fmt.Errorf("kmod: module %s (needed by %s) not found", name, from)
			}
			return fmt.Errorf("kmod: module %s not found", name)
		}
		state[name] = 1
		info, err := ReadInfo(p)
		if err != nil {
			return err
		}
		info.Name = name
		deps := append([]string(nil), info.Depends...)
		sort.Strings(deps)
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		state[name] = 2
		out = append(out, info)
		return nil
	}
	for _, w := range wanted {
		if err := visit(Normalize(w), ""); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ApplianceModules are the modules the appliance loads, in a useful order:
// soft dependencies of sd_mod (crc*_generic) are listed explicitly because
// .modinfo only records them as softdep.
var ApplianceModules = []string{
	"crc32c_generic", "crct10dif_generic", "crc64_rocksoft_generic",
	"scsi_common", "scsi_mod", "cdrom", "sr_mod", "sd_mod", "isofs",
	"libata", "ata_piix", "libahci", "ahci",
	"virtio_pci", "virtio_blk", "virtio_scsi",
}
