#!/bin/bash
# bwd_gpu_quick.sh: the short form of bwd_gpu_device.sh for a call with little device time,
# with carried binaries (PREBUILT=1; else it builds): kernel-check with USP_GPU_BWD=ws,
# then tools/bench-gpu at D = 128 and 64 (both backward kernels, flash, cuDNN), then
# memcheck and kernel-check with the mma.sync tiles. Logs in $OUT/{a,b,c}.
OUT=${OUT:-$PWD/out}
export PREBUILT=${PREBUILT:-1}
d=tools/bench/bwd_gpu_device.sh
STEPS=check CHECKS="ws:USP_GPU_BWD=ws" OUT=$OUT/a $d > "$OUT/a.log" 2>&1
sed -n '/= summary/,$p' "$OUT/a.log"
if grep -q "kernel-check ws rc=124" "$OUT/a.log"; then echo "hung: no bench"; exit 1; fi
STEPS=bench BENCH_ARGS="${BENCH_ARGS:---shape 16384,128,0 --shape 16384,128,1 --shape 16384,64,0 --shape 16384,64,1}" \
  OUT=$OUT/b $d > "$OUT/b.log" 2>&1
STEPS=sanitize,check CHECKS="mma:USP_GPU_TILES=mma" OUT=$OUT/c $d > "$OUT/c.log" 2>&1
sed -n '/= summary/,$p' "$OUT/c.log"
sed -n '/= summary/,$p' "$OUT/b.log"
