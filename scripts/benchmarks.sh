#!/usr/bin/env bash
# Runs the runtime performance benchmarks on this machine and writes
# docs/BENCHMARKS.md (machine, commit, date and the tables). Takes about ten
# minutes on 2 cores. Every figure is a ratio of quantities measured in the
# same run of `dualpipe bench` (the machine may be shared and noisy).
#   scripts/benchmarks.sh [OUTPUT.md]      (default docs/BENCHMARKS.md)
# Environment: STEPS (timed steps per run, default 3), ROUNDS (runs of every
# method, alternating, best median kept; default 2).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/build/dualpipe"
[ -x "$bin" ] || bash "$root/scripts/build.sh" >/dev/null
out="${1:-$root/docs/BENCHMARKS.md}"
steps="${STEPS:-3}"
rounds="${ROUNDS:-2}"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT

# The model of the performance issue: mlp h=512, seq 256, micro-batch size 3,
# N=20 on P=2 ranks. V-shaped schedules run 4 half-size stages (ffn 2h
# instead of 4h), the same model cut twice as fine.
model=(--model mlp --hidden 512 --seq-len 256 --micro-batch-size 3)
run() {  # name, then dualpipe bench arguments
  local name="$1"
  shift
  echo "benchmarks: $name" >&2
  "$bin" bench "$@" --format json >"$dir/$name.json"
}
for ((k = 1; k <= rounds; ++k)); do
  for m in dualpipe 1f1b zb1p gpipe chimera; do
    run "$m.$k" -m "$m" -p 2 -n 20 "${model[@]}" --steps "$steps"
  done
  for m in dualpipev zbv; do
    run "$m.$k" -m "$m" -p 2 -n 20 "${model[@]}" --ffn 1024 --steps "$steps"
  done
done
# The overhead model: so small that the runtime, not the arithmetic, is what
# a step costs.
# What one cross-thread wake-up costs here: the floor under every transfer.
if [ -x "$root/build/bench/wakeup_latency" ]; then
  echo "benchmarks: wakeup_latency" >&2
  "$root/build/bench/wakeup_latency" >"$dir/wakeup_latency.out"
fi
# Each with the ranks' default SCHED_BATCH policy and with --sched normal,
# alternating, to show what the scheduling policy moves.
tiny=(-m dualpipe -p 2 -n 20 --model mlp --hidden 64 --seq-len 16 --micro-batch-size 1 --steps 50)
for ((k = 1; k <= rounds + 1; ++k)); do
  run "tiny.$k" "${tiny[@]}"
  run "tiny-normal.$k" "${tiny[@]}" --sched normal
done
for ((k = 1; k <= rounds; ++k)); do
  run "dualpipe-normal.$k" -m dualpipe -p 2 -n 20 "${model[@]}" --steps "$steps" --sched normal
done

# Into a temporary file first: redirecting into $out would truncate it
# before the report looks at `git status`, and mark a clean tree as changed.
python3 "$root/scripts/benchmarks_report.py" "$dir" "$("$bin" --version 2>/dev/null | head -1)" >"$dir/report.md"
# Start-up of the command line: schedule commands without LibTorch, LibTorch ones through dualpipe-torch.
{
  printf '\n## Start-up\n\n'
  printf 'Wall time of one `dualpipe` call, from spawn to exit, output discarded (`scripts/bench_startup.py`, '
  printf 'median of 30 runs, fastest in brackets). Schedule commands run without LibTorch; `train --help` '
  printf 'and `verify --help` exec dualpipe-torch, which loads it (docs/library.md).\n\n'
  python3 "$root/scripts/bench_startup.py" "dualpipe=$bin"
} >>"$dir/report.md"
mv "$dir/report.md" "$out"
echo "wrote $out" >&2
