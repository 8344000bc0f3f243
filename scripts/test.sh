#!/usr/bin/env bash
# Installs what is missing, builds everything, and runs the whole test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/build.sh"
cd "$root/build"
ctest --output-on-failure -j "${DUALPIPE_JOBS:-$(nproc)}"
# The installed package: cmake --install, examples/ against it, use as a subproject.
bash "$root/scripts/test_install.sh" "$root/build"
