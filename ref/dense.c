/* ref/dense.c: exact attention for the whole, unsharded problem (fp64).
 *
 * The dense reference is the block kernel applied once, to every query
 * against every key: one block with q_begin = kv_begin = 0, q_len = kv_len
 * = L and the problem's causal mask on the main diagonal. Every executor's
 * gathered output is compared against it. */
#include "usp/attention.h"

#include <stdlib.h>
#include <string.h>

/* The largest head dimension the kernels and the GPU executor support. */
enum { REF_MAX_HEAD_DIM = 256 };

/* Only the problem's dimensions matter here (not the mesh or the layout,
 * which usp_config_validate checks): the reference runs any problem. */
static usp_status check_problem(const usp_config *c) {
    if (!c) return usp_fail(USP_EINVAL, "no configuration");
    if (c->batch < 1) return usp_fail(USP_EINVAL, "batch %d must be >= 1", c->batch);
    if (c->seq < 1) return usp_fail(USP_EINVAL, "seq %d must be >= 1", c->seq);
    if (c->heads < 1) return usp_fail(USP_EINVAL, "heads %d must be >= 1", c->heads);
    if (c->kv_heads < 1) return usp_fail(USP_EINVAL, "kv_heads %d must be >= 1", c->kv_heads);
    if (c->head_dim < 1 || c->head_dim > REF_MAX_HEAD_DIM)
        return usp_fail(USP_EINVAL, "head_dim %d is outside 1..%d", c->head_dim, REF_MAX_HEAD_DIM);
    if (c->heads % c->kv_heads != 0)
        return usp_fail(USP_EINVAL, "heads %d is not divisible by kv_heads %d (GQA needs H %% Hkv == 0)",
                        c->heads, c->kv_heads);
    return USP_OK;
}

static usp_attn_shape whole_shape(const usp_config *c) {
    usp_attn_shape s = {.batch = c->batch, .hq = c->heads, .hkv = c->kv_heads,
                        .d = c->head_dim, .lq = c->seq, .lkv = c->seq, .scale = usp_scale(c)};
    return s;
}

static usp_block whole_block(const usp_config *c) {
    usp_block blk = {.q_begin = 0, .q_len = c->seq, .kv_begin = 0, .kv_len = c->seq,
                     .causal = c->causal ? 1 : 0, .diag = 0};
    return blk;
}

usp_status usp_ref_forward(const usp_config *cfg, const double *q, const double *k,
                           const double *v, double *o, double *lse) {
    USP_TRY(check_problem(cfg));
    if (!q || !k || !v || !o || !lse) return usp_fail(USP_EINVAL, "forward: a tensor is missing");
    usp_attn_shape s = whole_shape(cfg);
    usp_block blk = whole_block(cfg);
    usp_attn_fwd_f64(&s, &blk, q, k, v, o, lse);
    return USP_OK;
}

usp_status usp_ref_backward(const usp_config *cfg, const double *q, const double *k,
                            const double *v, const double *o, const double *lse,
                            const double *dout, double *dq, double *dk, double *dv) {
    USP_TRY(check_problem(cfg));
    if (!q || !k || !v || !o || !lse || !dout || !dq || !dk || !dv)
        return usp_fail(USP_EINVAL, "backward: a tensor is missing");
    usp_attn_shape s = whole_shape(cfg);
    usp_block blk = whole_block(cfg);
    size_t stats = (size_t)cfg->batch * cfg->heads * cfg->seq;           /* (B, H, L) */
    size_t q_elems = stats * cfg->head_dim;                              /* (B, L, H, D) */
    size_t kv_elems = (size_t)cfg->batch * cfg->seq * cfg->kv_heads * cfg->head_dim;
    double *delta = usp_malloc(stats * sizeof *delta);
    if (!delta) return USP_EINTERNAL;
    usp_attn_bwd_prep_f64(&s, o, dout, delta);
    memset(dq, 0, q_elems * sizeof *dq);
    memset(dk, 0, kv_elems * sizeof *dk);
    memset(dv, 0, kv_elems * sizeof *dv);
    usp_attn_bwd_f64(&s, &blk, q, k, v, dout, lse, delta, dq, dk, dv);
    free(delta);
    return USP_OK;
}
