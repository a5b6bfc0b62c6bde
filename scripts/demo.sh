#!/usr/bin/env bash
# make demo: the whole install on this machine. Starts the sandbox (e2e/sandbox: PVE emulator,
# VM stand-ins, image + K3s artifact servers, git server), runs the real bin/opencsp install
# against it, and keeps the sandbox up until Ctrl-C (or `make demo-down` from another shell).
# A fresh machine: installs the Debian packages, builds the e2e tools (~12 min once), the VM
# stand-in golden tree (~95 s once) and the K3s stand-in; later runs reuse .cache/.
set -euo pipefail
dir=${1:-.cache/demo}
root=$(pwd)
# APPLIANCE=1 (make demo-appliance): provision method appliance — build the ISO first, then the
# install uploads it and boots the management VM from it.
appliance=${APPLIANCE:-}
upflags=()
[ -n "$appliance" ] && upflags=(-appliance)
export PATH=/usr/local/go/bin:$PATH

if [ "$(id -u)" -ne 0 ]; then
	echo "make demo needs root: the VM stand-ins use network namespaces, overlayfs and systemd-nspawn." >&2
	exit 1
fi
./scripts/deps.sh
echo "==> e2e tools (make tools; cached after the first run)"
make --no-print-directory tools
echo "==> sandbox binary"
go build -o bin/sandbox ./e2e/sandbox/cmd/sandbox

mkdir -p "$(dirname "$dir")"
log=$dir.log
bin/sandbox down -dir "$dir" >/dev/null
echo "==> starting the sandbox (first run: builds the VM stand-in tree and the K3s stand-in; log $log)"
bin/sandbox up -dir "$dir" "${upflags[@]}" >"$log" 2>&1 &
pid=$!
stop() {
	trap - INT TERM
	echo
	echo "==> stopping the sandbox"
	kill -TERM "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	exit 130
}
trap stop INT TERM
while [ ! -f "$dir/ready" ]; do
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "sandbox failed to start:" >&2
		cat "$log" >&2
		exit 1
	fi
	sleep 0.5
done
sed -n '/^Sandbox up/,/^Install:/p' "$log"

# The whole install: the sandbox also runs Flux's controllers and the flux stand-ins against the
# K3s stand-in once K3s is up.
rc=0
if [ -n "$appliance" ]; then
	echo
	echo "\$ opencsp image iso -c $dir/opencsp.yaml"
	(cd "$dir" && "$root/bin/opencsp" image iso -c opencsp.yaml) || rc=$?
fi
echo
echo "\$ opencsp install -c $dir/opencsp.yaml"
[ "$rc" -eq 0 ] && { (cd "$dir" && PVE_TOKEN_SECRET=$(cat pve-token) "$root/bin/opencsp" install -c opencsp.yaml) || rc=$?; }
echo
if [ "$rc" -ne 0 ]; then
	echo "Install failed (exit $rc). The sandbox stays up for a look: logs in $dir and $log."
else
	echo "Rerun it (a no-op):  cd $dir && PVE_TOKEN_SECRET=\$(cat pve-token) $root/bin/opencsp install -c opencsp.yaml"
	echo "The management VM:   ssh -i $dir/id_ed25519 opencsp@$(sed -n 's/^    address: \(.*\)\/.*/\1/p' "$dir/opencsp.yaml")"
fi
echo "Sandbox log: $log. The sandbox stays up: Ctrl-C here, or 'make demo-down' from another shell."
wait "$pid" || true
