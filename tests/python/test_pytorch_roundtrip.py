#!/usr/bin/env python3
"""Our schedules, run by PyTorch's own pipelining runtime, train like the unpipelined model.

    test_pytorch_roundtrip.py BUILD_DIR

Every method PyTorch's format can express (one rank per stage: GPipe, 1F1B,
interleaved 1F1B, ZB1P, ZBV, DualPipeV) and schedules `dualpipe search` found
for those placements are exported with `dualpipe schedule/search ... csv`,
loaded into `_PipelineScheduleRuntime` (Gloo on the CPU, one process per
rank, 2 and 4 ranks) and run for one step of a float64 mlp split into the
schedule's stages: every loss and every stage's gradient must equal the
unpipelined model's to rounding. DualPipe and Chimera hold every stage on two
ranks, which PyTorch's stage-to-rank mapping cannot express: PyTorch must
refuse them (a stage assigned to two ranks), and does. Our lowered form
(--with-comm) has no WAIT_SEND actions, which PyTorch 2.x's lowered format
requires: refused too. The same check on a model whose stage 0 was changed in
the pipeline only must see the difference. A CSV whose stage count is not the
model's is bad input: one line, exit 2.

Exit 0 when all hold, 1 otherwise, 77 (skipped) without PyTorch 2.x."""

import os
import subprocess
import sys
import tempfile

from torch_env import require_torch2, stand_in

# (name, ranks, dualpipe arguments writing the CSV to {out}); one stage per
# rank unless the method's placement has two (interleaved: --chunks 2).
CASES = [
    ("gpipe", 2, "schedule -m gpipe -p 2 -n 4 --format csv -o {out}"),
    ("1f1b", 2, "schedule -m 1f1b -p 2 -n 6 --format csv -o {out}"),
    ("interleaved-1f1b", 2, "schedule -m interleaved-1f1b -p 2 -n 4 --chunks 2 --format csv -o {out}"),
    ("zb1p", 2, "schedule -m zb1p -p 2 -n 6 --format csv -o {out}"),
    ("zbv", 2, "schedule -m zbv -p 2 -n 6 --format csv -o {out}"),
    ("dualpipev", 2, "schedule -m dualpipev -p 2 -n 6 --format csv -o {out}"),
    ("search (zb1p placement)", 2,
     "search -p 2 -n 6 --cost F=1:1.5,B=2:3,W=1:1.5 --from-method zb1p --iterations 300 --csv {out}"),
    ("search (V placement)", 2,
     "search -p 2 -n 6 --cost F=1,B=2,W=1,FB=2.5 --stages 4 --from-method dualpipev --iterations 300 --csv {out}"),
    ("1f1b", 4, "schedule -m 1f1b -p 4 -n 8 --format csv -o {out}"),
    ("interleaved-1f1b", 4, "schedule -m interleaved-1f1b -p 4 -n 8 --chunks 2 --format csv -o {out}"),
    ("zb1p", 4, "schedule -m zb1p -p 4 -n 8 --format csv -o {out}"),
    ("zbv", 4, "schedule -m zbv -p 4 -n 8 --format csv -o {out}"),
    ("dualpipev", 4, "schedule -m dualpipev -p 4 -n 8 --format csv -o {out}"),
    ("search (zb1p placement)", 4,
     "search -p 4 -n 8 --cost F=1:1:1:1.5,B=2:2:2:3,W=1:1:1:1.5 --from-method zb1p --iterations 300 --csv {out}"),
]
# Two replicas of every stage: valid for us, not expressible in PyTorch.
TWO_RANKS_PER_STAGE = [
    ("dualpipe", 2, "schedule -m dualpipe -p 2 -n 4 --format csv -o {out}"),
    ("chimera", 2, "schedule -m chimera -p 2 -n 4 --format csv -o {out}"),
]


def export(dualpipe: str, args: str, out: str) -> None:
    cmd = [dualpipe] + args.format(out=out).split()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not os.path.getsize(out):
        raise SystemExit(f"FAIL: {' '.join(cmd)}: exit {done.returncode}: {done.stderr.strip()}")


def lowered_refused(dualpipe: str, tmp: str) -> list[str]:
    """Our lowered form (--with-comm) has sends without PyTorch 2.x's WAIT_SEND_F/B: its loader refuses it.

    No processes: the loader reads only the shape of rank 0's stage."""
    from torch.distributed.pipelining.schedules import _PipelineScheduleRuntime

    out = os.path.join(tmp, "lowered.csv")
    export(dualpipe, "schedule -m 1f1b -p 2 -n 4 --with-comm --format csv -o {out}", out)
    try:
        _PipelineScheduleRuntime([stand_in(2, 2, 0)], 4)._load_csv(out, format="compute_comms")
    except ValueError as e:
        if "no matching wait" in str(e):
            print(f"ok    1f1b lowered with --with-comm, P=2: refused by PyTorch (compute_comms): {e}")
            return []
        return [f"lowered schedule: refused for another reason: {e}"]
    return ["lowered schedule: PyTorch now accepts sends without waits; docs/pytorch.md says it refuses them"]


RUNNER = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "scripts",
                      "pytorch_pipeline.py")


def refused_in_one_line(what: str, args: list[str], want: str) -> list[str]:
    """The runner refuses bad input with one line naming `want` and exit 2."""
    done = subprocess.run([sys.executable, RUNNER] + args, capture_output=True, text=True)
    lines = done.stderr.strip().splitlines()
    if done.returncode != 2 or len(lines) != 1 or want not in lines[0]:
        return [f"{what}: exit {done.returncode}, stderr {done.stderr.strip()!r} (wanted one line naming: {want})"]
    print(f"ok    bad input ({what}): exit 2, {lines[0]}")
    return []


def bad_stage_count(path: str) -> list[str]:
    """A schedule whose stage count is not the model's."""
    return refused_in_one_line("stage count", [path, "--stages", "3"],
                               "the schedule has 2 stages (0-1) but the model has 3")


def forward_pairs_refused(dualpipe: str, tmp: str) -> list[str]:
    """dualpipe's F&F pairs (--pair-forwards on) are not PyTorch's: refused by name, not as garbage."""
    out = os.path.join(tmp, "paired.csv")
    export(dualpipe, "schedule -m 1f1b -p 2 -n 4 --pair-forwards on --format csv -o {out}", out)
    return refused_in_one_line("F&F pairs", [out], "dualpipe's F&F pair, which PyTorch's runtime does not run")


def main() -> int:
    build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
    require_torch2(build)
    import pytorch_pipeline as pp

    dualpipe = os.path.join(build, "dualpipe")
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="dualpipe-roundtrip-") as tmp:
        jobs: dict[int, list] = {}
        expect_refusal = set()
        for i, (name, ranks, args) in enumerate(CASES + TWO_RANKS_PER_STAGE):
            out = os.path.join(tmp, f"{i}.csv")
            export(dualpipe, args, out)
            label = f"{name}, P={ranks}"
            jobs.setdefault(ranks, []).append(pp.Job(label, out))
            if i >= len(CASES):
                expect_refusal.add(label)
        # The comparison can fail: stage 0's weights shifted in the pipeline only.
        skewed = pp.Job("1f1b with stage 0 changed, P=2", jobs[2][1].csv_path, skew=1e-6)
        jobs[2].append(skewed)
        for ranks, group in sorted(jobs.items()):
            results = pp.run_jobs(group, ranks, timeout_s=60)
            for job in group:
                s = pp.read_schedule(job.csv_path)
                shape = f"{job.name}: {s.stages} stages, {s.micro_batches} micro-batches"
                per_rank = results[job.name]
                if job.name in expect_refusal:
                    reasons = [r.get("reason", "") for r in per_rank]
                    refused = all(r["status"] == pp.REFUSED for r in per_rank) and any(
                        "is assigned to both rank" in x for x in reasons)
                    print(f"{'ok  ' if refused else 'FAIL'}  {shape}: refused by PyTorch: {reasons[0]}")
                    if not refused:
                        failures.append(f"{job.name}: expected PyTorch to refuse a stage on two ranks, got {per_rank}")
                    continue
                ok, summary = pp.verdict(per_rank)
                if job is skewed:
                    print(f"{'ok  ' if not ok else 'FAIL'}  {shape}: seen as different: {summary}")
                    if ok:
                        failures.append(f"{job.name}: a changed model passed the comparison")
                    continue
                print(f"{'ok  ' if ok else 'FAIL'}  {shape}: {summary}", flush=True)
                if not ok:
                    failures.append(f"{job.name}: {summary}")
        failures += lowered_refused(dualpipe, tmp)
        failures += bad_stage_count(jobs[2][1].csv_path)
        failures += forward_pairs_refused(dualpipe, tmp)
    for f in failures:
        print(f"FAIL: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
