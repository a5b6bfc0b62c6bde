package iso

import (
	"encoding/binary"
	"fmt"
	"os"
)

const sector = 2048

// postProcess fixes what go-diskfs v1.9.4 leaves: the file is one partial
// block short (pitfall 2), timestamps come from the clock and the staging
// tree, and there is no isohybrid MBR (pitfall 3).
func postProcess(name, isohdpfx string) error {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("post-process %s: %w", name, err)
	}
	defer f.Close()
	pvd := make([]byte, sector)
	if _, err := f.ReadAt(pvd, 16*sector); err != nil {
		return fmt.Errorf("read primary volume descriptor: %w", err)
	}
	if pvd[0] != 1 || string(pvd[1:6]) != "CD001" {
		return fmt.Errorf("no primary volume descriptor at sector 16")
	}
	declared := int64(binary.LittleEndian.Uint32(pvd[80:84])) * sector
	if err := normaliseTimes(f); err != nil {
		return err
	}
	// Pad to the declared size, then to a whole MiB for USB sticks.
	padded := (declared + (1<<20 - 1)) &^ (1<<20 - 1)
	if err := f.Truncate(padded); err != nil {
		return fmt.Errorf("pad iso: %w", err)
	}
	if err := writeHybridMBR(f, isohdpfx, padded); err != nil {
		return err
	}
	return f.Sync()
}

// isoDate is the 17-byte volume descriptor date form of Epoch.
func isoDate() []byte {
	return append([]byte(Epoch.Format("20060102150405")+"00"), 0)
}

// recDate is the 7-byte directory record / Rock Ridge short date of Epoch.
func recDate() []byte {
	return []byte{byte(Epoch.Year() - 1900), byte(Epoch.Month()), byte(Epoch.Day()),
		byte(Epoch.Hour()), byte(Epoch.Minute()), byte(Epoch.Second()), 0}
}

func normaliseTimes(f *os.File) error {
	var root []byte
	for i := int64(16); i < 64; i++ {
		vd := make([]byte, sector)
		if _, err := f.ReadAt(vd, i*sector); err != nil {
			return fmt.Errorf("read volume descriptor %d: %w", i, err)
		}
		if vd[0] == 255 {
			break
		}
		if vd[0] == 1 || vd[0] == 2 {
			for _, off := range []int{813, 830, 864} {
				copy(vd[off:off+17], isoDate())
			}
			copy(vd[847:864], []byte("0000000000000000\x00")) // no expiration
			copy(vd[156+18:156+25], recDate())
			if vd[0] == 1 {
				root = append([]byte(nil), vd[156:156+34]...)
			}
			if _, err := f.WriteAt(vd, i*sector); err != nil {
				return fmt.Errorf("write volume descriptor %d: %w", i, err)
			}
		}
	}
	if root == nil {
		return fmt.Errorf("no root directory record")
	}
	seen := map[uint32]bool{}
	return walkDir(f, binary.LittleEndian.Uint32(root[2:6]), binary.LittleEndian.Uint32(root[10:14]), seen)
}

// walkDir rewrites the dates of every record in a directory extent and
// recurses into subdirectories.
func walkDir(f *os.File, lba, size uint32, seen map[uint32]bool) error {
	if seen[lba] {
		return nil
	}
	seen[lba] = true
	buf := make([]byte, size)
	if _, err := f.ReadAt(buf, int64(lba)*sector); err != nil {
		return fmt.Errorf("read directory at %d: %w", lba, err)
	}
	var subdirs [][2]uint32
	for off := 0; off < len(buf); {
		l := int(buf[off])
		if l == 0 {
			off = (off/sector + 1) * sector
			continue
		}
		if off+l > len(buf) || l < 34 {
			return fmt.Errorf("bad directory record at %d+%d", lba, off)
		}
		rec := buf[off : off+l]
		copy(rec[18:25], recDate())
		nameLen := int(rec[32])
		isDot := nameLen == 1 && (rec[33] == 0 || rec[33] == 1)
		if rec[25]&2 != 0 && !isDot {
			subdirs = append(subdirs, [2]uint32{binary.LittleEndian.Uint32(rec[2:6]), binary.LittleEndian.Uint32(rec[10:14])})
		}
		su := 33 + nameLen
		if nameLen%2 == 0 {
			su++
		}
		for su+4 <= len(rec) {
			el := int(rec[su+2])
			if el < 4 || su+el > len(rec) {
				break
			}
			if string(rec[su:su+2]) == "TF" {
				flags := rec[su+4]
				w := 7
				if flags&0x80 != 0 {
					w = 17
				}
				for p := su + 5; p+w <= su+el; p += w {
					if w == 7 {
						copy(rec[p:p+7], recDate())
					} else {
						copy(rec[p:p+17], isoDate())
					}
				}
			}
			su += el
		}
		off += l
	}
	if _, err := f.WriteAt(buf, int64(lba)*sector); err != nil {
		return fmt.Errorf("write directory at %d: %w", lba, err)
	}
	for _, sd := range subdirs {
		if err := walkDir(f, sd[0], sd[1], seen); err != nil {
			return err
		}
	}
	return nil
}

// writeHybridMBR writes an isohybrid-style MBR: isohdpfx boot code, the
// isolinux.bin LBA (in 512-byte sectors) at offset 432, partition 1 (0x17,
// active) over the whole image and partition 2 (0xEF) over the EFI image.
func writeHybridMBR(f *os.File, isohdpfx string, size int64) error {
	code, err := os.ReadFile(isohdpfx)
	if err != nil {
		return fmt.Errorf("boot.isohdpfxBin: %w", err)
	}
	if len(code) < 432 {
		return fmt.Errorf("boot.isohdpfxBin: %s is %d bytes, want at least 432", isohdpfx, len(code))
	}
	brvd := make([]byte, sector)
	if _, err := f.ReadAt(brvd, 17*sector); err != nil {
		return fmt.Errorf("read boot record: %w", err)
	}
	if brvd[0] != 0 || string(brvd[7:30]) != "EL TORITO SPECIFICATION" {
		return fmt.Errorf("no El Torito boot record at sector 17 (Joliet on?)")
	}
	catLBA := binary.LittleEndian.Uint32(brvd[0x47:0x4b])
	cat := make([]byte, sector)
	if _, err := f.ReadAt(cat, int64(catLBA)*sector); err != nil {
		return fmt.Errorf("read boot catalog: %w", err)
	}
	biosLBA := binary.LittleEndian.Uint32(cat[32+8 : 32+12])
	mbr := make([]byte, 512)
	copy(mbr, code[:432])
	binary.LittleEndian.PutUint32(mbr[432:], biosLBA*4)
	binary.LittleEndian.PutUint32(mbr[440:], 0x4f43534f) // fixed disk signature "OSCO"
	part := func(i int, active bool, typ byte, start, count uint32) {
		p := mbr[446+16*i : 446+16*(i+1)]
		if active {
			p[0] = 0x80
		}
		copy(p[1:4], []byte{0xfe, 0xff, 0xff})
		p[4] = typ
		copy(p[5:8], []byte{0xfe, 0xff, 0xff})
		binary.LittleEndian.PutUint32(p[8:], start)
		binary.LittleEndian.PutUint32(p[12:], count)
	}
	part(0, true, 0x17, 0, uint32(size/512))
	// A section header at 64 followed by an EFI entry at 96 means an EFI image.
	if cat[64] == 0x90 || cat[64] == 0x91 {
		if cat[65] == 0xef && cat[96] == 0x88 {
			efiLBA := binary.LittleEndian.Uint32(cat[96+8 : 96+12])
			efiSectors := uint32(binary.LittleEndian.Uint16(cat[96+6 : 96+8]))
			if efiSectors <= 1 {
				efiSectors = efiImageSectors(f, efiLBA)
			}
			part(1, false, 0xef, efiLBA*4, efiSectors)
		}
	}
	mbr[510], mbr[511] = 0x55, 0xaa
	if _, err := f.WriteAt(mbr, 0); err != nil {
		return fmt.Errorf("write hybrid MBR: %w", err)
	}
	return nil
}

// efiImageSectors reads the FAT boot sector's total sector count.
func efiImageSectors(f *os.File, lba uint32) uint32 {
	bs := make([]byte, 512)
	if _, err := f.ReadAt(bs, int64(lba)*sector); err != nil {
		return 0
	}
	if n := binary.LittleEndian.Uint16(bs[19:21]); n != 0 {
		return uint32(n)
	}
	return binary.LittleEndian.Uint32(bs[32:36])
}
