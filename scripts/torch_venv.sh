#!/usr/bin/env bash
# Installs a pinned PyTorch 2.x from PyPI into a virtual environment under
# build/ (default build/venv; DUALPIPE_VENV overrides), for the PyTorch round
# trip tests (tests/python/) and scripts/bench_pytorch.py. The C++ build keeps
# Debian's LibTorch 1.13; this is only the Python side and, for the LibTorch
# 2.x build check, the LibTorch inside the wheel.
#
# Does nothing when the pinned version is already there. The wheels are
# downloaded once into a wheel cache outside build/ (DUALPIPE_WHEELS, default
# ~/.cache/dualpipe/wheels; pip's own HTTP cache is not relied on), and the
# venv is installed from there with no network, so a second install (a fresh
# build/) is fast. Needs about 10 GiB free (the wheel pulls the CUDA
# libraries: ~3 GiB of wheels, ~5 GiB installed): with less it says so and
# installs nothing, and the PyTorch tests then report themselves skipped.
# DUALPIPE_NO_TORCH_VENV=1 skips it on purpose.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TORCH_VERSION="2.15.0"
NUMPY_VERSION="2.4.6"  # torch warns at import without numpy
venv="${DUALPIPE_VENV:-$root/build/venv}"
wheels="${DUALPIPE_WHEELS:-$HOME/.cache/dualpipe/wheels}"
python="${DUALPIPE_PYTHON:-python3}"

if [ "${DUALPIPE_NO_TORCH_VENV:-0}" = 1 ]; then
  echo "dualpipe: DUALPIPE_NO_TORCH_VENV=1: not installing PyTorch $TORCH_VERSION (the PyTorch tests will skip)" >&2
  exit 0
fi
if [ -x "$venv/bin/python" ] &&
   "$venv/bin/python" -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  exit 0
fi
mkdir -p "$(dirname "$venv")"
free_kib=$(df -Pk "$(dirname "$venv")" | awk 'NR == 2 { print $4 }')
need_kib=$((10 * 1024 * 1024))
if ((free_kib < need_kib)); then
  echo "dualpipe: WARNING: SKIPPING the PyTorch $TORCH_VERSION install: $((free_kib / 1024 / 1024)) GiB free under $(dirname "$venv"), 10 GiB needed; the PyTorch round trip tests will skip" >&2
  exit 0
fi
pins=("torch==$TORCH_VERSION" "numpy==$NUMPY_VERSION")
install() {
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-index --find-links "$wheels" "${pins[@]}"
}
start=$(date +%s)
# From the wheel cache alone when it is complete; else download what is
# missing (pip download keeps the wheels already there) and install again.
if ! { [ -e "$wheels/.complete-torch-$TORCH_VERSION" ] && install 2>/dev/null; }; then
  echo "dualpipe: downloading ${pins[*]} and their dependencies from PyPI into $wheels" >&2
  mkdir -p "$wheels"
  "$python" -m pip download --quiet --disable-pip-version-check --dest "$wheels" "${pins[@]}"
  touch "$wheels/.complete-torch-$TORCH_VERSION"
  echo "dualpipe: wheels: $(du -sh "$wheels" | cut -f1), $(($(date +%s) - start)) s" >&2
  start=$(date +%s)
  install
fi
echo "dualpipe: torch $TORCH_VERSION installed from $wheels in $(($(date +%s) - start)) s ($(du -sh "$venv" | cut -f1) in $venv)" >&2
