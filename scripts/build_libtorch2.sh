#!/usr/bin/env bash
# Builds dualpipe against LibTorch 2.x, the one inside the PyTorch wheel that
# scripts/torch_venv.sh installs into build/venv, into build-torch2/: the
# programs and the LibTorch runtime tests (the other tests do not use
# LibTorch), then runs those tests; arguments go to them (e.g.
# --gtest_filter='Runtime.*'). Not part of scripts/test.sh: on this 2-core
# machine the build takes longer than CI can spare (docs/pytorch.md,
# "LibTorch 2.x").
#
# What the wheel needs besides its CMake package (torch.utils.cmake_prefix_path):
# - It is the CUDA build: configuring needs the CUDA toolkit (nvcc, CUDA and
#   NCCL headers; no GPU), so the CUDA device paths and the NCCL backend
#   compile. Its libtorch_cuda.so needs a newer NCCL than the toolkit's, the
#   one in the venv's nvidia/nccl/lib: the linker is pointed at the venv's
#   nvidia/*/lib folders (-rpath-link; at run time libtorch finds them itself).
# - It ships fmt 12 headers in its include folder, which shadow Debian's fmt
#   (libfmt-dev, whose library is what we link): fmt is used header-only
#   (FMT_HEADER_ONLY) in this build, so each file uses the fmt it sees.
# - It ships no Gloo headers (ProcessGroupGloo.hpp includes <gloo/...>): they
#   come from Debian's libgloo-dev (/usr/include/gloo, on the default include
#   path), a 2022 snapshot, while the wheel's libtorch has a newer Gloo
#   compiled in. Only the Options and the constructor are used from our side;
#   the runtime tests are what shows the two agree.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${DUALPIPE_VENV:-$root/build/venv}"
out="${DUALPIPE_TORCH2_BUILD:-$root/build-torch2}"
jobs="${DUALPIPE_JOBS:-$(nproc)}"
bash "$root/scripts/torch_venv.sh"
if [ ! -x "$venv/bin/python" ]; then
  echo "dualpipe: no PyTorch 2.x venv at $venv: nothing to build against" >&2
  exit 2
fi
prefix="$("$venv/bin/python" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)' 2>/dev/null)"
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
link_flags=""
for d in "$site"/nvidia/*/lib; do link_flags+=" -Wl,-rpath-link,$d"; done
start=$(date +%s)
cmake -S "$root" -B "$out" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_CXX_FLAGS="-DFMT_HEADER_ONLY" -DCMAKE_EXE_LINKER_FLAGS="$link_flags" >/dev/null
cmake --build "$out" -j "$jobs" --target dualpipe dualpipe_runtime_tests
version="$("$venv/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null)"
echo "dualpipe: configured and built against LibTorch $version in $(($(date +%s) - start)) s" >&2
"$out/tests/dualpipe_runtime_tests" "$@"
