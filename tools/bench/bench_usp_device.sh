#!/bin/bash
# bench_usp_device.sh: the GPU executor's figures of gpu/NOTES.md, in one go on a
# machine with 2 GPUs (from the repository root).
#
#   STEPS=build,test,trace,launchers,bench tools/bench/bench_usp_device.sh
#
# build      cmake + usp, bench_usp, test_gpu_executor in $BUILD (cmocka from
#            .carry/cmocka when the machine has none)
# test       test_gpu_executor: the world-2 matrix (self-launched, then by
#            environment), usp run both ways, the failure paths
# diag       the matrix plain, one step at a time, on mma.sync tiles, on the naive plugin
# trace      Chrome traces of two 2-GPU runs (ring 2 zigzag, ulysses 2), 32K tokens
# launchers  usp run under torchrun, under mpirun (when installed), by hand
# bench      tools/bench-usp: USP beside PyTorch context parallel, scaling efficiency
# Everything lands in $OUT (8 files at most); the summary is printed last.
# BUDGET (s, default 570) bounds the whole run: later steps get what is left.
set -u
OUT=${OUT:-$PWD/out}
BUILD=${BUILD:-build-gpuexec}
STEPS=${STEPS:-build,test,trace,launchers,bench}
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
. "$(dirname "$0")/device_common.sh"
deadline=$(( t0 + ${BUDGET:-570} ))
left() { local l=$(( deadline - $(date +%s) )); [ $l -gt 5 ] && echo $l || echo 5; }

if has build; then
  stamp "build"
  extra=()
  if [ ! -f /usr/include/cmocka.h ] && [ -f .carry/cmocka/lib/libcmocka.so ]; then
    extra=(-DUSP_CMOCKA="$PWD/.carry/cmocka/lib/libcmocka.so" -DUSP_CMOCKA_INCLUDE="$PWD/.carry/cmocka/include")
  fi
  cmake -S . -B "$BUILD" -DBUILD_TESTING=ON -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc "${extra[@]}" \
    > "$OUT/build.log" 2>&1
  targets="usp bench_usp test_gpu_executor usp_naive_plugin"
  if ! cmake --build "$BUILD" -j32 --target $targets >> "$OUT/build.log" 2>&1; then
    say "build failed; again without -Werror (this copy of the tree only)"
    grep -m8 -E "error|Error" "$OUT/build.log" | tee -a "$SUM"
    sed -i 's/ -Werror)/)/; s/,-Werror"/"/; s/ -Werror=all-warnings//' CMakeLists.txt gpu/CMakeLists.txt
    cmake --build "$BUILD" -j32 --target $targets >> "$OUT/build.log" 2>&1 ||
      { say "build FAILED"; tail -40 "$OUT/build.log"; exit 1; }
  fi
  grep -E "usp: (NCCL|no OpenBLAS)" "$OUT/build.log" | tee -a "$SUM"
fi
U=$BUILD/usp

if has test; then
  stamp "test_gpu_executor"
  timeout $(( $(left) > 300 ? 300 : $(left) )) "$BUILD/tests/test_gpu_executor" > "$OUT/test_gpu.txt" 2>&1
  rc=$?
  say "test_gpu_executor rc=$rc"
  [ $rc -ne 0 ] && [ -z "${NO_DIAG:-}" ] && STEPS="$STEPS,diag" # a failure: find out which part
  grep -E "^matrix \(|FAIL|\[  (PASSED|FAILED)|skipped" "$OUT/test_gpu.txt" | tee -a "$SUM"
fi

if has diag; then
  # which part is wrong: one step at a time, the mma.sync tiles, the naive plugin, one GPU
  D=$OUT/diag.txt
  for v in "plain:" "sync-steps:USP_GPU_SYNC_STEPS=1" "mma-tiles:USP_GPU_TILES=mma" \
           "naive-plugin:USP_TEST_KERNEL=$PWD/$BUILD/plugins/naive_plugin.so"; do
    stamp "matrix ${v%%:*}"
    echo "== ${v%%:*}" >> "$D"
    env ${v#*:} timeout 120 "$BUILD/tests/test_gpu_executor" --matrix >> "$D" 2>&1
    say "  rc=$? $(grep '^matrix' "$D" | tail -1)"
  done
  stamp "one GPU, three times"
  for i in 1 2 3; do
    $U run --backend gpu --ulysses 1 --ring 1 --ring-impl basic --dtype bf16 --seq 512 --heads 8 --head-dim 128 \
      >> "$D" 2>&1
    say "  1 GPU run $i rc=$?"
  done
fi

if has trace; then
  for mesh in "--ulysses 1 --ring 2 --ring-impl zigzag:ring2_zigzag" "--ulysses 2 --ring 1:ulysses2"; do
    stamp "trace ${mesh#*:}"
    timeout 60 $U run --backend gpu ${mesh%:*} --dtype bf16 --seq 32768 --heads 32 --head-dim 128 --no-check \
      --warmup 1 --iters 3 --trace "$OUT/trace_gpu_${mesh#*:}_32k.json" 2>&1 | tee -a "$OUT/launchers.txt" |
      grep -E "^time|result" | tee -a "$SUM"
  done
fi

if has launchers; then
  P="run --backend gpu --dtype bf16 --seq 4096 --heads 8 --kv-heads 1 --head-dim 128"
  L=$OUT/launchers.txt
  stamp "launchers"
  echo "== torchrun" >> "$L"
  timeout 120 python3 -m torch.distributed.run --nproc_per_node 2 --no-python "$U" $P --ulysses 1 --ring 2 \
    --ring-impl stripe >> "$L" 2>&1
  say "torchrun rc=$? ($(grep -c PASS "$L") PASS lines so far)"
  if command -v mpirun > /dev/null; then
    echo "== mpirun" >> "$L"
    timeout 120 mpirun --allow-run-as-root --oversubscribe -np 2 -x NCCL_NVLS_ENABLE "$U" $P --ulysses 2 --ring 1 \
      >> "$L" 2>&1
    say "mpirun rc=$?"
  else
    say "mpirun: not installed here"
  fi
  echo "== by hand (RANK, WORLD_SIZE, MASTER_PORT)" >> "$L"
  for r in 1 0; do
    RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=29611 timeout 120 "$U" $P \
      --ulysses 1 --ring 2 --ring-impl allgather --no-causal >> "$L" 2>&1 &
  done
  wait
  say "by hand: $(grep -c 'result: PASS' "$L") 'result: PASS' lines in launchers.txt"
fi

if has bench; then
  stamp "bench-usp"
  timeout $(left) python3 tools/bench-usp --build "$BUILD" --json "$OUT/bench.json" --logs /tmp/bench-usp-logs \
    ${BENCH_ARGS:-} > "$OUT/bench.txt" 2>&1
  say "bench-usp rc=$?"
fi

stamp "done"
echo "================ summary"
cat "$SUM"
[ -f "$OUT/bench.txt" ] && sed -n '/^USP vs PyTorch/,$p' "$OUT/bench.txt"
exit 0
