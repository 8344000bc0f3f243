#!/usr/bin/env python3
"""Times our DualPipe against DeepSeek's reference DualPipe on the reference's own example stage.

    build/venv/bin/python scripts/bench_reference.py [--rounds 3] [--steps 5] [--cases example,tiny] [--build build]

The model is the one the reference package's example trains: P = 2 ranks, N =
20 micro-batches (10 from each end), each stage Linear(h, 4h, no bias) -> GELU
-> Linear(4h, h, no bias), MSE loss against random targets, float32, one
intra-op thread per rank. Two sizes: **example**, the example's own (hidden
512, micro-batches of 3 sequences of 256), where compute dominates, and
**tiny** (hidden 64, micro-batches of 1 sequence of 16), where the runtime
is the step. Our `mlp` model is that stage (`dualpipe bench -m dualpipe
--model mlp`). The reference runs as
published on PyPI (`dualpipe==1.0.0`, installed into the venv on first use)
over Gloo, one process per rank; it was written for CUDA, so two CUDA-only
spots are redirected to the CPU here (its receive buffers' device and its
check that the modules sit on the current CUDA device), nothing else. Its
stage defers the weight gradient through the package's WeightGradStore, as the
reference's example does.

A step on both sides: every micro-batch's forward and backward, the pipeline
transfers and the sum of the two stage copies' gradients (each rank holds
stages r and P-1-r; the reference leaves that sum to its user, here an
all-gather as its example does); no optimizer. Rounds alternate: ours, then
the reference; each round's step is the median of --steps steps after one
warm-up (the reference's: the slowest rank's, ranks started together at a
barrier). Prints per case the medians and the ratio ours / reference, each
round's too. Goals: <= 0.90 on example, <= 0.20 on tiny.
A benchmark, not a test: run it on a quiet machine.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE_PIN = "dualpipe==1.0.0"
RANKS, MICRO_BATCHES = 2, 20
CASES = {
    # name: (hidden, seq_len, micro_batch_size, goal for ours / reference)
    "example": (512, 256, 3, 0.90),
    "tiny": (64, 16, 1, 0.20),
}


def ensure_reference():
    """Installs the reference package into this interpreter's venv when it is missing."""
    try:
        import dualpipe  # noqa: F401
        return
    except ImportError:
        pass
    print(f"bench_reference: installing {REFERENCE_PIN} from PyPI into {sys.prefix}", file=sys.stderr, flush=True)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           REFERENCE_PIN], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench_reference: cannot install {REFERENCE_PIN}: {done.stderr.strip().splitlines()[-1:]}")


# ---- the reference side: one process per rank -------------------------------------------------------------------

def reference_worker(rank, port, case, steps, out_path):
    import torch
    import torch.distributed as dist
    import torch.nn as nn
    import torch.nn.functional as F
    import dualpipe
    import dualpipe.comm as comm
    from dualpipe.utils import WeightGradStore

    hidden, seq_len, micro_batch_size, _ = CASES[case]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", world_size=RANKS, rank=rank)
    # The reference's two CUDA-only spots, pointed at the CPU.
    comm.build_from_tensor_shapes = lambda: [torch.empty(s, dtype=comm.TENSOR_DTYPE, requires_grad=True)
                                             for s in comm.TENSOR_SHAPES]

    class DeferredLinear(torch.autograd.Function):
        """x @ w.T whose weight gradient waits in WeightGradStore while the store is on."""

        @staticmethod
        def forward(ctx, x, w):
            ctx.save_for_backward(x, w)
            return F.linear(x, w)

        @staticmethod
        def backward(ctx, dy):
            x, w = ctx.saved_tensors
            if w.grad is None:
                w.grad = torch.zeros_like(w)

            def weight_grad():
                w.grad += dy.flatten(0, -2).T @ x.flatten(0, -2)
            if WeightGradStore.enabled:
                WeightGradStore.put(weight_grad)
            else:
                weight_grad()
            return dy @ w, None

    class Stage(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.Parameter(torch.empty(4 * hidden, hidden).uniform_(-hidden ** -0.5, hidden ** -0.5))
            self.down = nn.Parameter(torch.empty(hidden, 4 * hidden).uniform_(-(4 * hidden) ** -0.5,
                                                                               (4 * hidden) ** -0.5))

        def forward(self, x):
            return DeferredLinear.apply(F.gelu(DeferredLinear.apply(x, self.up)), self.down)

    torch.manual_seed(233 + rank)
    modules = nn.Sequential(Stage(), Stage())
    current_device = torch.cuda.current_device
    torch.cuda.current_device = lambda: "cpu"
    try:
        model = dualpipe.DualPipe(modules)
    finally:
        torch.cuda.current_device = current_device
    dualpipe.set_p2p_tensor_shapes([(micro_batch_size, seq_len, hidden)])
    dualpipe.set_p2p_tensor_dtype(torch.float32)
    half = MICRO_BATCHES // 2 * micro_batch_size
    x = torch.randn(half, seq_len, hidden)
    targets = torch.randn(half, seq_len, hidden)

    def criterion(y, t):
        return F.mse_loss(y, t).clone()

    def sum_stage_copies():
        # rank r holds stages (r, P-1-r): its copy 0 adds the peer's copy 1, and the other way round.
        mine = torch.cat([p.grad.flatten() for p in modules.parameters()])
        gathered = [torch.empty_like(mine) for _ in range(RANKS)]
        dist.all_gather(gathered, mine)
        peer = gathered[RANKS - 1 - rank]
        n0 = sum(p.numel() for p in modules[0].parameters())
        own = list(modules[0].parameters()) + list(modules[1].parameters())
        swapped = torch.cat([peer[n0:], peer[:n0]])
        offset = 0
        for p in own:
            p.grad += swapped[offset:offset + p.numel()].view_as(p)
            offset += p.numel()

    times = []
    for _ in range(steps + 1):
        dist.barrier()
        start = time.perf_counter()
        model.step(x, num_chunks=MICRO_BATCHES, criterion=criterion, labels=(targets,), return_outputs=False)
        sum_stage_copies()
        times.append(time.perf_counter() - start)
        modules.zero_grad(set_to_none=True)
    dist.destroy_process_group()
    with open(out_path, "w") as f:
        json.dump(times, f)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reference_step(case, steps, tmp):
    port = free_port()
    outs = [os.path.join(tmp, f"ref-{case}-{r}.json") for r in range(RANKS)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", str(r), "--port", str(port),
                               "--cases", case, "--steps", str(steps), "--out", outs[r]],
                              env=env, stderr=subprocess.PIPE, text=True) for r in range(RANKS)]
    for r, p in enumerate(procs):
        try:
            _, err = p.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise SystemExit(f"bench_reference: the reference's rank {r} ran past 600 s")
        if p.returncode != 0:
            for q in procs:
                q.kill()
            raise SystemExit(f"bench_reference: the reference's rank {r}: exit {p.returncode}: "
                             f"{err.strip().splitlines()[-1:] if err else ''}")
    per_rank = []
    for path in outs:
        with open(path) as f:
            per_rank.append(json.load(f))
    slowest = [max(t[k] for t in per_rank) for k in range(1, steps + 1)]  # the first step is the warm-up
    return statistics.median(slowest)


# ---- our side ----------------------------------------------------------------------------------------------------

def our_step(build, case, steps, extra):
    hidden, seq_len, micro_batch_size, _ = CASES[case]
    cmd = [os.path.join(build, "dualpipe"), "bench", "-m", "dualpipe", "-p", str(RANKS), "-n", str(MICRO_BATCHES),
           "--model", "mlp", "--dtype", "float32", "--hidden", str(hidden), "--seq-len", str(seq_len),
           "--micro-batch-size", str(micro_batch_size), "--intra-op-threads", "1", "--steps", str(steps),
           "--format", "json"] + extra
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr.strip()}")
    j = json.loads(done.stdout)
    return j["median_step_s"], j["compute_s"]


def report(rows):
    print("| case | hidden, seq, micro-batch | ours step ms | reference step ms | ours / reference (each round) | goal | own compute ms |")
    print("|---|---|---|---|---|---|---|")
    for case, rs in rows.items():
        hidden, seq_len, micro_batch_size, goal = CASES[case]
        ratios = [r["ours_s"] / r["reference_s"] for r in rs]
        ratio = statistics.median(ratios)
        verdict = f"<= {goal}: {'met' if ratio <= goal else 'NOT met'}"
        print(f"| {case} | {hidden}, {seq_len}, {micro_batch_size} | {statistics.median(r['ours_s'] for r in rs) * 1e3:.1f} "
              f"| {statistics.median(r['reference_s'] for r in rs) * 1e3:.1f} "
              f"| {ratio:.2f} ({', '.join(f'{x:.2f}' for x in ratios)}) | {verdict} "
              f"| {statistics.median(r['compute_s'] for r in rs) * 1e3:.1f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"), help="our build directory (default build)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, each ours then the reference (default 3)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round, after one warm-up (default 5)")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)} (default all)")
    ap.add_argument("--fb-overlap", choices=["on", "off"], default="off",
                    help="our F&B overlap (default off: the reference's example runs a pair's halves in turn)")
    ap.add_argument("--json", help="write every round here")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        reference_worker(args.worker, args.port, args.cases, args.steps, args.out)
        return
    if args.rounds < 1 or args.steps < 1:
        raise SystemExit("bench_reference: --rounds and --steps must be at least 1")
    cases = args.cases.split(",")
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise SystemExit(f"bench_reference: unknown case '{unknown[0]}' (known: {', '.join(CASES)})")
    ensure_reference()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="dualpipe-bench-ref-") as tmp:
        for case in cases:
            for r in range(args.rounds):
                ours_s, compute_s = our_step(args.build, case, args.steps, ["--fb-overlap", args.fb_overlap])
                reference_s = reference_step(case, args.steps, tmp)
                rows.setdefault(case, []).append({"ours_s": ours_s, "reference_s": reference_s,
                                                    "compute_s": compute_s})
                print(f"{case}: round {r + 1} of {args.rounds}: ours {ours_s * 1e3:.1f} ms, "
                      f"reference {reference_s * 1e3:.1f} ms", file=sys.stderr, flush=True)
    report(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
