#!/usr/bin/env python3
"""Table of scripts/bench_expert_parallel.sh's JSON files (see that script)."""
import json
import os
import sys

def load(path):
    return json.load(open(path))  # stdout holds the one JSON document


if sys.argv[1] == "--merge-calibrations":
    # OUT IN...: one calibration for several runs (bench --calibration): every
    # piece of the inputs, the first file's cost where several have it, and
    # the model, stage count, --ep and --fill-waits they share (bench checks them).
    merged, inputs = {}, None
    for path in sys.argv[3:]:
        d = load(path)
        run = {k: d[k] for k in ("model", "stages", "ep", "fill_waits")}
        if inputs is not None and run != inputs:
            sys.exit(f"--merge-calibrations: {path} was measured on another model, stage count, --ep or --fill-waits")
        inputs = run
        for c in d["calibration"]:
            merged.setdefault((c["op"], c["stage"], c["piece"]), c)
    with open(sys.argv[2], "w") as f:
        json.dump(dict(inputs, calibration=[merged[k] for k in sorted(merged)]), f, indent=1)
    sys.exit(0)

if sys.argv[1] == "--rate-for-1to1":
    # From a run at RATE Mbit/s: the rate at which one chunk's all-to-all
    # phases take as long as its forward compute. A rank's compute in the
    # last step is N forwards and N backwards (a backward about two
    # forwards); a MoE block has two phases (dispatch, combine).
    d, mbit = load(sys.argv[2]), float(sys.argv[3])
    if d.get("emulate_device", 0) > 0:
        # The emulated forward of a chunk: K x its calibrated pieces, averaged over the stages.
        k = d["emulate_device"]
        fwd = [c["cpu_s"] for c in d["calibration"] if c["op"] == "F"]
        forward = k * sum(fwd) / d["stages"]
    else:
        forward = sum(r["last_step_compute_s"] for r in d["per_rank"]) / len(d["per_rank"]) / (3 * d["micro_batches"])
    blocks = d["model"]["layers"] / d["stages"]  # MoE blocks a stage (every block is MoE)
    if d.get("a2a_link_bytes_mean", 0) > 0:
        # From the bytes the run's exchanges carried: the rate at which their
        # wire time equals the forward. (Scaling the phase timed at RATE
        # also scaled its fixed per-exchange cost, and the 1:1 rate moved
        # with that timing's noise: 54 and 71 Mbit/s in two probes.)
        bits = 2 * blocks * d["a2a_link_bytes_mean"] * 8
        print(f"{max(1, round(bits / forward / 1e6))}mbit")
    else:
        phases = 2 * blocks * d["a2a_phase_s"]
        print(f"{max(1, round(mbit * phases / forward))}mbit")
    sys.exit(0)

out, rate = sys.argv[1], sys.argv[2]
runs = ["1f1b", "1f1b_fill", "zb1p", "dualpipe_off", "dualpipe_on", "dualpipe_on_inline", "dualpipe_paired", "dualpipev",
        "combined_1f1b", "dualpipe_on_unlimited", "dualpipe_paired_unlimited"]
data = {}
for name in runs:
    path = os.path.join(out, name + ".json")
    if os.path.exists(path):
        data[name] = load(path)
runs = [r for r in runs if r in data]


def exposed(d):
    """Mean over the first pipeline's ranks of the time nothing computed while
    the rank waited for an all-to-all (its link time and its peer's lateness;
    per rank the median over the timed steps)."""
    ranks = d["per_rank"]
    return sum(r["exposed_comm_s"]["all_to_all"] + r["exposed_comm_s"]["peer_wait"] for r in ranks) / len(ranks)


def split(d, key):
    ranks = d["per_rank"]
    return sum(r["exposed_comm_s"][key] for r in ranks) / len(ranks)


def sim_exposed(d):
    ranks = d["per_rank"]
    return sum(r.get("simulated_exposed_a2a_s", 0.0) for r in ranks) / len(ranks)


def ratio(d, key):
    """Measured pipeline time over a simulated one (0 where the run has none)."""
    sim = d.get(key, 0.0)
    return d["median_pipeline_s"] / sim if sim > 0 else 0.0


base = exposed(data["1f1b"])
sim_base = sim_exposed(data["1f1b"])
one = data["1f1b"]
print(f"link rate {rate}; one all-to-all phase {1e3 * one['a2a_phase_s']:.2f} ms with every token's copies spread "
      f"evenly, {1e3 * one.get('simulated_a2a_phase_s', one['a2a_phase_s']):.2f} ms as the run's tokens went "
      f"(the simulator's; 1f1b run)")
k = data["1f1b"].get("emulate_device", 0)
print(f"device emulation: {'x%g' % k if k else 'off'}; medians over the timed steps, means over ranks")
print(f"{'run':<27}{'step s':>9}{'pipeline s':>12}{'simulated s':>13}{'meas/sim':>10}"
      f"{'exposed a2a s':>15}{'sim exposed':>13}{'hidden vs 1f1b':>16}{'sim hidden':>12}{'peer s':>9}{'handover s':>12}{'pipe s':>9}"
      f"{'m/s fifo':>9}{'m/s shared':>11}{'m/s apart':>10}{'W in waits s':>14}")
for name in runs:
    d = data[name]
    e = exposed(d)
    sim = d["simulated_with_a2a_s"]
    hidden = 1 - e / base if base > 0 else 0.0
    sim_hidden = 1 - sim_exposed(d) / sim_base if sim_base > 0 else 0.0
    print(f"{name:<27}{d['median_step_s']:>9.4f}{d['median_pipeline_s']:>12.4f}{sim:>13.4f}"
          f"{d['median_pipeline_s'] / sim if sim > 0 else 0:>10.3f}{e:>15.4f}{sim_exposed(d):>13.4f}{hidden:>15.1%}{sim_hidden:>11.1%}"
          f"{split(d, 'peer_wait'):>9.4f}{split(d, 'handover'):>12.4f}{split(d, 'pipeline'):>9.4f}"
          f"{ratio(d, 'simulated_upload_only_s'):>9.3f}{ratio(d, 'simulated_shared_link_s'):>11.3f}{ratio(d, 'simulated_transfers_apart_s'):>10.3f}"
          f"{split(d, 'filled_by_weight_work') if 'filled_by_weight_work' in d['per_rank'][0]['exposed_comm_s'] else 0:>14.4f}")
for name, words in (("dualpipe_on", "dualpipe with overlap"), ("dualpipe_paired", "dualpipe, forwards paired")):
    if name in data and name + "_unlimited" in data:
        on, fast = data[name], data[name + "_unlimited"]
        print(f"{words}: step at {rate} / step with an unlimited link (100gbit) = "
              f"{on['median_step_s'] / fast['median_step_s']:.3f} (pipeline part alone "
              f"{on['median_pipeline_s'] / fast['median_pipeline_s']:.3f}; the simulator "
              f"{on['simulated_with_a2a_s'] / fast['simulated_with_a2a_s']:.3f})")
