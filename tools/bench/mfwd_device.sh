#!/bin/bash
# mfwd_device.sh: one device call on the masked forward (attn_fwd_ws.cu: the FLOW kernel under
# a mask plan), with binaries built on the machine unless they already start there.
#
#   STEPS=check,sanitize,bench,phases,causal,plan tools/bench/mfwd_device.sh
#
# check     usp kernel-check, every case: defaults, then each setting of CHECK_ENVS
#           (default USP_GPU_FWD_FLOW=nap,pdl,hg2 and =inplan,hg2: the FLOW kernel's opt-in switches)
# sanitize  compute-sanitizer memcheck --quick under each setting of SAN_ENVS (default the same)
# bench     tools/bench-gpu --mask docs, window, D = 128, our kernels only, errors against fp64,
#           the default beside each --alt-env of ALT_ENVS (contenders interleaved by round)
# phases    the same masks with USP_GPU_FWD_PROF=1 (a line "PHASES ..." per forward call: the
#           call and the kernel's span, the SMs' idle time, consumer 0's cycles a turn, waits),
#           the default beside PHASE_ALT_ENVS; the causal anchor (one CTA a query tile) prints too
# causal    causal 16K with USP_GPU_MASK_PLAN=all (the planned kernels on long units): timings
#           of the default (FLOW) beside CAUSAL_ALT_ENVS, then the same with USP_GPU_FWD_PROF=1
# plan      the plan kernel's passes (USP_GPU_MASK_PLAN_PROF=1), window, one call
# Logs in $OUT, a summary last.
set -u
OUT=${OUT:-$PWD/out}
STEPS=${STEPS:-check,sanitize,bench,phases,causal,plan}
BUILD=${BUILD:-build-dev}
. "$(dirname "$0")/device_common.sh"
KC="$BUILD/usp_kernel_check"
LIB="$BUILD/libusp_bench_gpu.so"
MASKS="--mask docs:8192,3000,1500,1000,700,600,500,400,300,184 --mask window:2048"
CHECK_ENVS=${CHECK_ENVS:-USP_GPU_FWD_FLOW=nap,pdl,hg2 USP_GPU_FWD_FLOW=inplan,hg2}
SAN_ENVS=${SAN_ENVS:-$CHECK_ENVS}
ALT_ENVS=${ALT_ENVS:-USP_GPU_FWD_FLOW=nap USP_GPU_FWD_FLOW=pdl USP_GPU_FWD_FLOW=hg4 USP_GPU_FWD_FLOW=inplan USP_GPU_FWD_PROF=1}
PHASE_ALT_ENVS=${PHASE_ALT_ENVS:-USP_GPU_FWD_UNITS=static USP_GPU_FWD_FLOW=hg4 USP_GPU_FWD_FLOW=inplan USP_GPU_FWD_FLOW=nap,pdl}
CAUSAL_ALT_ENVS=${CAUSAL_ALT_ENVS:-USP_GPU_FWD_UNITS=static USP_GPU_FWD_UNITS=static,pad USP_GPU_FWD_FLOW=nap}
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
alts() { for v in "$@"; do printf -- ' --alt-env %s' "$v"; done; }

kernel_tools

if has check; then
  for v in default $CHECK_ENVS; do
    stamp "kernel-check $v"
    f="$OUT/kc_$(tag $v).txt"
    if [ "$v" = default ]; then timeout 60 $KC > "$f" 2>&1; else env "$v" timeout 60 $KC > "$f" 2>&1; fi
    rc=$?
    say "kernel-check $v rc=$rc: $(tail -1 "$f")"
    grep -E "FAIL" "$f" | head -5 | tee -a "$SUM"
  done
fi
if has sanitize; then
  for v in $SAN_ENVS; do
    stamp "compute-sanitizer memcheck --quick ($v)"
    f="$OUT/memcheck_$(tag $v).txt"
    env "$v" timeout 90 "$SAN" --tool memcheck $KC --quick > "$f" 2>&1
    say "memcheck $v rc=$?: $(grep -E 'ERROR SUMMARY' "$f" | tail -1) $(grep -E 'cases' "$f" | tail -1)"
  done
fi
if has bench; then
  stamp "bench-gpu --mask, default beside: $ALT_ENVS"
  timeout 100 python3 tools/bench-gpu --lib "$LIB" --reps ${REPS:-10} --no-sdpa $(alts $ALT_ENVS) \
    --json "$OUT/bench_mask.json" $MASKS --shape 16384,128,1 > "$OUT/bench_mask.txt" 2>&1
  say "bench --mask rc=$?"
fi
if has phases; then
  stamp "phases (USP_GPU_FWD_PROF=1), default beside: $PHASE_ALT_ENVS"
  USP_GPU_FWD_PROF=1 timeout 60 python3 tools/bench-gpu --lib "$LIB" --reps 3 --rounds 1 --no-errors --no-sdpa \
    $(alts $PHASE_ALT_ENVS) $MASKS --shape 16384,128,1 > "$OUT/phases.txt" 2>&1
  say "phases rc=$?"
fi
if has causal; then
  stamp "causal 16K planned (USP_GPU_MASK_PLAN=all), default beside: $CAUSAL_ALT_ENVS"
  USP_GPU_MASK_PLAN=all timeout 60 python3 tools/bench-gpu --lib "$LIB" --reps ${REPS:-10} --no-errors \
    $(alts $CAUSAL_ALT_ENVS) --json "$OUT/bench_causal_all.json" --shape 16384,128,1 > "$OUT/bench_causal_all.txt" 2>&1
  say "bench causal plan=all rc=$?"
  USP_GPU_MASK_PLAN=all USP_GPU_FWD_PROF=1 timeout 60 python3 tools/bench-gpu --lib "$LIB" --reps 1 --rounds 1 \
    --no-errors $(alts $CAUSAL_ALT_ENVS) --shape 16384,128,1 > "$OUT/phases_causal_all.txt" 2>&1
  say "phases causal plan=all rc=$?"
fi
if has plan; then
  stamp "plan kernel passes (USP_GPU_MASK_PLAN_PROF=1)"
  USP_GPU_MASK_PLAN_PROF=1 timeout 30 python3 tools/bench-gpu --lib "$LIB" --reps 2 --rounds 1 --no-errors --no-sdpa \
    $MASKS --shape 16384,128,1 > "$OUT/plan_prof.txt" 2>&1
  say "plan prof rc=$?"
fi
stamp "done"
echo "================ summary"
cat "$SUM"
for f in phases.txt phases_causal_all.txt; do
  [ -f "$OUT/$f" ] || continue
  echo "---- $f: the last PHASES line of each kernel and setting under each mask"
  python3 - "$OUT/$f" <<'PY'
import sys, re
sec, last, order = "causal", {}, []
for line in open(sys.argv[1]):
    if line.startswith("mask ") or line.startswith("shape "):
        sec = line.split()[1]
    elif line.startswith("PHASES"):
        k = (sec[:24], line.split(" ctas ")[0])
        if k not in last:
            order.append(k)
        last[k] = line.rstrip()
for k in order:
    print(k[0], last[k])
PY
done
[ -f "$OUT/plan_prof.txt" ] && grep -m 6 "mask plan" "$OUT/plan_prof.txt"
[ -f "$OUT/bench_mask.txt" ] && sed -n '/^device/,$p' "$OUT/bench_mask.txt"
[ -f "$OUT/bench_causal_all.txt" ] && sed -n '/^TFLOP/,$p' "$OUT/bench_causal_all.txt" | head -30
exit 0
