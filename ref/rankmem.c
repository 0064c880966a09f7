/* rankmem.c: one rank's host buffers and the steps applied to them
 * (see usp/rankmem.h). Shared by the in-process executor and the simulator. */
#include "usp/rankmem.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "usp/a2a.h"
#include "usp/attention.h"
#include "usp/dispatch.h"
#include "usp/inputs.h"
#include "usp/layout.h"

/* The kernels' per-row intervals (usp/rowmask.h) of the attention steps
 * with a mask layer, made once per (K/V block, layer): a block's forward and
 * backward steps share its box, hence its intervals. */
static usp_status make_rows(const usp_schedule *s, usp_rank_mem *m) {
    const usp_config *c = &s->cfg;
    const usp_rank_schedule *rs = &s->ranks[m->rank];
    if (!c->mask) return USP_OK;
    int layers = usp_mask_layers(c->mask);
    long used = 0, cells = (long)c->ring * layers;
    m->rows_at = usp_malloc((size_t)cells * sizeof *m->rows_at);
    if (!m->rows_at) return USP_EINTERNAL;
    for (long i = 0; i < cells; i++) m->rows_at[i] = -1;
    for (int i = 0; i < rs->nsteps; i++) {
        const usp_step *st = usp_rank_step(rs, i);
        if (st->mask_layer < 0) continue;
        long *at = &m->rows_at[(long)usp_step_src_block(c, m->rank, st) * layers + st->mask_layer];
        if (*at < 0) { *at = used; used += 2L * c->batch * st->blk.q_len; }
    }
    if (!used) return USP_OK;
    m->rows = usp_malloc((size_t)used * sizeof *m->rows);
    if (!m->rows) return USP_EINTERNAL;
    for (long i = 0; i < cells; i++) m->rows_at[i] = -1;
    used = 0;
    for (int i = 0; i < rs->nsteps; i++) {
        const usp_step *st = usp_rank_step(rs, i);
        if (st->mask_layer < 0) continue;
        long *at = &m->rows_at[(long)usp_step_src_block(c, m->rank, st) * layers + st->mask_layer];
        if (*at >= 0) continue;
        *at = used;
        long n = (long)c->batch * st->blk.q_len;
        USP_TRY(usp_step_row_mask(c, m->rank, st, m->rows + used, m->rows + used + n));
        used += 2 * n;
    }
    return USP_OK;
}

/* The row mask of an attention step with a mask layer (0 without). */
static int step_rows(const usp_rank_mem *m, const usp_step *st, usp_row_mask *rm) {
    if (st->mask_layer < 0) return 0;
    const usp_config *c = &m->sched->cfg;
    long at = m->rows_at[(long)usp_step_src_block(c, m->rank, st) * usp_mask_layers(c->mask) + st->mask_layer];
    rm->lo = m->rows + at;
    rm->hi = m->rows + at + (long)c->batch * st->blk.q_len;
    return 1;
}

usp_status usp_rank_mem_alloc(const usp_schedule *s, int rank, usp_rank_mem *m) {
    const usp_rank_schedule *rs = &s->ranks[rank];
    memset(m, 0, sizeof *m);
    m->sched = s;
    m->rank = rank;
    /* fp16 and bf16 are emulated: fp32 buffers holding inputs already rounded
     * to the dtype, fp32 arithmetic, the wire payloads rounded (see PACK). */
    size_t elem = s->cfg.dtype == USP_F64 ? 8 : 4;
    for (int b = 0; b < USP_BUF_COUNT; b++) {
        const usp_buf_info *bi = &rs->bufs[b];
        m->elem[b] = elem;
        if (bi->alias != USP_BUF_NONE || bi->elems == 0) continue;
        m->buf[b] = usp_calloc((size_t)bi->elems, elem);
        if (!m->buf[b]) { usp_rank_mem_free(m); return USP_EINTERNAL; }
    }
    for (int b = 0; b < USP_BUF_COUNT; b++)
        if (rs->bufs[b].alias != USP_BUF_NONE) m->buf[b] = m->buf[usp_buf_owner(rs, b)];
    usp_status st = make_rows(s, m);
    if (st != USP_OK) usp_rank_mem_free(m);
    return st;
}

void usp_rank_mem_free(usp_rank_mem *m) {
    if (!m->sched) return;
    const usp_rank_schedule *rs = &m->sched->ranks[m->rank];
    for (int b = 0; b < USP_BUF_COUNT; b++)
        if (rs->bufs[b].alias == USP_BUF_NONE) free(m->buf[b]);
    free(m->rows);
    free(m->rows_at);
    memset(m, 0, sizeof *m);
}

/* fp64 <-> the buffer's element type. */
static void from_f64(void *dst, const double *src, long n, size_t elem) {
    if (elem == 8) { memcpy(dst, src, (size_t)n * 8); return; }
    for (long i = 0; i < n; i++) ((float *)dst)[i] = (float)src[i];
}

static void to_f64(double *dst, const void *src, long n, size_t elem) {
    if (elem == 8) { memcpy(dst, src, (size_t)n * 8); return; }
    for (long i = 0; i < n; i++) dst[i] = ((const float *)src)[i];
}

static usp_status load_shard(usp_rank_mem *m, usp_buf b, const double *global, int nh) {
    const usp_config *c = &m->sched->cfg;
    long n = m->sched->ranks[m->rank].bufs[b].elems;
    double *shard = usp_malloc((size_t)n * sizeof *shard);
    if (!shard) return USP_EINTERNAL;
    usp_scatter_tokens(c, m->rank, global, shard, nh, c->head_dim, sizeof(double));
    from_f64(m->buf[b], shard, n, m->elem[b]);
    free(shard);
    return USP_OK;
}

usp_status usp_rank_mem_load(usp_rank_mem *m, const usp_inputs *in) {
    const usp_config *c = &m->sched->cfg;
    USP_TRY(load_shard(m, USP_BUF_Q_IN, in->q, c->heads));
    USP_TRY(load_shard(m, USP_BUF_K_IN, in->k, c->kv_heads));
    USP_TRY(load_shard(m, USP_BUF_V_IN, in->v, c->kv_heads));
    if (m->sched->backward) USP_TRY(load_shard(m, USP_BUF_DO_IN, in->dout, c->heads));
    return USP_OK;
}

static usp_status store_shard(const usp_rank_mem *m, usp_buf b, double *global, int nh, int is_lse) {
    const usp_config *c = &m->sched->cfg;
    const usp_rank_schedule *rs = &m->sched->ranks[m->rank];
    long n = rs->bufs[usp_buf_owner(rs, b)].elems;
    double *shard = usp_malloc((size_t)n * sizeof *shard);
    if (!shard) return USP_EINTERNAL;
    to_f64(shard, m->buf[b], n, m->elem[b]);
    if (is_lse) usp_gather_lse(c, m->rank, shard, global, sizeof(double));
    else usp_gather_tokens(c, m->rank, shard, global, nh, c->head_dim, sizeof(double));
    free(shard);
    return USP_OK;
}

usp_status usp_rank_mem_store(const usp_rank_mem *m, usp_result *r) {
    const usp_config *c = &m->sched->cfg;
    if (r->o) USP_TRY(store_shard(m, USP_BUF_O_OUT, r->o, c->heads, 0));
    if (r->lse) USP_TRY(store_shard(m, USP_BUF_LSE_OUT, r->lse, c->heads, 1));
    if (!m->sched->backward) return USP_OK;
    if (r->dq) USP_TRY(store_shard(m, USP_BUF_DQ_OUT, r->dq, c->heads, 0));
    if (r->dk) USP_TRY(store_shard(m, USP_BUF_DK_OUT, r->dk, c->kv_heads, 0));
    if (r->dv) USP_TRY(store_shard(m, USP_BUF_DV_OUT, r->dv, c->kv_heads, 0));
    return USP_OK;
}

/* ------------------------------------------------------------- compute */

/* Shape of the head-sharded tensors the kernels see: (B, Lr, Hu, D) queries,
 * (B, Lr, Hkvu, D) per K/V block. */
static int ulysses_rank_of(const usp_rank_mem *m) { return m->sched->ranks[m->rank].ulysses_rank; }

/* The rank's heads: H/U and Hkv/U (or 1) when the split is even, its own
 * share of an uneven one (usp/layout.h), with their global numbering. */
static usp_attn_shape local_shape(const usp_rank_mem *m) {
    const usp_config *c = &m->sched->cfg;
    int h0, hu, k0, hkvu;
    usp_rank_heads(c, ulysses_rank_of(m), &h0, &hu);
    usp_rank_kv_heads(c, ulysses_rank_of(m), &k0, &hkvu);
    usp_attn_shape s = {c->batch, hu, hkvu, c->head_dim, c->seq / c->ring, c->seq / c->ring, usp_scale(c),
                        0, 0};
    if (!usp_heads_even(c)) {
        s.head0 = h0;
        s.group = c->heads / c->kv_heads;
    }
    return s;
}

static long block_elems(const usp_rank_mem *m) {
    const usp_config *c = &m->sched->cfg;
    int k0, hkvu;
    usp_rank_kv_heads(c, ulysses_rank_of(m), &k0, &hkvu);
    return (long)c->batch * (c->seq / c->ring) * hkvu * c->head_dim;
}

static char *block_ptr(const usp_rank_mem *m, usp_buf b, int block) {
    return (char *)m->buf[b] + (size_t)block * block_elems(m) * m->elem[b];
}

static void fill(void *p, long n, size_t elem, double value) {
    for (long i = 0; i < n; i++) {
        if (elem == 8) ((double *)p)[i] = value; else ((float *)p)[i] = (float)value;
    }
}

static void init_buffer(usp_rank_mem *m, usp_buf b) {
    const usp_rank_schedule *rs = &m->sched->ranks[m->rank];
    const usp_buf_info *bi = &rs->bufs[usp_buf_owner(rs, b)];
    fill(m->buf[b], bi->elems, m->elem[b], bi->role == USP_ROLE_STATS ? -INFINITY : 0.0);
}

static void attn_fwd(usp_rank_mem *m, const usp_step *st) {
    usp_attn_shape sh = local_shape(m);
    void *k = block_ptr(m, st->src[0], st->kv_block), *v = block_ptr(m, st->src[1], st->kv_block);
    usp_row_mask rows, *rm = step_rows(m, st, &rows) ? &rows : NULL;
    if (m->elem[USP_BUF_Q] == 8)
        usp_attn_fwd_masked_f64(&sh, &st->blk, rm, m->buf[USP_BUF_Q], k, v, m->buf[USP_BUF_O_BLK],
                              m->buf[USP_BUF_LSE_BLK]);
    else
        usp_attn_fwd_masked_f32(&sh, &st->blk, rm, m->buf[USP_BUF_Q], k, v, m->buf[USP_BUF_O_BLK],
                              m->buf[USP_BUF_LSE_BLK]);
}

static void attn_bwd(usp_rank_mem *m, const usp_step *st) {
    usp_attn_shape sh = local_shape(m);
    void *k = block_ptr(m, st->src[0], st->kv_block), *v = block_ptr(m, st->src[1], st->kv_block);
    void *dk = block_ptr(m, st->dst[0], st->kv_block), *dv = block_ptr(m, st->dst[1], st->kv_block);
    void **b = m->buf;
    usp_row_mask rows, *rm = step_rows(m, st, &rows) ? &rows : NULL;
    if (m->elem[USP_BUF_Q] == 8)
        usp_attn_bwd_masked_f64(&sh, &st->blk, rm, b[USP_BUF_Q], k, v, b[USP_BUF_DO], b[USP_BUF_LSE],
                              b[USP_BUF_DELTA], b[USP_BUF_DQ], dk, dv);
    else
        usp_attn_bwd_masked_f32(&sh, &st->blk, rm, b[USP_BUF_Q], k, v, b[USP_BUF_DO], b[USP_BUF_LSE],
                              b[USP_BUF_DELTA], b[USP_BUF_DQ], dk, dv);
}

static void merge(usp_rank_mem *m, const usp_step *st) {
    usp_attn_shape sh = local_shape(m);
    void **b = m->buf;
    if (m->elem[USP_BUF_O] == 8)
        usp_attn_merge_f64(&sh, st->blk.q_begin, st->blk.q_len, b[USP_BUF_O_BLK], b[USP_BUF_LSE_BLK],
                           b[USP_BUF_O], b[USP_BUF_LSE]);
    else
        usp_attn_merge_f32(&sh, st->blk.q_begin, st->blk.q_len, b[USP_BUF_O_BLK], b[USP_BUF_LSE_BLK],
                           b[USP_BUF_O], b[USP_BUF_LSE]);
}

static void bwd_prep(usp_rank_mem *m) {
    usp_attn_shape sh = local_shape(m);
    void **b = m->buf;
    if (m->elem[USP_BUF_O] == 8) usp_attn_bwd_prep_f64(&sh, b[USP_BUF_O], b[USP_BUF_DO], b[USP_BUF_DELTA]);
    else usp_attn_bwd_prep_f32(&sh, b[USP_BUF_O], b[USP_BUF_DO], b[USP_BUF_DELTA]);
}

static void add_into(void *dst, const void *src, size_t bytes, size_t elem);
static long elems_of(const usp_rank_mem *m, usp_buf b);

/* dst[i] += src[i], whole buffers. */
static void accum(usp_rank_mem *m, const usp_step *st) {
    for (int i = 0; i < 2 && st->dst[i] != USP_BUF_NONE; i++) {
        usp_buf d = st->dst[i];
        add_into(m->buf[d], m->buf[st->src[i]], (size_t)elems_of(m, d) * m->elem[d], m->elem[d]);
    }
}

void usp_rank_compute(usp_rank_mem *m, const usp_step *st) {
    const usp_config *c = &m->sched->cfg;
    switch (st->kind) {
    case USP_STEP_PACK:
        usp_a2a_pack_rank(c, ulysses_rank_of(m), st->a2a, m->buf[st->src[0]], m->buf[USP_BUF_SEND],
                          m->elem[USP_BUF_SEND]);
        if (st->a2a == USP_A2A_O || st->a2a == USP_A2A_DKV) /* a 16-bit wire: what the GPU sends */
            usp_round_to_dtype_f32(usp_wire_dtype(c), m->buf[USP_BUF_SEND],
                                   usp_a2a_send_offset(c, st->a2a, ulysses_rank_of(m), c->ulysses));
        break;
    case USP_STEP_UNPACK:
        usp_a2a_unpack_rank(c, ulysses_rank_of(m), st->a2a, m->buf[USP_BUF_RECV], m->buf[st->dst[0]],
                            m->elem[USP_BUF_RECV]);
        break;
    case USP_STEP_INIT:
        init_buffer(m, st->dst[0]);
        if (st->dst[1] != USP_BUF_NONE) init_buffer(m, st->dst[1]);
        break;
    case USP_STEP_ATTN_FWD: attn_fwd(m, st); break;
    case USP_STEP_MERGE: merge(m, st); break;
    case USP_STEP_BWD_PREP: bwd_prep(m); break;
    case USP_STEP_ATTN_BWD: attn_bwd(m, st); break;
    case USP_STEP_ACCUM: accum(m, st); break;
    default: break; /* communication steps go through the msg functions */
    }
}

/* ------------------------------------------------------------- messages */

int usp_rank_msg_count(const usp_rank_mem *m, const usp_step *st) {
    if (st->kind == USP_STEP_SENDRECV) return 1;
    return usp_group_size(&m->sched->cfg, st->group);
}

static long elems_of(const usp_rank_mem *m, usp_buf b) {
    const usp_rank_schedule *rs = &m->sched->ranks[m->rank];
    return rs->bufs[usp_buf_owner(rs, b)].elems;
}

size_t usp_rank_msg_bytes(const usp_rank_mem *m, const usp_step *st) { return usp_rank_msg_bytes_to(m, st, 0); }

/* What peer index j sent this rank (all-to-all pieces differ by peer when
 * the head split is uneven; every other message is the same both ways). */
static size_t msg_bytes_from(const usp_rank_mem *m, const usp_step *st, int j) {
    if (st->kind != USP_STEP_ALL_TO_ALL) return usp_rank_msg_bytes_to(m, st, j);
    return (size_t)usp_a2a_recv_elems(&m->sched->cfg, st->a2a, ulysses_rank_of(m), j) * m->elem[USP_BUF_RECV];
}

size_t usp_rank_msg_bytes_to(const usp_rank_mem *m, const usp_step *st, int i) {
    const usp_config *c = &m->sched->cfg;
    size_t elem = m->elem[USP_BUF_SEND];
    switch (st->kind) {
    case USP_STEP_ALL_TO_ALL: return (size_t)usp_a2a_send_elems(c, st->a2a, ulysses_rank_of(m), i) * elem;
    case USP_STEP_SENDRECV: return (size_t)(elems_of(m, st->src[0]) + elems_of(m, st->src[1])) * elem;
    case USP_STEP_ALLGATHER:
    case USP_STEP_REDUCE_SCATTER: return (size_t)2 * block_elems(m) * elem;
    default: return 0;
    }
}

/* A message of two parts: a and b, each `bytes` long. */
static void put_pair(void *msg, const void *a, const void *b, size_t bytes) {
    memcpy(msg, a, bytes);
    memcpy((char *)msg + bytes, b, bytes);
}

void usp_rank_msg_pack(const usp_rank_mem *m, const usp_step *st, int i, void *msg) {
    size_t bytes = usp_rank_msg_bytes_to(m, st, i), half = bytes / 2;
    switch (st->kind) {
    case USP_STEP_ALL_TO_ALL:
        memcpy(msg, (char *)m->buf[USP_BUF_SEND] +
                        (size_t)usp_a2a_send_offset(&m->sched->cfg, st->a2a, ulysses_rank_of(m), i) * m->elem[USP_BUF_SEND],
               bytes);
        break;
    case USP_STEP_SENDRECV: {
        size_t a = (size_t)elems_of(m, st->src[0]) * m->elem[st->src[0]];
        memcpy(msg, m->buf[st->src[0]], a);
        memcpy((char *)msg + a, m->buf[st->src[1]], bytes - a);
        break;
    }
    case USP_STEP_ALLGATHER:
        put_pair(msg, m->buf[st->src[0]], m->buf[st->src[1]], half);
        break;
    case USP_STEP_REDUCE_SCATTER:
        put_pair(msg, block_ptr(m, st->src[0], i), block_ptr(m, st->src[1], i), half);
        break;
    default: break;
    }
}

static void add_into(void *dst, const void *src, size_t bytes, size_t elem) {
    if (elem == 8)
        for (size_t i = 0; i < bytes / 8; i++) ((double *)dst)[i] += ((const double *)src)[i];
    else
        for (size_t i = 0; i < bytes / 4; i++) ((float *)dst)[i] += ((const float *)src)[i];
}

void usp_rank_msg_unpack(usp_rank_mem *m, const usp_step *st, int j, const void *msg) {
    size_t bytes = msg_bytes_from(m, st, j), half = bytes / 2;
    const char *p = msg;
    switch (st->kind) {
    case USP_STEP_ALL_TO_ALL:
        memcpy((char *)m->buf[USP_BUF_RECV] +
                   (size_t)usp_a2a_recv_offset(&m->sched->cfg, st->a2a, ulysses_rank_of(m), j) * m->elem[USP_BUF_RECV],
               msg, bytes);
        break;
    case USP_STEP_SENDRECV: {
        size_t a = (size_t)elems_of(m, st->dst[0]) * m->elem[st->dst[0]];
        memcpy(m->buf[st->dst[0]], p, a);
        memcpy(m->buf[st->dst[1]], p + a, bytes - a);
        break;
    }
    case USP_STEP_ALLGATHER:
        memcpy(block_ptr(m, st->dst[0], j), p, half);
        memcpy(block_ptr(m, st->dst[1], j), p + half, half);
        break;
    case USP_STEP_REDUCE_SCATTER:
        if (j == 0) {
            memcpy(m->buf[st->dst[0]], p, half);
            memcpy(m->buf[st->dst[1]], p + half, half);
        } else {
            add_into(m->buf[st->dst[0]], p, half, m->elem[st->dst[0]]);
            add_into(m->buf[st->dst[1]], p + half, half, m->elem[st->dst[1]]);
        }
        break;
    default: break;
    }
}
