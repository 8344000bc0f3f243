#!/usr/bin/env python3
"""Sets expert peers' all-to-alls side by side from `dualpipe bench --lane-records DIR`.

    python3 scripts/lane_report.py DIR [--link-rate 71mbit] [--format text|json]

Every rank's CSV (DIR/rank<R>.csv) lists the collectives of its last timed
step in lane order. The ranks of one expert group (the same pipeline rank and
data replica) post the same collectives in the same order, so the k-th record
of a group on each member is one exchange. Per communication point this
prints how many exchanges there were and the medians of: how far apart the
members posted (`post gap`), how long each exchange ran after its last member
posted (`after last post`, the slowest member's end) and, with --link-rate,
its wire time (the larger link bytes of the members at that rate) and what
the exchange took beyond it. `first poster lag` is how much later the member
that posted first ended than the one that posted last (positive: its sends
waited for the later member's ready-notice). `late peer s` is, summed over the step, the time
members waited for a later member to post (the exchange cannot start
before). `exposed s` is, summed over the step and the members, the time a
member stood with nothing computing, waiting for the exchange; with
--link-rate it is split by when: before the exchange's wire time from the
member's own start had passed (`exposed wire s`), then until the later
member's start plus the wire time (`exposed late peer s`: a peer that
posted later), then beyond (`exposed beyond s`: the link carried something
else as well, such as a pipeline transfer). Times come from the steady
clock, which the ranks of one machine share; standard library only.
"""

import argparse
import csv
import glob
import json
import os
import re
import statistics
import sys
from collections import defaultdict

UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


def parse_rate(text):
    """'71mbit' -> bytes per second."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)bit", text.strip().lower())
    if not m or float(m.group(1)) <= 0:
        raise SystemExit(f"lane_report: --link-rate '{text}': give a rate such as 71mbit or 1gbit")
    return float(m.group(1)) * UNITS[m.group(2)] / 8


def read_ranks(folder):
    paths = sorted(glob.glob(os.path.join(folder, "rank*.csv")))
    if not paths:
        raise SystemExit(f"lane_report: no rank*.csv in '{folder}' (written by dualpipe bench --lane-records)")
    ranks = {}
    for path in paths:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            for key in ("step_start_s", "posted_s", "started_s", "done_s"):
                row[key] = float(row[key])
            # Older files have no exposed wait: none.
            row["wait_from_s"] = float(row.get("wait_from_s") or row["done_s"])
            row["wait_to_s"] = float(row.get("wait_to_s") or row["done_s"])
            row["bytes"] = int(row["bytes"])
        rank = int(re.search(r"rank(\d+)\.csv$", path).group(1))
        ranks[rank] = rows
    return ranks


def exchanges(ranks):
    """Each exchange as the list of its members' records (absolute times added)."""
    by_member = defaultdict(lambda: defaultdict(dict))  # (pp, dp) -> group -> rank -> records
    for rank, rows in ranks.items():
        for row in rows:
            row["posted"] = row["step_start_s"] + row["posted_s"]
            row["started"] = row["step_start_s"] + row["started_s"]
            row["done"] = row["step_start_s"] + row["done_s"]
            row["wait_from"] = row["step_start_s"] + row["wait_from_s"]
            row["wait_to"] = row["step_start_s"] + row["wait_to_s"]
            by_member[(row["pp"], row["dp"])][row["group"]].setdefault(rank, []).append(row)
    out = []
    for groups in by_member.values():
        for group, members in groups.items():
            lists = list(members.values())
            if len(lists) < 2:
                continue  # a group of one rank: nobody to wait for
            counts = {len(x) for x in lists}
            if len(counts) != 1:
                raise SystemExit(f"lane_report: the members of a '{group}' group logged {sorted(counts)} "
                                 f"collectives: not the same sequence")
            for k in range(counts.pop()):
                one = [x[k] for x in lists]
                if len({r["point"] for r in one}) != 1:
                    raise SystemExit(f"lane_report: '{group}' collective {k} is "
                                     f"{sorted({r['point'] for r in one})} on its members: not the same sequence")
                out.append(one)
    return out


def overlap(a0, a1, b0, b1):
    return max(0.0, min(a1, b1) - max(a0, b0))


def exposure(one, item, rate):
    """The members' exposed waits for exchange `one`, split by when (module comment)."""
    item["exposed"] = sum(r["wait_to"] - r["wait_from"] for r in one)
    if not rate:
        return
    last_start = max(r["started"] for r in one)
    item["exposed_wire"] = item["exposed_late"] = item["exposed_beyond"] = 0.0
    for r in one:
        ideal = r["started"] + item["wire"]
        late_end = max(ideal, last_start + item["wire"])
        w0, w1 = r["wait_from"], r["wait_to"]
        item["exposed_wire"] += overlap(w0, w1, float("-inf"), ideal)
        item["exposed_late"] += overlap(w0, w1, ideal, late_end)
        item["exposed_beyond"] += overlap(w0, w1, late_end, float("inf"))


def summarise(exs, rate):
    per_point = defaultdict(list)
    for one in exs:
        last_post = max(r["posted"] for r in one)
        first, last = min(one, key=lambda r: r["posted"]), max(one, key=lambda r: r["posted"])
        item = {"gap": last_post - first["posted"],
                "lag": first["done"] - last["done"],
                "after": max(r["done"] for r in one) - last_post,
                "late": sum(last_post - r["posted"] for r in one)}
        if rate:
            item["wire"] = max(r["bytes"] for r in one) / rate
            item["beyond"] = item["after"] - item["wire"]
        exposure(one, item, rate)
        per_point[one[0]["point"]].append(item)
    table = {}
    for point, items in per_point.items():
        row = {"exchanges": len(items),
               "post_gap_ms": 1e3 * statistics.median(i["gap"] for i in items),
               "after_last_post_ms": 1e3 * statistics.median(i["after"] for i in items),
               "first_poster_lag_ms": 1e3 * statistics.median(i["lag"] for i in items),
               "late_peer_s": sum(i["late"] for i in items),
               "exposed_s": sum(i["exposed"] for i in items)}
        if rate:
            row["wire_ms"] = 1e3 * statistics.median(i["wire"] for i in items)
            row["beyond_wire_ms"] = 1e3 * statistics.median(i["beyond"] for i in items)
            row["exposed_wire_s"] = sum(i["exposed_wire"] for i in items)
            row["exposed_late_peer_s"] = sum(i["exposed_late"] for i in items)
            row["exposed_beyond_s"] = sum(i["exposed_beyond"] for i in items)
        table[point] = row
    return table


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", help="the folder given to dualpipe bench --lane-records")
    ap.add_argument("--link-rate", help="the emulated link's rate (e.g. 71mbit), for wire times")
    ap.add_argument("--format", choices=["text", "json"], default="text", help="default text")
    args = ap.parse_args()
    rate = parse_rate(args.link_rate) if args.link_rate else 0
    table = summarise(exchanges(read_ranks(args.folder)), rate)
    if args.format == "json":
        json.dump(table, sys.stdout, indent=1)
        print()
        return
    cols = ["exchanges", "post_gap_ms", "after_last_post_ms", "first_poster_lag_ms"] + \
        (["wire_ms", "beyond_wire_ms"] if rate else []) + ["late_peer_s", "exposed_s"] + \
        (["exposed_wire_s", "exposed_late_peer_s", "exposed_beyond_s"] if rate else [])
    print("| point | " + " | ".join(c.replace("_", " ") for c in cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for point, row in table.items():
        cells = [str(row["exchanges"])] + [f"{row[c]:.3f}" for c in cols[1:]]
        print(f"| {point} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
