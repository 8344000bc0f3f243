#!/usr/bin/env bash
# Builds our code with sanitizers and runs the test suite under them.
#   scripts/sanitize.sh asan   # AddressSanitizer + UndefinedBehaviorSanitizer, whole suite (build-asan/)
#   scripts/sanitize.sh tsan   # ThreadSanitizer, every thread-rank runtime test (build-tsan/)
# LibTorch, Gloo and the other Debian libraries are not instrumented; see
# "Sanitizers and fuzzing" in docs/testing.md for what that means.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-asan}
jobs=${JOBS:-2}
case "$kind" in
  asan)
    build=build-asan
    cmake -S . -B $build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
      -DDUALPIPE_SANITIZE=address,undefined -DDUALPIPE_BENCHMARKS=OFF
    cmake --build $build -j"$jobs"
    # detect_leaks=0: LeakSanitizer reports LibTorch's and Gloo's process-
    # lifetime allocations (registries, thread pools) that are never freed by
    # design; our own objects are all owned by RAII types.
    export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    (cd $build && ctest -j"$jobs" --output-on-failure)
    ;;
  tsan)
    build=build-tsan
    cmake -S . -B $build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
      -DDUALPIPE_SANITIZE=thread -DDUALPIPE_BENCHMARKS=OFF
    cmake --build $build -j"$jobs" --target dualpipe_runtime_tests
    # Third-party frames only (scripts/tsan.supp); a race in our code fails.
    export TSAN_OPTIONS="suppressions=$PWD/scripts/tsan.supp:halt_on_error=1:second_deadlock_stack=1"
    # Every runtime test whose ranks are threads of the test process (the
    # others start dualpipe processes, which this build does not make).
    $build/tests/dualpipe_runtime_tests \
      --gtest_filter='SplitLinear.*:Runtime.*:GptVerify.*:GptStages.*:GptData.*:Train.*:Measured.*:Perf.*:Checkpoint.*'
    ;;
  *)
    echo "usage: scripts/sanitize.sh asan|tsan" >&2
    exit 2
    ;;
esac
