#!/bin/sh
# OpenCSP K3s install script STAND-IN (opencsp-k3s-standin), for tests only.
# The real script (https://get.k3s.io) cannot be fetched offline. This one does
# what the real one does in skip-download mode on a systemd host:
#   - uses the binary already at $INSTALL_K3S_BIN_DIR/k3s (INSTALL_K3S_SKIP_DOWNLOAD=true),
#   - derives the command from INSTALL_K3S_EXEC ("server" unless it names "agent";
#     flags only mean "server <flags>"),
#   - writes /etc/systemd/system/k3s.service (Type=notify, ExecStart=<bin>/k3s server ...)
#     and an empty k3s.service.env,
#   - systemctl daemon-reload, enable, and restart (as the real script's systemd_start),
#     honouring INSTALL_K3S_SKIP_ENABLE and INSTALL_K3S_SKIP_START.
# Not done: downloading, SELinux, the kubectl/crictl/ctr symlinks, k3s-killall.sh,
# k3s-uninstall.sh, agent installs, openrc.
set -e

info() { echo "[INFO]  $*"; }
fatal() { echo "[ERROR] $*" >&2; exit 1; }

BIN_DIR=${INSTALL_K3S_BIN_DIR:-/usr/local/bin}
SYSTEMD_DIR=${INSTALL_K3S_SYSTEMD_DIR:-/etc/systemd/system}
SYSTEM_NAME=k3s

[ "$(id -u)" -eq 0 ] || fatal "must run as root"
command -v systemctl >/dev/null 2>&1 || fatal "stand-in install script supports systemd hosts only"

if [ "${INSTALL_K3S_SKIP_DOWNLOAD}" != "true" ]; then
    fatal "this is the opencsp K3s stand-in install script: it cannot download K3s; set INSTALL_K3S_SKIP_DOWNLOAD=true and put the binary at ${BIN_DIR}/k3s"
fi
[ -x "${BIN_DIR}/k3s" ] || fatal "skip download: ${BIN_DIR}/k3s is missing or not executable"
info "Skipping k3s download and verify"

# Same rule as the real script: no command, or one starting with a flag, means server.
CMD_K3S_EXEC=${INSTALL_K3S_EXEC:-server}
case "${CMD_K3S_EXEC}" in
    -*) CMD_K3S_EXEC="server ${CMD_K3S_EXEC}" ;;
    server*) ;;
    agent*) fatal "the stand-in does not implement agents" ;;
    *) CMD_K3S_EXEC="server ${CMD_K3S_EXEC}" ;;
esac

FILE_K3S_SERVICE=${SYSTEMD_DIR}/${SYSTEM_NAME}.service
FILE_K3S_ENV=${SYSTEMD_DIR}/${SYSTEM_NAME}.service.env
info "env: Creating environment file ${FILE_K3S_ENV}"
umask 077
touch "${FILE_K3S_ENV}"
chmod 0600 "${FILE_K3S_ENV}"
umask 022

info "systemd: Creating service file ${FILE_K3S_SERVICE}"
cat > "${FILE_K3S_SERVICE}" <<UNIT
[Unit]
Description=Lightweight Kubernetes (opencsp K3s stand-in)
Documentation=https://k3s.io
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=notify
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
EnvironmentFile=-${FILE_K3S_ENV}
KillMode=control-group
Delegate=yes
LimitNOFILE=1048576
TimeoutStartSec=180
Restart=always
RestartSec=5s
ExecStart=${BIN_DIR}/k3s ${CMD_K3S_EXEC}
UNIT

if [ "${INSTALL_K3S_SKIP_ENABLE}" != "true" ]; then
    info "systemd: Enabling ${SYSTEM_NAME} unit"
    systemctl enable "${FILE_K3S_SERVICE}" >/dev/null
    systemctl daemon-reload >/dev/null
fi
if [ "${INSTALL_K3S_SKIP_START}" != "true" ] && [ "${INSTALL_K3S_SKIP_ENABLE}" != "true" ]; then
    info "systemd: Starting ${SYSTEM_NAME}"
    systemctl restart "${SYSTEM_NAME}"
fi
