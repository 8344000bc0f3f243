#!/usr/bin/env python3
"""Table of scripts/bench_expert_parallel.sh's JSON files (see that script)."""
import json
import os
import sys

def load(path):
    text = open(path).read()
    return json.loads(text[text.index("{"):])  # the mesh layout lines come first


if sys.argv[1] == "--rate-for-1to1":
    # From a 1F1B run at RATE Mbit/s: the rate at which one chunk's all-to-all
    # phases take as long as its forward compute. A rank's compute in the
    # last step is N forwards and N backwards (a backward about two
    # forwards); a MoE block has two phases (dispatch, combine).
    d, mbit = load(sys.argv[2]), float(sys.argv[3])
    forward = sum(r["last_step_compute_s"] for r in d["per_rank"]) / len(d["per_rank"]) / (3 * d["micro_batches"])
    blocks = 1  # per stage: the benchmark's --layers 2 over P=2
    phases = 2 * blocks * d["a2a_phase_s"]
    print(f"{max(1, round(mbit * phases / forward))}mbit")
    sys.exit(0)

out, rate = sys.argv[1], sys.argv[2]
runs = ["1f1b", "zb1p", "dualpipe_off", "dualpipe_on", "dualpipev", "dualpipe_on_unlimited"]
data = {}
for name in runs:
    path = os.path.join(out, name + ".json")
    data[name] = load(path)


def exposed(d):
    """Mean over the first pipeline's ranks of the idle time waiting for all-to-alls (last step)."""
    ranks = d["per_rank"]
    return sum(r["exposed_comm_s"]["all_to_all"] for r in ranks) / len(ranks)


def sim_exposed(d):
    ranks = d["per_rank"]
    return sum(r.get("simulated_exposed_a2a_s", 0.0) for r in ranks) / len(ranks)


base = exposed(data["1f1b"])
print(f"link rate {rate}; one all-to-all phase {1e3 * data['1f1b']['a2a_phase_s']:.2f} ms (1f1b run)")
print(f"{'run':<20}{'step s':>9}{'pipeline s':>12}{'simulated s':>13}{'meas/sim':>10}"
      f"{'exposed a2a s':>15}{'sim exposed':>13}{'hidden vs 1f1b':>16}")
for name in runs:
    d = data[name]
    e = exposed(d)
    sim = d["simulated_with_a2a_s"]
    hidden = 1 - e / base if base > 0 else 0.0
    print(f"{name:<20}{d['median_step_s']:>9.4f}{d['median_pipeline_s']:>12.4f}{sim:>13.4f}"
          f"{d['median_pipeline_s'] / sim if sim > 0 else 0:>10.3f}{e:>15.4f}{sim_exposed(d):>13.4f}{hidden:>15.1%}")
on, fast = data["dualpipe_on"]["median_step_s"], data["dualpipe_on_unlimited"]["median_step_s"]
print(f"dualpipe with overlap: step at {rate} / step with an unlimited link (100gbit) = {on / fast:.3f}")
