#!/usr/bin/env python3
"""Runs a dualpipe schedule (its action CSV) in PyTorch's own pipelining runtime.

    python scripts/pytorch_pipeline.py SCHEDULE.csv [--hidden 8] [--stages S] [--timeout 60]

loads the CSV that `dualpipe schedule ... --format csv` (or `dualpipe search
--csv`) writes into `torch.distributed.pipelining`'s `_PipelineScheduleRuntime`,
one process per CSV row (rank), Gloo over loopback on the CPU, and runs one
training step of a small float64 model of S stages (each Linear(h, 4h, no bias)
-> GELU -> Linear(4h, h, no bias), an MSE loss on the last): every stage
index of the CSV is one stage of the model. The losses and the gradients of
every stage are compared with the same model run unpipelined (micro-batch
after micro-batch on one process); it prints one line per rank and exits 0 when
they are equal to rounding, 1 when they differ or PyTorch refuses or stalls on
the schedule, 2 on bad input (one line on stderr).

The same functions serve tests/python/test_pytorch_roundtrip.py (many
schedules in one set of processes) and scripts/bench_pytorch.py (timing).
Needs PyTorch 2.x (scripts/torch_venv.sh installs it into build/venv).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from datetime import timedelta

# What a rank reports for a schedule it could not run to the end.
STALLED = "stalled"  # a receive waited out the timeout: PyTorch's order deadlocks
REFUSED = "refused"  # PyTorch rejected the schedule before running it
FAILED = "failed"  # anything else raised while running

COMPUTE_OPS = ("F", "B", "I", "W", "OVERLAP_F_B")


class ScheduleError(Exception):
    """Bad input: the message is the one line a user sees."""


@dataclass
class Job:
    """One schedule to run: its CSV and the model it is run on."""

    name: str
    csv_path: str
    hidden: int = 8
    micro_batch_size: int = 2
    seq_len: int = 1
    stages: int | None = None  # the model's stage count; None: the CSV's
    dtype: str = "float64"
    steps: int = 1  # timed steps after the first (bench); 1 for the check
    skew: float = 0.0  # added to the pipelined stage 0's weights only: a check that must then fail


@dataclass
class Schedule:
    rows: list[list[str]]
    ranks: int
    stages: int
    micro_batches: int
    stages_of_rank: list[list[int]] = field(default_factory=list)


def read_schedule(path: str) -> Schedule:
    """Reads and sizes a CSV of PyTorch action strings; raises ScheduleError."""
    from torch.distributed.pipelining.schedules import _Action

    try:
        with open(path, newline="") as f:
            rows = [[c.strip() for c in row if c.strip()] for row in csv.reader(f)]
    except OSError as e:
        raise ScheduleError(f"cannot read schedule file '{path}': {e.strerror}") from e
    while rows and not rows[-1]:
        rows.pop()
    if not rows:
        raise ScheduleError(f"{path}: no actions in the file")
    stages_of_rank: list[list[int]] = []
    top_stage = top_mb = -1
    for r, row in enumerate(rows):
        mine: list[int] = []
        for i, cell in enumerate(row):
            if cell.endswith("OVERLAP_F_F"):
                raise ScheduleError(
                    f"{path}: rank {r}, position {i}: '{cell}' is dualpipe's F&F pair, which PyTorch's runtime "
                    "does not run; export without --pair-forwards"
                )
            try:
                action = _Action.from_str(cell)
            except RuntimeError as e:
                raise ScheduleError(f"{path}: rank {r}, position {i}: '{cell}' is not an action string") from e
            if action.computation_type.value not in COMPUTE_OPS:
                raise ScheduleError(
                    f"{path}: rank {r}, position {i}: '{cell}' is a communication or sharding action; "
                    "export compute actions only (dualpipe schedule --format csv without --with-comm)"
                )
            for a in action.sub_actions or (action,):
                top_stage, top_mb = max(top_stage, a.stage_index), max(top_mb, a.microbatch_index)
                if a.stage_index not in mine:
                    mine.append(a.stage_index)
        stages_of_rank.append(sorted(mine))
    return Schedule(rows, len(rows), top_stage + 1, top_mb + 1, stages_of_rank)


def check_against_model(s: Schedule, model_stages: int, path: str) -> None:
    if s.stages != model_stages:
        raise ScheduleError(
            f"{path}: the schedule has {s.stages} stages (0-{s.stages - 1}) but the model has {model_stages}; "
            "export it with one stage index per model stage (interleaved: --chunks; DualPipeV and ZBV: 2 per rank)"
        )


def make_stage(index: int, hidden: int, dtype):
    """Stage `index` of the mlp model, initialised from a generator seeded by the index alone."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(1000 + index)
    stage = nn.Sequential(nn.Linear(hidden, 4 * hidden, bias=False), nn.GELU(), nn.Linear(4 * hidden, hidden, bias=False))
    with torch.no_grad():
        for p in stage.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) / p.shape[1] ** 0.5)
    return stage.to(dtype)


def make_batches(job: Job, micro_batches: int, dtype):
    import torch

    g = torch.Generator().manual_seed(7)
    shape = (micro_batches, job.micro_batch_size, job.seq_len, job.hidden)
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    return list(x.unbind(0)), list(y.unbind(0))


def loss_fn(output, target):
    import torch.nn.functional as fn

    return fn.mse_loss(output, target)


def reference(job: Job, stages: int, micro_batches: int):
    """The unpipelined step: per-micro-batch losses and each stage's gradients (mean over micro-batches)."""
    import torch

    dtype = getattr(torch, job.dtype)
    model = torch.nn.Sequential(*[make_stage(s, job.hidden, dtype) for s in range(stages)])
    xs, ys = make_batches(job, micro_batches, dtype)
    losses = []
    for x, y in zip(xs, ys):
        loss = loss_fn(model(x), y)
        (loss / micro_batches).backward()
        losses.append(loss.detach())
    grads = {s: [p.grad.clone() for p in model[s].parameters()] for s in range(stages)}
    return losses, grads


def sequential_compute_seconds(job: Job, stages: int, micro_batches: int) -> float:
    """The model's own work with no pipeline: every micro-batch's forward, loss and backward in turn (best of 3)."""
    import torch

    dtype = getattr(torch, job.dtype)
    model = torch.nn.Sequential(*[make_stage(i, job.hidden, dtype) for i in range(stages)])
    xs, ys = make_batches(job, micro_batches, dtype)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for x, y in zip(xs, ys):
            loss_fn(model(x), y).backward()
        best = min(best, time.perf_counter() - start)
    return best


class RankRun:
    """What one rank does for one job: build its stages, load the CSV, step, compare."""

    def __init__(self, job: Job, rank: int, group):
        self.job, self.rank, self.group = job, rank, group

    def run(self) -> dict:
        import torch
        from torch.distributed.pipelining import PipelineStage
        from torch.distributed.pipelining.schedules import _PipelineScheduleRuntime

        job = self.job
        s = read_schedule(job.csv_path)
        stages = job.stages if job.stages is not None else s.stages
        check_against_model(s, stages, job.csv_path)
        dtype = getattr(torch, job.dtype)
        mine = s.stages_of_rank[self.rank]
        modules = {i: make_stage(i, job.hidden, dtype) for i in mine}
        if job.skew and 0 in modules:
            with torch.no_grad():
                next(modules[0].parameters()).add_(job.skew)
        pipe_stages = [PipelineStage(modules[i], i, stages, torch.device("cpu"), group=self.group) for i in mine]
        try:
            runtime = _PipelineScheduleRuntime(pipe_stages, s.micro_batches, loss_fn=loss_fn, scale_grads=True)
            runtime._load_csv(job.csv_path, format="compute_only")
        except (AssertionError, ValueError, RuntimeError) as e:
            return {"status": REFUSED, "reason": first_line(e)}
        xs, ys = make_batches(job, s.micro_batches, dtype)
        kwargs = {}
        if 0 in mine:
            kwargs["arg_mbs"] = [(x,) for x in xs]
        if stages - 1 in mine:
            kwargs["target_mbs"] = ys
        out = {"status": "ok", "actions": len(s.rows[self.rank])}
        if job.steps > 1:  # timing: the model's own compute first, every rank at once
            out["compute_s"] = sequential_compute_seconds(job, stages, s.micro_batches) / s.ranks
        times = []
        for step in range(job.steps):
            for m in modules.values():
                m.zero_grad(set_to_none=True)
            losses: list = []
            torch.distributed.barrier(group=self.group)
            start = time.perf_counter()
            runtime.step(losses=losses, **kwargs)
            times.append(time.perf_counter() - start)
        out["step_times"] = times
        if job.dtype == "float64":
            out.update(self.compare(stages, s.micro_batches, modules, losses))
        return out

    def compare(self, stages: int, micro_batches: int, modules: dict, losses: list) -> dict:
        ref_losses, ref_grads = reference(self.job, stages, micro_batches)
        loss_diff = 0.0
        if stages - 1 in modules:
            loss_diff = max(abs(float(a.detach()) - float(b)) for a, b in zip(losses, ref_losses))
            if len(losses) != len(ref_losses):
                loss_diff = float("inf")
        grad_diff, grad_scale = 0.0, 0.0
        for i, m in modules.items():
            for p, r in zip(m.parameters(), ref_grads[i]):
                if p.grad is None:
                    return {"status": FAILED, "reason": f"stage {i} has no gradient after the step"}
                grad_diff = max(grad_diff, float((p.grad - r).abs().max()))
                grad_scale = max(grad_scale, float(r.abs().max()))
        return {"loss_diff": loss_diff, "grad_diff": grad_diff, "grad_scale": grad_scale}


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def classify_failure(e: BaseException) -> str:
    text = str(e).lower()
    return STALLED if "timed out" in text or "timeout" in text else FAILED


def rank_main(rank: int, world: int, store_dir: str, jobs: list[Job], timeout_s: float, queue) -> None:
    """A spawned rank: one Gloo group per job, so that a stalled job leaves the next one clean."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{store_dir}/store", rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s)
    )
    for job in jobs:
        group = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
        try:
            result = RankRun(job, rank, group).run()
        except ScheduleError as e:
            result = {"status": "bad input", "reason": str(e)}
        except Exception as e:  # noqa: BLE001 - a rank reports what stopped it
            result = {"status": classify_failure(e), "reason": first_line(e)}
            if os.environ.get("DUALPIPE_PYTORCH_TRACE"):
                traceback.print_exc()
        queue.put((job.name, rank, result))
    dist.destroy_process_group()


def run_jobs(jobs: list[Job], world: int, timeout_s: float = 30.0) -> dict[str, list[dict]]:
    """Runs jobs on `world` spawned ranks; returns each job's per-rank results.

    A rank that does not report within the timeouts of all jobs (plus start-up)
    is killed and its missing results read as stalled."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    results: dict[str, list[dict]] = {j.name: [{"status": STALLED, "reason": "no report"}] * world for j in jobs}
    with tempfile.TemporaryDirectory(prefix="dualpipe-pt-") as store_dir:
        procs = [ctx.Process(target=rank_main, args=(r, world, store_dir, jobs, timeout_s, queue)) for r in range(world)]
        for p in procs:
            p.start()
        deadline = time.monotonic() + 60 + (timeout_s + 30) * len(jobs)
        expected = world * len(jobs)
        got = 0
        while got < expected and time.monotonic() < deadline:
            try:
                name, rank, result = queue.get(timeout=1)
            except Exception:  # noqa: BLE001 - queue.Empty
                if not any(p.is_alive() for p in procs):
                    break
                continue
            results[name] = list(results[name])
            results[name][rank] = result
            got += 1
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
    return results


def verdict(per_rank: list[dict], tol: float = 1e-10) -> tuple[bool, str]:
    """Whether a job's step matched the unpipelined model, and a one-line summary."""
    bad = [r for r in per_rank if r["status"] != "ok"]
    if bad:
        statuses = sorted({r["status"] for r in bad})
        return False, f"{'/'.join(statuses)}: {bad[0].get('reason', '')}"
    loss = max(r.get("loss_diff", 0.0) for r in per_rank)
    grad = max(r.get("grad_diff", 0.0) for r in per_rank)
    scale = max(r.get("grad_scale", 0.0) for r in per_rank)
    ok = loss <= tol and grad <= tol * max(scale, 1.0)
    return ok, f"max |loss - unpipelined| {loss:.1e}, max |grad - unpipelined| {grad:.1e} (grads up to {scale:.1e})"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", help="the schedule: dualpipe schedule ... --format csv")
    ap.add_argument("--hidden", type=int, default=8, help="width h of every stage (default 8)")
    ap.add_argument("--micro-batch-size", type=int, default=2)
    ap.add_argument("--stages", type=int, help="the model's stage count (default: the schedule's)")
    ap.add_argument("--timeout", type=float, default=60, help="seconds a rank may wait on a transfer")
    args = ap.parse_args(argv)
    try:
        s = read_schedule(args.csv)
        if args.stages is not None:
            check_against_model(s, args.stages, args.csv)
    except ScheduleError as e:
        print(f"pytorch_pipeline: error: {e}", file=sys.stderr)
        return 2
    job = Job(os.path.basename(args.csv), args.csv, hidden=args.hidden, micro_batch_size=args.micro_batch_size,
              stages=args.stages)
    per_rank = run_jobs([job], s.ranks, args.timeout)[job.name]
    for r, res in enumerate(per_rank):
        print(f"rank {r}: stages {s.stages_of_rank[r]}: {res['status']} {res.get('reason', '')}".rstrip())
    ok, summary = verdict(per_rank)
    print(f"{job.name}: {s.ranks} ranks, {s.stages} stages, {s.micro_batches} micro-batches: "
          f"{'equal to rounding' if ok else 'NOT equal'}; {summary}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
