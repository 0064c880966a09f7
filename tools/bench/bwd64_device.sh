#!/bin/bash
# bwd64_device.sh: one device call for the D = 64 backward of attn_bwd_ws.cu (v9's loop, the
# default without per-row masks) beside v8's loop (USP_GPU_BWD=ws128r), SDPA flash and cuDNN.
#
#   STEPS=build,check,sanitize,bench,ncu OUT=out tools/bench/bwd64_device.sh
#
# build     build-dev's kernel tools unless they already start (another script may have built them)
# check     usp kernel-check, every case, once per setting of CHECKS (default: "default", the
#           variables unset; others as NAME=VALUE)
# sanitize  compute-sanitizer memcheck --quick, once per setting of SAN (default: "default")
# bench     tools/bench-gpu on SHAPES (default L = 16384, D = 64, non-causal and causal),
#           --reps $REPS (10) in --rounds $ROUNDS (bench-gpu's default unless set): the default
#           and --alt-env for each of ALT (default
#           USP_GPU_BWD=ws128r) that did not fail its check, SDPA flash and cuDNN in the same
#           process, errors against fp64
# ncu       one launch of the backward under NCU (default: "default") at NCU_SHAPE (default
#           16384,64,0), short sections, --clock-control none
# A failed or hung check of a setting keeps it out of the later steps (the default's: all).
# Logs in $OUT, summary.txt last.
set -u
OUT=${OUT:-$PWD/out}
STEPS=${STEPS:-build,check,sanitize,bench,ncu}
BUILD=${BUILD:-build-dev}
. "$(dirname "$0")/device_common.sh"
KC="$BUILD/usp_kernel_check"
LIB="$BUILD/libusp_bench_gpu.so"
CHECKS=${CHECKS:-default}
SAN=${SAN:-default}
ALT=${ALT:-USP_GPU_BWD=ws128r}
SHAPES=${SHAPES:---shape 16384,64,0 --shape 16384,64,1}
NCU=${NCU:-default}
NCU_SHAPE=${NCU_SHAPE:-16384,64,0}
PATH=$PATH:/usr/local/cuda/bin

if kernel_tools_start; then
  say "prebuilt binaries start: no build"
elif has build; then
  stamp "build"
  build_kernel_tools
fi
# envof SETTING: the env arguments of a setting ("default": none)
envof() { [ "$1" = default ] || echo "$1"; }
bad=""
if has check; then
  for v in $CHECKS; do
    stamp "kernel-check $v"
    env $(envof "$v") timeout ${CHECK_TIMEOUT:-40} $KC > "$OUT/kc_$(tag $v).txt" 2>&1
    rc=$?
    say "kernel-check $v rc=$rc: $(tail -1 "$OUT/kc_$(tag $v).txt")"
    grep -E "FAIL" "$OUT/kc_$(tag $v).txt" | head -8 | tee -a "$SUM"
    [ $rc -ne 0 ] && bad="$bad $v"
  done
fi
ok() { [[ " $bad " != *" $1 "* ]]; }
if ! ok default; then say "the default failed its check: no further steps"; cat "$SUM"; exit 1; fi
if has sanitize; then
  for v in $SAN; do
    ok "$v" || continue
    stamp "memcheck --quick $v"
    env $(envof "$v") timeout ${SAN_TIMEOUT:-45} compute-sanitizer --tool memcheck --error-exitcode 9 $KC --quick \
      > "$OUT/memcheck_$(tag $v).txt" 2>&1
    say "memcheck $v rc=$?: $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_$(tag $v).txt" | tail -1)"
  done
fi
if has bench; then
  alt=""; for v in $ALT; do ok "$v" && alt="$alt --alt-env $v"; done
  stamp "bench-gpu ($SHAPES;$alt)"
  timeout ${BENCH_TIMEOUT:-60} python3 tools/bench-gpu --lib "$LIB" $SHAPES \
    --reps ${REPS:-10} ${ROUNDS:+--rounds $ROUNDS} $alt --json "$OUT/bench.json" > "$OUT/bench.txt" 2>&1
  say "bench-gpu rc=$?"
  sed -n '/TFLOP/,$p' "$OUT/bench.txt" >> "$SUM"
fi
if has ncu && ok "$NCU"; then
  stamp "ncu, the backward under $NCU at $NCU_SHAPE"
  env $(envof "$NCU") timeout ${NCU_TIMEOUT:-40} ncu --clock-control none -k regex:bwd_ws_kernel --launch-count 1 \
    --section SpeedOfLight --section WarpStateStats --section SchedulerStats \
    python3 tools/bench-gpu --lib "$LIB" --reps 1 --no-errors --no-sdpa --shape $NCU_SHAPE \
    > "$OUT/ncu_$(tag $NCU).txt" 2>&1
  say "ncu rc=$?"
  grep -E "bwd_ws_kernel<|Duration|SM Frequency|Compute \(SM\) Throughput|L2 Cache Throughput|No Eligible|Issued Warp|Warp Cycles Per Issued" \
    "$OUT/ncu_$(tag $NCU).txt" | head -12 >> "$SUM"
fi
stamp "done"
echo "================ summary"
cat "$SUM"
