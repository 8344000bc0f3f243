#!/usr/bin/env bash
# Builds dualpipe against LibTorch 2.x, the one inside the PyTorch wheel that
# scripts/torch_venv.sh installs into build/venv, into build-torch2/: the
# programs and the LibTorch runtime tests (the other tests do not use
# LibTorch), then runs those tests; arguments go to them (e.g.
# --gtest_filter='Runtime.*'). scripts/test.sh runs it only once ccache
# holds its objects (or when asked): cold, the build takes longer on a 2-core
# machine than CI can spare (docs/pytorch.md, "LibTorch 2.x").
#
# What the wheel needs besides its CMake package (torch.utils.cmake_prefix_path):
# - It is the CUDA build: configuring needs the CUDA toolkit (nvcc, CUDA and
#   NCCL headers; no GPU), so the CUDA device paths and the NCCL backend
#   compile. Its libtorch_cuda.so needs a newer NCCL than the toolkit's, the
#   one in the venv's nvidia/nccl/lib: the linker is pointed at the venv's
#   nvidia/*/lib folders (-rpath-link; at run time libtorch finds them itself).
#   The NCCL header must be that NCCL's too: the venv's nvidia/nccl/include
#   (DUALPIPE_NCCL_HEADERS), searched before the toolkit's. ProcessGroupNCCL's
#   options hold an ncclConfig_t, which NCCL 2.30 (the wheel's) lays out
#   larger than the toolkit's 2.28 header does: options made with the
#   toolkit's header would be allocated smaller than libtorch fills them.
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
nccl_headers=""
if [ -f "$site/nvidia/nccl/include/nccl.h" ]; then nccl_headers="$site/nvidia/nccl/include"; fi
link_flags=""
for d in "$site"/nvidia/*/lib; do link_flags+=" -Wl,-rpath-link,$d"; done
# ccache, where installed, keeps the objects: a rebuild after a change
# recompiles only what the change touched.
launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
start=$(date +%s)
cmake -S "$root" -B "$out" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" "${launcher[@]}" \
  -DCMAKE_CXX_FLAGS="-DFMT_HEADER_ONLY" -DDUALPIPE_NCCL_HEADERS="$nccl_headers" -DCMAKE_EXE_LINKER_FLAGS="$link_flags" >/dev/null
cmake --build "$out" -j "$jobs" --target dualpipe dualpipe_runtime_tests
version="$("$venv/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null)"
echo "dualpipe: configured and built against LibTorch $version in $(($(date +%s) - start)) s" >&2
# Tells scripts/test.sh that ccache now holds this build's objects, so that
# running it again costs minutes, not the cold build's most of an hour.
if [ ${#launcher[@]} -gt 0 ]; then touch "$(ccache -k cache_dir)/dualpipe-libtorch2-built"; fi
"$out/tests/dualpipe_runtime_tests" "$@"
