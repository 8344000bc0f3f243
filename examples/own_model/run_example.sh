#!/bin/sh
# The worked example of docs/manual/train.md ("Your own model"), as CI runs it:
# make the stages and data with PyTorch, train them with DualPipe on 4 thread
# ranks, and check that the loss fell by more than half.
#   run_example.sh DUALPIPE_BINARY WORK_DIR
# Exits 77 (CTest: skipped) where no python3 with torch is installed
# (Debian: apt-get install python3-torch).
set -eu
dualpipe=$1
work=$2
here=$(cd "$(dirname "$0")" && pwd)
python=
for p in python3 /usr/bin/python3; do
  if command -v "$p" >/dev/null 2>&1 && "$p" -c "import torch" 2>/dev/null; then python=$p; break; fi
done
if [ -z "$python" ]; then
  echo "SKIPPED: no python3 with torch (Debian: apt-get install python3-torch); the example needs PyTorch to make its stages"
  exit 77
fi
mkdir -p "$work"
"$python" "$here/make_stages.py" --out "$work"
s="$work/stage0.pt,$work/stage1.pt,$work/stage2.pt,$work/stage3.pt"
"$dualpipe" train -m dualpipe -p 4 --threads --stages "$s" --data "$work/data.pt" --micro-batch-size 8 \
  --steps 40 --lr 0.01 --loss-csv "$work/loss.csv" --loss-svg "$work/loss.svg"
# The mean loss of the first and last steps, from the CSV (step,loss,...).
first=$(sed -n 2p "$work/loss.csv" | cut -d, -f2)
last=$(tail -n 1 "$work/loss.csv" | cut -d, -f2)
echo "loss: first step $first, last step $last"
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a / 2) }' || { echo "FAILED: the loss did not fall by half"; exit 1; }
