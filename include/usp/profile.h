/* usp/profile.h: a device profile (sim/profiles/<gpu>.json), read and written.
 *
 * What one GPU and its attention kernel achieve, as the simulator times
 * compute steps with it and as `usp calibrate` measures and writes it:
 *
 *   {"name": "h100", "kernel": "flash-attention 2", "source": "...",
 *    "attention_tflops": {"bf16": {"128": {"fwd": 352, "bwd": 304}, ...}, ...},
 *    "masked_block_efficiency": {"fwd": 0.9, "bwd": 0.9},
 *    "hbm_gbps": 3000, "memory_gbps": {"merge": 1739},
 *    "launch_overhead_us": 5, "memory_mib": 81559,
 *    "comm_overlap_slowdown": 0.1, "peak_dense_tflops": {"bf16": 989}}
 *
 * A head dim's entry may also carry "fwd_fixed_us", "bwd_fixed_us" (a
 * kernel's fixed cost), "fwd_short_keys", "bwd_short_rows" (the short-loop
 * lengths) and "fwd_rowmask_efficiency", "bwd_rowmask_efficiency" (blocks
 * under per-row masks). Optional: "kernel", "source", "memory_gbps",
 * "comm_overlap_slowdown"; the card's memory is "memory_mib" (nvidia-smi's
 * total) or "memory_gb", exactly one.
 *
 * One reader for every user: each figure must lie in its physical range
 * (TFLOP/s, GB/s, microseconds, GB), so a unit mix-up is refused with the
 * range and the line instead of becoming a confident, absurd prediction. */
#ifndef USP_PROFILE_H
#define USP_PROFILE_H

#include <stdio.h>
#include "usp/json.h"
#include "usp/schedule.h"

enum {
    USP_PROFILE_MAX_HEAD_DIMS = 8,                              /* per dtype */
    USP_PROFILE_MAX_RATES = 4 * USP_PROFILE_MAX_HEAD_DIMS       /* every dtype */
};

typedef struct {
    usp_dtype dtype;
    int head_dim;
    double fwd_tflops, bwd_tflops;
    double fwd_fixed_us, bwd_fixed_us;   /* per kernel, besides FLOPs / rate; 0: none */
    double fwd_short_keys, bwd_short_rows; /* short-block lengths (tokens); 0: none */
    /* blocks under per-row masks: the kernels' rate over the tile model's (fitted on packed
     * documents of equal length); 0: none, taken as 1 */
    double fwd_rowmask_eff, bwd_rowmask_eff;
} usp_profile_rate;

typedef struct {
    char name[128], kernel[128], source[2048];
    usp_profile_rate rates[USP_PROFILE_MAX_RATES]; /* in file order */
    int nrates;
    double masked_fwd, masked_bwd;
    double hbm_gbps, launch_us;
    double memory_bytes;            /* 'memory_mib' x 2^20 or 'memory_gb' x 10^9 */
    double memory_gbps[USP_STEP_KIND_COUNT]; /* by memory-bound step kind; 0: hbm_gbps */
    double peak_tflops[4];          /* by usp_dtype; every dtype with rates needs one */
    double comm_slowdown;           /* attention rate lost while a transfer runs; 0: none */
} usp_profile_desc;

/* A parsed JSON document as a profile; reasons name the line
 * ("line 7: 'hbm_gbps' is 3e+12, outside the physical range [1, 1e+06] GB/s"). */
usp_status usp_profile_desc_from_json(const usp_json *root, usp_profile_desc *p);
/* A profile file; reasons are prefixed "profile PATH: ". */
usp_status usp_profile_desc_read(const char *path, usp_profile_desc *p);
usp_status usp_profile_desc_write(const usp_profile_desc *p, FILE *f);
usp_status usp_profile_desc_save(const usp_profile_desc *p, const char *path);
/* The rate entry of (dtype, head_dim), added when absent; NULL when full. */
usp_profile_rate *usp_profile_rate_of(usp_profile_desc *p, usp_dtype dt, int head_dim);
/* The rate entry of (dtype, head_dim); NULL when absent. */
const usp_profile_rate *usp_profile_rate_find(const usp_profile_desc *p, usp_dtype dt, int head_dim);

#endif
