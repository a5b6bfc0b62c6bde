// Package standin provides VM stand-ins for the end-to-end tests: each stand-in behaves like a
// Proxmox VM freshly cloned from a Debian 12 cloud image — its own address on a bridge the
// harness owns, real systemd, real OpenSSH, real sudo and real cloud-init reading a NoCloud seed —
// but runs as a systemd-nspawn container over an overlay of a cached, debootstrapped Debian tree.
//
// Everything here needs root, debootstrap, systemd-nspawn (systemd-container), iproute2, nsenter
// and unshare (util-linux). Resources are named after a harness prefix and recorded in a state
// file under StateRoot, so Cleanup can remove what a crashed run left behind.
//
// Typical use:
//
//	h, err := standin.NewHost(ctx, standin.HostConfig{})
//	defer h.Close(context.Background())
//	inst, err := h.Start(ctx, standin.InstanceSpec{Name: "vm101", Address: h.Network().Address(10), Seed: seedFiles})
//	err = inst.WaitReady(ctx) // SSH open and cloud-init finished
//
// See e2e/README.md for how faithful the stand-in is and where it differs from a real VM.
package standin
