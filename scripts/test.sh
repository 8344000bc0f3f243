#!/usr/bin/env bash
# Installs what is missing, builds everything, and runs the whole test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/build.sh"
# PyTorch 2.x into build/venv for the round trip tests (they skip without it).
bash "$root/scripts/torch_venv.sh" ||
  echo "dualpipe: WARNING: installing PyTorch 2.x failed; the PyTorch round trip tests will be skipped" >&2
cd "$root/build"
ctest --output-on-failure -j "${DUALPIPE_JOBS:-$(nproc)}"
# The installed package: cmake --install, examples/ against it, use as a subproject.
bash "$root/scripts/test_install.sh" "$root/build"
