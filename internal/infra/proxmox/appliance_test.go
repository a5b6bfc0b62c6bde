package proxmox

import "testing"

// TestBootsISO: the firmware boots the first device of the order that has
// media; the install is running or pending only while that is an ISO.
func TestBootsISO(t *testing.T) {
	iso := "local:iso/opencsp-appliance-0123456789ab.iso,media=cdrom,size=256K"
	disk := "local-lvm:vm-100-disk-0,discard=on,size=20G"
	for _, tc := range []struct {
		name string
		cfg  map[string]string
		want bool
	}{
		{"ISO first", map[string]string{"boot": "order=ide2;scsi0", "ide2": iso, "scsi0": disk}, true},
		{"switched", map[string]string{"boot": "order=scsi0;net0", "ide2": "none,media=cdrom", "scsi0": disk}, false},
		{"empty drive skipped", map[string]string{"boot": "order=ide2;scsi0", "ide2": "none,media=cdrom", "scsi0": disk}, false},
		{"NIC and missing device skipped", map[string]string{"boot": "order=net0;sata0;ide2;scsi0", "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0", "ide2": iso, "scsi0": disk}, true},
		{"cloud-init drive is no boot medium", map[string]string{"boot": "order=ide2;scsi0", "ide2": "local-lvm:vm-100-cloudinit,media=cdrom", "scsi0": disk}, false},
		{"ISO without media=cdrom", map[string]string{"boot": "order=ide2", "ide2": "local:iso/x.iso"}, false},
		{"no boot order", map[string]string{"ide2": iso, "scsi0": disk}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := bootsISO(tc.cfg); got != tc.want {
				t.Errorf("bootsISO(%v) = %v, want %v", tc.cfg, got, tc.want)
			}
		})
	}
}

func TestMetaCtime(t *testing.T) {
	for in, want := range map[string]int64{
		"creation-qemu=10.1.2,ctime=1764130000": 1764130000,
		"ctime=42":                              42,
		"creation-qemu=10.1.2":                  0,
		"":                                      0,
	} {
		if got := metaCtime(in); got != want {
			t.Errorf("metaCtime(%q) = %d, want %d", in, got, want)
		}
	}
}
