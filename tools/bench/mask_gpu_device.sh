#!/bin/bash
# mask_gpu_device.sh: the masked-kernel runs of gpu/NOTES.md in one call on a GPU machine.
#
#   STEPS=build,check,mma,plugin,sanitize,exec,bench tools/bench/mask_gpu_device.sh
#
# build     usp_kernel_check, the plugins (ABI 2, ABI 1, a future ABI), libusp_bench_gpu.so
# check     usp kernel-check, every case (wgmma tiles on sm_90a)
# mma       the same with USP_GPU_TILES=mma (the mma.sync tiles), every case
# plugin    the example plugin (ABI 2) and its ABI-1 build (masked cases skipped) on the
#           quick battery; the future-ABI plugin refused
# sanitize  compute-sanitizer memcheck on the quick battery, wgmma and mma.sync tiles
# exec      usp run --backend gpu on one GPU (ulysses 1, ring 1) with masks, against fp64
# plancheck usp kernel-check, every case, with USP_GPU_MASK_PLAN=all (the mask plan and the
#           persistent forward on the causal/diag masks too)
# bench     tools/bench-gpu --mask: masked TFLOP/s on visible pairs beside our causal
#           kernels, errors beside SDPA flash run document by document (BENCH_MASKS)
# sweep     our kernels alone on documents of one length aligned to the tiles (SWEEP_MASKS:
#           8192 down to 512), whose tiles are masked only on the diagonal as causal ones
#           are: what the work per CTA alone does to the rate
# variants  the same masks, our kernels alone (no errors, no SDPA), once per setting of
#           VARIANTS (default: USP_GPU_MASK_PLAN=0, =order, =all), each in its own process
# Logs land in $OUT (default ./out); a short table is printed last.
set -u
OUT=${OUT:-$PWD/out}
STEPS=${STEPS:-build,check,mma,plugin,sanitize,exec,bench}
BUILD=${BUILD:-build-dev}
BENCH_MASKS=${BENCH_MASKS:---mask docs:8192,3000,1500,1000,700,600,500,400,300,184 --mask window:2048}
. "$(dirname "$0")/device_common.sh"
KC="$BUILD/usp_kernel_check"

if has build; then
  stamp "build"
  build_kernel_tools
  has exec && { cmake --build "$BUILD" -j16 --target usp >> "$OUT/build.log" 2>&1 || say "usp did not build"; }
fi

if has check; then
  stamp "kernel-check (wgmma)"
  timeout ${CHECK_TIMEOUT:-150} $KC > "$OUT/kcheck.txt" 2>&1
  rc=$?
  say "kernel-check wgmma rc=$rc: $(tail -1 "$OUT/kcheck.txt")"
  # a hang (timeout) ends the call: what follows would hang as well
  [ $rc = 124 ] && { grep -vE "^ *(PASS|pass)" "$OUT/kcheck.txt" | tail -20; exit 1; }
fi
if has plancheck; then
  stamp "kernel-check (wgmma, USP_GPU_MASK_PLAN=all)"
  USP_GPU_MASK_PLAN=all timeout ${CHECK_TIMEOUT:-150} $KC > "$OUT/kcheck_planall.txt" 2>&1
  say "kernel-check plan=all rc=$?: $(tail -1 "$OUT/kcheck_planall.txt")"
fi
if has mma; then
  stamp "kernel-check (mma.sync)"
  USP_GPU_TILES=mma timeout 150 $KC > "$OUT/kcheck_mma.txt" 2>&1
  say "kernel-check mma.sync rc=$?: $(tail -1 "$OUT/kcheck_mma.txt")"
fi
if has plugin; then
  stamp "plugins"
  check_plugins
  grep -m2 "ABI v1" "$OUT/plugin_v1.txt" | tee -a "$SUM"
fi
if has sanitize; then
  for tiles in ${SANITIZE_TILES:-wgmma mma}; do
    stamp "compute-sanitizer memcheck --quick ($tiles)"
    USP_GPU_TILES=$tiles timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 $KC --quick \
      > "$OUT/memcheck_$tiles.txt" 2>&1
    say "memcheck $tiles rc=$?: $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_$tiles.txt" | tail -1)"
  done
fi
if has exec && [ -x "$BUILD/usp" ]; then
  stamp "usp run --backend gpu with masks (one GPU)"
  for m in "--seqlens 1000,2500,596 --causal" "--window 300,0 --causal" "--seqlens 700,3396 --window 200,50 --no-causal"; do
    timeout 60 $BUILD/usp run --backend gpu --gpus 1 --ulysses 1 --ring 1 --heads 8 --kv-heads 2 --head-dim 128 \
      --dtype bf16 $m > "$OUT/exec.txt" 2>&1
    say "usp run --backend gpu $m: rc=$? $(grep -iE 'pass|fail|error' "$OUT/exec.txt" | tr '\n' ' ' | cut -c1-300)"
  done
fi
if has bench; then
  stamp "bench-gpu --mask"
  timeout ${BENCH_TIMEOUT:-300} python3 tools/bench-gpu --lib "$BUILD/libusp_bench_gpu.so" --reps ${REPS:-10} \
    --json "$OUT/bench_mask.json" $BENCH_MASKS ${BENCH_ARGS:-} > "$OUT/bench_mask.txt" 2>&1
  say "bench rc=$?"
fi
if has sweep; then
  stamp "bench-gpu --mask (aligned documents)"
  timeout ${BENCH_TIMEOUT:-300} python3 tools/bench-gpu --lib "$BUILD/libusp_bench_gpu.so" --reps ${REPS:-10} \
    --no-errors --no-sdpa --json "$OUT/bench_sweep.json" \
    ${SWEEP_MASKS:---mask docs:8192 --mask docs:4096 --mask docs:2048 --mask docs:1024 --mask docs:512} \
    ${BENCH_ARGS:-} > "$OUT/bench_sweep.txt" 2>&1
  say "bench sweep rc=$?"
fi
if has variants; then
  for v in ${VARIANTS:-USP_GPU_MASK_PLAN=0 USP_GPU_MASK_PLAN=order USP_GPU_MASK_PLAN=all}; do
    stamp "bench-gpu --mask ($v)"
    env "$v" timeout ${BENCH_TIMEOUT:-300} python3 tools/bench-gpu --lib "$BUILD/libusp_bench_gpu.so" \
      --reps ${REPS:-10} --no-errors --no-sdpa --json "$OUT/bench_${v//[^A-Za-z0-9]/_}.json" $BENCH_MASKS \
      ${BENCH_ARGS:-} > "$OUT/bench_${v//[^A-Za-z0-9]/_}.txt" 2>&1
    say "bench $v rc=$?"
  done
fi
stamp "done"
(cd "$OUT" && tar czf all.tgz --exclude=all.tgz . && rm -f build.log)
echo "================ summary"
cat "$SUM"
for f in kcheck.txt kcheck_planall.txt kcheck_mma.txt; do [ -f "$OUT/$f" ] && grep -E "FAIL" "$OUT/$f" | head -12; done
[ -f "$OUT/bench_sweep.txt" ] && { echo "---- aligned documents"; sed -n '/^Masked kernels/,$p' "$OUT/bench_sweep.txt"; }
if has variants; then
  for v in ${VARIANTS:-USP_GPU_MASK_PLAN=0 USP_GPU_MASK_PLAN=order USP_GPU_MASK_PLAN=all}; do
    echo "---- $v"; sed -n '/^Masked kernels/,$p' "$OUT/bench_${v//[^A-Za-z0-9]/_}.txt"
  done
fi
[ -f "$OUT/bench_mask.txt" ] && sed -n '/^device/,$p' "$OUT/bench_mask.txt"
