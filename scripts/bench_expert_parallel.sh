#!/usr/bin/env bash
# Expert-parallel benchmark on the emulated cluster (needs root): a small MoE
# model on P=2 pipeline ranks x E=2 expert ranks, the expert ranks of each
# stage on different emulated hosts, every host link limited to RATE
# (default 800mbit: one all-to-all phase about half a forward chunk's
# compute, so a chunk's two all-to-alls take about as long as its compute,
# DeepSeek-V3's 1:1). Runs 1F1B, ZB1P, DualPipe with --fb-overlap off and on,
# DualPipeV, and DualPipe on a 100gbit link (unlimited: the CPU sets the pace), and
# prints one table: exposed all-to-all time per rank, the share hidden
# against 1F1B, step times, measured against simulated.
#   scripts/bench_expert_parallel.sh [RATE]        (results in build/ep-bench/)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rate="${1:-800mbit}"
bin="$root/build/dualpipe"
out="$root/build/ep-bench"
mkdir -p "$out"
model=(--model moe --ep 2 --hidden 128 --seq-len 64 --micro-batch-size 4 --layers 2 --steps 3 --format json
       --emulate-hosts 2 -p 2 -n "${N:-16}")
run() {  # name, extra arguments
  local name=$1; shift
  echo "running $name ..." >&2
  "$bin" bench "${model[@]}" "$@" > "$out/$name.json"
}
run 1f1b -m 1f1b --link-rate "$rate"
run zb1p -m zb1p --link-rate "$rate"
run dualpipe_off -m dualpipe --link-rate "$rate" --fb-overlap off
run dualpipe_on -m dualpipe --link-rate "$rate"
run dualpipev -m dualpipev --link-rate "$rate"
run dualpipe_on_unlimited -m dualpipe --link-rate 100gbit
python3 "$root/scripts/bench_expert_parallel_report.py" "$out" "$rate"
