package payload

// MiB is the unit the appliance sizes partitions in.
const MiB = 1 << 20

// DefaultSeedMiB is the CIDATA partition size when Settings.SeedMiB is 0.
const DefaultSeedMiB = 64

// Layout is what the appliance adds to the target disk after the OS image.
// The build checks a declared disk size with it and the appliance checks the
// real disk with it, so both refuse the same disks.
type Layout struct {
	SeedMiB int64 // CIDATA partition
	DataMiB int64 // OPENCSPDATA partition: the payload without the OS image, plus slack
	Need    int64 // bytes the target disk must have
}

// DiskLayout sizes the target disk for an OS image of osBytes and a payload
// of totalBytes (OS image included). seedMiB 0 means DefaultSeedMiB.
func DiskLayout(osBytes, totalBytes, seedMiB int64) Layout {
	if seedMiB == 0 {
		seedMiB = DefaultSeedMiB
	}
	// 64 MiB of slack covers FAT32 overhead and manifest.json; 2 MiB the
	// backup GPT and alignment.
	dataMiB := (totalBytes-osBytes)/MiB + 64
	need := roundMiB(osBytes) + (seedMiB+dataMiB+2)*MiB
	return Layout{SeedMiB: seedMiB, DataMiB: dataMiB, Need: need}
}

func roundMiB(n int64) int64 { return (n + MiB - 1) &^ (MiB - 1) }
