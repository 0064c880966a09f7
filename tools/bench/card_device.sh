#!/bin/bash
# card_device.sh: one device call that calibrates the simulator's kernel figures on this card
# and measures what they are checked against, every log packed into $OUT/all.tgz.
#
#   BASE=sim/profiles/h200-calibrated.json tools/bench/card_device.sh
#
# check      usp kernel-check, every case, with the defaults (and again under CHECK_ENV)
# phases     the masks again (D = 128, 3 calls each) with USP_GPU_FWD_PROF=1 and
#            USP_GPU_BWD_PROF=1: the kernels' PHASES lines (phases.txt), causal anchor included
# sanitize   compute-sanitizer memcheck on the quick battery
# calibrate  usp calibrate --gpus 1 --short-blocks --base $BASE: full and causal blocks, and
#            packed documents of 512 and 2048 tokens (the per-row-mask efficiency); writes
#            $OUT/profile.json and the measurements $OUT/calibration.json
# bench      tools/bench-gpu, D = 128, L = 16384, causal and not, SDPA flash and cuDNN beside
# maskbench  tools/bench-gpu --mask: long-tailed documents and a 2048-token window, D = 128 and
#            64, beside our causal kernel (held out from the calibration's documents); afterwards,
#            where the simulator is built: tools/bench/predict_masks.py bench_mask.json
#            --profile profile.json
# merge      tools/bench/published_merge.py: the published Python rings' per-step merge (PyTorch
#            element-wise operations, eager and TorchScript) and SDPA flash and cuDNN at their step
#            shapes, at ring-flash-attention's 8K a rank and context parallel's 32K (the ring rows of
#            traces/README.md's ring-flash-attention and pytorch-cp tables)
set -u
OUT=${OUT:-$PWD/out}
STEPS=${STEPS:-check,calibrate,bench,maskbench,phases,merge,sanitize}
BUILD=${BUILD:-build-dev}
. "$(dirname "$0")/device_common.sh"
LIB="$BUILD/libusp_bench_gpu.so"
KC="$BUILD/usp_kernel_check"

if ! "$BUILD/usp" --help > /dev/null 2>&1 || ! kernel_tools_start; then
  stamp "build"
  build_kernel_tools
  cmake --build "$BUILD" -j16 --target usp >> "$OUT/build.log" 2>&1 || { say "build of usp FAILED"; tail -40 "$OUT/build.log"; exit 1; }
fi
if has check; then
  stamp "kernel-check"
  timeout ${CHECK_TIMEOUT:-150} $KC > "$OUT/kc.txt" 2>&1
  say "kernel-check rc=$?: $(tail -1 "$OUT/kc.txt")"
  if [ -n "${CHECK_ENV:-}" ]; then
    env $CHECK_ENV timeout ${CHECK_TIMEOUT:-150} $KC > "$OUT/kc_env.txt" 2>&1
    say "kernel-check $CHECK_ENV rc=$?: $(tail -1 "$OUT/kc_env.txt")"
  fi
fi
if has calibrate; then
  stamp "usp calibrate"
  timeout ${CAL_TIMEOUT:-300} "$BUILD/usp" calibrate --gpus 1 --short-blocks --base "${BASE:-sim/profiles/h100-calibrated.json}" \
    --profile-out "$OUT/profile.json" --measurements-out "$OUT/calibration.json" > "$OUT/calibrate.txt" 2>&1
  say "calibrate rc=$?"
fi
if has bench; then
  stamp "bench-gpu D = 128"
  timeout ${BENCH_TIMEOUT:-200} python3 tools/bench-gpu --lib "$LIB" --reps ${REPS:-30} --rounds ${ROUNDS:-10} \
    --json "$OUT/bench_d128.json" --shape 16384,128,0 --shape 16384,128,1 ${BENCH_ALT:-} > "$OUT/bench_d128.txt" 2>&1
  say "bench rc=$?"
fi
if has maskbench; then
  stamp "bench-gpu --mask"
  timeout ${BENCH_TIMEOUT:-200} python3 tools/bench-gpu --lib "$LIB" --reps ${MASK_REPS:-20} --rounds 5 \
    --json "$OUT/bench_mask.json" --mask docs:8192,3000,1500,1000,700,600,500,400,300,184 --mask window:2048 \
    --shape 16384,128,1 --shape 16384,64,1 ${MASK_ARGS:-} > "$OUT/bench_mask.txt" 2>&1
  say "bench --mask rc=$?"
fi
if has phases; then
  stamp "phase counters"
  USP_GPU_FWD_PROF=1 USP_GPU_BWD_PROF=1 timeout ${PHASE_TIMEOUT:-120} python3 tools/bench-gpu --lib "$LIB" --reps 3 \
    --rounds 1 --no-sdpa --no-errors --mask docs:8192,3000,1500,1000,700,600,500,400,300,184 --mask window:2048 \
    --shape 16384,128,1 > "$OUT/phases.txt" 2>&1
  say "phases rc=$?: $(grep -c '^PHASES' "$OUT/phases.txt") lines"
fi
if has merge; then
  stamp "published rings' merge"
  timeout ${MERGE_TIMEOUT:-120} python3 tools/bench/published_merge.py --json "$OUT/merge.json" > "$OUT/merge.txt" 2>&1
  say "merge (ring-flash-attention's 8K a rank) rc=$?"
  timeout ${MERGE_TIMEOUT:-120} python3 tools/bench/published_merge.py --seq 32768 --json "$OUT/merge_cp.json" \
    > "$OUT/merge_cp.txt" 2>&1
  say "merge (context parallel's 32K a rank, 64K on 2 GPUs) rc=$?"
fi
if has sanitize; then
  stamp "compute-sanitizer memcheck --quick"
  SAN=/usr/local/cuda/bin/compute-sanitizer; [ -x "$SAN" ] || SAN=compute-sanitizer
  timeout ${SAN_TIMEOUT:-150} $SAN --tool memcheck --error-exitcode 9 $KC --quick > "$OUT/memcheck.txt" 2>&1
  say "memcheck rc=$?: $(grep -E 'ERROR SUMMARY|passed' "$OUT/memcheck.txt" | tail -2 | tr '\n' ' ')"
fi
stamp "done"
(cd "$OUT" && tar czf /tmp/card_all.tgz --exclude=all.tgz . && mv /tmp/card_all.tgz all.tgz)
