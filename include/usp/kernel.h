/* usp/kernel.h: the attention-kernel ABI (version 2).
 *
 * The GPU executor calls attention kernels only through a `usp_kernel`: a
 * small versioned struct of function pointers. The kernels built into
 * usp_gpu are one implementation; another can be loaded from a shared object
 * (`usp kernel-check --kernel PATH.so`) that exports one C symbol,
 *
 *     const usp_kernel *usp_kernel_entry(void);
 *
 * returning a struct that lives as long as the library. The loader refuses a
 * library whose symbol is missing, whose struct is NULL or of an ABI version
 * outside [USP_KERNEL_ABI_MIN, USP_KERNEL_ABI_VERSION], smaller than this
 * header's struct, or has a NULL function.
 * gpu/plugins/naive_plugin.cu is a complete, deliberately simple example.
 *
 * Versions:
 *   1  forward/backward with the usp_block's causal/diag mask.
 *   2  adds per-row key intervals (usp/rowmask.h) to the forward and
 *      backward arguments: mask_lo, mask_hi. The new fields sit at the end
 *      of usp_kfwd_args and usp_kbwd_args, so a version-1 kernel is handed
 *      the same struct and reads only what it knows; usp calls it only with
 *      mask_lo = mask_hi = NULL and refuses masked work for it
 *      (usp_kernel_takes_masks, usp_kernel_mask_refusal).
 *
 * What the functions compute (the ring-attention step kinds of schedule.h):
 *   forward   (O, LSE) rows of one usp_block: the attention of query rows
 *             [q_begin, q_begin+q_len) over key rows [kv_begin, kv_begin+kv_len)
 *             with the block's mask, or, when mask_lo/mask_hi are given, row i
 *             over the block's keys [mask_lo[b][i], mask_hi[b][i]) (local
 *             coordinates, clipped to [0, kv_len)); other rows are not
 *             touched. A row that sees no key gets LSE = -inf and O = 0.
 *   bwd_prep  DELTA[b,h,i] = sum_d O[b,i,h,d] * dO[b,i,h,d], every row.
 *   backward  adds the block's gradients: dQ rows q_begin.., dK and dV rows
 *             kv_begin.. (+=, fp32), with the same mask as the forward. LSE and DELTA are the final, whole-row
 *             ones (a block's partial LSE would give wrong gradients).
 *   merge     rows [row_begin, row_begin+rows) of (O, LSE) become the
 *             attention over the keys of both (O, LSE) and (O_blk, LSE_blk),
 *             overflow-safe: lse = max + log1p(exp(-|lse - lse_blk|));
 *             both -inf stays LSE = -inf, O = 0, never NaN.
 *
 * Tensors (device memory, row-major, strides in elements):
 *   usp_ktensor (B, L, H, D) with D contiguous: Q, O, dO, dQ (H = query heads),
 *               K, V, dK, dV (H = K/V heads). Query head h uses K/V head
 *               h / (H / Hkv) (GQA/MQA).
 *   usp_kstats  (B, H, L) fp32 with L contiguous: LSE (natural log), DELTA.
 * Element types (usp_dtype of config.h):
 *   Q, K, V, dO  one input dtype for all four (bf16, fp16, or fp32 where the
 *                kernel lists it in `dtypes`);
 *   O            fp32 or the input dtype (forward writes it; merge and
 *                bwd_prep read it). The ring executor keeps O_BLK and O in
 *                fp32 so that merges do not round; the built-in kernels take
 *                both.
 *   dQ, dK, dV   always fp32, accumulated across ring steps.
 *
 * Calls are asynchronous on `stream` (a cudaStream_t passed as void *; NULL
 * is the default stream) and must not synchronize it. They return USP_KERNEL_OK,
 * or another code with a one-line reason in `why` (a shape or dtype the
 * kernel does not take: USP_KERNEL_EUNSUPPORTED; a CUDA error: USP_KERNEL_ECUDA).
 */
#ifndef USP_KERNEL_H
#define USP_KERNEL_H

/* The project's C headers get C linkage in CUDA C++ translation units; the
 * standard headers they include come first, outside the extern "C". */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#ifdef __cplusplus
extern "C" {
#endif
#include "usp/config.h"
#include "usp/rowmask.h"
#include "usp/schedule.h"

#define USP_KERNEL_ABI_VERSION 2u
#define USP_KERNEL_ABI_MIN 1u   /* oldest version still loaded */
#define USP_KERNEL_ENTRY_SYMBOL "usp_kernel_entry"

enum { USP_KERNEL_OK = 0, USP_KERNEL_ECUDA = 1, USP_KERNEL_EUNSUPPORTED = 2 };

/* (B, L, H, D) in device memory; D has stride 1. */
typedef struct {
    void *ptr;
    usp_dtype dtype;
    int b, l, h, d;
    int64_t sb, sl, sh;
} usp_ktensor;

/* (B, H, L) fp32 in device memory; L has stride 1. */
typedef struct {
    float *ptr;
    int b, h, l;
    int64_t sb, sh;
} usp_kstats;

typedef struct {
    usp_ktensor q, k, v;   /* (B, Lq, H, D), (B, Lkv, Hkv, D) x2 */
    usp_ktensor o;         /* (B, Lq, H, D): rows of blk written */
    usp_kstats lse;        /* (B, H, Lq): rows of blk written */
    usp_block blk;
    float scale;           /* softmax scale, > 0 */
    /* ABI 2: per-row key intervals, device int32 [B][blk.q_len] (usp/rowmask.h);
     * both NULL: blk's causal/diag. Heads share them. */
    const int32_t *mask_lo, *mask_hi;
} usp_kfwd_args;

typedef struct {
    usp_ktensor o, dout;   /* (B, Lq, H, D) */
    usp_kstats delta;      /* (B, H, Lq): written */
} usp_kprep_args;

typedef struct {
    usp_ktensor q, k, v, dout;   /* as in forward; dout like q */
    usp_kstats lse, delta;       /* (B, H, Lq): final LSE, bwd_prep's DELTA */
    usp_ktensor dq, dk, dv;      /* fp32, like q, k, v: += this block */
    usp_block blk;
    float scale;
    const int32_t *mask_lo, *mask_hi;   /* ABI 2: as in usp_kfwd_args */
} usp_kbwd_args;

typedef struct {
    usp_ktensor o_blk;     /* (B, Lq, H, D) */
    usp_kstats lse_blk;    /* (B, H, Lq) */
    usp_ktensor o;         /* (B, Lq, H, D): updated */
    usp_kstats lse;        /* (B, H, Lq): updated */
    int row_begin, rows;
} usp_kmerge_args;

typedef int (*usp_kfwd_fn)(const usp_kfwd_args *a, void *stream, char *why, size_t why_len);
typedef int (*usp_kprep_fn)(const usp_kprep_args *a, void *stream, char *why, size_t why_len);
typedef int (*usp_kbwd_fn)(const usp_kbwd_args *a, void *stream, char *why, size_t why_len);
typedef int (*usp_kmerge_fn)(const usp_kmerge_args *a, void *stream, char *why, size_t why_len);

typedef struct usp_kernel {
    uint32_t abi_version;  /* USP_KERNEL_ABI_VERSION (or an older one still loaded) */
    uint32_t size;         /* sizeof(usp_kernel) where it was built */
    const char *name;      /* shown by kernel-check */
    uint32_t dtypes;       /* input dtypes taken: bits (1u << usp_dtype) */
    usp_kfwd_fn forward;
    usp_kprep_fn bwd_prep;
    usp_kbwd_fn backward;
    usp_kmerge_fn merge;
} usp_kernel;

typedef const usp_kernel *(*usp_kernel_entry_fn)(void);

/* The kernels built into usp_gpu (gpu/). */
const usp_kernel *usp_kernel_builtin(void);

/* Loads `path` with dlopen and checks the struct it exports. On success
 * *out is the struct and *handle the library (for usp_kernel_unload).
 * On refusal returns USP_EINVAL with the reason ("... is ABI version 7,
 * this usp takes 1"; "... has no symbol usp_kernel_entry"; "backward is NULL"). */
usp_status usp_kernel_load(const char *path, const usp_kernel **out, void **handle);
void usp_kernel_unload(void *handle);

/* Checks a struct (version, size, functions); used by usp_kernel_load. */
usp_status usp_kernel_validate(const usp_kernel *k, const char *origin);

/* Whether k takes per-row masks (ABI 2 and later). */
int usp_kernel_takes_masks(const usp_kernel *k);
/* NULL when k can run masked work; else the reason it cannot, one line:
 * "plugin has ABI v1, no masks". */
const char *usp_kernel_mask_refusal(const usp_kernel *k);

/* A contiguous (B, L, H, D) descriptor, and a contiguous (B, H, L) one. */
usp_ktensor usp_ktensor_bshd(void *ptr, usp_dtype dt, int b, int l, int h, int d);
usp_kstats usp_kstats_bhl(float *ptr, int b, int h, int l);

#ifdef __cplusplus
}
#endif

#endif
