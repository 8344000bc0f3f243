#!/usr/bin/env bash
# Installs what is missing, builds everything, and runs the whole test suite
# (the CI command). `scripts/test.sh --fast`: the pure C++ tests alone (CTest
# label "fast"), for the edit-compile-test loop.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
jobs="${DUALPIPE_JOBS:-$(nproc)}"
if [ "${1:-}" = "--fast" ]; then
  DUALPIPE_TARGETS="dualpipe_tests" bash "$root/scripts/build.sh"
  cd "$root/build"
  exec ctest --output-on-failure -j "$jobs" -L fast
fi
bash "$root/scripts/build.sh"
# PyTorch 2.x into build/venv for the round trip tests (they skip without it).
bash "$root/scripts/torch_venv.sh" ||
  echo "dualpipe: WARNING: installing PyTorch 2.x failed; the PyTorch round trip tests will be skipped" >&2
cd "$root/build"
ctest --output-on-failure -j "$jobs"
if [ "$(id -u)" -ne 0 ]; then
  n="$(ctest -N -L root | sed -n 's/^Total Tests: //p')"
  echo "dualpipe: not root: the ${n:-0} network-namespace tests (CTest label root) skipped themselves" >&2
fi
# The LibTorch 2.x build (the wheel's LibTorch) and its runtime tests: cold it
# compiles for most of an hour on 2 cores, so it runs when ccache already
# holds its objects (scripts/build_libtorch2.sh leaves a stamp in ccache's
# folder), or when DUALPIPE_LIBTORCH2=1 asks; DUALPIPE_LIBTORCH2=0 never.
libtorch2="${DUALPIPE_LIBTORCH2:-auto}"
if [ "$libtorch2" = auto ] && command -v ccache >/dev/null &&
   [ -e "$(ccache -k cache_dir)/dualpipe-libtorch2-built" ]; then libtorch2=1; fi
if [ "$libtorch2" = 1 ] && [ -x "${DUALPIPE_VENV:-$root/build/venv}/bin/python" ]; then
  bash "$root/scripts/build_libtorch2.sh"
fi
# The installed package: cmake --install, examples/ against it, use as a subproject.
bash "$root/scripts/test_install.sh" "$root/build"
