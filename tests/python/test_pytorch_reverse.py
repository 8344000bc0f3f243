#!/usr/bin/env python3
"""PyTorch's own schedule generators, dumped as CSV, read by `dualpipe simulate --from`.

    test_pytorch_reverse.py BUILD_DIR

Each generator of torch.distributed.pipelining is built (no processes: its
stages are stand-ins that carry only the shape) at several ranks and
micro-batch counts, and its order is written the way PyTorch writes it:
`_dump_csv(format="compute_only")` for the multi-stage schedules,
`_get_pipeline_order()` (what its visualiser draws) for the one-stage ones,
as it is and without its WAIT_REDUCE_GRAD cells, and
`_dump_csv(format="compute_comms")`, the lowered form. `dualpipe
simulate --from` must accept each (exit 0) or refuse it in one line with
exit 2, and it must accept every compute-only dump of the multi-stage
generators and GPipe's order without its waits. Prints one line per dump and the count.

Exit 0 when all hold, 1 otherwise, 77 (skipped) without PyTorch 2.x."""

import csv
import os
import subprocess
import sys
import tempfile

from torch_env import require_torch2, stand_in

SHAPES = [(2, 4), (2, 8), (4, 8), (4, 12)]


def generators():
    """(name, class, placement): 'one' stage per rank, 'loop' (r, r+P) or 'v' (r, 2P-1-r)."""
    from torch.distributed.pipelining import schedules as s

    return [
        ("GPipe", s.ScheduleGPipe, "one"),
        ("1F1B", s.Schedule1F1B, "one"),
        ("Interleaved1F1B", s.ScheduleInterleaved1F1B, "loop"),
        ("LoopedBFS", s.ScheduleLoopedBFS, "loop"),
        ("InterleavedZeroBubble", s.ScheduleInterleavedZeroBubble, "loop"),
        ("ZBVZeroBubble", s.ScheduleZBVZeroBubble, "v"),
        ("DualPipeV", s.ScheduleDualPipeV, "v"),
    ]


def write(tmp: str, name: str, rows) -> str:
    path = os.path.join(tmp, name + ".csv")
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def dumps(tmp: str):
    """Yields (label, path, must_accept) for every generator and shape PyTorch builds."""
    for name, cls, placement in generators():
        for ranks, n in SHAPES:
            label = f"{name} P={ranks} N={n}"
            try:
                if placement == "one":
                    order = cls(stand_in(ranks, ranks, 0), n)._get_pipeline_order()
                    rows = [["" if a is None else str(a) for a in order[r]] for r in order]
                    yield f"{label} (_get_pipeline_order)", write(tmp, f"{name}_{ranks}_{n}_order", rows), False
                    # Without its WAIT_REDUCE_GRAD cells: GPipe's order must load.
                    rows = [[c for c in row if "WAIT_REDUCE_GRAD" not in c] for row in rows]
                    yield (f"{label} (_get_pipeline_order without WAIT_REDUCE_GRAD)",
                           write(tmp, f"{name}_{ranks}_{n}_nowait", rows), name == "GPipe")
                    continue
                second = ranks if placement == "loop" else 2 * ranks - 1
                sched = cls([stand_in(ranks, 2 * ranks, 0), stand_in(ranks, 2 * ranks, second)], n)
            except Exception as e:  # noqa: BLE001 - PyTorch refuses the shape itself
                print(f"--    {label}: PyTorch does not generate it: {str(e).splitlines()[0]}")
                continue
            for form in ("compute_only", "compute_comms"):
                path = os.path.join(tmp, f"{name}_{ranks}_{n}_{form}.csv")
                sched._dump_csv(path, format=form)
                yield f"{label} ({form})", path, form == "compute_only"


def main() -> int:
    build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
    require_torch2(build)
    dualpipe = os.path.join(build, "dualpipe")
    failures, accepted, total = [], 0, 0
    with tempfile.TemporaryDirectory(prefix="dualpipe-reverse-") as tmp:
        for label, path, must_accept in dumps(tmp):
            total += 1
            done = subprocess.run([dualpipe, "simulate", "--from", path, "--format", "json"],
                                  capture_output=True, text=True)
            err = done.stderr.strip()
            if done.returncode == 0:
                accepted += 1
                print(f"ok    {label}: accepted and simulated")
            elif done.returncode == 2 and len(err.splitlines()) == 1 and not must_accept:
                print(f"ok    {label}: refused: {err.replace(path, os.path.basename(path))}")
            else:
                print(f"FAIL  {label}: exit {done.returncode}: {err}")
                failures.append(label)
    print(f"{accepted} of {total} PyTorch dumps accepted; the others refused in one line" if not failures
          else f"FAIL: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
