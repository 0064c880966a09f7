/* executor.c: the GPU executor (usp_gpu_execute of usp/gpu_exec.h).
 *
 * One rank's list runs on two CUDA streams, COMPUTE and COMM. Before a step
 * its stream waits for the CUDA event recorded after its `dep`; same-stream
 * order is the stream's own. Events before and after every step time it.
 * The host enqueues the whole list, then watches the events: it returns when
 * the last step is done, or with the rank and step that failed, that a peer
 * reported, or that made no progress for the timeout.
 *
 * Buffers: one cudaMalloc per owner buffer of the schedule, aliases share
 * it; DATA buffers hold the input dtype, ACCUM and STATS fp32. Inside the
 * SEND/RECV staging buffers the all-to-all pieces of Q, K, V, dO keep their
 * dtype, LSE stays fp32, and O, dQ, dK, dV go in the wire dtype (the run's
 * 16-bit dtype by default, fp32 with --wire fp32): the pack rounds them, the
 * unpack widens them back into the fp32 outputs.
 *
 * Heads: each rank's own share (usp_rank_heads, usp_rank_kv_heads), even
 * or not: the pack kernels cut per-peer pieces (usp/gpu_pack.h), the
 * all-to-all is an all-to-all-v with each peer's byte count, and the kernels
 * get the rank's head counts. Where the kernel ABI's GQA rule (local query
 * head i uses K/V head i / (Hq / Hkv)) does not give the rank's mapping (an
 * uneven split whose ranks hold parts of a K/V head's group), the attention
 * runs once per K/V head over the query heads that use it (strided views).
 *
 * Masks: an attention step with a mask layer (st->mask_layer >= 0) gets its
 * per-row key intervals from usp_step_row_mask, built and uploaded once per
 * run (lo then hi, [batch][q_len] int32 each) and handed to the kernel
 * (kernel ABI 2; a kernel of ABI 1 is refused before anything runs). */
#define _POSIX_C_SOURCE 200809L /* raise */
#include "executor_ctx.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "executor_cuda.h"
#include "usp/a2a.h"
#include "usp/dispatch.h"
#include "usp/gpu_pack.h"
#include "usp/layout.h"

typedef struct {
    usp_gpu_ctx *ctx;
    const usp_schedule *s;
    const usp_rank_schedule *rs;
    const usp_config *c;
    const usp_kernel *k;
    int rank;
    int ulysses_rank;
    int h0, hu, k0, hkvu;            /* this rank's query heads and K/V heads (usp/layout.h) */
    void *buf[USP_BUF_COUNT];        /* device memory, aliases resolved */
    usp_dtype dt[USP_BUF_COUNT];
    cudaEvent_t t0;                  /* the common start of a run */
    cudaEvent_t *begin, *end;        /* [nsteps]: after the step's waits, after the step */
    int nevents;
    int32_t **rows;                  /* [nsteps]: device lo then hi of a masked ATTN step, or NULL */
    double *timing;                  /* device copy of this rank's timing record (freed with the
                                      * buffers: the IPC transport maps it until the run ends) */
} gpu_run;

static cudaStream_t stream_of(const gpu_run *r, const usp_step *st) {
    return st->stream == USP_STREAM_COMPUTE ? r->ctx->compute : r->ctx->comm;
}

/* ------------------------------------------------------------ buffers */

static long owner_elems(const gpu_run *r, usp_buf b) {
    return r->rs->bufs[usp_buf_owner(r->rs, b)].elems;
}

static size_t elem_bytes(const gpu_run *r, usp_buf b) { return usp_dtype_size(r->dt[b]); }

static usp_dtype dtype_of_role(usp_buf_role role, usp_dtype data) {
    return role == USP_ROLE_DATA ? data : USP_F32;
}

static usp_status alloc_buffers(gpu_run *r) {
    double peak = usp_peak_bytes(r->rs, r->c->dtype) / 1048576;
    for (int b = 0; b < USP_BUF_COUNT; b++) {
        const usp_buf_info *bi = &r->rs->bufs[b];
        r->dt[b] = dtype_of_role(bi->role, r->c->dtype);
        if (bi->alias != USP_BUF_NONE || bi->elems == 0) continue;
        size_t bytes = (size_t)bi->elems * usp_dtype_size(r->dt[b]);
        cudaError_t e = cudaMalloc(&r->buf[b], bytes);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            return usp_fail(USP_EINTERNAL, "out of GPU memory: buffer %s needs %.1f MiB (this rank's "
                            "schedule holds %.1f MiB at its peak): %s", bi->name, bytes / 1048576.0, peak,
                            cudaGetErrorString(e));
        }
    }
    for (int b = 0; b < USP_BUF_COUNT; b++)
        if (r->rs->bufs[b].alias != USP_BUF_NONE) r->buf[b] = r->buf[usp_buf_owner(r->rs, b)];
    return USP_OK;
}

static void free_buffers(gpu_run *r) {
    for (int b = 0; b < USP_BUF_COUNT; b++)
        if (r->rs->bufs[b].alias == USP_BUF_NONE && r->buf[b]) cudaFree(r->buf[b]);
    memset(r->buf, 0, sizeof r->buf);
    if (r->timing) cudaFree(r->timing);
    r->timing = NULL;
}

/* ------------------------------------------------------------ masks */

static int has_row_mask(const usp_step *st) {
    return (st->kind == USP_STEP_ATTN_FWD || st->kind == USP_STEP_ATTN_BWD) && st->mask_layer >= 0;
}

/* The per-row intervals of every masked attention step of the rank, on the device. */
static usp_status upload_row_masks(gpu_run *r) {
    int n = r->rs->nsteps;
    if (!(r->rows = usp_calloc((size_t)(n ? n : 1), sizeof *r->rows))) return USP_EINTERNAL;
    usp_status st = USP_OK;
    for (int i = 0; i < n && st == USP_OK; i++) {
        const usp_step *sp = usp_rank_step(r->rs, i);
        if (!has_row_mask(sp)) continue;
        size_t rows = (size_t)r->c->batch * (size_t)sp->blk.q_len;
        int32_t *host = usp_malloc(2 * rows * sizeof *host + 1);
        if (!host) return USP_EINTERNAL;
        st = usp_step_row_mask(r->c, r->rank, sp, host, host + rows);
        if (st == USP_OK && cudaMalloc((void **)&r->rows[i], 2 * rows * sizeof *host + 4) != cudaSuccess)
            st = usp_fail(USP_EINTERNAL, "step %d (%s): mask rows: %s", i, sp->name,
                          cudaGetErrorString(cudaGetLastError()));
        if (st == USP_OK && cudaMemcpy(r->rows[i], host, 2 * rows * sizeof *host, cudaMemcpyHostToDevice) != cudaSuccess)
            st = usp_fail(USP_EINTERNAL, "step %d (%s): mask rows: %s", i, sp->name,
                          cudaGetErrorString(cudaGetLastError()));
        free(host);
    }
    return st;
}

static void free_row_masks(gpu_run *r) {
    if (!r->rows) return;
    for (int i = 0; i < r->rs->nsteps; i++)
        if (r->rows[i]) cudaFree(r->rows[i]);
    free(r->rows);
    r->rows = NULL;
}

/* lo and hi of step i, or NULL and NULL. */
static void row_mask_of(const gpu_run *r, int i, const usp_step *st, const int32_t **lo, const int32_t **hi) {
    *lo = *hi = NULL;
    if (!r->rows || !r->rows[i]) return;
    *lo = r->rows[i];
    *hi = r->rows[i] + (size_t)r->c->batch * (size_t)st->blk.q_len;
}

/* ------------------------------------------------------------ inputs */

/* The rank's shard of a global fp64 tensor, to the buffer's dtype. */
static usp_status load_shard(gpu_run *r, usp_buf b, const double *global, int nh) {
    long n = owner_elems(r, b);
    double *shard = usp_malloc((size_t)n * sizeof *shard);
    float *narrow = usp_malloc((size_t)n * sizeof *narrow);
    float *staging = NULL;
    usp_status st = shard && narrow ? USP_OK : USP_EINTERNAL;
    if (st == USP_OK) {
        usp_scatter_tokens(r->c, r->rank, global, shard, nh, r->c->head_dim, sizeof(double));
        for (long i = 0; i < n; i++) narrow[i] = (float)shard[i]; /* exact: already rounded to the dtype */
        cudaError_t e = cudaMalloc((void **)&staging, (size_t)n * sizeof(float));
        /* on the stream: a plain cudaMemcpy from pageable memory may return
         * before its DMA ends, and our streams do not wait for the legacy one */
        if (e == cudaSuccess)
            e = cudaMemcpyAsync(staging, narrow, (size_t)n * sizeof(float), cudaMemcpyHostToDevice, r->ctx->compute);
        if (e != cudaSuccess) st = usp_fail(USP_EINTERNAL, "loading %s: %s", usp_buf_name(b), cudaGetErrorString(e));
    }
    if (st == USP_OK) st = usp_gpu_from_f32(r->buf[b], r->dt[b], staging, n, r->ctx->compute);
    if (st == USP_OK && cudaStreamSynchronize(r->ctx->compute) != cudaSuccess)
        st = usp_fail(USP_EINTERNAL, "loading %s: %s", usp_buf_name(b), cudaGetErrorString(cudaGetLastError()));
    if (staging) cudaFree(staging);
    free(shard);
    free(narrow);
    return st;
}

/* The rank's shard made on the GPU from the inputs' counter-based hash. */
static usp_status generate_shard(gpu_run *r, usp_buf b, usp_tensor_id t, int nh, const int64_t *tokens) {
    const usp_config *c = r->c;
    usp_gpu_shard_desc d = {c->batch, c->seq, c->seq / usp_world(c), nh, c->head_dim, c->seed, t};
    return usp_gpu_generate_shard(r->buf[b], r->dt[b], &d, tokens, r->ctx->compute);
}

static usp_status generate_inputs(gpu_run *r) {
    const usp_config *c = r->c;
    long ls = c->seq / usp_world(c);
    int64_t *host = usp_malloc((size_t)ls * sizeof *host), *tokens = NULL;
    if (!host) return USP_EINTERNAL;
    for (long i = 0; i < ls; i++) host[i] = usp_rank_token(c, r->rank, i);
    usp_status st = USP_OK;
    cudaError_t e = cudaMalloc((void **)&tokens, (size_t)ls * sizeof *tokens);
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(tokens, host, (size_t)ls * sizeof *tokens, cudaMemcpyHostToDevice, r->ctx->compute);
    if (e != cudaSuccess) st = usp_fail(USP_EINTERNAL, "generating inputs: %s", cudaGetErrorString(e));
    if (st == USP_OK) st = generate_shard(r, USP_BUF_Q_IN, USP_TENSOR_Q, c->heads, tokens);
    if (st == USP_OK) st = generate_shard(r, USP_BUF_K_IN, USP_TENSOR_K, c->kv_heads, tokens);
    if (st == USP_OK) st = generate_shard(r, USP_BUF_V_IN, USP_TENSOR_V, c->kv_heads, tokens);
    if (st == USP_OK && r->s->backward) st = generate_shard(r, USP_BUF_DO_IN, USP_TENSOR_DO, c->heads, tokens);
    if (st == USP_OK && cudaStreamSynchronize(r->ctx->compute) != cudaSuccess)
        st = usp_fail(USP_EINTERNAL, "generating inputs: %s", cudaGetErrorString(cudaGetLastError()));
    if (tokens) cudaFree(tokens);
    free(host);
    return st;
}

static usp_status load_inputs(gpu_run *r, const usp_inputs *in) {
    const usp_config *c = r->c;
    if (!in) return generate_inputs(r);
    USP_TRY(load_shard(r, USP_BUF_Q_IN, in->q, c->heads));
    USP_TRY(load_shard(r, USP_BUF_K_IN, in->k, c->kv_heads));
    USP_TRY(load_shard(r, USP_BUF_V_IN, in->v, c->kv_heads));
    if (r->s->backward) USP_TRY(load_shard(r, USP_BUF_DO_IN, in->dout, c->heads));
    return USP_OK;
}

/* ------------------------------------------------------------ kernel arguments */

/* (B, Lr, Hu, D): head-sharded queries and what is shaped like them. */
static usp_ktensor query_tensor(const gpu_run *r, usp_buf b) {
    const usp_config *c = r->c;
    return usp_ktensor_bshd(r->buf[b], r->dt[b], c->batch, c->seq / c->ring, r->hu, c->head_dim);
}

/* Block `index` of a (R, B, Lr, Hkvu, D) or (B, Lr, Hkvu, D) K/V buffer. */
static usp_ktensor kv_tensor(const gpu_run *r, usp_buf b, int index) {
    const usp_config *c = r->c;
    int lr = c->seq / c->ring;
    size_t block = (size_t)c->batch * lr * r->hkvu * c->head_dim * elem_bytes(r, b);
    return usp_ktensor_bshd((char *)r->buf[b] + (size_t)index * block, r->dt[b], c->batch, lr, r->hkvu,
                            c->head_dim);
}

/* (B, Hu, Lr) fp32. */
static usp_kstats stats_tensor(const gpu_run *r, usp_buf b) {
    const usp_config *c = r->c;
    return usp_kstats_bhl(r->buf[b], c->batch, r->hu, c->seq / c->ring);
}

/* Heads [h0, h0 + n) of a (B, L, H, D) or (B, H, L) descriptor: same strides. */
static usp_ktensor heads_of(usp_ktensor t, int h0, int n) {
    t.ptr = (char *)t.ptr + (size_t)h0 * (size_t)t.sh * usp_dtype_size(t.dtype);
    t.h = n;
    return t;
}

static usp_kstats stat_heads_of(usp_kstats t, int h0, int n) {
    t.ptr += (size_t)h0 * (size_t)t.sh;
    t.h = n;
    return t;
}

/* Whether the kernel ABI's GQA rule (local query head i uses local K/V head
 * i / (Hu / Hkvu)) is this rank's mapping (global head h uses K/V head h / (H / Hkv)). */
static int abi_maps_heads(const gpu_run *r) {
    const usp_config *c = r->c;
    if (r->hkvu < 1 || r->hu % r->hkvu != 0) return 0;
    int group = c->heads / c->kv_heads, local = r->hu / r->hkvu;
    for (int i = 0; i < r->hu; i++)
        if ((r->h0 + i) / group - r->k0 != i / local) return 0;
    return 1;
}

/* Local query heads [*q0, *q0 + *qn) that use local K/V head j. */
static void run_of_kv_head(const gpu_run *r, int j, int *q0, int *qn) {
    int group = r->c->heads / r->c->kv_heads, kh = r->k0 + j;
    int first = kh * group, last = first + group; /* global query heads of kh */
    if (first < r->h0) first = r->h0;
    if (last > r->h0 + r->hu) last = r->h0 + r->hu;
    *q0 = first - r->h0;
    *qn = last > first ? last - first : 0;
}

static usp_status kernel_result(int rc, const gpu_run *r, const char *fn, const char *why) {
    if (rc == USP_KERNEL_OK) return USP_OK;
    return usp_fail(USP_EINTERNAL, "kernel '%s' %s: %s", r->k->name ? r->k->name : "?", fn, why);
}

static usp_status attn_fwd(gpu_run *r, int i, const usp_step *st, cudaStream_t s) {
    usp_kfwd_args a = {
        .q = query_tensor(r, USP_BUF_Q), .k = kv_tensor(r, st->src[0], st->kv_block),
        .v = kv_tensor(r, st->src[1], st->kv_block), .o = query_tensor(r, USP_BUF_O_BLK),
        .lse = stats_tensor(r, USP_BUF_LSE_BLK), .blk = st->blk, .scale = (float)usp_scale(r->c)};
    row_mask_of(r, i, st, &a.mask_lo, &a.mask_hi);
    char why[256] = "";
    if (abi_maps_heads(r)) return kernel_result(r->k->forward(&a, s, why, sizeof why), r, "forward", why);
    for (int j = 0; j < r->hkvu; j++) { /* one call per K/V head over the query heads using it */
        int q0, qn;
        run_of_kv_head(r, j, &q0, &qn);
        if (qn == 0) continue;
        usp_kfwd_args b = a;
        b.q = heads_of(a.q, q0, qn);
        b.o = heads_of(a.o, q0, qn);
        b.lse = stat_heads_of(a.lse, q0, qn);
        b.k = heads_of(a.k, j, 1);
        b.v = heads_of(a.v, j, 1);
        USP_TRY(kernel_result(r->k->forward(&b, s, why, sizeof why), r, "forward", why));
    }
    return USP_OK;
}

static usp_status merge(gpu_run *r, const usp_step *st, cudaStream_t s) {
    usp_kmerge_args a = {
        .o_blk = query_tensor(r, USP_BUF_O_BLK), .lse_blk = stats_tensor(r, USP_BUF_LSE_BLK),
        .o = query_tensor(r, USP_BUF_O), .lse = stats_tensor(r, USP_BUF_LSE),
        .row_begin = st->blk.q_begin, .rows = st->blk.q_len};
    char why[256] = "";
    return kernel_result(r->k->merge(&a, s, why, sizeof why), r, "merge", why);
}

static usp_status bwd_prep(gpu_run *r, cudaStream_t s) {
    usp_kprep_args a = {.o = query_tensor(r, USP_BUF_O), .dout = query_tensor(r, USP_BUF_DO),
                        .delta = stats_tensor(r, USP_BUF_DELTA)};
    char why[256] = "";
    return kernel_result(r->k->bwd_prep(&a, s, why, sizeof why), r, "bwd_prep", why);
}

static usp_status attn_bwd(gpu_run *r, int i, const usp_step *st, cudaStream_t s) {
    usp_kbwd_args a = {
        .q = query_tensor(r, USP_BUF_Q), .k = kv_tensor(r, st->src[0], st->kv_block),
        .v = kv_tensor(r, st->src[1], st->kv_block), .dout = query_tensor(r, USP_BUF_DO),
        .lse = stats_tensor(r, USP_BUF_LSE), .delta = stats_tensor(r, USP_BUF_DELTA),
        .dq = query_tensor(r, USP_BUF_DQ), .dk = kv_tensor(r, st->dst[0], st->kv_block),
        .dv = kv_tensor(r, st->dst[1], st->kv_block), .blk = st->blk, .scale = (float)usp_scale(r->c)};
    row_mask_of(r, i, st, &a.mask_lo, &a.mask_hi);
    char why[256] = "";
    if (abi_maps_heads(r)) return kernel_result(r->k->backward(&a, s, why, sizeof why), r, "backward", why);
    for (int j = 0; j < r->hkvu; j++) { /* as attn_fwd: dK, dV of head j add up over the calls */
        int q0, qn;
        run_of_kv_head(r, j, &q0, &qn);
        if (qn == 0) continue;
        usp_kbwd_args b = a;
        b.q = heads_of(a.q, q0, qn);
        b.dout = heads_of(a.dout, q0, qn);
        b.dq = heads_of(a.dq, q0, qn);
        b.lse = stat_heads_of(a.lse, q0, qn);
        b.delta = stat_heads_of(a.delta, q0, qn);
        b.k = heads_of(a.k, j, 1);
        b.v = heads_of(a.v, j, 1);
        b.dk = heads_of(a.dk, j, 1);
        b.dv = heads_of(a.dv, j, 1);
        USP_TRY(kernel_result(r->k->backward(&b, s, why, sizeof why), r, "backward", why));
    }
    return USP_OK;
}

/* ------------------------------------------------------------ steps */

/* 0, or -inf for the buffers that hold log-sum-exps. */
static usp_status init_buffer(gpu_run *r, usp_buf b, cudaStream_t s) {
    if (b == USP_BUF_NONE) return USP_OK;
    long n = owner_elems(r, b);
    if (r->rs->bufs[usp_buf_owner(r->rs, b)].role == USP_ROLE_STATS)
        return usp_gpu_fill_f32(r->buf[b], n, -INFINITY, s);
    USP_CUDA_CHECK(cudaMemsetAsync(r->buf[b], 0, (size_t)n * elem_bytes(r, b), s));
    return USP_OK;
}

/* The element type a pattern's pieces travel in: Q, K, V, dO as held (the
 * dtype), LSE in fp32, O, dQ, dK, dV in the wire dtype (usp_wire_dtype). */
static usp_dtype a2a_dtype(const usp_config *c, usp_a2a a) {
    if (a == USP_A2A_Q || a == USP_A2A_KV) return c->dtype;
    return a == USP_A2A_LSE ? USP_F32 : usp_wire_dtype(c);
}

static usp_status run_compute(gpu_run *r, int i, const usp_step *st, cudaStream_t s) {
    usp_a2a_dims dims = usp_a2a_dims_rank(r->c, r->ulysses_rank);
    switch (st->kind) {
    case USP_STEP_PACK:
        return usp_gpu_a2a_pack_to(st->a2a, &dims, r->dt[st->src[0]], a2a_dtype(r->c, st->a2a), r->buf[st->src[0]],
                                   r->buf[USP_BUF_SEND], s);
    case USP_STEP_UNPACK:
        return usp_gpu_a2a_unpack_from(st->a2a, &dims, a2a_dtype(r->c, st->a2a), r->dt[st->dst[0]],
                                       r->buf[USP_BUF_RECV], r->buf[st->dst[0]], s);
    case USP_STEP_INIT:
        USP_TRY(init_buffer(r, st->dst[0], s));
        return init_buffer(r, st->dst[1], s);
    case USP_STEP_ATTN_FWD: return attn_fwd(r, i, st, s);
    case USP_STEP_MERGE: return merge(r, st, s);
    case USP_STEP_BWD_PREP: return bwd_prep(r, s);
    case USP_STEP_ATTN_BWD: return attn_bwd(r, i, st, s);
    case USP_STEP_ACCUM:
        for (int x = 0; x < 2 && st->dst[x] != USP_BUF_NONE; x++)
            USP_TRY(usp_gpu_add_f32((float *)r->buf[st->dst[x]], (const float *)r->buf[st->src[x]],
                                    owner_elems(r, st->dst[x]), s));
        return USP_OK;
    default: return usp_fail(USP_EINTERNAL, "step kind %s is not a compute step", usp_step_kind_name(st->kind));
    }
}


/* A K/V block of this rank (the ring group's ranks share its ulysses rank, so its heads). */
static size_t block_bytes(const gpu_run *r, usp_buf b) {
    const usp_config *c = r->c;
    return (size_t)c->batch * (c->seq / c->ring) * r->hkvu * c->head_dim * elem_bytes(r, b);
}

/* Each peer's piece of SEND and RECV, in bytes (usp/a2a.h's layout). */
static usp_status all_to_all(gpu_run *r, const usp_step *st, cudaStream_t s) {
    const usp_config *c = r->c;
    int n = c->ulysses, u = r->ulysses_rank;
    size_t elem = usp_dtype_size(a2a_dtype(c, st->a2a));
    size_t *v = usp_calloc((size_t)4 * n, sizeof *v);
    if (!v) return USP_EINTERNAL;
    for (int p = 0; p < n; p++) {
        v[p] = (size_t)usp_a2a_send_offset(c, st->a2a, u, p) * elem;
        v[n + p] = (size_t)usp_a2a_send_elems(c, st->a2a, u, p) * elem;
        v[2 * n + p] = (size_t)usp_a2a_recv_offset(c, st->a2a, u, p) * elem;
        v[3 * n + p] = (size_t)usp_a2a_recv_elems(c, st->a2a, u, p) * elem;
    }
    usp_transport *t = r->ctx->tr;
    usp_status rc = t->ops->all_to_all_v(t, n, r->buf[USP_BUF_SEND], v, v + n, r->buf[USP_BUF_RECV], v + 2 * n,
                                         v + 3 * n, s);
    free(v);
    return rc;
}

static usp_status run_comm(gpu_run *r, const usp_step *st, cudaStream_t s) {
    usp_transport *t = r->ctx->tr;
    const usp_config *c = r->c;
    switch (st->kind) {
    case USP_STEP_ALL_TO_ALL: return all_to_all(r, st, s);
    case USP_STEP_SENDRECV: {
        size_t b0 = (size_t)owner_elems(r, st->src[0]) * elem_bytes(r, st->src[0]);
        size_t b1 = (size_t)owner_elems(r, st->src[1]) * elem_bytes(r, st->src[1]);
        int to = usp_group_index(c, USP_GROUP_RING, usp_step_send_peer(c, r->rank, st));
        int from = usp_group_index(c, USP_GROUP_RING, usp_step_recv_peer(c, r->rank, st));
        return t->ops->sendrecv(t, r->buf[st->src[0]], r->buf[st->src[1]], r->buf[st->dst[0]],
                                 r->buf[st->dst[1]], b0, b1, to, from, s);
    }
    case USP_STEP_ALLGATHER:
        return t->ops->allgather(t, r->buf[st->src[0]], r->buf[st->src[1]], r->buf[st->dst[0]],
                                  r->buf[st->dst[1]], block_bytes(r, st->src[0]), s);
    case USP_STEP_REDUCE_SCATTER:
        return t->ops->reduce_scatter(t, r->buf[st->src[0]], r->buf[st->src[1]], r->buf[st->dst[0]],
                                      r->buf[st->dst[1]], block_bytes(r, st->dst[0]) / sizeof(float), s);
    default: return usp_fail(USP_EINTERNAL, "step kind %s is not a comm step", usp_step_kind_name(st->kind));
    }
}

/* USP_GPU_INJECT_FAILURE="R:S" makes rank R fail at step S, "R:S:die"
 * kills its process there: how the failure paths are tested. */
static usp_status injected_failure(const gpu_run *r, int i) {
    const char *spec = getenv("USP_GPU_INJECT_FAILURE");
    int rank, step;
    char how[8] = "";
    if (!spec || sscanf(spec, "%d:%d:%7s", &rank, &step, how) < 2 || rank != r->rank || step != i) return USP_OK;
    if (!strcmp(how, "die")) raise(SIGKILL);
    return usp_fail(USP_EINTERNAL, "injected failure (USP_GPU_INJECT_FAILURE=%s)", spec);
}

static usp_status enqueue_step(gpu_run *r, int i) {
    const usp_step *st = usp_rank_step(r->rs, i);
    cudaStream_t s = stream_of(r, st);
    usp_status rc = injected_failure(r, i);
    if (rc == USP_OK && st->dep >= 0 && cudaStreamWaitEvent(s, r->end[st->dep], 0) != cudaSuccess)
        rc = usp_fail(USP_EINTERNAL, "waiting for step %d: %s", st->dep, cudaGetErrorString(cudaGetLastError()));
    if (rc == USP_OK && cudaEventRecord(r->begin[i], s) != cudaSuccess)
        rc = usp_fail(USP_EINTERNAL, "event: %s", cudaGetErrorString(cudaGetLastError()));
    if (rc == USP_OK) rc = st->stream == USP_STREAM_COMPUTE ? run_compute(r, i, st, s) : run_comm(r, st, s);
    if (rc == USP_OK && cudaEventRecord(r->end[i], s) != cudaSuccess)
        rc = usp_fail(USP_EINTERNAL, "event: %s", cudaGetErrorString(cudaGetLastError()));
    if (rc != USP_OK) usp_error_prefix("rank %d, step %d (%s): ", r->rank, i, st->name);
    return rc;
}

/* ------------------------------------------------------------ watching */

/* The first step of `stream` at or after i that is not done, or n. */
static int advance(const gpu_run *r, int stream, int i, usp_status *st, int *moved) {
    int n = r->rs->nsteps;
    for (; i < n; i++) {
        if ((int)usp_rank_step(r->rs, i)->stream != stream) continue;
        cudaError_t e = cudaEventQuery(r->end[i]);
        if (e == cudaErrorNotReady) break;
        if (e != cudaSuccess) {
            *st = usp_fail(USP_EINTERNAL, "rank %d, step %d (%s): %s", r->rank, i, usp_rank_step(r->rs, i)->name,
                           cudaGetErrorString(e));
            break;
        }
        *moved = 1;
    }
    return i;
}

/* Waits for every step; returns on the first failure, a peer's failure or
 * no progress for the timeout. */
static usp_status wait_steps(gpu_run *r) {
    usp_gpu_ctx *ctx = r->ctx;
    int next[2] = {0, 0}, n = r->rs->nsteps;
    double last_progress = usp_now_s();
    for (;;) {
        usp_status st = USP_OK;
        int moved = 0;
        for (int s = 0; s < 2 && st == USP_OK; s++) next[s] = advance(r, s, next[s], &st, &moved);
        if (st != USP_OK) return st;
        if (next[0] >= n && next[1] >= n) return USP_OK;
        int pending = next[0] < next[1] ? next[0] : next[1];
        const char *name = usp_rank_step(r->rs, pending)->name;
        if (moved) last_progress = usp_now_s();
        if (ctx->tr->ops->poll(ctx->tr) != USP_OK) {
            usp_error_prefix("rank %d, step %d (%s): ", r->rank, pending, name);
            return USP_EINTERNAL;
        }
        USP_TRY(usp_links_check(&ctx->links, 1));
        if (usp_now_s() - last_progress > ctx->timeout_s)
            return usp_fail(USP_EINTERNAL, "rank %d, step %d (%s): did not finish within %.0f s", r->rank,
                            pending, name, ctx->timeout_s);
    }
}

/* Waits for what `s` holds now, with the same watch as the steps. */
static usp_status wait_stream(gpu_run *r, cudaStream_t s, const char *what) {
    cudaEvent_t ev;
    USP_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    USP_CUDA_CHECK(cudaEventRecord(ev, s));
    double deadline = usp_now_s() + r->ctx->timeout_s;
    usp_status st = USP_OK;
    for (;;) {
        cudaError_t e = cudaEventQuery(ev);
        if (e == cudaSuccess) break;
        if (e != cudaErrorNotReady) { st = usp_fail(USP_EINTERNAL, "%s", cudaGetErrorString(e)); break; }
        if ((st = r->ctx->tr->ops->poll(r->ctx->tr)) != USP_OK) break;
        if ((st = usp_links_check(&r->ctx->links, 1)) != USP_OK) break;
        if (usp_now_s() > deadline) { st = usp_fail(USP_EINTERNAL, "not done within %.0f s", r->ctx->timeout_s); break; }
    }
    cudaEventDestroy(ev);
    if (st != USP_OK) usp_error_prefix("rank %d, %s: ", r->rank, what);
    return st;
}

/* ------------------------------------------------------------ one run */

static usp_status create_events(gpu_run *r) {
    int n = r->rs->nsteps;
    r->begin = usp_calloc((size_t)n, sizeof *r->begin);
    r->end = usp_calloc((size_t)n, sizeof *r->end);
    if (!r->begin || !r->end) return USP_EINTERNAL;
    USP_CUDA_CHECK(cudaEventCreate(&r->t0));
    for (; r->nevents < n; r->nevents++) {
        USP_CUDA_CHECK(cudaEventCreate(&r->begin[r->nevents]));
        USP_CUDA_CHECK(cudaEventCreate(&r->end[r->nevents]));
    }
    return USP_OK;
}

static void destroy_events(gpu_run *r) {
    for (int i = 0; i < r->nevents; i++) {
        cudaEventDestroy(r->begin[i]);
        cudaEventDestroy(r->end[i]);
    }
    if (r->t0) cudaEventDestroy(r->t0);
    free(r->begin);
    free(r->end);
}

/* USP_GPU_SYNC_STEPS=1: the host waits for each step before the next, so
 * no two steps overlap (for telling a race from a wrong result). */
static int one_step_at_a_time(void) {
    const char *e = getenv("USP_GPU_SYNC_STEPS");
    return e && !strcmp(e, "1");
}

/* All ranks start together: both streams begin after a world all-reduce. */
static usp_status run_once(gpu_run *r) {
    usp_gpu_ctx *ctx = r->ctx;
    int serial = one_step_at_a_time();
    USP_TRY(ctx->tr->ops->barrier(ctx->tr, ctx->scratch, ctx->comm));
    USP_CUDA_CHECK(cudaEventRecord(r->t0, ctx->comm));
    USP_CUDA_CHECK(cudaStreamWaitEvent(ctx->compute, r->t0, 0));
    for (int i = 0; i < r->rs->nsteps; i++) {
        USP_TRY(enqueue_step(r, i));
        if (serial) USP_TRY(wait_stream(r, stream_of(r, usp_rank_step(r->rs, i)), usp_rank_step(r->rs, i)->name));
    }
    return wait_steps(r);
}

/* ------------------------------------------------------------ timing */

/* Per rank, what rank 0 collects: per timed run the end of the forward and
 * of the whole list (ms after the common start), the busy times of the last
 * run, and its steps' start and duration (us). */
typedef struct {
    int iters, max_steps;
    size_t len;   /* doubles per rank */
} timing_layout;

static timing_layout layout_of(const usp_schedule *s, int iters) {
    timing_layout t = {iters, 0, 0};
    for (int g = 0; g < s->world; g++)
        if (s->ranks[g].nsteps > t.max_steps) t.max_steps = s->ranks[g].nsteps;
    t.len = (size_t)2 * iters + 3 + (size_t)2 * t.max_steps;
    return t;
}

static usp_status elapsed_us(const gpu_run *r, cudaEvent_t ev, double *us) {
    float ms;
    USP_CUDA_CHECK(cudaEventElapsedTime(&ms, r->t0, ev));
    *us = ms * 1e3;
    return USP_OK;
}

/* Comm time during which no compute step ran (each stream's steps do not overlap). */
static double exposed_comm_us(const usp_rank_schedule *rs, const double *steps) {
    double exposed = 0;
    for (int i = 0; i < rs->nsteps; i++) {
        if (usp_rank_step(rs, i)->stream != USP_STREAM_COMM) continue;
        double a = steps[2 * i], b = a + steps[2 * i + 1], covered = 0;
        for (int j = 0; j < rs->nsteps; j++) {
            if (usp_rank_step(rs, j)->stream != USP_STREAM_COMPUTE) continue;
            double lo = fmax(a, steps[2 * j]), hi = fmin(b, steps[2 * j] + steps[2 * j + 1]);
            if (hi > lo) covered += hi - lo;
        }
        exposed += (b - a) - covered;
    }
    return exposed;
}

/* Fills this rank's record after timed run `it`; the steps from the last one. */
static usp_status record_run(const gpu_run *r, const timing_layout *t, int it, double *rec) {
    const usp_rank_schedule *rs = r->rs;
    double *steps = rec + 2 * t->iters + 3, fwd_end = 0, end = 0, busy[2] = {0, 0};
    for (int i = 0; i < rs->nsteps; i++) {
        double a = 0, b = 0;
        USP_TRY(elapsed_us(r, r->begin[i], &a));
        USP_TRY(elapsed_us(r, r->end[i], &b));
        steps[2 * i] = a;
        steps[2 * i + 1] = b > a ? b - a : 0;
        busy[usp_rank_step(rs, i)->stream] += steps[2 * i + 1];
        if (i < rs->nfwd && b > fwd_end) fwd_end = b;
        if (b > end) end = b;
    }
    rec[it] = fwd_end / 1e3;
    rec[t->iters + it] = end / 1e3;
    rec[2 * t->iters] = busy[USP_STREAM_COMPUTE] / 1e6;
    rec[2 * t->iters + 1] = busy[USP_STREAM_COMM] / 1e6;
    rec[2 * t->iters + 2] = exposed_comm_us(rs, steps) / 1e6;
    return USP_OK;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *x, int n) {
    qsort(x, (size_t)n, sizeof *x, compare_doubles);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

/* Rank 0: times of the whole run (slowest rank per timed run), stats, trace. */
static usp_status publish_timing(const usp_schedule *s, const timing_layout *t, const double *all, usp_result *out,
                                 usp_trace *trace) {
    double *fwd = usp_calloc((size_t)t->iters, sizeof *fwd), *total = usp_calloc((size_t)t->iters, sizeof *total);
    if (!fwd || !total) { free(fwd); free(total); return USP_EINTERNAL; }
    for (int g = 0; g < s->world; g++) {
        const double *rec = all + (size_t)g * t->len;
        for (int it = 0; it < t->iters; it++) {
            fwd[it] = fmax(fwd[it], rec[it]);
            total[it] = fmax(total[it], rec[t->iters + it]);
        }
        usp_rank_stats *rst = &out->ranks[g];
        rst->compute_s = rec[2 * t->iters];
        rst->comm_s = rec[2 * t->iters + 1];
        rst->exposed_comm_s = rec[2 * t->iters + 2];
    }
    double fwd_ms = median(fwd, t->iters), total_ms = median(total, t->iters);
    out->time_fwd_s = fwd_ms / 1e3;
    out->time_bwd_s = s->backward ? (total_ms - fwd_ms) / 1e3 : 0;
    free(fwd);
    free(total);
    usp_status st = USP_OK;
    for (int g = 0; g < s->world && trace && st == USP_OK; g++) {
        const double *steps = all + (size_t)g * t->len + 2 * t->iters + 3;
        for (int i = 0; i < s->ranks[g].nsteps && st == USP_OK; i++)
            st = usp_trace_add(trace, g, i, usp_rank_step(&s->ranks[g], i), steps[2 * i], steps[2 * i + 1]);
    }
    return st;
}

/* ------------------------------------------------------------ gathering */

/* Every rank's `bytes` from device `mine` into host `host` (rank 0: world * bytes). */
static usp_status gather_bytes(gpu_run *r, const void *mine, void *host, size_t bytes) {
    void *root = NULL;
    int is_root = r->rank == 0;
    size_t total = bytes * (size_t)r->s->world;
    if (is_root) USP_CUDA_CHECK(cudaMalloc(&root, total));
    usp_status st = r->ctx->tr->ops->gather(r->ctx->tr, mine, root, bytes, r->ctx->comm);
    if (st == USP_OK) st = wait_stream(r, r->ctx->comm, "gathering to rank 0");
    if (st == USP_OK && is_root && cudaMemcpy(host, root, total, cudaMemcpyDeviceToHost) != cudaSuccess)
        st = usp_fail(USP_EINTERNAL, "gathering to rank 0: %s", cudaGetErrorString(cudaGetLastError()));
    if (root) cudaFree(root);
    return st;
}

static usp_status gather_timing(gpu_run *r, const timing_layout *t, const double *rec, usp_result *out,
                                usp_trace *trace) {
    double *all = r->rank == 0 ? usp_malloc(t->len * r->s->world * sizeof *all) : NULL;
    if (r->rank == 0 && !all) return USP_EINTERNAL;
    usp_status st = USP_OK;
    if (cudaMalloc((void **)&r->timing, t->len * sizeof *r->timing) != cudaSuccess ||
        cudaMemcpyAsync(r->timing, rec, t->len * sizeof *r->timing, cudaMemcpyHostToDevice, r->ctx->comm) !=
            cudaSuccess)
        st = usp_fail(USP_EINTERNAL, "rank %d: timing: %s", r->rank, cudaGetErrorString(cudaGetLastError()));
    if (st == USP_OK) st = gather_bytes(r, r->timing, all, t->len * sizeof *r->timing);
    if (st == USP_OK && r->rank == 0) st = publish_timing(r->s, t, all, out, trace);
    free(all);
    return st;
}

/* One output tensor (fp32 shards) into the result's global fp64 array. */
static usp_status gather_output(gpu_run *r, usp_buf b, double *global, int nh, int is_lse) {
    const usp_config *c = r->c;
    long n = owner_elems(r, b);
    int world = r->s->world;
    float *all = r->rank == 0 ? usp_malloc((size_t)n * world * sizeof *all) : NULL;
    double *shard = r->rank == 0 ? usp_malloc((size_t)n * sizeof *shard) : NULL;
    usp_status st = r->rank == 0 && (!all || !shard) ? USP_EINTERNAL : USP_OK;
    if (st == USP_OK) st = gather_bytes(r, r->buf[b], all, (size_t)n * sizeof(float));
    for (int g = 0; g < world && st == USP_OK && r->rank == 0 && global; g++) {
        for (long i = 0; i < n; i++) shard[i] = all[(size_t)g * n + i];
        if (is_lse) usp_gather_lse(c, g, shard, global, sizeof(double));
        else usp_gather_tokens(c, g, shard, global, nh, c->head_dim, sizeof(double));
    }
    free(all);
    free(shard);
    return st;
}

static usp_status gather_outputs(gpu_run *r, usp_result *out) {
    const usp_config *c = r->c;
    int root = r->rank == 0;
    USP_TRY(gather_output(r, USP_BUF_O_OUT, root ? out->o : NULL, c->heads, 0));
    USP_TRY(gather_output(r, USP_BUF_LSE_OUT, root ? out->lse : NULL, c->heads, 1));
    if (!r->s->backward) return USP_OK;
    USP_TRY(gather_output(r, USP_BUF_DQ_OUT, root ? out->dq : NULL, c->heads, 0));
    USP_TRY(gather_output(r, USP_BUF_DK_OUT, root ? out->dk : NULL, c->kv_heads, 0));
    return gather_output(r, USP_BUF_DV_OUT, root ? out->dv : NULL, c->kv_heads, 0);
}

/* ------------------------------------------------------------ entry */

static usp_status check_run(const usp_schedule *s, const usp_gpu_options *o, const usp_kernel *k) {
    const usp_config *c = &s->cfg;
    if (!o->ctx) return usp_fail(USP_EINVAL, "GPU executor: no context (usp_gpu_open)");
    if (s->world != o->ctx->env.world)
        return usp_fail(USP_EINVAL, "the schedule has world %d = ulysses %d x ring %d, but %d ranks were "
                        "started", s->world, c->ulysses, c->ring, o->ctx->env.world);
    if (c->dtype == USP_F64)
        return usp_fail(USP_EINVAL, "dtype fp64: the GPU executor runs bf16, fp16 or fp32 "
                        "(fp64 runs on --backend ref)");
    if (!(k->dtypes & (1u << c->dtype)))
        return usp_fail(USP_EINVAL, "kernel '%s' does not take dtype %s", k->name ? k->name : "?",
                        usp_dtype_name(c->dtype));
    if (c->mask && usp_kernel_mask_refusal(k))
        return usp_fail(USP_EINVAL, "kernel '%s': %s (the problem has a mask)", k->name ? k->name : "?",
                        usp_kernel_mask_refusal(k));
    if (o->iters < 1 || o->warmup < 0)
        return usp_fail(USP_EINVAL, "GPU executor: iters %d, warmup %d", o->iters, o->warmup);
    return USP_OK;
}

static usp_status execute(gpu_run *r, const usp_inputs *in, const usp_gpu_options *o, usp_result *out,
                          usp_trace *trace) {
    USP_TRY(r->ctx->tr->ops->split(r->ctx->tr, r->c));
    USP_TRY(alloc_buffers(r));
    USP_TRY(upload_row_masks(r));
    USP_TRY(load_inputs(r, in));
    USP_TRY(create_events(r));
    timing_layout t = layout_of(r->s, o->iters);
    double *rec = usp_calloc(t.len, sizeof *rec);
    if (!rec) return USP_EINTERNAL;
    usp_status st = USP_OK;
    for (int it = 0; it < o->warmup + o->iters && st == USP_OK; it++) {
        st = run_once(r);
        if (st == USP_OK && it >= o->warmup) st = record_run(r, &t, it - o->warmup, rec);
    }
    if (st == USP_OK) st = gather_timing(r, &t, rec, out, trace);
    if (st == USP_OK && o->gather_outputs) st = gather_outputs(r, out);
    if (st == USP_OK) st = r->ctx->tr->ops->end_run(r->ctx->tr);
    free(rec);
    return st;
}

usp_status usp_gpu_execute(const usp_schedule *s, const usp_inputs *in, const usp_gpu_options *o,
                           usp_result *out, usp_trace *trace) {
    const usp_kernel *k = o->kernel ? o->kernel : usp_kernel_builtin();
    USP_TRY(check_run(s, o, k));
    usp_gpu_ctx *ctx = o->ctx;
    gpu_run r = {.ctx = ctx, .s = s, .rank = ctx->env.rank, .c = &s->cfg, .k = k};
    r.rs = &s->ranks[r.rank];
    r.ulysses_rank = r.rs->ulysses_rank;
    usp_rank_heads(r.c, r.ulysses_rank, &r.h0, &r.hu);
    usp_rank_kv_heads(r.c, r.ulysses_rank, &r.k0, &r.hkvu);
    USP_CUDA_CHECK(cudaSetDevice(ctx->device));
    usp_status st = execute(&r, in, o, out, trace);
    if (st != USP_OK) {
        if (strncmp(usp_error(), "rank ", 5) != 0) usp_error_prefix("rank %d: ", r.rank);
        /* Peers may be inside NCCL kernels that wait for this rank: tell
         * them, and end the communicators before freeing memory they use. */
        usp_links_fail(&ctx->links, usp_error());
        ctx->tr->ops->abort(ctx->tr);
        ctx->failed = 1;
    } else {
        usp_result_count_schedule(out, s);
    }
    if (st != USP_OK && ctx->tr->ops->keep_memory_on_failure) return st; /* see transport.h */
    destroy_events(&r);
    free_row_masks(&r);
    free_buffers(&r);
    return st;
}
