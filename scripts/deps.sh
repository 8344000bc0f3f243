#!/usr/bin/env bash
# Installs the Debian packages dualpipe builds with, if any are missing.
# Sourced by run.sh and test.sh; safe to run again (it does nothing when all are there).
# python3-torch makes the TorchScript stages of examples/own_model (its test skips without it).
set -euo pipefail
DUALPIPE_PACKAGES=(g++ cmake make pkg-config libfmt-dev nlohmann-json3-dev libcli11-dev libgtest-dev libbenchmark-dev libtorch-dev libgloo-dev libopenblas0-pthread iproute2 python3 python3-venv python3-torch)
missing=()
for p in "${DUALPIPE_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "dualpipe: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
