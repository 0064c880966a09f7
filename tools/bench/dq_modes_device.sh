#!/bin/bash
# dq_modes_device.sh: the wgmma backward's ways of adding dQ, checked and timed
# against each other on a GPU machine (from the repository root):
#
#   MODES="atomic bulk" SHAPES="16384,128,0 16384,128,1 16384,64,0" tools/bench/dq_modes_device.sh
#
# For each mode (USP_GPU_DQ=...): usp kernel-check --quick, then tools/bench-gpu
# (ours beside SDPA flash and cuDNN, same run). Prints one line a mode and
# shape last, and the mode with the best backward at the first shape to
# $OUT/dq_best (for a later step to export). Expects usp and
# libusp_bench_gpu.so in $BUILD (default build).
set -u
OUT=${OUT:-$PWD/out}
BUILD=${BUILD:-build}
MODES=${MODES:-atomic bulk}
SHAPES=${SHAPES:-16384,128,0 16384,128,1}
mkdir -p "$OUT/dq"
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1
shape_args=""
for s in $SHAPES; do shape_args="$shape_args --shape $s"; done
for m in $MODES; do
  USP_GPU_DQ=$m timeout 120 "$BUILD/usp" kernel-check --quick > "$OUT/dq/kcheck_$m.txt" 2>&1
  echo "kernel-check $m rc=$?: $(tail -1 "$OUT/dq/kcheck_$m.txt")"
  USP_GPU_DQ=$m timeout ${BENCH_S:-150} python3 tools/bench-gpu --lib "$BUILD/libusp_bench_gpu.so" $shape_args \
    --no-errors --json "$OUT/dq/bench_$m.json" > "$OUT/dq/bench_$m.txt" 2>&1
  echo "bench-gpu $m rc=$?"
done
python3 - "$OUT/dq" $MODES <<'PY'
import json, os, sys
d, modes = sys.argv[1], sys.argv[2:]
best = None
print("mode      L     D  causal  fwd  bwd  bwd/flash  bwd/cuDNN")
for m in modes:
    try:
        rows = json.load(open(os.path.join(d, f"bench_{m}.json")))
    except (OSError, ValueError):
        print(m, "no results"); continue
    for i, r in enumerate(rows["results"]):
        o, f, c = r["ours"], r.get("flash") or {}, r.get("cudnn") or {}
        rf = o["bwd_tflops"] / f["bwd_tflops"] if f else float("nan")
        rc = o["bwd_tflops"] / c["bwd_tflops"] if c else float("nan")
        print(f"{m:8} {r['L']:6} {r['D']:4} {int(r['causal']):6} {o['fwd_tflops']:5.0f} {o['bwd_tflops']:4.0f} "
              f"{rf:9.2f} {rc:9.2f}")
        if i == 0 and (best is None or o["bwd_tflops"] > best[1]):
            best = (m, o["bwd_tflops"])
if best:
    open(os.path.join(d, "..", "dq_best"), "w").write(best[0])
    print("best backward:", best[0])
PY
