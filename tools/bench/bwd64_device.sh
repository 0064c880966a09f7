#!/bin/bash
# bwd64_device.sh: one device call for the D = 64 backward settings of attn_bwd_ws.cu
# (USP_GPU_BWD=ws64x: dK's products after dQ's and P^T without a branch per element;
# ws64l: the order alone; ws64z: ws64x with the dS^T loop's loads and addresses trimmed),
# beside the default (v8's 128-row tiles, ws128r).
#
#   STEPS=build,check,sanitize,bench,ncu OUT=out tools/bench/bwd64_device.sh
#
# build     build-dev's kernel tools unless they already start (another script may have built them)
# check     usp kernel-check, every case, once per setting of VARIANTS (default: ws64x ws64l ws64z)
# sanitize  compute-sanitizer memcheck --quick, once per setting of SAN_VARIANTS (default: ws64x)
# bench     tools/bench-gpu D = 64, L = 16384, non-causal and causal, --reps $REPS (10): the
#           default and --alt-env USP_GPU_BWD=v for each variant that passed its check, SDPA
#           flash and cuDNN in the same process, errors against fp64
# ncu       one launch of the first variant that passed (non-causal), short sections,
#           --clock-control none
# A failed or hung check keeps that variant out of the later steps. Logs in $OUT, summary.txt.
set -u
OUT=${OUT:-$PWD/out}
STEPS=${STEPS:-build,check,sanitize,bench,ncu}
BUILD=${BUILD:-build-dev}
. "$(dirname "$0")/device_common.sh"
KC="$BUILD/usp_kernel_check"
LIB="$BUILD/libusp_bench_gpu.so"
VARIANTS=${VARIANTS:-ws64x ws64l ws64z}
PATH=$PATH:/usr/local/cuda/bin

if "$KC" --help > /dev/null 2>&1 && python3 -c "import ctypes; ctypes.CDLL('$LIB')" 2> /dev/null; then
  say "prebuilt binaries start: no build"
elif has build; then
  stamp "build"
  build_kernel_tools
fi
good=""
for v in $VARIANTS; do
  if ! has check; then good="$good $v"; continue; fi
  stamp "kernel-check USP_GPU_BWD=$v"
  USP_GPU_BWD=$v timeout ${CHECK_TIMEOUT:-40} $KC > "$OUT/kc_$v.txt" 2>&1
  rc=$?
  say "kernel-check USP_GPU_BWD=$v rc=$rc: $(tail -1 "$OUT/kc_$v.txt")"
  grep -E "FAIL" "$OUT/kc_$v.txt" | head -8 | tee -a "$SUM"
  [ $rc -eq 0 ] && good="$good $v"
done
if has sanitize; then
  for v in ${SAN_VARIANTS:-ws64x}; do
    [[ " $good " == *" $v "* ]] || continue
    stamp "memcheck --quick USP_GPU_BWD=$v"
    USP_GPU_BWD=$v timeout ${SAN_TIMEOUT:-45} compute-sanitizer --tool memcheck --error-exitcode 9 $KC --quick \
      > "$OUT/memcheck_$v.txt" 2>&1
    say "memcheck USP_GPU_BWD=$v rc=$?: $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_$v.txt" | tail -1)"
  done
fi
if has bench; then
  alt=""; for v in $good; do alt="$alt --alt-env USP_GPU_BWD=$v"; done
  stamp "bench-gpu D = 64 ($alt)"
  timeout ${BENCH_TIMEOUT:-60} python3 tools/bench-gpu --lib "$LIB" --shape 16384,64,0 --shape 16384,64,1 \
    --reps ${REPS:-10} $alt --json "$OUT/bench.json" > "$OUT/bench.txt" 2>&1
  say "bench-gpu rc=$?"
  sed -n '/TFLOP/,$p' "$OUT/bench.txt" >> "$SUM"
fi
first=$(echo $good | cut -d' ' -f1)
if has ncu && [ -n "$first" ]; then
  stamp "ncu USP_GPU_BWD=$first"
  USP_GPU_BWD=$first timeout ${NCU_TIMEOUT:-40} ncu --clock-control none -k regex:bwd_ws_kernel --launch-count 1 \
    --section SpeedOfLight --section WarpStateStats --section SchedulerStats \
    python3 tools/bench-gpu --lib "$LIB" --reps 1 --no-errors --no-sdpa --shape 16384,64,0 \
    > "$OUT/ncu_$first.txt" 2>&1
  say "ncu rc=$?"
  grep -E "Duration|SM Frequency|Compute \(SM\) Throughput|L2 Cache Throughput|No Eligible|Issued Warp|Warp Cycles Per Issued" \
    "$OUT/ncu_$first.txt" | head -12 >> "$SUM"
fi
stamp "done"
echo "================ summary"
cat "$SUM"
