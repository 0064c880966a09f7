#!/bin/bash
# ipc_device.sh: one device call over the GPU executor on ONE GPU: several ranks share it
# through the IPC transport (gpu/transport/ipc_transport.c), even and uneven ulysses head
# splits, against the fp64 reference. Everything runs with the defaults (USP_TRANSPORT is
# unset, so ranks sharing the GPU get IPC by themselves, and uneven splits need no setting)
# except the steps that name USP_TRANSPORT. Builds usp and test_gpu_executor in $BUILD
# unless they start already; test_gpu_executor needs cmocka: CMOCKA_DIR (a folder with
# cmocka.h and libcmocka.so.0) where the machine has none.
#
#   STEPS=kcheck,smoke,test,cli,sanitize tools/bench/ipc_device.sh   (the default; matrix is extra)
#
# kcheck    usp kernel-check --case a2a: the pack/unpack kernels, even and uneven splits
# smoke     usp run --backend gpu, world 2 even (ring, then ulysses), then world 4 uneven; when
#           the first fails, it runs again with USP_GPU_SYNC_STEPS=1 and nothing else runs
# matrix    test_gpu_executor --matrix SET for MATRIX_SETS (default uneven2 uneven3 uneven4;
#           even is the fourth), one line a case
# test      the whole test_gpu_executor (ctest's test), timeout 240
# cli       usp run --backend gpu --gpus 4: uneven heads, GQA, a document mask, --json, world 3
#           fp32, world 1 on NCCL; world 2 sharing the GPU with USP_TRANSPORT=ipc (the transport
#           it gets without the setting too), and with USP_TRANSPORT=nccl, which must refuse it
#           (exit 2, one line from each rank saying why)
# sanitize  compute-sanitizer memcheck --target-processes all on a world-2 uneven run
# Logs in $OUT (default ./out), a summary last.
set -u
OUT=${OUT:-$PWD/out}
STEPS=${STEPS:-kcheck,smoke,test,cli,sanitize}
MATRIX_SETS=${MATRIX_SETS:-uneven2 uneven3 uneven4}
BUILD=${BUILD:-build-dev}
. "$(dirname "$0")/device_common.sh"
USP="$BUILD/usp"
TGE="$BUILD/tests/test_gpu_executor"

if [ -x "$USP" ] && [ -x "$TGE" ] && "$USP" run --backend gpu --help > /dev/null 2>&1; then
  say "prebuilt usp and test_gpu_executor start: no build"
else
  stamp "build"
  extra=()
  if [ -n "${CMOCKA_DIR:-}" ] && [ -f "$CMOCKA_DIR/cmocka.h" ]; then
    extra=(-DUSP_CMOCKA="$CMOCKA_DIR/libcmocka.so.0" -DUSP_CMOCKA_INCLUDE="$CMOCKA_DIR")
  fi
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc \
    -DBUILD_TESTING=ON "${extra[@]}" > "$OUT/build.log" 2>&1
  cmake --build "$BUILD" -j16 --target usp >> "$OUT/build.log" 2>&1 \
    || { say "build of usp FAILED"; tail -40 "$OUT/build.log"; exit 1; }
  cmake --build "$BUILD" -j16 --target test_gpu_executor >> "$OUT/build.log" 2>&1 \
    || say "build of test_gpu_executor FAILED (cmocka?): $(grep -m1 -i 'cmocka\|error' "$OUT/build.log")"
  stamp "built"
fi

# run NAME TIMEOUT CMD...: CMD's output in $OUT/NAME.txt, its exit code and last line said
run() {
  local name=$1 t=$2
  shift 2
  local a=$(date +%s)
  timeout "$t" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  say "$name rc=$rc ($(( $(date +%s) - a )) s): $(grep -v '^\s*$' "$OUT/$name.txt" | tail -1 | cut -c1-300)"
  return $rc
}

P="--dtype bf16 --head-dim 128 --timeout 30"
unset USP_TRANSPORT
if has kcheck; then
  stamp "kernel-check a2a"
  run kcheck_a2a 60 $USP kernel-check --case a2a
fi

if has smoke; then
  stamp "smoke"
  run smoke_w2_even 60 $USP run --backend gpu --gpus 2 $P --seq 1024 --heads 8 --ulysses 2 --ring 1
  run smoke_w2_ring 60 $USP run --backend gpu --gpus 2 $P --seq 1024 --heads 8 --ulysses 1 --ring 2 --ring-impl zigzag
  run smoke_w4_uneven 60 $USP run --backend gpu --gpus 4 $P --seq 1024 --heads 6 --ulysses 4 --ring 1
  if ! grep -q "PASS" "$OUT/smoke_w2_even.txt"; then
    USP_GPU_SYNC_STEPS=1 run smoke_w2_even_sync 60 $USP run --backend gpu --gpus 2 $P --seq 1024 \
      --heads 8 --ulysses 2 --ring 1
    say "the world-2 smoke run did not pass: nothing more runs"
    stamp "done"
    exit 0
  fi
fi

if has matrix && [ -x "$TGE" ]; then
  for set in $MATRIX_SETS; do
    stamp "matrix $set"
    run "matrix_$set" 90 $TGE --matrix $set
    grep -E "FAIL|matrix " "$OUT/matrix_$set.txt" | head -20 | tee -a "$SUM"
  done
fi


if has cli; then
  stamp "cli"
  U="--seq 2048 --heads 6 --ulysses 4 --ring 1"
  run cli_uneven 90 $USP run --backend gpu --gpus 4 $P $U
  run cli_uneven_gqa 90 $USP run --backend gpu --gpus 4 $P --seq 2048 --heads 6 --kv-heads 2 --ulysses 4 --ring 1
  run cli_uneven_json 90 $USP run --backend gpu --gpus 4 $P --seq 2048 --heads 5 --ulysses 2 --ring 2 \
    --ring-impl zigzag --json
  run cli_docs 90 $USP run --backend gpu --gpus 4 $P --seq 2048 --heads 6 --ulysses 4 --ring 1 --seqlens 500,900,648
  run cli_docs_ring 90 $USP run --backend gpu --gpus 4 $P --seq 2048 --heads 7 --ulysses 2 --ring 2 \
    --ring-impl allgather --seqlens 500,900,648
  run cli_fp32_w3 90 $USP run --backend gpu --gpus 3 --dtype fp32 --head-dim 64 --timeout 30 --seq 768 --heads 8 \
    --kv-heads 2 --ulysses 3 --ring 1 --ring-impl basic
  USP_TRANSPORT=nccl run cli_nccl_world1 60 $USP run --backend gpu --gpus 1 $P --seq 1024 --heads 6 --ulysses 1 --ring 1
  USP_TRANSPORT=ipc run cli_shared_ipc 60 $USP run --backend gpu --gpus 2 $P --seq 1024 --heads 8 --ulysses 2 --ring 1
  USP_TRANSPORT=nccl run cli_nccl_refused 60 $USP run --backend gpu --gpus 2 $P --seq 1024 --heads 8 --ulysses 2 --ring 1
  rc=$?
  [ $rc -eq 2 ] || say "cli_nccl_refused: exit $rc, but USP_TRANSPORT=nccl with ranks sharing the GPU must exit 2"
fi

if has test && [ -x "$TGE" ]; then
  stamp "test_gpu_executor"
  run test_gpu_executor 240 $TGE
  grep -E "^\[  (FAILED|PASSED|ERROR)|matrix |GPU\(s\)|skipped" "$OUT/test_gpu_executor.txt" | head -30 | tee -a "$SUM"
fi

if has sanitize; then
  SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  stamp "memcheck (world 2, uneven, every rank process)"
  run memcheck_w2 150 "$SAN" --tool memcheck --target-processes all --error-exitcode 9 \
    $USP run --backend gpu --gpus 2 --dtype bf16 --head-dim 64 --timeout 120 --seq 256 --heads 5 --ulysses 2 --ring 1 \
    --ring-impl basic
  grep -E "ERROR SUMMARY|Invalid|error" "$OUT/memcheck_w2.txt" | sort | uniq -c | head -10 | tee -a "$SUM"
fi
stamp "done"
