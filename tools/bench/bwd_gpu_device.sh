#!/bin/bash
# bwd_gpu_device.sh: the attention backward kernels on one GPU machine, in one go.
#
#   STEPS=build,check,sanitize,bench tools/bench/bwd_gpu_device.sh
#
# build     cmake + usp + libusp_bench_gpu.so (ptxas report of every kernel in build.log)
# check     usp kernel-check with each backward: USP_GPU_BWD=ws (attn_bwd_ws.cu, no
#           fallback), USP_GPU_BWD=wg (attn_bwd_wg.cu), and USP_GPU_TILES=mma (mma.sync tiles)
# sanitize  compute-sanitizer memcheck on the quick battery, USP_GPU_BWD=ws
# bench     tools/bench-gpu with USP_GPU_BWD=ws, and the old backward (--alt-env
#           USP_GPU_BWD=wg) and the new one with dQ atomics (USP_GPU_BWD=wsa) in the same
#           process (ALT replaces those); SDPA flash and cuDNN beside them
# BENCH_ARGS replaces the shapes (default: L = 16384, D = 128, 64, 256, causal and not).
# Logs land in $OUT (default ./out); a summary and the tables are printed last.
set -u
OUT=${OUT:-$PWD/out}
STEPS=${STEPS:-build,check,sanitize,bench}
BUILD=${BUILD:-build}
. "$(dirname "$0")/device_common.sh"
KC="$BUILD/usp kernel-check"
# PREBUILT=1: binaries built elsewhere (build/usp_kernel_check, build/libusp_bench_gpu.so)
# are used when they start here; else the build step runs
if [ -n "${PREBUILT:-}" ] && "$BUILD/usp_kernel_check" --help > /dev/null 2>&1 \
   && python3 -c "import ctypes; ctypes.CDLL('$BUILD/libusp_bench_gpu.so')" 2> /dev/null; then
  say "prebuilt binaries start: no build"
  KC="$BUILD/usp_kernel_check"
  STEPS=${STEPS//build/}
fi

if has build; then
  stamp "build"
  cmake -S . -B "$BUILD" -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc -DUSP_PTXAS_VERBOSE=ON \
    > "$OUT/build.log" 2>&1
  cmake --build "$BUILD" -j16 --target usp_kernel_check usp_bench_gpu >> "$OUT/build.log" 2>&1 \
    || { say "build FAILED"; tail -30 "$OUT/build.log"; exit 1; }
  KC="$BUILD/usp_kernel_check"
  grep -A2 "bwd_ws_kernel" "$OUT/build.log" | grep -E "registers|spill" | sort | uniq -c | tee -a "$SUM"
fi

if has check; then
  for v in ${CHECKS:-ws:USP_GPU_BWD=ws wg:USP_GPU_BWD=wg mma:USP_GPU_TILES=mma}; do
    name=${v%%:*}
    stamp "kernel-check $name"
    env ${v#*:} timeout ${CHECK_TIMEOUT:-100} $KC > "$OUT/kcheck_$name.txt" 2>&1
    rc=$?
    say "kernel-check $name rc=$rc: $(tail -1 "$OUT/kcheck_$name.txt")"
    [ $name = ws ] && [ $rc = 124 ] && { WS_HUNG=1; say "USP_GPU_BWD=ws hung: no sanitizer, bench without it"; }
  done
fi

if has sanitize && [ -z "${WS_HUNG:-}" ]; then
  stamp "compute-sanitizer memcheck (USP_GPU_BWD=ws, --quick)"
  USP_GPU_BWD=ws timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 $KC --quick \
    > "$OUT/san_memcheck.txt" 2>&1
  say "memcheck rc=$?: $(grep -E 'ERROR SUMMARY' "$OUT/san_memcheck.txt" | tail -1)"
fi

if has bench; then
  stamp "bench-gpu"
  bwd=ws alt=${ALT:---alt-env USP_GPU_BWD=wg --alt-env USP_GPU_BWD=wsa}
  [ -n "${WS_HUNG:-}" ] && bwd=wg alt=""
  USP_GPU_BWD=$bwd timeout ${BENCH_TIMEOUT:-300} python3 tools/bench-gpu --lib "$BUILD/libusp_bench_gpu.so" \
    --json "$OUT/bench.json" $alt \
    ${BENCH_ARGS:---shape 16384,128,0 --shape 16384,128,1 --shape 16384,64,0 --shape 16384,64,1 --shape 16384,256,0 --shape 16384,256,1} \
    > "$OUT/bench.txt" 2>&1
  say "bench-gpu rc=$?"
fi

stamp "done"
echo "================ summary"
cat "$SUM"
for f in "$OUT"/kcheck_*.txt; do [ -f "$f" ] && grep -E "FAIL|error" "$f" | head -8; done
[ -f "$OUT/bench.txt" ] && sed -n '/TFLOP/,$p' "$OUT/bench.txt"
