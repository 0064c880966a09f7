#!/bin/bash
# maskbwd_device.sh: one device call over the mask plan kernel and the masked backward: checks
# every setting, memcheck, the masked benchmark beside our causal kernels, ncu on the plan kernel.
# Builds $BUILD (build_kernel_tools) unless its usp_kernel_check and libusp_bench_gpu.so start.
#
#   STEPS=build,check,sanitize,bench,prof,ncu tools/bench/maskbwd_device.sh
#
# check     usp kernel-check, every case, with the defaults and once per setting of CHECK_ENVS
#           (entries are NAME=VALUE, several joined by '+': each one run of kernel-check); an
#           entry that fails or hangs keeps the USP_GPU_BWD_MASK words it names (rel, persist)
#           out of the later steps, but for words that passed alone before it
# sanitize  compute-sanitizer memcheck on the quick battery, once per setting of SAN_ENVS
#           ('default' for none)
# bench     tools/bench-gpu --mask $MASKS $SHAPES (default D = 128 and 64) --no-sdpa, ALT_ENVS as --alt-env
#           (same process, same inputs; our causal kernels the anchor)
# prof      bench-gpu --reps 1 with USP_GPU_MASK_PLAN_PROF=1: the plan kernel's passes in ns
# ncu       Nsight Compute (duration, launch) on the plan kernels of one bench-gpu run (--reps 1)
#           with --alt-env USP_GPU_MASK_PLAN_KERNEL=old: per mask 12 plans of the default
#           kernel (4 before forwards, then 8 before backwards), then 12 of the old one
# Logs in $OUT; the summary (say/stamp) in $OUT/summary.txt.
set -u
OUT=${OUT:-$PWD/out}
STEPS=${STEPS:-build,check,sanitize,bench,prof,ncu}
BUILD=${BUILD:-build-dev}
. "$(dirname "$0")/device_common.sh"
KC="$BUILD/usp_kernel_check"
LIB="$BUILD/libusp_bench_gpu.so"
MASKS=${MASKS:---mask docs:8192,3000,1500,1000,700,600,500,400,300,184 --mask window:2048}
CHECK_ENVS=${CHECK_ENVS:-USP_GPU_MASK_PLAN_CHECK=1+USP_GPU_MASK_PLAN=all USP_GPU_BWD_MASK=red \
USP_GPU_BWD_MASK=elem USP_GPU_BWD_MASK=persist,red+USP_GPU_MASK_PLAN=all}
SAN_ENVS=${SAN_ENVS:-default USP_GPU_BWD_MASK=persist,red}   # the plan kernel runs in every masked case
SHAPES=${SHAPES:---shape 16384,128,1 --shape 16384,64,1}
ALT_ENVS=${ALT_ENVS:-USP_GPU_BWD_MASK=elem USP_GPU_BWD_MASK=red USP_GPU_BWD_MASK=persist,red \
USP_GPU_MASK_PLAN_KERNEL=old}
SANITIZER=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)

if has build; then
  kernel_tools
fi

# envs ENTRY: the assignments of one entry ('a=1+b=2' -> 'a=1 b=2'; 'default' -> none)
envs() { [ "$1" = default ] && return; echo "${1//+/ }"; }

if has check; then
  for v in default $CHECK_ENVS; do
    stamp "kernel-check $v"
    f="$OUT/kc_$(tag "$v").txt"
    env $(envs "$v") timeout ${CHECK_TIMEOUT:-60} $KC > "$f" 2>&1
    rc=$?
    say "kernel-check $v rc=$rc: $(tail -1 "$f")"
    grep -E "FAIL|differ" "$f" | head -5 | tee -a "$SUM"
    if [[ $v == *USP_GPU_BWD_MASK=* ]]; then
      w=${v#*USP_GPU_BWD_MASK=}; w=${w%%+*}
      if [ $rc = 0 ]; then [[ $w != *,* ]] && good="${good:-} $w"
      else
        for x in ${w//,/ }; do [[ " ${good:-} " != *" $x "* ]] && bad="${bad:-} $x"; done
        say "kept out of the later steps:${bad:-}"
      fi
    fi
  done
fi
# drop ENTRY... : the entries that name none of the words in $bad
drop() { for e in "$@"; do k=1; for w in ${bad:-}; do [[ $e == *USP_GPU_BWD_MASK=*$w* ]] && k=0; done; [ $k = 1 ] && echo "$e"; done; }
SAN_ENVS=$(drop $SAN_ENVS)
ALT_ENVS=$(drop $ALT_ENVS)
if has sanitize; then
  for v in $SAN_ENVS; do
    stamp "memcheck --quick $v"
    f="$OUT/memcheck_$(tag "$v").txt"
    env $(envs "$v") timeout ${SAN_TIMEOUT:-150} "$SANITIZER" --tool memcheck $KC --quick > "$f" 2>&1
    say "memcheck $v rc=$?: $(grep -E "ERROR SUMMARY" "$f" | tail -1) $(tail -1 "$f")"
  done
fi
if has bench; then
  stamp "bench-gpu --mask"
  alt=""; for v in $ALT_ENVS; do alt="$alt --alt-env $v"; done
  timeout ${BENCH_TIMEOUT:-200} python3 tools/bench-gpu --lib "$LIB" --reps ${REPS:-10} --no-sdpa $alt \
    --json "$OUT/bench_mask.json" $MASKS $SHAPES > "$OUT/bench_mask.txt" 2>&1
  say "bench --mask rc=$?"
  sed -n '/^Masked kernels/,$p' "$OUT/bench_mask.txt" | tee -a "$SUM"
fi
if has prof; then
  stamp "plan kernel passes (USP_GPU_MASK_PLAN_PROF=1)"
  USP_GPU_MASK_PLAN_PROF=1 timeout 90 python3 tools/bench-gpu --lib "$LIB" --reps 1 --no-errors --no-sdpa \
    $MASKS --shape 16384,128,1 > "$OUT/plan_prof.txt" 2>&1
  say "prof rc=$?"
  grep "^mask plan" "$OUT/plan_prof.txt" | sort | uniq -c | sort -rn | head -4 | tee -a "$SUM"
  grep "^mask plan" "$OUT/plan_prof.txt" | awk '{ b = ($3 == "(backward,") ? "backward" : "forward";
    r[b] += $(NF-7); i[b] += $(NF-4); s[b] += $(NF-1); n[b]++ }
    END { for (k in n) printf "plan %s, mean of %d: rows %.0f ns, items %.0f ns, sort %.0f ns\n", k, n[k],
      r[k] / n[k], i[k] / n[k], s[k] / n[k] }' | tee -a "$SUM"
fi
if has ncu; then
  stamp "ncu plan kernels"
  f="$OUT/ncu_plan.txt"
  timeout ${NCU_TIMEOUT:-90} "$NCU" -k regex:mask_plan --launch-count 48 --section SpeedOfLight --section LaunchStats \
    python3 tools/bench-gpu --lib "$LIB" --reps 1 --no-errors --no-sdpa --alt-env USP_GPU_MASK_PLAN_KERNEL=old \
    $MASKS --shape 16384,128,1 > "$f" 2>&1
  say "ncu rc=$?"
  # kernel name and duration of each profiled launch, in order
  awk '/mask_plan[a-z_]*kernel/ { match($0, /mask_plan[a-z_]*kernel/); k = substr($0, RSTART, RLENGTH) }
       /^ *Duration/ { printf "%s %s %s\n", k, $2, $3 }' "$f" > "$OUT/ncu_plan_durations.txt"
  awk '{ n[$1]++; u[$1] = $2; v[$1] = v[$1] " " $3 } END { for (k in n) print "ncu " k " (" n[k] " launches, " u[k] "):" v[k] }' \
    "$OUT/ncu_plan_durations.txt" | tee -a "$SUM"
fi
stamp "done"
