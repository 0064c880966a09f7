/* calibrate.h: what `usp calibrate` and `usp validate --gpus` run on the
 * GPUs (compiled into the usp binary where the GPU executor is built).
 *
 * Each rank process opens the executor's context once (usp_gpu_open) and
 * calls these in the same order on every rank: the NCCL measurements and
 * the recorded runs are collective; the kernel measurements run on rank 0
 * while the other ranks wait at a barrier. */
#ifndef USP_GPU_CALIBRATE_H
#define USP_GPU_CALIBRATE_H

#include <stdio.h>
#include "usp/gpu_exec.h"
#include "usp/validate.h"

/* The grid of kernel measurements. */
typedef struct {
    int seqs[8], nseqs;        /* block sizes: q_len = kv_len = seq */
    int head_dims[4], nhead_dims;
    int heads;
    int warmup, reps;          /* per point; the median is kept */
} usp_calib_grid;

/* Rank 0: the attention kernels (usp_kernel_builtin) over the grid, for
 * every 16-bit dtype they take, full and causal-diagonal blocks, forward
 * and backward; the memory-bound kernels (pack, unpack, merge, init,
 * bwd_prep) at the size of a 32-head, D=128, 16K-token shard; an almost
 * empty kernel for the launch overhead. Other ranks only wait. Fills
 * m->attn, m->mem, m->launch_us, m->device, m->memory_gb. `progress` may be NULL. */
usp_status usp_calib_measure_kernels(usp_gpu_ctx *ctx, const usp_calib_grid *grid, usp_calib *m, FILE *progress);

/* Every rank: NCCL send/recv (two buffers of bytes/2, as a ring step sends
 * K and V) to the next rank and from the previous one, and the all-to-all of
 * the executor's transport, for each size (bytes to one peer), each run
 * after a barrier so that both ends start together. Rank 0 fills m->comm
 * (median of `reps`) and m->gpus, m->nccl_version. */
usp_status usp_calib_measure_comm(usp_gpu_ctx *ctx, const double *sizes, int nsizes, int reps, usp_calib *m);

/* Every rank: runs each case with the GPU executor (inputs made on the
 * GPU, no reference), `warmup` untimed and `iters` timed runs. Rank 0 writes
 * <dir>/<name>.trace.json (the last timed run) and the sidecar
 * <dir>/<name>.case.json with the median times, and a line per case to `progress`. */
usp_status usp_calib_record_cases(usp_gpu_ctx *ctx, usp_vcase *cases, int n, const char *dir, int warmup, int iters,
                                  FILE *progress);

#endif
