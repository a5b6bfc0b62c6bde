// Package appliance groups the pieces of the bootable appliance ISO:
// cpio (newc writer), kmod (module .modinfo reader and load order), initramfs
// (the Go /init plus modules), iso (El Torito BIOS+UEFI ISO with a hybrid MBR,
// deterministic), payload (manifest with sha256 sums) and applinit (the
// appliance mode that runs as PID 1 and writes the target disk).
package appliance
