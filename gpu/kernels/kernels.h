/* kernels.h: launchers of the built-in kernels (C++ side of usp_gpu).
 *
 * Parameters are flattened from the kernel.h descriptors: element pointers,
 * strides in elements, the usp_block and the per-row mask arrays. builtin.cu validates the
 * descriptors and picks a launcher; each launcher returns USP_KERNEL_* and
 * writes a reason into `why` on failure. */
#ifndef USP_GPU_KERNELS_H
#define USP_GPU_KERNELS_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "usp/kernel.h"

/* One check for every CUDA call: a failure becomes USP_KERNEL_ECUDA with the
 * call, the file:line and CUDA's message in `why`. Used inside launchers,
 * which have `why` and `why_len` in scope. */
#define USP_CUDA_TRY(call)                                                        \
    do {                                                                          \
        cudaError_t usp_cu_e_ = (call);                                           \
        if (usp_cu_e_ != cudaSuccess) {                                           \
            snprintf(why, why_len, "%s failed at %s:%d: %s", #call, __FILE__,     \
                     __LINE__, cudaGetErrorString(usp_cu_e_));                    \
            return USP_KERNEL_ECUDA;                                              \
        }                                                                         \
    } while (0)

/* Launch check: the configuration error a launch leaves behind. */
#define USP_CUDA_LAUNCHED() USP_CUDA_TRY(cudaGetLastError())

struct UspFwdParams {
    const void *q, *k, *v;
    void *o;
    float *lse;
    int64_t q_sb, q_sl, q_sh, k_sb, k_sl, k_sh, v_sb, v_sl, v_sh, o_sb, o_sl, o_sh;
    int64_t lse_sb, lse_sh;
    int b, h, hkv, d;
    int q_begin, q_len, kv_begin, kv_len, causal, diag;
    float scale;
    const int32_t *mask_lo, *mask_hi;   /* per-row key intervals [B][q_len] or NULL (usp/rowmask.h) */
    /* The call's mask plan (maskplan.cu) when the launcher made one, else NULL:
     * key ranges of 64-row groups, and the query tiles by descending work. */
    const int4 *mask_groups = nullptr;
    const int *work_order = nullptr;
    int plan_items = 0;
    int *unit_next = nullptr;   /* persistent plan: the next unit to hand out (zeroed by the plan) */
};

struct UspBwdParams {
    const void *q, *k, *v, *dout;
    const float *lse, *delta;
    float *dq, *dk, *dv;
    int64_t q_sb, q_sl, q_sh, k_sb, k_sl, k_sh, v_sb, v_sl, v_sh, do_sb, do_sl, do_sh;
    int64_t dq_sb, dq_sl, dq_sh, dk_sb, dk_sl, dk_sh, dv_sb, dv_sl, dv_sh;
    int64_t lse_sb, lse_sh, dl_sb, dl_sh;
    int b, h, hkv, d;
    int q_begin, q_len, kv_begin, kv_len, causal, diag;
    float scale;
    const int32_t *mask_lo, *mask_hi;   /* per-row key intervals [B][q_len] or NULL (usp/rowmask.h) */
    /* The call's mask plan (maskplan.cu) when the launcher made one, else NULL:
     * key ranges of 64-row groups, each key tile's query groups, and the key
     * tiles by descending work. */
    const int4 *mask_groups = nullptr;
    const int2 *ktile_rows = nullptr;
    const int *work_order = nullptr;
    int plan_items = 0;
    /* attn_bwd_ws.cu (USP_GPU_BWD_MASK=...,red): dK and dV added by fp32 reductions in L2
     * (no value comes back) instead of loads and stores */
    int kv_red = 0;
    /* attn_bwd_ws.cu (USP_GPU_BWD_MASK=x,xp and the like): the consumers of the masked
     * dK-after-dQ loops prefetch the CTA's dK and dV rows into L2 two tiles before the epilogue */
    int kv_pref = 0;
};

/* Tiled tensor-core kernels: bf16/fp16 inputs, D in {64, 128}; D = 256 on sm_90a only. */
int usp_tc_fwd(const UspFwdParams &p, usp_dtype in, usp_dtype out, cudaStream_t st,
               char *why, size_t why_len);
int usp_tc_bwd(const UspBwdParams &p, usp_dtype in, cudaStream_t st, char *why, size_t why_len);
int usp_tc_supports(usp_dtype in, int d);

/* The same on Hopper's warpgroup MMA (sm_90a); usp_tc_* call them when
 * usp_wgmma_enabled(): the current device is compute capability 9.0 and the
 * environment does not say USP_GPU_TILES=mma. */
int usp_wg_fwd(const UspFwdParams &p, usp_dtype in, usp_dtype out, cudaStream_t st, char *why, size_t why_len);
int usp_wg_bwd(const UspBwdParams &p, usp_dtype in, cudaStream_t st, char *why, size_t why_len);
int usp_wgmma_enabled(void);
/* Forward with a TMA producer warp and two consumer warpgroups in ping-pong
 * (attn_fwd_ws.cu), D = 64, 128, 256; falls back to usp_wg_fwd when a tensor map cannot
 * be made. Taken unless USP_GPU_FWD=wg. */
int usp_ws_fwd(const UspFwdParams &p, usp_dtype in, usp_dtype out, cudaStream_t st, char *why, size_t why_len);
int usp_ws_fwd_enabled(void);
/* Backward at D = 64, 128 with a TMA producer warp and two consumer warpgroups
 * (attn_bwd_ws.cu); falls back to usp_wg_bwd_tiles when a tensor map cannot be made.
 * usp_wg_bwd takes it unless USP_GPU_BWD=wg (usp_ws_bwd_enabled() returns 0);
 * usp_wg_bwd_tiles is attn_bwd_wg.cu's kernel at D = 64, 128. */
int usp_ws_bwd(const UspBwdParams &p, usp_dtype in, cudaStream_t st, char *why, size_t why_len);
int usp_ws_bwd_enabled(void);
/* USP_GPU_BWD_MASK of attn_bwd_ws.cu: bit 0 (default; cleared by "elem") masked tiles on
 * intervals relative to the key tile, bit 1 "persist" (a persistent grid over the mask plan's
 * units), bit 2 "red" (dK/dV by reductions), bit 3 "x" (per-row masks in the loops of the
 * unmasked defaults: D = 128 v11's 64-row loop, D = 64 v9's 128-row loop; masked tiles by the
 * relative intervals, unmasked ones without a test), bit 4 "x64" (D = 64: that loop on 64-row
 * tiles, dQ split by keys), bit 5 "xv" (D = 128: x with dV issued early; with bit 0 the
 * default, 33), bit 6 "xp" (with x, x64, xv: the dK/dV rows prefetched into L2 two tiles
 * before the epilogue). "rel" alone (1) gives the default of before v15 (D = 128: v7's loop). */
int usp_ws_bwd_mask_mode(void);
int usp_wg_bwd_tiles(const UspBwdParams &p, usp_dtype in, cudaStream_t st, char *why, size_t why_len);
/* Backward at D = 256 (attn_bwd_wg256.cu): 64 keys a CTA, the warpgroups split the head dim;
 * P^T and dS^T on all eight warps, dQ by TMA reduce-adds, P^T without a test per element
 * (USP_GPU_BWD=s8: by atomics, v8's kernel; =s4: scores on four warps, v6's; =s8r, =s8r2: the
 * reduce-adds' two stagings with P^T tested per element; =s8p: the default's kernel). */
int usp_wg_bwd256(const UspBwdParams &p, usp_dtype in, cudaStream_t st, char *why, size_t why_len);

/* Simple kernels (one thread a row, fp32 math): any D <= 256, fp32 inputs too. */
int usp_simple_fwd(const UspFwdParams &p, usp_dtype in, usp_dtype out, cudaStream_t st,
                   char *why, size_t why_len);
int usp_simple_bwd(const UspBwdParams &p, usp_dtype in, cudaStream_t st, char *why, size_t why_len);

/* Mask plan (maskplan.cu): one small kernel per masked call, before the attention
 * kernel, on the same stream. It summarizes every 64-row group of query rows
 * (USP_PLAN_GROUP) as a usp_key_range, gives each work item (forward: a query tile
 * of bm rows; backward: a key tile of bn keys) its work, and orders the items by
 * descending work, so that kernels need not scan rows and the heaviest CTAs start
 * first. The scratch memory comes from a private stream-ordered pool and goes back
 * with usp_mask_plan_release after the launch. Nothing is planned (the params stay
 * as they are, *ctas = 0) without per-row masks, with USP_GPU_MASK_PLAN=0, or when
 * the pool refuses memory; USP_GPU_MASK_PLAN=all plans the causal/diag mask too,
 * =order keeps the forward at one CTA a unit (the plan's order without persistence).
 * Forward: *ctas = CTAs of the persistent grid (at most one per SM), and p.unit_next
 * the counter its CTAs take units from (NULL with =order); backward:
 * *ctas = one CTA per (key tile, K/V head) item. */
constexpr int USP_PLAN_GROUP = 64;
struct UspPlanMem {
    void *ptr = nullptr;
};
int usp_mask_plan_fwd(UspFwdParams &p, int bm, int bn, cudaStream_t st, UspPlanMem *mem, int *ctas, char *why,
                      size_t why_len);
/* Whether usp_mask_plan_fwd would plan this call (1) and, then, its items (query tiles of bm
 * rows of every batch) and persistent CTAs; makes no plan (a forward that plans inside itself). */
int usp_mask_plan_fwd_shape(const UspFwdParams &p, int bm, int *items, int *ctas);
int usp_mask_plan_bwd(UspBwdParams &p, int bn, cudaStream_t st, UspPlanMem *mem, int *ctas, char *why,
                      size_t why_len);
void usp_mask_plan_release(UspPlanMem *mem, cudaStream_t st);

/* Every row of t starts on 16 bytes: the pointer and each stride, in bytes of t's dtype (the
 * vector loads of the tensor-core kernels and of bwd_prep's 16-byte kernel). */
static inline bool usp_rows16(const usp_ktensor &t) {
    const int64_t e = (int64_t)usp_dtype_size(t.dtype);
    return (reinterpret_cast<uintptr_t>(t.ptr) & 15) == 0 && (t.sb * e) % 16 == 0 && (t.sl * e) % 16 == 0 &&
           (t.sh * e) % 16 == 0;
}

/* Row kernels: DELTA and the LSE merge. */
int usp_prep_launch(const usp_kprep_args *a, cudaStream_t st, char *why, size_t why_len);
int usp_merge_launch(const usp_kmerge_args *a, cudaStream_t st, char *why, size_t why_len);

#endif
