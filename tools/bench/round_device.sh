#!/bin/bash
# round_device.sh: one device call over the backward kernels and the masked kernels, with
# binaries built elsewhere when they start on the machine (else it builds them), every log
# packed into $OUT/all.tgz and a short summary printed last.
#
#   STEPS=bwdcheck,bwdbench,maskcheck,plugin,sanitize,maskbench tools/bench/round_device.sh
#
# bwdcheck   usp kernel-check, every case, once per setting of BWD_CHECKS
#            (default: USP_GPU_BWD=ws, USP_GPU_BWD=wsa, USP_GPU_TILES=mma)
# bwdbench   tools/bench-gpu with USP_GPU_BWD=$BWD (default: unset, the default backward) and
#            the settings of BWD_ALT (default ws, wsa, wg) in the same process, SDPA flash and
#            cuDNN beside them; BWD_SHAPES (default L = 16384, D = 128 and 64, causal and not)
# maskcheck  usp kernel-check, every case, default settings (wgmma tiles, the mask plan)
# plugin     the example plugin (ABI 2, ABI 1) on the quick battery, the future-ABI one refused
# maskbench  tools/bench-gpu --mask (docs and window beside causal, SDPA beside them), then
#            our kernels alone once per setting of MASK_VARIANTS
# sanitize   compute-sanitizer memcheck on the quick battery, once per setting of SAN_ENVS
#            (last: the slowest step)
# Logs in $OUT (default ./out), packed into $OUT/all.tgz at the end.
set -u
OUT=${OUT:-$PWD/out}
STEPS=${STEPS:-bwdcheck,bwdbench,maskcheck,plugin,sanitize,maskbench}
BUILD=${BUILD:-build-dev}
BWD=${BWD:-default}
. "$(dirname "$0")/device_common.sh"
KC="$BUILD/usp_kernel_check"
LIB="$BUILD/libusp_bench_gpu.so"
T=${CHECK_TIMEOUT:-150}

kernel_tools

if has bwdcheck; then
  for v in ${BWD_CHECKS:-USP_GPU_BWD=ws USP_GPU_BWD=wsa USP_GPU_TILES=mma}; do
    stamp "kernel-check $v"
    env "$v" timeout $T $KC > "$OUT/kc_$(tag $v).txt" 2>&1
    rc=$?
    say "kernel-check $v rc=$rc: $(tail -1 "$OUT/kc_$(tag $v).txt")"
    # a hang (124) or a failure of a backward variant keeps it out of the later steps
    if [ $rc -ne 0 ] && [[ $v == USP_GPU_BWD=* ]]; then bad="${bad:-} ${v#USP_GPU_BWD=}"; fi
  done
fi
ok() { [[ " ${bad:-} " != *" $1 "* ]]; }
if ! ok "$BWD"; then say "USP_GPU_BWD=$BWD failed its check: benches USP_GPU_BWD=wg"; BWD=wg; fi
if has bwdbench; then
  stamp "bench-gpu backward (USP_GPU_BWD=$BWD)"
  alt=""
  for v in ${BWD_ALT:-USP_GPU_BWD=ws USP_GPU_BWD=wsa USP_GPU_BWD=wg}; do
    ok "${v#USP_GPU_BWD=}" && [ "$v" != "USP_GPU_BWD=$BWD" ] && alt="$alt --alt-env $v"
  done
  bwdenv=(); [ "$BWD" != default ] && bwdenv=(USP_GPU_BWD=$BWD)
  env "${bwdenv[@]}" timeout ${BENCH_TIMEOUT:-300} python3 tools/bench-gpu --lib "$LIB" --reps ${REPS:-20} \
    --json "$OUT/bench_bwd.json" $alt \
    ${BWD_SHAPES:---shape 16384,128,0 --shape 16384,128,1 --shape 16384,64,0 --shape 16384,64,1} \
    > "$OUT/bench_bwd.txt" 2>&1
  say "bench-gpu backward rc=$?"
fi
if has maskcheck; then
  stamp "kernel-check (defaults)"
  timeout $T $KC > "$OUT/kc_default.txt" 2>&1
  say "kernel-check defaults rc=$?: $(tail -1 "$OUT/kc_default.txt")"
fi
if has plugin; then
  stamp "plugins"
  check_plugins
fi
MASKS=${MASKS:---mask docs:8192,3000,1500,1000,700,600,500,400,300,184 --mask window:2048}
if has maskbench; then
  stamp "bench-gpu --mask"
  timeout ${BENCH_TIMEOUT:-300} python3 tools/bench-gpu --lib "$LIB" --reps ${REPS:-10} \
    --json "$OUT/bench_mask.json" $MASKS ${MASK_SHAPES:---shape 16384,128,1} > "$OUT/bench_mask.txt" 2>&1
  say "bench --mask rc=$?"
  for v in ${MASK_VARIANTS:-USP_GPU_MASK_PLAN=0 USP_GPU_MASK_PLAN=order USP_GPU_MASK_PLAN=all}; do
    stamp "bench-gpu --mask ($v)"
    env "$v" timeout ${BENCH_TIMEOUT:-300} python3 tools/bench-gpu --lib "$LIB" --reps ${REPS:-10} \
      --no-errors --no-sdpa --json "$OUT/bench_mask_$(tag $v).json" $MASKS ${MASK_SHAPES:---shape 16384,128,1} \
      > "$OUT/bench_mask_$(tag $v).txt" 2>&1
    say "bench --mask $v rc=$?"
  done
fi
if has sanitize; then
  for v in ${SAN_ENVS:-USP_GPU_TILES=wgmma USP_GPU_TILES=mma USP_GPU_BWD=ws}; do
    [[ $v == USP_GPU_BWD=* ]] && ! ok "${v#USP_GPU_BWD=}" && { say "memcheck $v skipped (check failed)"; continue; }
    stamp "compute-sanitizer memcheck --quick ($v)"
    env "$v" timeout ${SAN_TIMEOUT:-150} compute-sanitizer --tool memcheck --error-exitcode 9 $KC --quick \
      > "$OUT/memcheck_$(tag $v).txt" 2>&1
    say "memcheck $v rc=$?: $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_$(tag $v).txt" | tail -1)"
  done
fi
stamp "done"
(cd "$OUT" && tar czf /tmp/round_all.tgz . && find . -mindepth 1 -not -name summary.txt -delete \
  && mv /tmp/round_all.tgz all.tgz)
echo "================ summary"
cat "$SUM"
tar xzf "$OUT/all.tgz" -C /tmp 2>/dev/null; cd /tmp
for f in kc_*.txt; do [ -f "$f" ] && grep -E "FAIL" "$f" | head -6 | sed "s|^|$f: |"; done
[ -f bench_bwd.txt ] && sed -n '/TFLOP/,$p' bench_bwd.txt
for f in bench_mask_*.txt; do [ -f "$f" ] && { echo "---- $f"; sed -n '/^Masked kernels/,$p' "$f"; }; done
[ -f bench_mask.txt ] && sed -n '/^device/,$p' bench_mask.txt
