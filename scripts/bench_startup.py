#!/usr/bin/env python3
"""Start-up time of dualpipe commands: runs each command many times and prints
the median (and the fastest) wall time in milliseconds, as a Markdown table.

    python3 scripts/bench_startup.py [--runs N] [LABEL=]BINARY ...

e.g. `python3 scripts/bench_startup.py before=/tmp/old/dualpipe after=build/dualpipe`.
Each run is a fresh process (posix_spawn, output to /dev/null), timed from
spawn to exit. The binaries' runs alternate, so drift of a shared machine
hits them alike. The `/bin/true` row is the floor of this way of measuring
(process start and exit, nothing of dualpipe).
"""
import argparse
import os
import statistics
import sys
import time

COMMANDS = [
    "schedule -m dualpipe -p 8 -n 20 --format csv",
    "simulate -m dualpipe -p 8 -n 20",
    "--help",
    "version",
    "train --help",
    "verify --help",
]


def run_once(argv):
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        actions = [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
        start = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
        _, status = os.waitpid(pid, 0)
        elapsed = time.perf_counter() - start
    finally:
        os.close(devnull)
    return elapsed * 1000.0, os.waitstatus_to_exitcode(status)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30, help="runs per command and binary (default 30)")
    ap.add_argument("binaries", nargs="+", help="[LABEL=]PATH of a dualpipe program")
    args = ap.parse_args()
    if args.runs < 1:
        sys.exit("bench_startup: --runs must be at least 1")
    bins = []
    for b in args.binaries:
        label, _, path = b.rpartition("=")
        path = os.path.abspath(path)
        if not os.access(path, os.X_OK):
            sys.exit(f"bench_startup: {path} is not an executable program")
        bins.append((label or os.path.basename(path), path))

    rows = [("(floor) /bin/true", None)] + [(c, c) for c in COMMANDS]
    print(f"| command | " + " | ".join(f"{label}: median ms (min)" for label, _ in bins) + " |")
    print("|---|" + "---|" * len(bins))
    for name, cmd in rows:
        times = {label: [] for label, _ in bins}
        codes = {label: set() for label, _ in bins}
        for _ in range(args.runs):
            for label, path in bins:
                argv = ["/bin/true"] if cmd is None else [path] + cmd.split()
                ms, code = run_once(argv)
                times[label].append(ms)
                codes[label].add(code)
        cells = []
        for label, _ in bins:
            t = times[label]
            bad = sorted(c for c in codes[label] if c != 0)
            cells.append(f"{statistics.median(t):.1f} ({min(t):.1f})" + (f" exit {bad}" if bad else ""))
        print(f"| `{name}` | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
