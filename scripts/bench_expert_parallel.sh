#!/usr/bin/env bash
# Expert-parallel benchmark on the emulated cluster (needs root): a small MoE
# model on P=2 pipeline ranks x E=2 expert ranks, the expert ranks of each
# stage on different emulated hosts, every host link limited to RATE
# (default auto, below: the rate at which a chunk's two all-to-alls take
# about as long as its forward compute, DeepSeek-V3's 1:1; about 800mbit on
# the 2-core development machine and on a 16-core machine alike). Runs
# 1F1B (weight gradients inline, the baseline; and filling its waits, the
# default), ZB1P, DualPipe with --fb-overlap off and on (and on with weight
# gradients inline, --fill-waits off; and on with its warm-up forwards
# paired, --pair-forwards on), DualPipeV, combined 1F1B (interleaved, V=2,
# F&B pairs in its steady state), and DualPipe on and paired on a 100gbit
# link (unlimited: the CPU sets the pace), and prints one table: exposed all-to-all time per rank, the share hidden
# against 1F1B, step times, measured against simulated; then, per method, the
# expert peers' exchanges of the last step (scripts/lane_report.py).
#   scripts/bench_expert_parallel.sh [RATE|auto]   (results in build/ep-bench/)
#   MODEL=deepseek scripts/bench_expert_parallel.sh  (the small DeepSeek-V3; build/ep-bench-deepseek/)
# auto: the first probe at 1gbit (DualPipe; 1F1B with DEVICE=0) measures the
# bytes of its all-to-alls and the forward compute of a chunk, and the rate
# is set so that the wire time of a chunk's phases equals its forward compute
# (the ratio depends on the machine's cores, so a fixed rate is 1:1 on one
# machine only). With device emulation every run takes its piece costs from
# the probes (bench --calibration), so all compare at one device speed.
# HOSTS (default 4): emulated hosts. With 4, every rank has a host and a link
# of its own, as every GPU of a DeepSeek-V3 node has its own network card;
# with 2, the two ranks of a pipeline share a host and its link (link-bound:
# docs/BENCHMARKS_EP.md).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rate="${1:-auto}"
bin="$root/build/dualpipe"
out="$root/build/ep-bench${MODEL:+-$MODEL}${LAYERS:+-l$LAYERS}"
mkdir -p "$out"
# DEVICE (default 4): --emulate-device K, every compute piece lasting K times
# its calibrated CPU time, so that 4 ranks on 2 cores measure what 4 devices
# would; DEVICE=0 runs real compute (needs a core per rank to mean anything).
device=()
if [ "${DEVICE:-4}" != 0 ]; then device=(--emulate-device "${DEVICE:-4}"); fi
# MODEL (default moe): moe, the small MoE (4 experts, top-2); or deepseek, the
# small DeepSeek-V3 (latent attention, 8 fine-grained experts of width 64,
# top-2 within one host of two, a shared expert, MTP), every block MoE.
case "${MODEL:-moe}" in
  moe) arch=(--model moe) ;;
  deepseek) arch=(--model deepseek --experts 8 --top-k 2 --dense-layers 0) ;;
  *) echo "MODEL must be moe or deepseek (got '${MODEL}')" >&2; exit 2 ;;
esac
# LAYERS (default 2): blocks of the model. With 2, the V-shaped methods
# (DualPipeV, combined 1F1B) cut it into four virtual stages of which two
# hold no block; LAYERS=4 gives each a block (results in build/ep-bench-l4/).
model=("${arch[@]}" --ep 2 --hidden 128 --seq-len 64 --micro-batch-size 4 --layers "${LAYERS:-2}" --steps "${STEPS:-5}" --format json
       --emulate-hosts "${HOSTS:-4}" -p 2 -n "${N:-16}" "${device[@]}")
run() {  # name, extra arguments
  local name=$1; shift
  echo "running $name ..." >&2
  rm -rf "$out/lanes/$name"
  "$bin" bench "${model[@]}" "$@" --lane-records "$out/lanes/$name" > "$out/$name.json"
}
# One device speed for every run: the emulated cost of each compute piece
# comes from probes at 1gbit (a piece's CPU time, measured with 4 ranks on 2
# cores, moved by 30-50% from run to run, and with it the compute the runs
# were compared at). The P-stage methods share the cut of DualPipe's probe
# (its F, B, I of stage 0 and W pieces; ZB1P's probe adds the I of stage 1);
# the V-shaped ones (four virtual stages) that of DualPipeV's; the runs with
# weight gradients inline (a B piece then holds its W) those of DualPipe's
# probe with --fill-waits off.
cal=() cal_v=() cal_inline=()
if [ "${DEVICE:-4}" != 0 ]; then
  run probe -m dualpipe --link-rate 1gbit
  run probe_zb1p -m zb1p --link-rate 1gbit
  run probe_v -m dualpipev --link-rate 1gbit
  run probe_inline -m dualpipe --link-rate 1gbit --fill-waits off
  report="$root/scripts/bench_expert_parallel_report.py"
  python3 "$report" --merge-calibrations "$out/calibration.json" "$out/probe.json" "$out/probe_zb1p.json"
  python3 "$report" --merge-calibrations "$out/calibration_v.json" "$out/probe_v.json"
  python3 "$report" --merge-calibrations "$out/calibration_inline.json" "$out/probe_inline.json"
  cal=(--calibration "$out/calibration.json")
  cal_v=(--calibration "$out/calibration_v.json")
  cal_inline=(--calibration "$out/calibration_inline.json")
else
  run probe -m 1f1b --link-rate 1gbit
fi
if [ "$rate" = auto ]; then
  rate=$(python3 "$root/scripts/bench_expert_parallel_report.py" --rate-for-1to1 "$out/probe.json" 1000)
  echo "auto: link rate $rate (a chunk's all-to-all phases = its forward compute)" >&2
fi
# The baseline: 1F1B as it has always run, every all-to-all exposed; then
# 1F1B with its backwards' weight gradients filling their waits (the default).
run 1f1b -m 1f1b --link-rate "$rate" --fill-waits off "${cal_inline[@]}"
run 1f1b_fill -m 1f1b --link-rate "$rate" "${cal[@]}"
run zb1p -m zb1p --link-rate "$rate" "${cal[@]}"
run dualpipe_off -m dualpipe --link-rate "$rate" --fb-overlap off "${cal[@]}"
run dualpipe_on -m dualpipe --link-rate "$rate" "${cal[@]}"
run dualpipe_on_inline -m dualpipe --link-rate "$rate" --fill-waits off "${cal_inline[@]}"
run dualpipe_paired -m dualpipe --link-rate "$rate" --pair-forwards on "${cal[@]}"
run dualpipev -m dualpipev --link-rate "$rate" "${cal_v[@]}"
run combined_1f1b -m combined-1f1b --chunks 2 --link-rate "$rate" "${cal_v[@]}"
run dualpipe_on_unlimited -m dualpipe --link-rate 100gbit "${cal[@]}"
run dualpipe_paired_unlimited -m dualpipe --link-rate 100gbit --pair-forwards on "${cal[@]}"
python3 "$root/scripts/bench_expert_parallel_report.py" "$out" "$rate"
# Expert peers side by side in the last step (bench --lane-records): how far
# apart they posted each exchange and what it took beyond its wire time.
for name in 1f1b dualpipe_off dualpipe_on dualpipe_paired dualpipev combined_1f1b; do
  echo; echo "$name: expert peers' all-to-alls, last step"
  python3 "$root/scripts/lane_report.py" "$out/lanes/$name" --link-rate "$rate"
done
