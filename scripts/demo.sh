#!/usr/bin/env bash
# make demo: run the real opencsp on the embedded standalone example in a
# scratch directory. It uses only what exists today (the stages registered in
# stages/pipeline); the full sandbox (PVE emulator, VM stand-ins, kube + Flux)
# replaces this script when it lands.
set -euo pipefail
dir=${1:-.cache/demo}
bin=$(pwd)/bin/opencsp

if ! command -v ssh-keygen >/dev/null; then
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-client
fi
mkdir -p "$dir"
cd "$dir"
[ -f id_ed25519 ] || ssh-keygen -q -t ed25519 -N "" -C opencsp-demo -f id_ed25519
# A stand-in token secret: the demo talks to no Proxmox host yet.
export PVE_TOKEN_SECRET=${PVE_TOKEN_SECRET:-demo-token-secret}

run() { echo; echo "\$ opencsp $*"; "$bin" "$@"; }
[ -f opencsp.yaml ] || run config init --profile standalone -f opencsp.yaml --ssh-key ./id_ed25519
run config validate -c opencsp.yaml
run plan -c opencsp.yaml
run install -c opencsp.yaml
echo
echo "Rerun: finished stages are verified and skipped."
run install -c opencsp.yaml
echo
echo "Demo files are in $dir (remove with: make demo-down)."
