#!/usr/bin/env python3
"""Data-parallel benchmark on the emulated cluster (needs root).

P=2 pipeline ranks x D=2 data replicas of an MLP on 2 emulated hosts, the two
replicas of every stage on different hosts, so each gradient reduction crosses
a link limited to RATE. Measures, in one run of this script:
  - the gradient reduction left after the pipeline (not hidden), with the
    reduction overlapped with the step and without, for 1F1B, ZB1P, DualPipe;
  - AdamW state per rank with and without ZeRO-1;
  - throughput of D=2 (N micro-batches each) against D=1 (2N micro-batches)
    on the same global batch.
Prints one table; figures are medians over the timed steps.

  scripts/bench_data_parallel.py [RATE] [--bin build/dualpipe]
"""
import argparse
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(binary, args):
    cmd = [binary, "train"] + args
    print("running:", " ".join(cmd[1:]), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    text = out.stdout + out.stderr
    if out.returncode != 0:
        sys.exit(f"failed ({out.returncode}):\n{text}")
    step = float(re.search(r"median step ([0-9.]+) s", text).group(1))
    tokens = float(re.search(r"median step [0-9.]+ s, ([0-9]+) tokens/s", text).group(1))
    reduce_wait = float(re.search(r"not hidden\): median ([0-9.]+) s", text).group(1))
    opt = re.search(r"per rank: ([0-9.]+) KiB on rank 0, ([0-9.]+) KiB the most", text)
    return {"step": step, "tokens": tokens, "reduce": reduce_wait, "opt_kib": float(opt.group(2))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rate", nargs="?", default="200mbit")
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "dualpipe"))
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--hidden", type=int, default=256)
    a = ap.parse_args()
    n = 8
    common = ["--model", "mlp", "--hidden", str(a.hidden), "--seq-len", "32", "--micro-batch-size", "4",
              "-p", "2", "--steps", str(a.steps), "--loss-csv", "/dev/null", "--loss-svg", "/dev/null",
              "--emulate-hosts", "2", "--link-rate", a.rate]
    rows = []
    for method in ["1f1b", "zb1p", "dualpipe"]:
        on = run(a.bin, common + ["-m", method, "-n", str(n), "--dp", "2"])
        off = run(a.bin, common + ["-m", method, "-n", str(n), "--dp", "2", "--overlap-grad-reduce", "off"])
        rows.append((method, on, off))
    print(f"\nP=2 x D=2 on 2 emulated hosts at {a.rate}; mlp hidden {a.hidden}, N={n} per replica")
    print(f"{'method':<10} {'not hidden, on':>15} {'not hidden, off':>16} {'hidden':>7} {'step on':>8} {'step off':>9}")
    for method, on, off in rows:
        hidden = 1 - on["reduce"] / off["reduce"] if off["reduce"] > 0 else 0
        print(f"{method:<10} {on['reduce']:>13.4f} s {off['reduce']:>14.4f} s {hidden:>6.0%} "
              f"{on['step']:>7.4f} {off['step']:>8.4f}")

    print("\nAdamW state per rank (the most of any rank), DualPipe, D=2:")
    z0 = run(a.bin, common + ["-m", "dualpipe", "-n", str(n), "--dp", "2"])
    z1 = run(a.bin, common + ["-m", "dualpipe", "-n", str(n), "--dp", "2", "--zero", "1"])
    print(f"  ZeRO-0 {z0['opt_kib']:.1f} KiB, ZeRO-1 {z1['opt_kib']:.1f} KiB: {z0['opt_kib'] / z1['opt_kib']:.2f}x less "
          f"(holders of a stage: 2 copies x 2 replicas = 4)")

    print("\nSame global batch (16 micro-batches), DualPipe:")
    d1 = run(a.bin, common + ["-m", "dualpipe", "-n", str(2 * n), "--dp", "1"])
    d2 = z0
    print(f"  D=1, N=16: {d1['tokens']:.0f} tokens/s (step {d1['step']:.4f} s); "
          f"D=2, N=8: {d2['tokens']:.0f} tokens/s (step {d2['step']:.4f} s): {d2['tokens'] / d1['tokens']:.2f}x")


if __name__ == "__main__":
    main()
