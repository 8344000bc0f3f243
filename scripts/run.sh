#!/usr/bin/env bash
# Quick start: installs what is missing, builds, and runs the main job.
# With no arguments it compares every schedule on the embedded default
# (8 stages, 20 micro-batches, F=1 B=2 W=1 F&B=2.5) and draws DualPipe's
# timeline to build/dualpipe.svg, then trains the default small GPT with
# DualPipe on 2 local ranks (about 20 s); with arguments it runs
# `dualpipe ARGS...`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The programs alone (dualpipe and the dualpipe-torch it runs): scripts/test.sh
# builds the tests, header checks and benchmarks.
DUALPIPE_TARGETS=dualpipe bash "$root/scripts/build.sh" >/dev/null
bin="$root/build/dualpipe"
if (($#)); then exec "$bin" "$@"; fi
"$bin" compare --ranks 8 --micro-batches 20 --cost F=1,B=2,W=1,FB=2.5
echo
"$bin" simulate --method dualpipe --ranks 8 --micro-batches 20 --cost F=1,B=2,W=1,FB=2.5 \
  --svg "$root/build/dualpipe.svg" --trace "$root/build/dualpipe.trace.json"
echo
echo "timeline: build/dualpipe.svg   trace (open in https://ui.perfetto.dev): build/dualpipe.trace.json"
echo
"$bin" train --loss-csv "$root/build/train_loss.csv" --loss-svg "$root/build/train_loss.svg" \
  --svg "$root/build/train_step.svg" --trace "$root/build/train_step.trace.json"
