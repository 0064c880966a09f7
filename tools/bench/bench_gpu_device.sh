#!/bin/bash
# bench_gpu_device.sh: everything gpu/NOTES.md records, in one go on a GPU machine.
#
#   STEPS=build,check,bench,sanitize,plugin tools/bench/bench_gpu_device.sh
#
# build     cmake + the usp binary (or usp_kernel_check alone when another part
#           of the tree does not build), plugins, libusp_bench_gpu.so
# check     usp kernel-check (text, and --json)
# bench     tools/bench-gpu: ours vs SDPA flash and cuDNN, errors vs fp64
# sanitize  compute-sanitizer memcheck and racecheck on the quick battery
#           (SANITIZE_FULL=1: memcheck on the whole battery)
# plugin    the example plugin through kernel-check; the wrong-ABI plugin refused
# Logs land in $OUT (default ./out); a summary is printed last.
set -u
OUT=${OUT:-$PWD/out}
STEPS=${STEPS:-build,check,bench,sanitize,plugin}
BUILD=${BUILD:-build}
. "$(dirname "$0")/device_common.sh"

KC="$BUILD/usp kernel-check"
if has build; then
  stamp "build"
  cmake -S . -B "$BUILD" -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc > "$OUT/build.log" 2>&1
  cmake --build "$BUILD" -j16 --target usp_gpu usp_naive_plugin usp_bad_abi_plugin usp_bench_gpu \
    >> "$OUT/build.log" 2>&1 || { say "build of usp_gpu FAILED"; tail -30 "$OUT/build.log"; exit 1; }
  if ! cmake --build "$BUILD" -j16 --target usp >> "$OUT/build.log" 2>&1; then
    say "usp did not build (another part of the tree); using usp_kernel_check"
    cmake --build "$BUILD" -j16 --target usp_kernel_check >> "$OUT/build.log" 2>&1
  fi
fi
[ -x "$BUILD/usp" ] || KC="$BUILD/usp_kernel_check"

if has check; then
  stamp "kernel-check (built-in)"
  timeout 400 $KC 2>&1 | tee "$OUT/kcheck.txt"
  say "kernel-check rc=${PIPESTATUS[0]}: $(tail -1 "$OUT/kcheck.txt")"
  [ -n "${CHECK_JSON:-}" ] && timeout 400 $KC --json > "$OUT/kcheck.json" 2>&1
fi

if has bench; then
  stamp "bench-gpu"
  timeout ${BENCH_TIMEOUT:-400} python3 tools/bench-gpu --lib "$BUILD/libusp_bench_gpu.so" --json "$OUT/bench.json" \
    ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.txt"
fi

if has sanitize; then
  for tool in memcheck racecheck; do
    stamp "compute-sanitizer $tool"
    args="--quick"
    [ "$tool" = memcheck ] && [ -n "${SANITIZE_FULL:-}" ] && args=""
    timeout 300 compute-sanitizer --tool $tool --error-exitcode 9 $KC $args > "$OUT/san_$tool.txt" 2>&1
    rc=$?
    say "$tool rc=$rc: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/san_$tool.txt" | tail -1)"
  done
fi

if has plugin; then
  stamp "example plugin"
  timeout 300 $KC --kernel "$BUILD/plugins/naive_plugin.so" ${PLUGIN_ARGS:---quick} 2>&1 | tee "$OUT/plugin.txt"
  say "naive plugin rc=${PIPESTATUS[0]}: $(tail -1 "$OUT/plugin.txt")"
  $KC --kernel "$BUILD/plugins/bad_abi_plugin.so" > "$OUT/bad_abi.txt" 2>&1
  say "bad-abi plugin rc=$?: $(cat "$OUT/bad_abi.txt")"
fi

stamp "done"
# at most a few files travel back: everything in one archive, the main ones beside it
(cd "$OUT" && tar czf all.tgz --exclude=all.tgz . && rm -f build.log san_*.txt plugin.txt bad_abi.txt)
echo "================ summary"
cat "$SUM"
[ -f "$OUT/kcheck.txt" ] && grep -E "FAIL" "$OUT/kcheck.txt" | head -20
[ -f "$OUT/bench.txt" ] && sed -n '/TFLOP/,$p' "$OUT/bench.txt"
