#!/bin/bash
# record-device.sh: on a machine with 2 GPUs, from the repository root: build
# usp, record the cases of traces/cases.txt (usp validate --gpus 2) and
# calibrate (usp calibrate --gpus 2). Everything lands in $OUT/val.tar.gz
# (calibration.json, the fitted profile and platform, the traces and their
# sidecars, the logs); the summary is printed last. The simulator is not
# needed here: the traces are re-simulated on any machine with usp validate.
set -u
OUT=${OUT:-$PWD/out}
BUILD=${BUILD:-build-val}
V=$OUT/val
mkdir -p "$V/traces"
export NCCL_NVLS_ENABLE=0
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 ))s] $*" | tee -a "$V/summary.txt"; }
pack() { tar czf "$OUT/val.tar.gz" -C "$OUT" val && rm -rf "$V"; }

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader \
  | tee "$V/gpus.txt"
stamp build
cmake -S . -B "$BUILD" -DBUILD_TESTING=OFF -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc > "$V/build.log" 2>&1
if ! timeout ${BUILD_S:-150} cmake --build "$BUILD" -j32 --target usp >> "$V/build.log" 2>&1; then
  stamp "build failed"; grep -m10 -E "error" "$V/build.log"; pack; exit 1
fi
U=$BUILD/usp

stamp record
timeout ${RECORD_S:-120} $U validate --gpus 2 --cases traces/cases.txt --record "$V/traces" \
  --warmup 2 --iters 5 --timeout 60 > "$V/record.txt" 2>&1
stamp "record rc=$?"

stamp calibrate
timeout ${CALIBRATE_S:-90} $U calibrate --gpus 2 --base sim/profiles/h200.json --timeout 60 \
  --measurements-out "$V/calibration.json" --profile-out "$V/h200-calibrated.json" \
  --platform-out "$V/h200x2-calibrated.xml" > "$V/calibrate.txt" 2>&1
stamp "calibrate rc=$?"

echo "================ summary"
grep -E "fit |masked|one bandwidth|launch" "$V/calibrate.txt"
grep -E "^  (bf16|fp16) +D=128 .*L=16384" "$V/calibrate.txt" | head -8
grep -E "^  [a-z0-9-]+ +(calibration|held-out)|^usp" "$V/record.txt"
tail -3 "$V/calibrate.txt"
pack
ls -la "$OUT"
