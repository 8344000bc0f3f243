#!/usr/bin/env python3
"""Times one model and one schedule in both runtimes: ours (`dualpipe bench`) and PyTorch's.

    build/venv/bin/python scripts/bench_pytorch.py [--rounds 3] [--steps 5] [--build build]

For each model (a tiny mlp, where the runtimes' own overhead is the step, and
a compute-dominated one) and each schedule (1F1B, ZB1P, DualPipeV; DualPipeV
again with our F&B overlap on) at P=2, N=16, float32, one intra-op thread per
rank: the schedule is exported once as CSV; then, round after round, our
runtime runs it (`dualpipe bench --from CSV --format json`, ranks as
processes) and PyTorch's `_PipelineScheduleRuntime` runs the same CSV on the
same mlp rebuilt in Python (scripts/pytorch_pipeline.py, Gloo, one process per
rank). Each round's step is the median of --steps steps after a warm-up one.
Prints, per model and schedule, the median over rounds of each runtime's step,
the ratio ours / PyTorch, and each runtime's overhead per action: (step - the
model's own compute with no pipeline, the rank's share, measured by the same
runtime's kernels) / compute actions of the busiest rank (an F&B pair counts as two). Goals: ours <= 0.5x
PyTorch's step on the tiny model, <= 0.9x on the compute-dominated one.
--json FILE writes every round. A benchmark, not a test: run it on a quiet machine.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pytorch_pipeline as pp  # noqa: E402

MODELS = {
    # name: (hidden, seq_len, micro_batch_size, goal for ours / PyTorch)
    "tiny": (16, 4, 1, 0.5),
    "compute": (256, 128, 2, 0.9),
}
SCHEDULES = [
    # name, method, our bench's extra options
    ("1f1b", "1f1b", []),
    ("zb1p", "zb1p", []),
    ("dualpipev", "dualpipev", []),
    ("dualpipev+overlap", "dualpipev", ["--fb-overlap", "on"]),
]


def ours(build, csv_path, model, extra, steps):
    hidden, seq, mbs, _ = MODELS[model]
    cmd = [os.path.join(build, "dualpipe"), "bench", "--from", csv_path, "--model", "mlp", "--dtype", "float32",
           "--hidden", str(hidden), "--seq-len", str(seq), "--micro-batch-size", str(mbs),
           "--intra-op-threads", "1", "--steps", str(steps), "--format", "json"] + extra
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr.strip()}")
    j = json.loads(done.stdout)
    overhead = j["overhead_per_action_us"]
    if overhead is None:  # bench withholds it where unreliable; formed as PyTorch's side is, for the table
        actions = max(r["compute_actions"] for r in j["per_rank"])
        overhead = (j["median_step_s"] - j["compute_s"]) / actions * 1e6
    return {"step_s": j["median_step_s"], "overhead_us": overhead, "compute_s": j["compute_s"]}


def theirs(jobs, ranks, rows_of):
    results = pp.run_jobs(jobs, ranks, timeout_s=120)
    out = {}
    for job in jobs:
        per_rank = results[job.name]
        bad = [r for r in per_rank if r["status"] != "ok"]
        if bad:
            raise SystemExit(f"PyTorch runtime, {job.name}: {bad[0]['status']}: {bad[0].get('reason')}")
        steps = [max(r["step_times"][k] for r in per_rank) for k in range(1, job.steps)]  # the first is warm-up
        step = statistics.median(steps)
        compute = max(r["compute_s"] for r in per_rank)
        actions = max(rows_of[job.name])
        out[job.name] = {"step_s": step, "overhead_us": (step - compute) / actions * 1e6, "compute_s": compute}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round (after one warm-up)")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--micro-batches", type=int, default=16)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--json", help="write every round here")
    ap.add_argument("--report", metavar="JSON", help="only print the table of an earlier run's --json file")
    args = ap.parse_args()
    if args.report:
        report_file(args.report)
        return
    rounds = {}
    with tempfile.TemporaryDirectory(prefix="dualpipe-bench-pt-") as tmp:
        csvs, rows_of = {}, {}
        for name, method, _ in SCHEDULES:
            path = os.path.join(tmp, f"{method}.csv")
            subprocess.run([os.path.join(args.build, "dualpipe"), "schedule", "-m", method, "-p", str(args.ranks),
                            "-n", str(args.micro_batches), "--format", "csv", "-o", path], check=True)
            csvs[name] = path
            # Compute actions per rank, an F&B pair counted as two (as `dualpipe bench` counts them).
            rows_of[name] = [len(r) + sum("OVERLAP_F_B" in c for c in r) for r in pp.read_schedule(path).rows]
        for model in args.models.split(","):
            hidden, seq, mbs, _ = MODELS[model]
            jobs = [pp.Job(name, csvs[name], hidden, mbs, dtype="float32", steps=args.steps + 1, seq_len=seq)
                    for name, _, extra in SCHEDULES if not extra]
            for r in range(args.rounds):
                ours_r = {name: ours(args.build, csvs[name], model, extra, args.steps) for name, _, extra in SCHEDULES}
                theirs_r = theirs(jobs, args.ranks, rows_of)
                theirs_r["dualpipev+overlap"] = theirs_r["dualpipev"]  # PyTorch runs a pair's halves in turn
                for name in ours_r:
                    rounds.setdefault((model, name), []).append({"ours": ours_r[name], "pytorch": theirs_r[name]})
                print(f"{model}: round {r + 1} of {args.rounds} done", file=sys.stderr, flush=True)
    report(rounds)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"{m}/{s}": v for (m, s), v in rounds.items()}, f, indent=1)


def report(rounds):
    """One row per model and schedule: medians over the rounds."""
    print("| model | schedule | ours step ms | PyTorch step ms | ours / PyTorch (each round) | goal "
          "| step / own compute: ours, PyTorch | us per action: ours, PyTorch |")
    print("|---|---|---|---|---|---|---|---|")
    for (model, name), rs in rounds.items():
        def med(side, key):
            return statistics.median(r[side][key] for r in rs)

        def per_compute(side):
            return statistics.median(r[side]["step_s"] / r[side]["compute_s"] for r in rs)

        ratios = [r["ours"]["step_s"] / r["pytorch"]["step_s"] for r in rs]
        ratio, goal = statistics.median(ratios), MODELS[model][3]
        print(f"| {model} | {name} | {med('ours', 'step_s') * 1e3:.1f} | {med('pytorch', 'step_s') * 1e3:.1f} "
              f"| {ratio:.2f} ({', '.join(f'{x:.2f}' for x in ratios)}) | <= {goal}: {'met' if ratio <= goal else 'NOT met'} "
              f"| {per_compute('ours'):.2f}, {per_compute('pytorch'):.2f} "
              f"| {med('ours', 'overhead_us'):.0f}, {med('pytorch', 'overhead_us'):.0f} |")


def report_file(path):
    """The table again from a --json file of an earlier run."""
    with open(path) as f:
        saved = json.load(f)
    report({tuple(k.split("/", 1)): v for k, v in saved.items()})


if __name__ == "__main__":
    main()
