#!/bin/bash
# bwd128_device.sh: one device call for the D = 128 backward of attn_bwd_ws.cu with the dQ writer
# warp (USP_GPU_BWD=wsxq, =wsxvq; opt-in, gpu/NOTES.md v14) beside the default (v11's loop,
# =wsx), =wsxv, SDPA flash and cuDNN, through tools/bench/bwd64_device.sh:
#
#   OUT=out tools/bench/bwd128_device.sh
#
# build     build-dev's kernel tools unless they already start
# check     usp kernel-check, every case, under wsxq and under wsxvq (40 s each at most: a
#           hang in the named-barrier hand-over ends there and keeps that setting out of the
#           later steps)
# sanitize  compute-sanitizer memcheck --quick under each
# bench     tools/bench-gpu --shape 16384,128,0 --shape 16384,128,1 --reps 20 --rounds 5 with
#           --alt-env for wsxv, wsxq, wsxvq (contenders interleaved round by round), errors
#           against fp64
# ncu       one launch of the backward under wsxvq at 16384,128,0, short sections
# About 100 s of GPU time on an H100 besides the build. Logs and summary.txt in $OUT, all.tgz.
# Variables of bwd64_device.sh (STEPS, CHECKS, SAN, ALT, SHAPES, REPS, ROUNDS, NCU, ...) override.
cd "$(dirname "$0")/../.."
export OUT=${OUT:-$PWD/out}
export CHECKS=${CHECKS:-"USP_GPU_BWD=wsxq USP_GPU_BWD=wsxvq"}
export SAN=${SAN:-"USP_GPU_BWD=wsxq USP_GPU_BWD=wsxvq"}
export ALT=${ALT:-"USP_GPU_BWD=wsxv USP_GPU_BWD=wsxq USP_GPU_BWD=wsxvq"}
export SHAPES=${SHAPES:-"--shape 16384,128,0 --shape 16384,128,1"}
export REPS=${REPS:-20} ROUNDS=${ROUNDS:-5}
export NCU=${NCU:-USP_GPU_BWD=wsxvq} NCU_SHAPE=${NCU_SHAPE:-16384,128,0}
export CHECK_TIMEOUT=${CHECK_TIMEOUT:-40} SAN_TIMEOUT=${SAN_TIMEOUT:-45} BENCH_TIMEOUT=${BENCH_TIMEOUT:-120}
export NCU_TIMEOUT=${NCU_TIMEOUT:-40} STEPS=${STEPS:-build,check,sanitize,bench,ncu}
bash tools/bench/bwd64_device.sh
rc=$?
(cd "$OUT" && tar czf all.tgz --exclude=all.tgz . 2> /dev/null)
exit $rc
