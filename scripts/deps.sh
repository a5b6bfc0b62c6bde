#!/usr/bin/env bash
# Installs the Debian packages the tests and `make demo` need, when any is missing:
# git/make, debootstrap + systemd-nspawn (VM stand-ins), OpenSSH + sudo (remote tests),
# QEMU + OVMF + isolinux/GRUB/mtools/xorriso/cpio (appliance ISO boots). One list for
# .ci/run, make test and make demo.
set -euo pipefail
packages=(git make debootstrap systemd-container iproute2 util-linux
	openssh-server openssh-client sudo
	qemu-system-x86 ovmf isolinux syslinux-common grub-efi-amd64-bin mtools dosfstools xorriso cpio)
if command -v git >/dev/null && command -v make >/dev/null \
	&& command -v debootstrap >/dev/null && command -v systemd-nspawn >/dev/null \
	&& [ -x /usr/sbin/sshd ] && command -v ssh >/dev/null && command -v sudo >/dev/null \
	&& command -v qemu-system-x86_64 >/dev/null && [ -f /usr/lib/ISOLINUX/isolinux.bin ] \
	&& command -v xorriso >/dev/null && command -v mcopy >/dev/null; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "missing Debian packages; as root run: apt-get install ${packages[*]}" >&2
	exit 1
fi
echo "==> installing Debian packages: ${packages[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"
