/* usp/attention.h: exact attention on the CPU (ref/).
 *
 * Block kernels: attention of some query rows against some rows of one K/V
 * block, with the mask of a usp_block. They are what the in-process executor
 * and the simulator run at every ring step, and, applied to the whole
 * problem at once, they are the dense reference. Memory is O(rows x tile):
 * no L x L matrix is ever formed, and products go through cblas.
 *
 * Layouts (row-major): q, o, dq, do: (B, lq, hq, D); k, v, dk, dv:
 * (B, lkv, hkv, D); lse, delta: (B, hq, lq). Query head h uses K/V head
 * h / (hq / hkv); with `group` set (one ulysses rank's uneven share of the
 * heads, usp/layout.h), local query head h is global head head0 + h and uses
 * global K/V head (head0 + h) / group, local head that - head0 / group. LSE is natural-log; a query row that sees no key gets
 * LSE = -inf and O = 0. */
#ifndef USP_ATTENTION_H
#define USP_ATTENTION_H

#include "usp/config.h"
#include "usp/rowmask.h"
#include "usp/schedule.h"

typedef struct {
    int batch, hq, hkv, d;
    long lq, lkv;      /* rows in the q-like and in the k-like buffers */
    double scale;      /* softmax scale */
    int head0, group;  /* group 0: hq % hkv == 0, head h uses h / (hq/hkv); else global
                        * query head of local head 0 and global H/Hkv (see above) */
} usp_attn_shape;

/* Forward: rows blk->q_begin .. +q_len of o and lse are overwritten with the
 * attention of those queries over keys blk->kv_begin .. +kv_len; other rows
 * are not touched. */
void usp_attn_fwd_f64(const usp_attn_shape *s, const usp_block *blk,
                      const double *q, const double *k, const double *v,
                      double *o, double *lse);
void usp_attn_fwd_f32(const usp_attn_shape *s, const usp_block *blk,
                      const float *q, const float *k, const float *v,
                      float *o, float *lse);

/* The same with a per-row key interval mask (usp/rowmask.h): mask->lo and
 * mask->hi are [batch][blk->q_len] int32, local key coordinates; they
 * replace the block's causal/diag. mask NULL (or NULL arrays): the block's
 * own mask, exactly as usp_attn_fwd / usp_attn_bwd. */
void usp_attn_fwd_masked_f64(const usp_attn_shape *s, const usp_block *blk, const usp_row_mask *mask,
                             const double *q, const double *k, const double *v, double *o,
                             double *lse);
void usp_attn_fwd_masked_f32(const usp_attn_shape *s, const usp_block *blk, const usp_row_mask *mask,
                             const float *q, const float *k, const float *v, float *o, float *lse);
void usp_attn_bwd_masked_f64(const usp_attn_shape *s, const usp_block *blk, const usp_row_mask *mask,
                             const double *q, const double *k, const double *v, const double *dout,
                             const double *lse, const double *delta, double *dq, double *dk,
                             double *dv);
void usp_attn_bwd_masked_f32(const usp_attn_shape *s, const usp_block *blk, const usp_row_mask *mask,
                             const float *q, const float *k, const float *v, const float *dout,
                             const float *lse, const float *delta, float *dq, float *dk, float *dv);

/* Merge: for rows [row_begin, row_begin+rows), (o, lse) becomes the attention
 * over the union of the keys of (o, lse) and of (o_blk, lse_blk). Overflow-safe:
 * lse = max + log1p(exp(-|lse - lse_blk|)); -inf on both sides stays -inf, O = 0. */
void usp_attn_merge_f64(const usp_attn_shape *s, long row_begin, long rows,
                        const double *o_blk, const double *lse_blk, double *o, double *lse);
void usp_attn_merge_f32(const usp_attn_shape *s, long row_begin, long rows,
                        const float *o_blk, const float *lse_blk, float *o, float *lse);

/* delta[b,h,i] = sum_d o[b,i,h,d] * do[b,i,h,d] over all lq rows. */
void usp_attn_bwd_prep_f64(const usp_attn_shape *s, const double *o, const double *dout, double *delta);
void usp_attn_bwd_prep_f32(const usp_attn_shape *s, const float *o, const float *dout, float *delta);

/* Backward of one block: adds this block's contribution to dq rows
 * blk->q_begin.. and to dk, dv rows blk->kv_begin.. . lse is the final
 * (whole-row) LSE of the forward, delta from usp_attn_bwd_prep. */
void usp_attn_bwd_f64(const usp_attn_shape *s, const usp_block *blk,
                      const double *q, const double *k, const double *v,
                      const double *dout, const double *lse, const double *delta,
                      double *dq, double *dk, double *dv);
void usp_attn_bwd_f32(const usp_attn_shape *s, const usp_block *blk,
                      const float *q, const float *k, const float *v,
                      const float *dout, const float *lse, const float *delta,
                      float *dq, float *dk, float *dv);

/* Dense reference: the whole unsharded problem of cfg, in fp64.
 * q (B,L,H,D), k, v (B,L,Hkv,D) -> o (B,L,H,D), lse (B,H,L). */
usp_status usp_ref_forward(const usp_config *cfg, const double *q, const double *k,
                           const double *v, double *o, double *lse);
/* Given o, lse from usp_ref_forward and dout: dq (B,L,H,D), dk, dv (B,L,Hkv,D). */
usp_status usp_ref_backward(const usp_config *cfg, const double *q, const double *k,
                            const double *v, const double *o, const double *lse,
                            const double *dout, double *dq, double *dk, double *dv);

#endif
