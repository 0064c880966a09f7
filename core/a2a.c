/* a2a.c: pack and unpack around the ulysses all-to-all (see usp/a2a.h). */
#include "usp/a2a.h"

#include <string.h>
#include "usp/layout.h"

/* One side of a copy of token rows: a (B, L, H, D) tensor, starting at token
 * t0 and head h0. */
typedef struct { char *base; long L; int H, h0; long t0; } rows_view;

static void copy_rows(const usp_config *c, rows_view dst, rows_view src, long n, int nh,
                      size_t elem) {
    size_t d = (size_t)c->head_dim, bytes = nh * d * elem;
    for (int b = 0; b < c->batch; b++)
        for (long t = 0; t < n; t++) {
            char *to = dst.base + (((b * dst.L + dst.t0 + t) * dst.H) + dst.h0) * d * elem;
            const char *from = src.base + (((b * src.L + src.t0 + t) * src.H) + src.h0) * d * elem;
            memcpy(to, from, bytes);
        }
}

/* Adds instead of copying (dK/dV replicas). */
static void add_rows(const usp_config *c, rows_view dst, rows_view src, long n, int nh,
                     size_t elem) {
    size_t d = (size_t)c->head_dim, count = nh * d;
    for (int b = 0; b < c->batch; b++)
        for (long t = 0; t < n; t++) {
            size_t to = (((b * dst.L + dst.t0 + t) * dst.H) + dst.h0) * d;
            size_t from = (((b * src.L + src.t0 + t) * src.H) + src.h0) * d;
            for (size_t i = 0; i < count; i++) {
                if (elem == 8) ((double *)dst.base)[to + i] += ((const double *)src.base)[from + i];
                else ((float *)dst.base)[to + i] += ((const float *)src.base)[from + i];
            }
        }
}

/* LSE rows: (B, H, L) tensors, tokens contiguous. */
static void copy_lse(const usp_config *c, char *dst, long dL, int dH, int dh0, long dt0,
                     const char *src, long sL, int sH, int sh0, long st0, long n, int nh,
                     size_t elem) {
    for (int b = 0; b < c->batch; b++)
        for (int h = 0; h < nh; h++)
            memcpy(dst + (((long)b * dH + dh0 + h) * dL + dt0) * elem,
                   src + (((long)b * sH + sh0 + h) * sL + st0) * elem, n * elem);
}

/* Heads of ulysses rank u that pattern a moves: query heads for Q, O, LSE;
 * K/V heads for KV and DKV. */
static void pattern_heads(const usp_config *c, usp_a2a a, int u, int *first, int *count) {
    if (a == USP_A2A_KV || a == USP_A2A_DKV) usp_rank_kv_heads(c, u, first, count);
    else usp_rank_heads(c, u, first, count);
}

long usp_a2a_send_elems(const usp_config *c, usp_a2a a, int u, int p) {
    long ls = c->seq / ((long)c->ulysses * c->ring);
    int h0, nh;
    /* sequence -> heads: the heads of the receiver; heads -> sequence: the sender's */
    pattern_heads(c, a, a == USP_A2A_Q || a == USP_A2A_KV ? p : u, &h0, &nh);
    long d = a == USP_A2A_LSE ? 1 : c->head_dim;
    return (long)c->batch * ls * nh * d;
}

long usp_a2a_recv_elems(const usp_config *c, usp_a2a a, int u, int p) {
    return usp_a2a_send_elems(c, a, p, u);
}

long usp_a2a_send_offset(const usp_config *c, usp_a2a a, int u, int p) {
    long off = 0;
    for (int q = 0; q < p; q++) off += usp_a2a_send_elems(c, a, u, q);
    return off;
}

long usp_a2a_recv_offset(const usp_config *c, usp_a2a a, int u, int p) {
    long off = 0;
    for (int q = 0; q < p; q++) off += usp_a2a_recv_elems(c, a, u, q);
    return off;
}

long usp_a2a_piece_elems(const usp_config *c, usp_a2a a) { return usp_a2a_send_elems(c, a, 0, 0); }

long usp_a2a_src_elems_rank(const usp_config *c, usp_a2a a, int u) {
    long lr = c->seq / c->ring, ls = lr / c->ulysses, d = c->head_dim, B = c->batch;
    int h0, hu, k0, hkvu;
    usp_rank_heads(c, u, &h0, &hu);
    usp_rank_kv_heads(c, u, &k0, &hkvu);
    switch (a) {
    case USP_A2A_Q: return B * ls * c->heads * d;
    case USP_A2A_KV: return B * ls * c->kv_heads * d;
    case USP_A2A_O: return B * lr * hu * d;
    case USP_A2A_LSE: return B * lr * hu;
    case USP_A2A_DKV: return B * lr * hkvu * d;
    default: return 0;
    }
}

long usp_a2a_dst_elems_rank(const usp_config *c, usp_a2a a, int u) {
    long lr = c->seq / c->ring, ls = lr / c->ulysses, d = c->head_dim, B = c->batch;
    int h0, hu, k0, hkvu;
    usp_rank_heads(c, u, &h0, &hu);
    usp_rank_kv_heads(c, u, &k0, &hkvu);
    switch (a) {
    case USP_A2A_Q: return B * lr * hu * d;
    case USP_A2A_KV: return B * lr * hkvu * d;
    case USP_A2A_O: return B * ls * c->heads * d;
    case USP_A2A_LSE: return B * ls * c->heads;
    case USP_A2A_DKV: return B * ls * c->kv_heads * d;
    default: return 0;
    }
}

long usp_a2a_src_elems(const usp_config *c, usp_a2a a) { return usp_a2a_src_elems_rank(c, a, 0); }
long usp_a2a_dst_elems(const usp_config *c, usp_a2a a) { return usp_a2a_dst_elems_rank(c, a, 0); }

void usp_a2a_pack_rank(const usp_config *c, int u, usp_a2a a, const void *src, void *send, size_t elem) {
    long lr = c->seq / c->ring, ls = lr / c->ulysses;
    int h0, hu, k0, hkvu;
    usp_rank_heads(c, u, &h0, &hu);
    usp_rank_kv_heads(c, u, &k0, &hkvu);
    for (int p = 0; p < c->ulysses; p++) {
        char *piece = (char *)send + (size_t)usp_a2a_send_offset(c, a, u, p) * elem;
        rows_view s = {(char *)src, 0, 0, 0, 0};
        int p0, pn;
        pattern_heads(c, a, p, &p0, &pn);
        switch (a) {
        case USP_A2A_Q: /* my tokens, heads of p */
            s.L = ls; s.H = c->heads; s.h0 = p0;
            copy_rows(c, (rows_view){piece, ls, pn, 0, 0}, s, ls, pn, elem);
            break;
        case USP_A2A_KV:
            s.L = ls; s.H = c->kv_heads; s.h0 = p0;
            copy_rows(c, (rows_view){piece, ls, pn, 0, 0}, s, ls, pn, elem);
            break;
        case USP_A2A_O: /* tokens of p, my heads */
            s.L = lr; s.H = hu; s.t0 = p * ls;
            copy_rows(c, (rows_view){piece, ls, hu, 0, 0}, s, ls, hu, elem);
            break;
        case USP_A2A_DKV:
            s.L = lr; s.H = hkvu; s.t0 = p * ls;
            copy_rows(c, (rows_view){piece, ls, hkvu, 0, 0}, s, ls, hkvu, elem);
            break;
        case USP_A2A_LSE:
            copy_lse(c, piece, ls, hu, 0, 0, src, lr, hu, 0, p * ls, ls, hu, elem);
            break;
        default: break;
        }
    }
}

void usp_a2a_unpack_rank(const usp_config *c, int u, usp_a2a a, const void *recv, void *dst, size_t elem) {
    long lr = c->seq / c->ring, ls = lr / c->ulysses;
    int h0, hu, k0, hkvu;
    usp_rank_heads(c, u, &h0, &hu);
    usp_rank_kv_heads(c, u, &k0, &hkvu);
    if (a == USP_A2A_DKV) memset(dst, 0, usp_a2a_dst_elems_rank(c, a, u) * elem);
    for (int p = 0; p < c->ulysses; p++) {
        char *piece = (char *)recv + (size_t)usp_a2a_recv_offset(c, a, u, p) * elem;
        rows_view d = {(char *)dst, 0, 0, 0, 0};
        int p0, pn;
        pattern_heads(c, a, p, &p0, &pn);
        switch (a) {
        case USP_A2A_Q: /* p's tokens, my heads */
            d.L = lr; d.H = hu; d.t0 = p * ls;
            copy_rows(c, d, (rows_view){piece, ls, hu, 0, 0}, ls, hu, elem);
            break;
        case USP_A2A_KV:
            d.L = lr; d.H = hkvu; d.t0 = p * ls;
            copy_rows(c, d, (rows_view){piece, ls, hkvu, 0, 0}, ls, hkvu, elem);
            break;
        case USP_A2A_O: /* my tokens, p's heads */
            d.L = ls; d.H = c->heads; d.h0 = p0;
            copy_rows(c, d, (rows_view){piece, ls, pn, 0, 0}, ls, pn, elem);
            break;
        case USP_A2A_DKV: /* replicas of one K/V head arrive from several p: sum */
            d.L = ls; d.H = c->kv_heads; d.h0 = p0;
            add_rows(c, d, (rows_view){piece, ls, pn, 0, 0}, ls, pn, elem);
            break;
        case USP_A2A_LSE:
            copy_lse(c, dst, ls, c->heads, p0, 0, piece, ls, pn, 0, 0, ls, pn, elem);
            break;
        default: break;
        }
    }
}

void usp_a2a_pack(const usp_config *c, usp_a2a a, const void *src, void *send, size_t elem) {
    usp_a2a_pack_rank(c, 0, a, src, send, elem);
}

void usp_a2a_unpack(const usp_config *c, usp_a2a a, const void *recv, void *dst, size_t elem) {
    usp_a2a_unpack_rank(c, 0, a, recv, dst, elem);
}
