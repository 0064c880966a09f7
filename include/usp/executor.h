/* usp/executor.h: what running a schedule gives back, whoever runs it.
 *
 * The in-process executor (ref/executor.c), the simulator (sim/) and the GPU
 * executor (gpu/) each take a built usp_schedule, the global inputs (or NULL
 * in timing-only mode) and fill one usp_result: the gathered outputs in fp64
 * and what each rank moved, held and spent. */
#ifndef USP_EXECUTOR_H
#define USP_EXECUTOR_H

#include "usp/schedule.h"
#include "usp/inputs.h"
#include "usp/trace.h"

typedef struct {
    double compute_s, comm_s, exposed_comm_s; /* busy time per stream; comm not hidden */
    double bytes_sent[USP_STEP_KIND_COUNT];   /* by step kind */
    double peak_bytes;                        /* live buffers at the busiest step */
    double flops;
} usp_rank_stats;

typedef struct {
    int world;
    /* Gathered global outputs in fp64 (NULL when not computed):
     * o, dq (B,L,H,D); lse (B,H,L); dk, dv (B,L,Hkv,D). */
    double *o, *lse, *dq, *dk, *dv;
    double time_fwd_s, time_bwd_s;            /* 0 where the executor keeps no time */
    usp_rank_stats *ranks;                    /* [world] */
    /* simulator: ranks given an actor (world / ulysses when folded: one per
     * ulysses group, the others provably alike, sim/README.md) and, when
     * not folded, why not */
    int sim_ranks_simulated;
    char sim_mode[160];
} usp_result;

usp_status usp_result_init(usp_result *r, const usp_schedule *s, int with_outputs);
void usp_result_free(usp_result *r);

/* Fills each rank's bytes_sent, flops and peak_bytes from the schedule alone. */
void usp_result_count_schedule(usp_result *r, const usp_schedule *s);

/* In-process executor: every rank's list run in one process, memcpy as
 * transport, the CPU block kernels in cfg->dtype (f64 or f32; fp16 and bf16
 * emulated in fp32, usp/rankmem.h). trace may be NULL. */
usp_status usp_ref_execute(const usp_schedule *s, const usp_inputs *in,
                           usp_result *out, usp_trace *trace);

#endif
