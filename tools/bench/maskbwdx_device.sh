#!/bin/bash
# maskbwdx_device.sh: the masked backward on the dK-after-dQ loop, opt-in as USP_GPU_BWD_MASK=x
# (D = 128: v11's 64-row loop under per-row masks; D = 64: the 128-row loop of v9 under per-row
# masks), =x64 (D = 64: that loop on 64-row tiles, dQ split by keys), =xv, =x,xp. Run from the
# repository root as `OUT=out STEPS=... tools/bench/maskbwdx_device.sh`; about 100 s of GPU time
# (one H100 or H200; builds build-dev first, about 40 s on 16 cores, unless it is there).
#   build      build_kernel_tools, unless build-dev's usp_kernel_check and libusp_bench_gpu.so start
#   check      usp kernel-check, every case: defaults, x, x64; quick battery with xv (D = 128: x with
#              dV's products issued before the wait for dP^T), with x,xp (x, dK/dV rows prefetched
#              into L2 two tiles before the epilogue) and with x and no mask plan
#   sanitize   compute-sanitizer memcheck --quick with x, x64, xv
#   bench      bench-gpu --mask docs/window at D = 128 and 64, --alt-env x, x64, xv, x,xp (at D = 128 x64
#              is the default again, at D = 64 xv: controls of the default in the same process)
set -u
OUT=${OUT:-$PWD/out}
STEPS=${STEPS:-build,check,sanitize,bench}
BUILD=build-dev
. "$(dirname "$0")/device_common.sh"
KC="$BUILD/usp_kernel_check"
LIB="$BUILD/libusp_bench_gpu.so"
SANITIZER=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)

if has build; then
  kernel_tools
fi
bad=""
if has check; then
  for v in default USP_GPU_BWD_MASK=x USP_GPU_BWD_MASK=x64; do
    stamp "kernel-check $v"
    f="$OUT/kc_$(tag "$v").txt"
    if [ $v = default ]; then timeout 60 $KC > "$f" 2>&1; else env $v timeout 60 $KC > "$f" 2>&1; fi
    rc=$?
    say "kernel-check $v rc=$rc: $(tail -1 "$f")"
    grep -E "FAIL" "$f" | head -5 | tee -a "$SUM"
    [ $rc != 0 ] && [ $v != default ] && bad="$bad ${v#*=}"
  done
  stamp "kernel-check --quick USP_GPU_BWD_MASK=xv"
  f="$OUT/kc_xv.txt"
  USP_GPU_BWD_MASK=xv timeout 40 $KC --quick > "$f" 2>&1
  rc=$?
  say "kernel-check --quick xv rc=$rc: $(tail -1 "$f")"
  grep -E "FAIL" "$f" | head -5 | tee -a "$SUM"
  [ $rc != 0 ] && bad="$bad xv"
  stamp "kernel-check --quick USP_GPU_BWD_MASK=x,xp"
  f="$OUT/kc_x_xp.txt"
  USP_GPU_BWD_MASK=x,xp timeout 40 $KC --quick > "$f" 2>&1
  rc=$?
  say "kernel-check --quick x,xp rc=$rc: $(tail -1 "$f")"
  grep -E "FAIL" "$f" | head -5 | tee -a "$SUM"
  [ $rc != 0 ] && bad="$bad x,xp"
  stamp "kernel-check --quick USP_GPU_BWD_MASK=x USP_GPU_MASK_PLAN=0"
  f="$OUT/kc_x_plan0.txt"
  USP_GPU_BWD_MASK=x USP_GPU_MASK_PLAN=0 timeout 40 $KC --quick > "$f" 2>&1
  rc=$?
  say "kernel-check --quick x, no plan rc=$rc: $(tail -1 "$f")"
  grep -E "FAIL" "$f" | head -5 | tee -a "$SUM"
  [ $rc != 0 ] && bad="$bad x"
  [ -n "$bad" ] && say "failed, kept out of the later steps:$bad"
fi
keep() { for v in "$@"; do [[ " $bad " == *" $v "* ]] || echo "$v"; done; }
SET=$(keep x x64 xv x,xp)
if has sanitize; then
  for v in $(keep x x64 xv); do
    stamp "memcheck --quick USP_GPU_BWD_MASK=$v"
    f="$OUT/memcheck_$(tag "$v").txt"
    USP_GPU_BWD_MASK=$v timeout 60 "$SANITIZER" --tool memcheck $KC --quick > "$f" 2>&1
    say "memcheck $v rc=$?: $(grep -E "ERROR SUMMARY" "$f" | tail -1) $(tail -1 "$f")"
  done
fi
if has bench && [ -n "$SET" ]; then
  alt=""; for v in $SET; do alt="$alt --alt-env USP_GPU_BWD_MASK=$v"; done
  for D in 128 64; do
    stamp "bench-gpu --mask D=$D"
    timeout 90 python3 tools/bench-gpu --lib "$LIB" --mask docs:8192,3000,1500,1000,700,600,500,400,300,184 \
      --mask window:2048 --shape 16384,$D,1 --reps 10 --no-sdpa $alt --json "$OUT/bench_mask_d$D.json" \
      > "$OUT/bench_mask_d$D.txt" 2>&1
    say "bench --mask D=$D rc=$?"
    sed -n '/^Backward two ways/,$p' "$OUT/bench_mask_d$D.txt" | tee -a "$SUM"
  done
fi
stamp "done"
