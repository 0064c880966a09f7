/* calibrate_kernels.c: the attention and memory-bound kernels of the
 * executor, timed on synthetic blocks (usp_calib_measure_kernels).
 *
 * Inputs come from the executor's own generator (standard normals from a
 * counter-based hash, never zeros). Every point is the median of `reps`
 * runs between CUDA events after `warmup` runs, on the executor's compute
 * stream. */
#define _POSIX_C_SOURCE 200809L
#include "calibrate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "executor/executor_ctx.h"
#include "executor/executor_cuda.h"
#include "usp/gpu_pack.h"
#include "usp/dispatch.h"
#include "usp/kernel.h"
#include "usp/mask.h"

enum { MAX_REPS = 64 };

/* ------------------------------------------------------------ timing */

typedef usp_status (*timed_fn)(void *arg, cudaStream_t s);

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static usp_status run_timed(cudaStream_t s, timed_fn fn, void *arg, int warmup, int reps, cudaEvent_t *ev,
                            double *out) {
    for (int i = 0; i < warmup; i++) USP_TRY(fn(arg, s));
    for (int i = 0; i < reps; i++) {
        USP_CUDA_CHECK(cudaEventRecord(ev[2 * i], s));
        USP_TRY(fn(arg, s));
        USP_CUDA_CHECK(cudaEventRecord(ev[2 * i + 1], s));
    }
    USP_CUDA_CHECK(cudaStreamSynchronize(s));
    double t[MAX_REPS];
    for (int i = 0; i < reps; i++) {
        float ms;
        USP_CUDA_CHECK(cudaEventElapsedTime(&ms, ev[2 * i], ev[2 * i + 1]));
        t[i] = ms * 1e-3;
    }
    qsort(t, (size_t)reps, sizeof *t, compare_doubles);
    *out = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
    return USP_OK;
}

/* Median seconds of fn over `reps` runs. */
static usp_status time_median(cudaStream_t s, timed_fn fn, void *arg, int warmup, int reps, double *seconds) {
    cudaEvent_t ev[2 * MAX_REPS];
    int made = 0;
    if (reps < 1) reps = 1;
    if (reps > MAX_REPS) reps = MAX_REPS;
    usp_status st = USP_OK;
    for (; made < 2 * reps && st == USP_OK; made++)
        if (cudaEventCreate(&ev[made]) != cudaSuccess)
            st = usp_fail(USP_EINTERNAL, "cudaEventCreate: %s", cudaGetErrorString(cudaGetLastError()));
    if (st == USP_OK) st = run_timed(s, fn, arg, warmup, reps, ev, seconds);
    for (int i = 0; i < made; i++) cudaEventDestroy(ev[i]);
    return st;
}

/* ------------------------------------------------------------ buffers */

/* Device memory of the largest block of the grid, reused by every point. */
typedef struct {
    void *q, *k, *v, *dout;            /* input dtype (room for fp32) */
    float *o, *lse, *delta, *dq, *dk, *dv;
    int64_t *tokens;
    size_t elems, rows;                /* seq * heads * head_dim, heads * seq */
} attn_bufs;

static usp_status alloc_one(void **p, size_t bytes) {
    USP_CUDA_CHECK(cudaMalloc(p, bytes));
    return USP_OK;
}

static void free_bufs(attn_bufs *b) {
    void *all[] = {b->q, b->k, b->v, b->dout, b->o, b->lse, b->delta, b->dq, b->dk, b->dv, b->tokens};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]) cudaFree(all[i]);
    memset(b, 0, sizeof *b);
}

static usp_status alloc_bufs(attn_bufs *b, size_t elems, size_t rows, int seq) {
    memset(b, 0, sizeof *b);
    b->elems = elems;
    b->rows = rows;
    size_t big = elems * sizeof(float);
    void **data[] = {&b->q, &b->k, &b->v, &b->dout, (void **)&b->o, (void **)&b->dq, (void **)&b->dk, (void **)&b->dv};
    for (size_t i = 0; i < sizeof data / sizeof data[0]; i++) {
        USP_TRY(alloc_one(data[i], big));
        USP_CUDA_CHECK(cudaMemset(*data[i], 0, big)); /* defined values for the merge's inputs */
    }
    USP_TRY(alloc_one((void **)&b->lse, rows * sizeof(float)));
    USP_TRY(alloc_one((void **)&b->delta, rows * sizeof(float)));
    USP_CUDA_CHECK(cudaMemset(b->lse, 0, rows * sizeof(float)));
    USP_CUDA_CHECK(cudaMemset(b->delta, 0, rows * sizeof(float)));
    USP_TRY(alloc_one((void **)&b->tokens, (size_t)seq * sizeof(int64_t)));
    int64_t *host = usp_malloc((size_t)seq * sizeof *host);
    if (!host) return USP_EINTERNAL;
    for (int i = 0; i < seq; i++) host[i] = i;
    cudaError_t e = cudaMemcpy(b->tokens, host, (size_t)seq * sizeof *host, cudaMemcpyHostToDevice);
    free(host);
    USP_CUDA_CHECK(e);
    return USP_OK;
}

/* ------------------------------------------------------------ one block */

typedef struct {
    const usp_kernel *k;
    attn_bufs *b;
    usp_dtype dt;
    int seq, heads, head_dim, causal;
    char why[256];
    /* doc > 0: packed documents of doc tokens, causal inside, as per-row key intervals
     * (lo, hi on the device; pairs the visible pairs, tiles the kernels' work: host) */
    int doc;
    const int32_t *lo, *hi;
    double pairs;
    usp_tile_work tiles[2];   /* forward, backward */
} attn_point;

static usp_kfwd_args fwd_args(const attn_point *p) {
    usp_kfwd_args a;
    memset(&a, 0, sizeof a);
    a.q = usp_ktensor_bshd(p->b->q, p->dt, 1, p->seq, p->heads, p->head_dim);
    a.k = usp_ktensor_bshd(p->b->k, p->dt, 1, p->seq, p->heads, p->head_dim);
    a.v = usp_ktensor_bshd(p->b->v, p->dt, 1, p->seq, p->heads, p->head_dim);
    a.o = usp_ktensor_bshd(p->b->o, USP_F32, 1, p->seq, p->heads, p->head_dim);
    a.lse = usp_kstats_bhl(p->b->lse, 1, p->heads, p->seq);
    a.blk = (usp_block){0, p->seq, 0, p->seq, p->causal, 0};
    a.scale = (float)(1.0 / sqrt((double)p->head_dim));
    a.mask_lo = p->doc > 0 ? p->lo : NULL;
    a.mask_hi = p->doc > 0 ? p->hi : NULL;
    return a;
}

static usp_status kernel_rc(int rc, const attn_point *p, const char *fn) {
    if (rc == USP_KERNEL_OK) return USP_OK;
    return usp_fail(USP_EINTERNAL, "kernel %s (%s D=%d L=%d): %s", fn, usp_dtype_name(p->dt), p->head_dim, p->seq,
                    p->why);
}

static usp_status run_forward(void *arg, cudaStream_t s) {
    attn_point *p = arg;
    usp_kfwd_args a = fwd_args(p);
    return kernel_rc(p->k->forward(&a, s, p->why, sizeof p->why), p, "forward");
}

static usp_status run_prep(attn_point *p, cudaStream_t s) {
    usp_kprep_args a;
    a.o = usp_ktensor_bshd(p->b->o, USP_F32, 1, p->seq, p->heads, p->head_dim);
    a.dout = usp_ktensor_bshd(p->b->dout, p->dt, 1, p->seq, p->heads, p->head_dim);
    a.delta = usp_kstats_bhl(p->b->delta, 1, p->heads, p->seq);
    return kernel_rc(p->k->bwd_prep(&a, s, p->why, sizeof p->why), p, "bwd_prep");
}

static usp_status run_backward(void *arg, cudaStream_t s) {
    attn_point *p = arg;
    usp_kfwd_args f = fwd_args(p);
    usp_kbwd_args a;
    memset(&a, 0, sizeof a);
    a.q = f.q; a.k = f.k; a.v = f.v;
    a.dout = usp_ktensor_bshd(p->b->dout, p->dt, 1, p->seq, p->heads, p->head_dim);
    a.lse = f.lse;
    a.delta = usp_kstats_bhl(p->b->delta, 1, p->heads, p->seq);
    a.dq = usp_ktensor_bshd(p->b->dq, USP_F32, 1, p->seq, p->heads, p->head_dim);
    a.dk = usp_ktensor_bshd(p->b->dk, USP_F32, 1, p->seq, p->heads, p->head_dim);
    a.dv = usp_ktensor_bshd(p->b->dv, USP_F32, 1, p->seq, p->heads, p->head_dim);
    a.blk = f.blk;
    a.scale = f.scale;
    a.mask_lo = f.mask_lo;
    a.mask_hi = f.mask_hi;
    return kernel_rc(p->k->backward(&a, s, p->why, sizeof p->why), p, "backward");
}

static usp_status generate(const attn_point *p, void *dst, usp_tensor_id t, cudaStream_t s) {
    usp_gpu_shard_desc d = {1, p->seq, p->seq, p->heads, p->head_dim, 1234, t};
    return usp_gpu_generate_shard(dst, p->dt, &d, p->b->tokens, s);
}

/* Inputs of this shape, then a forward and bwd_prep so that the backward
 * reads the real LSE and DELTA. */
static usp_status prepare_point(attn_point *p, cudaStream_t s) {
    USP_TRY(generate(p, p->b->q, USP_TENSOR_Q, s));
    USP_TRY(generate(p, p->b->k, USP_TENSOR_K, s));
    USP_TRY(generate(p, p->b->v, USP_TENSOR_V, s));
    USP_TRY(generate(p, p->b->dout, USP_TENSOR_DO, s));
    USP_TRY(run_forward(p, s));
    USP_TRY(run_prep(p, s));
    USP_CUDA_CHECK(cudaStreamSynchronize(s));
    return USP_OK;
}

/* The FLOPs of a visible (query, key) pair over the heads, 4*D or 10*D a head, as the
 * schedule counts them; and the block's visible pairs. */
static double point_per_pair(const attn_point *p, int backward) { return (backward ? 10.0 : 4.0) * p->head_dim * p->heads; }
static double point_pairs(const attn_point *p) {
    usp_block blk = {0, p->seq, 0, p->seq, p->causal, 0};
    return p->doc > 0 ? p->pairs : usp_block_pairs(&blk);
}

static usp_status add_attn(usp_calib *m, const attn_point *p, int backward, double seconds, FILE *progress) {
    if (m->nattn == USP_CALIB_MAX) return usp_fail(USP_EINTERNAL, "too many kernel measurements");
    usp_calib_attn *a = &m->attn[m->nattn++];
    *a = (usp_calib_attn){.dtype = p->dt, .head_dim = p->head_dim, .seq = p->seq, .heads = p->heads,
                          .backward = backward, .causal = p->causal,
                          .flops = point_per_pair(p, backward) * point_pairs(p), .seconds = seconds};
    char mask[32];
    snprintf(mask, sizeof mask, "%s", p->causal ? "causal" : "full");
    if (p->doc > 0) {   /* the kernels' tiles and units' loop, as the schedule counts them (usp_step) */
        a->doc = p->doc;
        usp_tile_work_flops(p->tiles[backward], backward, point_per_pair(p, backward), &a->tile_flops, &a->loop_flops);
        snprintf(mask, sizeof mask, "docs:%d", p->doc);
    }
    if (progress)
        fprintf(progress, "  %-5s D=%-4d L=%-6d H=%-3d %s %-10s %9.3f ms %7.1f TFLOP/s\n", usp_dtype_name(p->dt),
                p->head_dim, p->seq, p->heads, backward ? "bwd" : "fwd", mask, seconds * 1e3,
                a->flops / seconds / 1e12);
    return USP_OK;
}

static usp_status measure_point(attn_point *p, const usp_calib_grid *g, cudaStream_t s, usp_calib *m, FILE *progress) {
    double fwd, bwd;
    USP_TRY(prepare_point(p, s));
    USP_TRY(time_median(s, run_forward, p, g->warmup, g->reps, &fwd));
    USP_TRY(add_attn(m, p, 0, fwd, progress));
    USP_TRY(run_forward(p, s)); /* the real LSE again after the timed runs */
    USP_TRY(time_median(s, run_backward, p, g->warmup, g->reps, &bwd));
    return add_attn(m, p, 1, bwd, progress);
}

/* ------------------------------------------------------------ the grid */

static int grid_max(const int *v, int n) {
    int m = 0;
    for (int i = 0; i < n; i++)
        if (v[i] > m) m = v[i];
    return m;
}

/* Packed documents of `doc` tokens over seq (the last one shorter), causal inside: its rows'
 * key intervals copied to the device (lo, hi: seq int32 each), its visible pairs and the
 * kernels' tiles, into p. */
static usp_status doc_mask(attn_point *p, int doc, int32_t *lo, int32_t *hi) {
    long n = (p->seq + doc - 1) / doc, *cu = usp_malloc((size_t)(n + 1) * sizeof *cu);
    if (!cu) return USP_EINTERNAL;
    for (long i = 0; i <= n; i++) cu[i] = i < n ? i * doc : p->seq;
    usp_mask *mk;
    usp_status st = usp_mask_from_documents(p->seq, 1, (int)n, cu, 1, -1, -1, &mk);
    free(cu);
    if (st != USP_OK) return st;
    const int32_t *hlo, *hhi;
    usp_mask_layer_rows(mk, 0, 0, &hlo, &hhi);
    long nkt = (p->seq + USP_TILE_BWD_KEYS - 1) / USP_TILE_BWD_KEYS;
    int *scratch = usp_malloc((size_t)(nkt + 1) * sizeof *scratch);
    if (!scratch) st = USP_EINTERNAL;
    if (st == USP_OK) {
        memset(p->tiles, 0, sizeof p->tiles);
        usp_tile_work_add(hlo, hhi, 0, p->seq, 0, scratch, nkt, &p->tiles[0], &p->tiles[1]);
        p->pairs = usp_mask_pairs(mk, 0);
        p->doc = doc;
        p->lo = lo;
        p->hi = hi;
        if (cudaMemcpy(lo, hlo, (size_t)p->seq * sizeof *lo, cudaMemcpyHostToDevice) != cudaSuccess ||
            cudaMemcpy(hi, hhi, (size_t)p->seq * sizeof *hi, cudaMemcpyHostToDevice) != cudaSuccess)
            st = usp_fail(USP_EINTERNAL, "cudaMemcpy: %s", cudaGetErrorString(cudaGetLastError()));
    }
    free(scratch);
    usp_mask_free(mk);
    return st;
}

/* Documents of the per-row-mask points: from a few tiles to a quarter of the largest block,
 * so that units of the kernels range from short to long (usp calibrate fits one efficiency
 * over them; tools/bench-gpu's long-tailed documents and windows are the held-out check). */
static const int CALIB_DOCS[] = {512, 2048};

/* Per-row-mask points of one (dtype, head dim): CALIB_DOCS over the largest block. */
static usp_status measure_docs(const usp_kernel *k, attn_bufs *b, usp_dtype dt, int head_dim, const usp_calib_grid *g,
                               int32_t *lo, int32_t *hi, cudaStream_t s, usp_calib *m, FILE *progress) {
    int seq = grid_max(g->seqs, g->nseqs);
    for (size_t i = 0; i < sizeof CALIB_DOCS / sizeof CALIB_DOCS[0]; i++) {
        if (CALIB_DOCS[i] * 4 > seq) continue;
        attn_point p = {.k = k, .b = b, .dt = dt, .seq = seq, .heads = g->heads, .head_dim = head_dim, .causal = 1};
        USP_TRY(doc_mask(&p, CALIB_DOCS[i], lo, hi));
        USP_TRY(measure_point(&p, g, s, m, progress));
    }
    return USP_OK;
}

static usp_status measure_attention(cudaStream_t s, const usp_calib_grid *g, usp_calib *m, FILE *progress) {
    const usp_kernel *k = usp_kernel_builtin();
    static const usp_dtype dtypes[] = {USP_BF16, USP_F16};
    int max_seq = grid_max(g->seqs, g->nseqs), max_d = grid_max(g->head_dims, g->nhead_dims);
    attn_bufs b;
    int32_t *lo = NULL, *hi = NULL;   /* per-row key intervals of the document points */
    usp_status st = alloc_bufs(&b, (size_t)max_seq * g->heads * max_d, (size_t)max_seq * g->heads, max_seq);
    if (st == USP_OK) st = alloc_one((void **)&lo, (size_t)max_seq * sizeof *lo);
    if (st == USP_OK) st = alloc_one((void **)&hi, (size_t)max_seq * sizeof *hi);
    /* kernels without per-row masks (ABI 1) have no document points */
    int rows = k->abi_version >= 2;
    for (size_t t = 0; t < sizeof dtypes / sizeof dtypes[0] && st == USP_OK; t++) {
        if (!(k->dtypes & (1u << dtypes[t]))) continue;
        for (int d = 0; d < g->nhead_dims && st == USP_OK; d++) {
            for (int l = 0; l < g->nseqs && st == USP_OK; l++)
                for (int causal = 0; causal < 2 && st == USP_OK; causal++) {
                    attn_point p = {.k = k, .b = &b, .dt = dtypes[t], .seq = g->seqs[l], .heads = g->heads,
                                    .head_dim = g->head_dims[d], .causal = causal};
                    st = measure_point(&p, g, s, m, progress);
                }
            if (st == USP_OK && rows) st = measure_docs(k, &b, dtypes[t], g->head_dims[d], g, lo, hi, s, m, progress);
        }
    }
    if (lo) cudaFree(lo);
    if (hi) cudaFree(hi);
    free_bufs(&b);
    return st;
}

/* ------------------------------------------------------------ memory-bound */

/* One rank's shard of a 32-head, D=128 problem with 16K tokens a rank before
 * a 2-rank all-to-all (32K tokens in all): the size of the calibration runs' steps. */
enum { MEM_TOKENS = 16384, MEM_HEADS = 32, MEM_D = 128, MEM_ULYSSES = 2 };

typedef struct {
    const usp_kernel *k;
    attn_bufs *b;
    usp_a2a_dims dims;
    char why[256];
    int which;                         /* what run_memory runs */
} mem_point;

enum { MEM_PACK, MEM_UNPACK, MEM_MERGE, MEM_INIT, MEM_PREP, MEM_TINY, MEM_KINDS };
static const char *const MEM_NAMES[MEM_KINDS] = {"pack", "unpack", "merge", "init", "bwd_prep", "tiny"};

static usp_status run_merge(mem_point *p, cudaStream_t s) {
    usp_kmerge_args a;
    int L = MEM_TOKENS, H = MEM_HEADS;
    a.o_blk = usp_ktensor_bshd(p->b->dq, USP_F32, 1, L, H, MEM_D);
    a.lse_blk = usp_kstats_bhl(p->b->delta, 1, H, L);
    a.o = usp_ktensor_bshd(p->b->o, USP_F32, 1, L, H, MEM_D);
    a.lse = usp_kstats_bhl(p->b->lse, 1, H, L);
    a.row_begin = 0;
    a.rows = L;
    if (p->k->merge(&a, s, p->why, sizeof p->why) != USP_KERNEL_OK)
        return usp_fail(USP_EINTERNAL, "kernel merge: %s", p->why);
    return USP_OK;
}

static usp_status run_prep_mem(mem_point *p, cudaStream_t s) {
    usp_kprep_args a;
    a.o = usp_ktensor_bshd(p->b->o, USP_F32, 1, MEM_TOKENS, MEM_HEADS, MEM_D);
    a.dout = usp_ktensor_bshd(p->b->dout, USP_BF16, 1, MEM_TOKENS, MEM_HEADS, MEM_D);
    a.delta = usp_kstats_bhl(p->b->delta, 1, MEM_HEADS, MEM_TOKENS);
    if (p->k->bwd_prep(&a, s, p->why, sizeof p->why) != USP_KERNEL_OK)
        return usp_fail(USP_EINTERNAL, "kernel bwd_prep: %s", p->why);
    return USP_OK;
}

static usp_status run_memory(void *arg, cudaStream_t s) {
    mem_point *p = arg;
    size_t elems = (size_t)MEM_TOKENS * MEM_HEADS * MEM_D;
    switch (p->which) {
    case MEM_PACK: return usp_gpu_a2a_pack(USP_A2A_Q, &p->dims, USP_BF16, p->b->q, p->b->k, s);
    case MEM_UNPACK: return usp_gpu_a2a_unpack(USP_A2A_Q, &p->dims, USP_BF16, p->b->k, p->b->v, s);
    case MEM_MERGE: return run_merge(p, s);
    case MEM_INIT: USP_CUDA_CHECK(cudaMemsetAsync(p->b->dk, 0, elems * sizeof(float), s)); return USP_OK;
    case MEM_PREP: return run_prep_mem(p, s);
    default: return usp_gpu_fill_f32(p->b->lse, 1, 0.0f, s);
    }
}

/* Bytes read + written, counted as the schedule counts them. */
static double memory_bytes(int which) {
    double elems = (double)MEM_TOKENS * MEM_HEADS * MEM_D, rows = (double)MEM_TOKENS * MEM_HEADS;
    switch (which) {
    case MEM_PACK:
    case MEM_UNPACK: return 2 * elems * 2;                     /* bf16 in, bf16 out */
    case MEM_MERGE: return 3 * elems * 4 + 3 * rows * 4;       /* O_BLK, O read, O written; LSEs */
    case MEM_INIT: return elems * 4;
    case MEM_PREP: return elems * 4 + elems * 2 + rows * 4;    /* O fp32, dO bf16, DELTA */
    default: return 4;
    }
}

static usp_status measure_memory(cudaStream_t s, const usp_calib_grid *g, usp_calib *m, FILE *progress) {
    attn_bufs b;
    size_t elems = (size_t)MEM_TOKENS * MEM_HEADS * MEM_D;
    usp_status st = alloc_bufs(&b, elems, (size_t)MEM_TOKENS * MEM_HEADS, MEM_TOKENS);
    mem_point p = {usp_kernel_builtin(), &b, {1, MEM_TOKENS, MEM_ULYSSES, MEM_HEADS, MEM_HEADS, MEM_D, 0}, "", 0};
    if (st == USP_OK) st = usp_gpu_generate_shard(b.q, USP_BF16, &(usp_gpu_shard_desc){1, MEM_TOKENS, MEM_TOKENS,
                                                  MEM_HEADS, MEM_D, 1234, USP_TENSOR_Q}, b.tokens, s);
    for (int w = 0; w < MEM_KINDS && st == USP_OK; w++) {
        double sec;
        p.which = w;
        st = time_median(s, run_memory, &p, g->warmup, g->reps, &sec);
        if (st != USP_OK) break;
        if (w == MEM_TINY) { m->launch_us = sec * 1e6; continue; }
        usp_calib_mem *e = &m->mem[m->nmem++];
        snprintf(e->kind, sizeof e->kind, "%s", MEM_NAMES[w]);
        e->bytes = memory_bytes(w);
        e->seconds = sec;
        if (progress) fprintf(progress, "  %-9s %8.1f MB %9.1f us %7.0f GB/s\n", e->kind, e->bytes / 1e6, sec * 1e6,
                              e->bytes / sec / 1e9);
    }
    free_bufs(&b);
    return st;
}

/* ------------------------------------------------------------ entry */

static usp_status describe_device(usp_gpu_ctx *ctx, usp_calib *m) {
    struct cudaDeviceProp prop;
    USP_CUDA_CHECK(cudaGetDeviceProperties(&prop, ctx->device));
    snprintf(m->device, sizeof m->device, "%.80s", prop.name);
    m->memory_gb = prop.totalGlobalMem / 1e9;
    return USP_OK;
}

static usp_status measure_on_rank0(usp_gpu_ctx *ctx, const usp_calib_grid *g, usp_calib *m, FILE *progress) {
    USP_CUDA_CHECK(cudaSetDevice(ctx->device));
    USP_TRY(describe_device(ctx, m));
    if (progress) fprintf(progress, "attention kernels on %s (median of %d):\n", m->device, g->reps);
    USP_TRY(measure_attention(ctx->compute, g, m, progress));
    if (progress) fprintf(progress, "memory-bound kernels:\n");
    USP_TRY(measure_memory(ctx->compute, g, m, progress));
    if (progress) fprintf(progress, "  launch (1-element fill, event to event): %.2f us\n", m->launch_us);
    return USP_OK;
}

usp_status usp_calib_measure_kernels(usp_gpu_ctx *ctx, const usp_calib_grid *grid, usp_calib *m, FILE *progress) {
    usp_status st = usp_gpu_rank(ctx) == 0 ? measure_on_rank0(ctx, grid, m, progress) : USP_OK;
    if (st != USP_OK) return st;
    return usp_gpu_barrier(ctx);
}
