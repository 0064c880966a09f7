/* ref/dense.c: exact attention for the whole, unsharded problem (fp64).
 *
 * The dense reference is the block kernel applied once, to every query
 * against every key: one block with q_begin = kv_begin = 0, q_len = kv_len
 * = L and the problem's causal mask on the main diagonal. Every executor's
 * gathered output is compared against it.
 *
 * With a mask (cfg->mask), layer l of the mask is that block with per-row
 * intervals (the global key intervals of layer l); the forward merges the
 * layers' (O, LSE) with the block merge, the backward adds each layer's
 * gradients (given the final LSE, the layers' gradients are independent). */
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

/* The per-row intervals of one mask layer over the whole sequence, as the
 * kernels take them (usp/rowmask.h: [batch][L]): lo, hi hold B*L each. */
static usp_row_mask layer_rows(const usp_config *c, int layer, int32_t *lo, int32_t *hi) {
    size_t L = (size_t)c->seq;
    for (int b = 0; b < c->batch; b++) {
        const int32_t *l, *h;
        usp_mask_layer_rows(c->mask, usp_mask_lists(c->mask) == 1 ? 0 : b, layer, &l, &h);
        memcpy(lo + b * L, l, L * sizeof *lo);
        memcpy(hi + b * L, h, L * sizeof *hi);
    }
    usp_row_mask rm = {lo, hi};
    return rm;
}

static usp_status check_mask(const usp_config *c) {
    if (!c->mask) return USP_OK;
    if (usp_mask_seq(c->mask) != c->seq)
        return usp_fail(USP_EINVAL, "the mask covers %ld tokens but seq is %d", usp_mask_seq(c->mask), c->seq);
    if (usp_mask_lists(c->mask) != 1 && usp_mask_lists(c->mask) != c->batch)
        return usp_fail(USP_EINVAL, "the mask has %d per-element lists but batch is %d",
                        usp_mask_lists(c->mask), c->batch);
    return USP_OK;
}

usp_status usp_ref_forward(const usp_config *cfg, const double *q, const double *k,
                           const double *v, double *o, double *lse) {
    USP_TRY(check_problem(cfg));
    USP_TRY(check_mask(cfg));
    if (!q || !k || !v || !o || !lse) return usp_fail(USP_EINVAL, "forward: a tensor is missing");
    usp_attn_shape s = whole_shape(cfg);
    usp_block blk = whole_block(cfg);
    if (!cfg->mask) {
        usp_attn_fwd_f64(&s, &blk, q, k, v, o, lse);
        return USP_OK;
    }
    blk.causal = 0;
    int layers = usp_mask_layers(cfg->mask);
    size_t stats = (size_t)cfg->batch * cfg->heads * cfg->seq, rows = (size_t)cfg->batch * cfg->seq;
    int32_t *lo = usp_malloc(2 * rows * sizeof *lo);
    double *o_l = layers > 1 ? usp_malloc(stats * cfg->head_dim * sizeof *o_l) : NULL;
    double *lse_l = layers > 1 ? usp_malloc(stats * sizeof *lse_l) : NULL;
    if (!lo || (layers > 1 && (!o_l || !lse_l))) { free(lo); free(o_l); free(lse_l); return USP_EINTERNAL; }
    for (int l = 0; l < layers; l++) {
        usp_row_mask rm = layer_rows(cfg, l, lo, lo + rows);
        usp_attn_fwd_masked_f64(&s, &blk, &rm, q, k, v, l ? o_l : o, l ? lse_l : lse);
        if (l) usp_attn_merge_f64(&s, 0, cfg->seq, o_l, lse_l, o, lse);
    }
    free(lo);
    free(o_l);
    free(lse_l);
    return USP_OK;
}

usp_status usp_ref_backward(const usp_config *cfg, const double *q, const double *k,
                            const double *v, const double *o, const double *lse,
                            const double *dout, double *dq, double *dk, double *dv) {
    USP_TRY(check_problem(cfg));
    USP_TRY(check_mask(cfg));
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
    if (!cfg->mask) {
        usp_attn_bwd_f64(&s, &blk, q, k, v, dout, lse, delta, dq, dk, dv);
    } else {
        blk.causal = 0;
        size_t rows = (size_t)cfg->batch * cfg->seq;
        int32_t *lo = usp_malloc(2 * rows * sizeof *lo);
        if (!lo) { free(delta); return USP_EINTERNAL; }
        for (int l = 0; l < usp_mask_layers(cfg->mask); l++) {
            usp_row_mask rm = layer_rows(cfg, l, lo, lo + rows);
            usp_attn_bwd_masked_f64(&s, &blk, &rm, q, k, v, dout, lse, delta, dq, dk, dv);
        }
        free(lo);
    }
    free(delta);
    return USP_OK;
}
