#!/usr/bin/env bash
# The installed package, tested as a user meets it (scripts/test.sh runs this
# after the test suite; CI with it):
#  1. `cmake --install` of a finished build into a temporary prefix: headers,
#     libraries, dualpipeConfig.cmake, the programs; `dualpipe version` prints
#     project()'s version, and the LibTorch commands still run from bin/dualpipe
#     (through libexec/dualpipe/dualpipe-torch), also after the prefix moved;
#  2. examples/ configured, built and run against that prefix alone;
#  3. a super-project that adds this source tree with add_subdirectory builds
#     and runs the simulation example (the project works as a subproject).
#
#   scripts/test_install.sh [BUILD_DIR]     (default: build/, as scripts/build.sh leaves it)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$(cd "${1:-$root/build}" && pwd)"
jobs="${DUALPIPE_JOBS:-$(nproc)}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail() { echo "test_install: FAIL: $*" >&2; exit 1; }
step() { echo "test_install: $*"; }

version="$(sed -n 's/^project(dualpipe VERSION \([0-9.]*\).*/\1/p' "$root/CMakeLists.txt")"
[ -n "$version" ] || fail "no project(dualpipe VERSION ...) in CMakeLists.txt"
if grep -rn --include=CMakeLists.txt --include='*.cmake' 'CMAKE_SOURCE_DIR\|CMAKE_BINARY_DIR' \
     "$root/CMakeLists.txt" "$root/cmake" "$root/src" "$root/tests" "$root/bench" "$root/fuzz"; then
  fail "CMAKE_SOURCE_DIR/CMAKE_BINARY_DIR break use as a subproject: use PROJECT_* or CMAKE_CURRENT_*"
fi

# 1. Install.
step "installing $build into a temporary prefix"
prefix="$tmp/prefix"
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" || { cat "$tmp/install.log"; fail "cmake --install"; }
config="$(find "$prefix" -name dualpipeConfig.cmake)"
[ -n "$config" ] || fail "no dualpipeConfig.cmake installed"
for f in "$(dirname "$config")/dualpipeConfigVersion.cmake" "$prefix/include/dualpipe/version.h" \
         "$prefix/include/dualpipe/schedule/schedule.h" "$prefix/include/dualpipe/sim/simulate.h" "$prefix/bin/dualpipe" "$prefix/bin/dualpipe_emulate"; do
  [ -e "$f" ] || fail "not installed: ${f#$prefix/}"
done
# The public headers only: internal ones (src/<layer>/) are not part of the package.
for f in schedule/walk.h schedule/big_array.h pictures/layout.h plan/presets.h; do
  [ ! -e "$prefix/include/dualpipe/$f" ] || fail "internal header installed: include/dualpipe/$f"
done
[ -z "$(find "$prefix/include" -mindepth 1 -maxdepth 1 ! -name dualpipe)" ] || fail "installed include/ holds more than dualpipe/"
torch=OFF
[ -e "$(dirname "$config")/dualpipeTorchTargets.cmake" ] && torch=ON
[ "$("$prefix/bin/dualpipe" version)" = "dualpipe $version" ] || fail "dualpipe version: $("$prefix/bin/dualpipe" version)"
[ "$("$prefix/bin/dualpipe" --version)" = "dualpipe $version" ] || fail "dualpipe --version"
grep -q "#define DUALPIPE_VERSION \"$version\"" "$prefix/include/dualpipe/version.h" || fail "version.h is not $version"
"$prefix/bin/dualpipe" schedule -m dualpipe -p 4 -n 8 --format csv | cmp -s - "$root/tests/data/dualpipe_P4_N8.csv" ||
  fail "installed dualpipe schedule differs from tests/data/dualpipe_P4_N8.csv"
if [ "$torch" = ON ]; then
  [ -x "$prefix/libexec/dualpipe/dualpipe-torch" ] || fail "dualpipe-torch is not in libexec/dualpipe"
  [ ! -e "$prefix/bin/dualpipe-torch" ] || fail "dualpipe-torch belongs in libexec, not bin"
  # (Output captured first: grep -q would end the pipe early, and pipefail count that.)
  help="$("$prefix/bin/dualpipe" --help)"
  grep -q "^  train " <<<"$help" || fail "dualpipe --help does not list train"
  # The prefix moves (a relocated or copied install): dualpipe finds dualpipe-torch relative to itself.
  mv "$prefix" "$tmp/moved"
  help="$("$tmp/moved/bin/dualpipe" train --help)" || fail "installed dualpipe train --help exited $?"
  grep -q "Usage: dualpipe train" <<<"$help" || fail "installed dualpipe train --help: $help"
  mv "$tmp/moved" "$prefix"
fi

# 2. The examples against the installed package only (LibTorch: $torch).
step "building examples/ against the installed package"
cmake -S "$root/examples" -B "$tmp/examples" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
      -DEXAMPLES_WITH_TORCH="$torch" >"$tmp/examples.log" 2>&1 || { cat "$tmp/examples.log"; fail "configuring examples/"; }
cmake --build "$tmp/examples" -j "$jobs" >>"$tmp/examples.log" 2>&1 || { cat "$tmp/examples.log"; fail "building examples/"; }
out="$("$tmp/examples/simulate_schedule" 4 8)" || fail "simulate_schedule exited $?"
grep -q "^dualpipe " <<<"$out" || fail "simulate_schedule printed no dualpipe row: $out"
if [ "$torch" = ON ]; then
  "$tmp/examples/train_two_stages" 1f1b || fail "train_two_stages 1f1b"
  "$tmp/examples/train_two_stages" zb1p || fail "train_two_stages zb1p"
  "$tmp/examples/launch_ranks" processes dualpipe || fail "launch_ranks processes dualpipe"
  "$tmp/examples/launch_ranks" threads zb1p || fail "launch_ranks threads zb1p"
fi
# The schedule and sim libraries alone must not look for Torch.
cmake -S "$root/examples" -B "$tmp/examples-notorch" -DCMAKE_PREFIX_PATH="$prefix" -DEXAMPLES_WITH_TORCH=OFF \
      -DCMAKE_DISABLE_FIND_PACKAGE_Torch=ON >"$tmp/notorch.log" 2>&1 ||
  { cat "$tmp/notorch.log"; fail "find_package(dualpipe COMPONENTS schedule sim) needed Torch"; }

# 3. This tree as a subproject of another (no LibTorch, to build quickly).
step "building the simulation example in a super-project (add_subdirectory)"
mkdir -p "$tmp/super"
cat >"$tmp/super/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.18)
project(super LANGUAGES CXX)
set(DUALPIPE_WITH_TORCH OFF)
set(DUALPIPE_BENCHMARKS OFF)
add_subdirectory("$root" dualpipe)
add_executable(simulate_schedule "$root/examples/simulate_schedule.cpp")
target_link_libraries(simulate_schedule PRIVATE dualpipe::schedule dualpipe::sim)
CMAKE
cmake -S "$tmp/super" -B "$tmp/super-build" -DCMAKE_BUILD_TYPE=Release >"$tmp/super.log" 2>&1 ||
  { cat "$tmp/super.log"; fail "configuring the super-project"; }
cmake --build "$tmp/super-build" -j "$jobs" --target simulate_schedule >>"$tmp/super.log" 2>&1 ||
  { cat "$tmp/super.log"; fail "building the super-project"; }
out="$("$tmp/super-build/simulate_schedule" 4 8)" || fail "super-project simulate_schedule exited $?"
grep -q "^dualpipe " <<<"$out" || fail "super-project simulate_schedule printed no dualpipe row"
# The tests read their data from the source tree, not from beside the super-project.
flags="$tmp/super-build/dualpipe/tests/CMakeFiles/dualpipe_tests.dir/flags.make"
data="$(grep -o -m1 'DUALPIPE_TEST_DATA_DIR=\\"[^\\]*' "$flags" || true)"
data="${data#*=\\\"}"
[ -n "$data" ] && [ -e "$data/dualpipe_P4_N8.csv" ] || fail "the tests' data folder in a subproject: '$data'"
step "OK (LibTorch parts: $torch)"
