#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with clang and runs each for a bounded
# time. Not part of CI: fuzzing is open-ended, run it by hand.
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
# Needs clang and libFuzzer (Debian: clang-14 libclang-rt-14-dev). Findings
# (crash-*, timeout-*, oom-*) land in build-fuzz/findings/<target>/; the
# corpus grows in build-fuzz/corpus/<target>/, seeded from fuzz/corpus/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
build=${DUALPIPE_FUZZ_BUILD:-build-fuzz}
cxx=$(command -v clang++ || command -v clang++-14 || true)
if [[ -z "$cxx" ]]; then
  echo "fuzz.sh: clang++ not found (apt-get install clang-14 libclang-rt-14-dev)" >&2
  exit 2
fi
cmake -S . -B "$build" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDUALPIPE_FUZZ=ON \
  -DDUALPIPE_TESTS=OFF -DDUALPIPE_BENCHMARKS=OFF >/dev/null
cmake --build "$build" -j"${JOBS:-2}" --target fuzz_csv fuzz_check
status=0
for target in fuzz_csv fuzz_check; do
  seeds=fuzz/corpus/${target#fuzz_}
  corpus=$build/corpus/$target
  findings=$build/findings/$target
  mkdir -p "$corpus" "$findings"
  dict=()
  [[ -f fuzz/$target.dict ]] && dict=(-dict="fuzz/$target.dict")
  echo "== $target: $secs s"
  # -timeout: one input taking over 30 s is a hang (inputs take milliseconds;
  # the margin is for a loaded machine, where a 10 s limit fired on an input
  # that runs in 0.1 s). -rss_limit_mb: a tiny input must not cost gigabytes
  # (the checker refuses absurd shapes).
  if ! "$build/fuzz/$target" "$corpus" "$seeds" "${dict[@]}" -max_total_time="$secs" -timeout=30 \
      -rss_limit_mb=2048 -max_len=8192 -artifact_prefix="$findings/" -print_final_stats=1; then
    echo "fuzz.sh: $target found a problem; see $findings/" >&2
    status=1
  fi
done
exit $status
