#!/usr/bin/env bash
# Regenerates the figures the README and the manual show (README.md,
# docs/manual/compare.md, docs/manual/simulate.md, docs/pictures.md), from the built tool:
#   docs/compare_P8_N20.txt            dualpipe compare -p 8 -n 20 (F=1 B=2 W=1 FB=2.5)
#   docs/compare_P8_N24.txt            the same at N=24, where Chimera (N a multiple of P) runs too
#   docs/compare_P8_N20_devices.txt    every method on 8 devices (compare's default --basis devices)
#   docs/dualpipe_P8_N20.svg           DualPipe's simulated timeline, same costs
#   docs/dualpipev_P4_N10.svg          DualPipeV's, same costs
#   docs/pictures/*.svg                large and many-chunk timelines (docs/pictures.md)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/build/dualpipe"
[ -x "$bin" ] || bash "$root/scripts/build.sh" >/dev/null
mkdir -p "$root/docs"
cost="F=1,B=2,W=1,FB=2.5"
"$bin" compare -p 8 -n 20 --cost "$cost" --basis stages >"$root/docs/compare_P8_N20.txt"
"$bin" compare -p 8 -n 24 --cost "$cost" --basis stages >"$root/docs/compare_P8_N24.txt"
"$bin" compare -p 8 -n 20 --cost "$cost" >"$root/docs/compare_P8_N20_devices.txt"
"$bin" simulate -m dualpipe -p 8 -n 20 --cost "$cost" --svg "$root/docs/dualpipe_P8_N20.svg" >/dev/null
"$bin" simulate -m dualpipev -p 4 -n 10 --cost "$cost" --svg "$root/docs/dualpipev_P4_N10.svg" >/dev/null
mkdir -p "$root/docs/pictures"
p="$root/docs/pictures"
"$bin" simulate -m dualpipe -p 32 -n 64 --cost "$cost" --svg "$p/dualpipe_P32_N64_w1600.svg" --svg-width 1600 -o /dev/null 2>/dev/null
"$bin" simulate -m dualpipe -p 32 -n 64 --cost "$cost" --svg "$p/dualpipe_P32_N64_t0-80_r0-15.svg" --svg-time 0:80 --svg-ranks 0:15 -o /dev/null 2>/dev/null
"$bin" simulate -m interleaved-1f1b --chunks 4 -p 4 -n 8 --svg "$p/interleaved_V4_P4_N8.svg" -o /dev/null 2>/dev/null
"$bin" simulate -m zbv -p 4 -n 8 --svg "$p/zbv_P4_N8.svg" -o /dev/null 2>/dev/null
"$bin" schedule -m interleaved-1f1b --chunks 3 -p 3 -n 6 >"$p/grid_interleaved_V3_P3_N6.txt"
echo "wrote docs/compare_P8_N20.txt docs/compare_P8_N24.txt docs/dualpipe_P8_N20.svg docs/dualpipev_P4_N10.svg"
