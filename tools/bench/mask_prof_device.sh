#!/bin/bash
# mask_prof_device.sh: one device call that checks and profiles the masked kernels beside the
# causal ones, with binaries built elsewhere (build-dev/usp_kernel_check, libusp_bench_gpu.so).
#
#   STEPS=check,bench,phases,ncu tools/bench/mask_prof_device.sh
#
# check    usp kernel-check, every case, once with the defaults and once per setting of
#          CHECK_ENVS (default: USP_GPU_MASK_PLAN=all, the plan on the causal/diag masks too)
# bench    tools/bench-gpu --mask (docs and window beside our causal kernels, SDPA beside them,
#          errors against fp64), our kernels once more per setting of ALT_ENVS (--alt-env: same
#          process, same inputs)
# phases   only with PHASE_LIB set: the same masks and the causal anchor through PHASE_LIB, a
#          libusp_bench_gpu.so whose kernels were given clock64() counters per phase by hand
#          (prologue, units or query groups, epilogue; printed as lines "PHASES ..."; such a
#          build is not in the tree and runs slower: read its proportions, not its rates), with
#          PHASE_ALT_ENVS (default ALT_ENVS) as --alt-env
# ncu      Nsight Compute on the kernels whose names match NCU_KERNELS (default the forward and
#          backward), masked (NCU_MASK, default the window) then causal: speed of light,
#          occupancy, launch, warp states, scheduler, memory
# Logs in $OUT; a short table last.
set -u
OUT=${OUT:-$PWD/out}
STEPS=${STEPS:-check,bench,phases,ncu}
BUILD=${BUILD:-build-dev}
. "$(dirname "$0")/device_common.sh"
KC="$BUILD/usp_kernel_check"
LIB="$BUILD/libusp_bench_gpu.so"
MASKS=${MASKS:---mask docs:8192,3000,1500,1000,700,600,500,400,300,184 --mask window:2048}

if has check; then
  for v in default ${CHECK_ENVS:-USP_GPU_MASK_PLAN=all}; do
    stamp "kernel-check $v"
    if [ "$v" = default ]; then timeout ${CHECK_TIMEOUT:-150} $KC > "$OUT/kc_default.txt" 2>&1
    else env "$v" timeout ${CHECK_TIMEOUT:-150} $KC > "$OUT/kc_$(tag $v).txt" 2>&1; fi
    rc=$?
    f="$OUT/kc_$( [ "$v" = default ] && echo default || tag $v).txt"
    say "kernel-check $v rc=$rc: $(tail -1 "$f")"
    grep -E "FAIL" "$f" | head -5
    [ $rc = 124 ] && { say "kernel-check hung: stop"; exit 1; }
  done
fi
if has bench; then
  stamp "bench-gpu --mask"
  alt=""; for v in ${ALT_ENVS:-}; do alt="$alt --alt-env $v"; done
  timeout ${BENCH_TIMEOUT:-300} python3 tools/bench-gpu --lib "$LIB" --reps ${REPS:-10} $alt \
    --json "$OUT/bench_mask.json" $MASKS --shape 16384,128,1 > "$OUT/bench_mask.txt" 2>&1
  say "bench --mask rc=$?"
fi
if has phases && [ -n "${PHASE_LIB:-}" ]; then
  stamp "phases"
  alt=""; for v in ${PHASE_ALT_ENVS:-${ALT_ENVS:-}}; do alt="$alt --alt-env $v"; done
  timeout 200 python3 tools/bench-gpu --lib "$PHASE_LIB" --reps 3 --no-errors --no-sdpa $alt $MASKS \
    --shape 16384,128,1 > "$OUT/phases.txt" 2>&1
  say "phases rc=$?"
fi
if has ncu; then
  stamp "ncu"
  timeout ${NCU_TIMEOUT:-150} ncu -k regex:"${NCU_KERNELS:-fwd_ws_kernel|bwd_ws_kernel}" --launch-count 16 --section SpeedOfLight \
    --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats \
    --section MemoryWorkloadAnalysis python3 tools/bench-gpu --lib "$LIB" --reps 1 --no-errors --no-sdpa \
    ${NCU_MASK:---mask window:2048} --shape 16384,128,1 > "$OUT/ncu.txt" 2>&1
  say "ncu rc=$?"
fi
stamp "done"
echo "================ summary"
cat "$SUM"
if [ -f "$OUT/phases.txt" ]; then
  echo "---- phases: the last line of each kernel under each mask"
  python3 - "$OUT/phases.txt" <<'PY'
import sys
sec, last, order = "", {}, []
for line in open(sys.argv[1]):
    if line.startswith("mask "):
        sec = line.split()[1]
    elif line.startswith("PHASES"):
        w = line.split()
        k = (sec, w[1], w[2], w[3] if w[3] == "fetch" and w[4] else "", w[4] if w[3] == "fetch" else "")
        if k not in last:
            order.append(k)
        last[k] = line.rstrip()
for k in order:
    print(k[0][:14], last[k])
PY
fi
if [ -f "$OUT/ncu.txt" ]; then
  echo "---- ncu (duration, SM/tensor throughput, issue, warp cycles per instruction)"
  grep -E "fwd_ws_kernel|bwd_ws_kernel|mask_plan_kernel|^ +Duration|Compute \(SM\) Throughput|Memory Throughput|Issue Slots Busy|No Eligible|Warp Cycles Per Issued|L2 Hit Rate|Stall" "$OUT/ncu.txt" | sed -E 's/  +/ /g' | cut -c1-150 | head -120
fi
[ -f "$OUT/bench_mask.txt" ] && sed -n '/^device/,$p' "$OUT/bench_mask.txt"
