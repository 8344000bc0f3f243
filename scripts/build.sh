#!/usr/bin/env bash
# Configures and builds dualpipe into build/ (Release). Extra arguments go to
# cmake's configure step. DUALPIPE_TARGETS (space-separated) builds only those
# targets (scripts/run.sh: the programs alone); unset, everything.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/deps.sh"
jobs="${DUALPIPE_JOBS:-$(nproc)}"
launcher=()
# ccache, where installed, makes a rebuild after a fresh clone or a branch switch cheap.
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" "$@" >/dev/null
targets=()
for t in ${DUALPIPE_TARGETS:-}; do targets+=(--target "$t"); done
cmake --build "$root/build" -j "$jobs" "${targets[@]}"
