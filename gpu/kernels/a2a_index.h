/* a2a_index.h: the index arithmetic of the GPU pack/unpack around the
 * ulysses all-to-all, for even and uneven head splits (inside usp_gpu).
 *
 * Plain C, compiled twice: by nvcc into pack.cu's kernels (__host__
 * __device__) and by the C compiler into the host test that checks it
 * against core/a2a.c (tests/test_gpu_a2a_index.c), so the layout the GPU
 * packs is checked on every machine, GPU or not.
 *
 * Heads (usp/layout.h): ulysses rank u holds query heads [h0(u), +n(u)) with
 * f = H / U, e = H % U: n(u) = f + (u < e), h0(u) = u f + min(u, e); and the
 * K/V heads its query heads use, [k0(u), +nk(u)), k0(u) = h0(u) / (H / Hkv)
 * up to the K/V head of its last query head. Ranks whose query heads share a
 * K/V head each hold it (replicas). The even split is the case e = 0.
 *
 * SEND of ulysses rank `me` holds U pieces, piece p for rank p, one after the
 * other (RECV: piece p from rank p); element offsets are the running sums of
 * the piece sizes (usp_a2a_send_offset of core/a2a.c):
 *   pattern  piece me -> p                     unpack at me
 *   Q        (B, Ls, n(p), D)   heads of p     (B, Lr, n(me), D)
 *   KV       (B, Ls, nk(p), D)  K/V heads of p (B, Lr, nk(me), D)
 *   O        (B, Ls, n(me), D)  tokens of p    (B, Ls, H, D)
 *   LSE      (B, n(me), Ls)     tokens of p    (B, H, Ls)
 *   DKV      (B, Ls, nk(me), D) tokens of p    (B, Ls, Hkv, D): sum of the replicas
 * with Lr = U Ls. The pieces of the sender's heads (O, LSE, DKV) all have one
 * size at the sender; those of the receiver's heads (Q, KV) differ. */
#ifndef USP_GPU_A2A_INDEX_H
#define USP_GPU_A2A_INDEX_H

#include <stdint.h>

#ifdef __CUDACC__
#define USP_A2A_HD __host__ __device__ inline
#else
#define USP_A2A_HD static inline
#endif

/* Pattern numbers as usp_a2a of usp/schedule.h (checked where both are seen). */
enum { USP_AX_NONE = 0, USP_AX_Q = 1, USP_AX_KV = 2, USP_AX_O = 3, USP_AX_LSE = 4, USP_AX_DKV = 5 };

typedef struct {
    int B, Ls, U, H, Hkv, D;
    int me;   /* the packing (unpacking) rank's ulysses rank */
} usp_a2a_geom;

USP_A2A_HD void usp_ax_heads(const usp_a2a_geom *g, int u, int *h0, int *n) {
    int f = g->H / g->U, e = g->H % g->U;
    *h0 = u * f + (u < e ? u : e);
    *n = f + (u < e);
}

USP_A2A_HD void usp_ax_kv_heads(const usp_a2a_geom *g, int u, int *k0, int *n) {
    int h0, nh, group = g->H / g->Hkv;
    usp_ax_heads(g, u, &h0, &nh);
    *k0 = h0 / group;
    *n = nh < 1 ? 0 : (h0 + nh - 1) / group - *k0 + 1;
}

/* The ulysses rank holding query head h. */
USP_A2A_HD int usp_ax_owner(const usp_a2a_geom *g, int h) {
    int f = g->H / g->U, e = g->H % g->U, edge = e * (f + 1);
    if (h < edge) return h / (f + 1);
    return e + (h - edge) / f;
}

/* Heads of rank u that pattern a moves: K/V heads for KV and DKV. */
USP_A2A_HD void usp_ax_pattern_heads(const usp_a2a_geom *g, int a, int u, int *h0, int *n) {
    if (a == USP_AX_KV || a == USP_AX_DKV) usp_ax_kv_heads(g, u, h0, n);
    else usp_ax_heads(g, u, h0, n);
}

/* Elements of the piece rank u sends rank p. */
USP_A2A_HD int64_t usp_ax_send_elems(const usp_a2a_geom *g, int a, int u, int p) {
    int h0, n;
    usp_ax_pattern_heads(g, a, (a == USP_AX_Q || a == USP_AX_KV) ? p : u, &h0, &n);
    return (int64_t)g->B * g->Ls * n * (a == USP_AX_LSE ? 1 : g->D);
}

/* Where that piece lies in u's SEND (p = U: the whole of SEND). */
USP_A2A_HD int64_t usp_ax_send_offset(const usp_a2a_geom *g, int a, int u, int p) {
    int64_t off = 0;
    for (int q = 0; q < p; q++) off += usp_ax_send_elems(g, a, u, q);
    return off;
}

USP_A2A_HD int64_t usp_ax_recv_elems(const usp_a2a_geom *g, int a, int u, int p) {
    return usp_ax_send_elems(g, a, p, u);
}

USP_A2A_HD int64_t usp_ax_recv_offset(const usp_a2a_geom *g, int a, int u, int p) {
    int64_t off = 0;
    for (int q = 0; q < p; q++) off += usp_ax_recv_elems(g, a, u, q);
    return off;
}

/* Elements of the unpacked tensor at rank `me`. */
USP_A2A_HD int64_t usp_ax_dst_elems(const usp_a2a_geom *g, int a) {
    int h0, n, k0, nk;
    usp_ax_heads(g, g->me, &h0, &n);
    usp_ax_kv_heads(g, g->me, &k0, &nk);
    int64_t Lr = (int64_t)g->U * g->Ls;
    switch (a) {
    case USP_AX_Q: return (int64_t)g->B * Lr * n * g->D;
    case USP_AX_KV: return (int64_t)g->B * Lr * nk * g->D;
    case USP_AX_O: return (int64_t)g->B * g->Ls * g->H * g->D;
    case USP_AX_LSE: return (int64_t)g->B * g->H * g->Ls;
    case USP_AX_DKV: return (int64_t)g->B * g->Ls * g->Hkv * g->D;
    default: return 0;
    }
}

/* The source element (in the packed tensor of `me`) of SEND element idx. */
USP_A2A_HD int64_t usp_ax_pack_source(const usp_a2a_geom *g, int a, int64_t idx) {
    const int64_t Lr = (int64_t)g->U * g->Ls;
    int h0, n;
    usp_ax_pattern_heads(g, a, g->me, &h0, &n);
    if (a == USP_AX_O || a == USP_AX_LSE || a == USP_AX_DKV) {
        /* every piece (B, Ls, n, D) or (B, n, Ls) of me's heads: piece p = tokens [p Ls, +Ls) */
        int64_t piece = (int64_t)g->B * g->Ls * n * (a == USP_AX_LSE ? 1 : g->D);
        int64_t u = idx / piece, r = idx % piece;
        if (a == USP_AX_LSE) { /* (B, n, Ls) from (B, n, Lr) */
            int64_t t = r % g->Ls, bh = r / g->Ls;
            return bh * Lr + u * g->Ls + t;
        }
        int64_t d = r % g->D, rest = r / g->D;
        int64_t hh = rest % n, bt = rest / n;
        int64_t t = bt % g->Ls, b = bt / g->Ls;
        return ((b * Lr + u * g->Ls + t) * n + hh) * g->D + d;
    }
    /* Q, KV: piece p holds p's heads of my tokens: find p */
    int p = 0;
    int64_t off = 0, size = usp_ax_send_elems(g, a, g->me, 0);
    while (p + 1 < g->U && idx >= off + size) {
        off += size;
        p++;
        size = usp_ax_send_elems(g, a, g->me, p);
    }
    int p0, pn;
    usp_ax_pattern_heads(g, a, p, &p0, &pn);
    int nh = a == USP_AX_KV ? g->Hkv : g->H;
    int64_t r = idx - off;
    int64_t d = r % g->D, rest = r / g->D;
    int64_t hh = rest % pn, bt = rest / pn;
    int64_t t = bt % g->Ls, b = bt / g->Ls;
    return ((b * g->Ls + t) * nh + p0 + hh) * g->D + d;
}

/* The RECV element of unpacked element idx (Q, KV, O, LSE: not DKV). */
USP_A2A_HD int64_t usp_ax_unpack_source(const usp_a2a_geom *g, int a, int64_t idx) {
    const int64_t Lr = (int64_t)g->U * g->Ls;
    if (a == USP_AX_Q || a == USP_AX_KV) { /* dst (B, Lr, n, D): tokens of u from piece u */
        int h0, n;
        usp_ax_pattern_heads(g, a, g->me, &h0, &n);
        int64_t d = idx % g->D, rest = idx / g->D;
        int64_t hh = rest % n, bt = rest / n;
        int64_t tt = bt % Lr, b = bt / Lr;
        int64_t u = tt / g->Ls, t = tt % g->Ls;
        int64_t piece = (int64_t)g->B * g->Ls * n * g->D;
        return u * piece + ((b * g->Ls + t) * n + hh) * g->D + d;
    }
    int h0, n, hd;
    int64_t b, t, d = 0;
    if (a == USP_AX_LSE) { /* dst (B, H, Ls) */
        t = idx % g->Ls;
        int64_t rest = idx / g->Ls;
        hd = (int)(rest % g->H);
        b = rest / g->H;
    } else {               /* O: dst (B, Ls, H, D) */
        d = idx % g->D;
        int64_t rest = idx / g->D;
        hd = (int)(rest % g->H);
        rest /= g->H;
        t = rest % g->Ls;
        b = rest / g->Ls;
    }
    int u = usp_ax_owner(g, hd);
    usp_ax_heads(g, u, &h0, &n);
    int64_t off = (int64_t)g->B * g->Ls * h0 * (a == USP_AX_LSE ? 1 : g->D); /* pieces before u hold heads < h0 */
    if (a == USP_AX_LSE) return off + (b * n + (hd - h0)) * g->Ls + t;
    return off + ((b * g->Ls + t) * n + (hd - h0)) * g->D + d;
}

/* DKV: the RECV element of K/V head kh (token t, batch b, dim d) in the
 * piece of rank u, or -1 when u does not hold kh. */
USP_A2A_HD int64_t usp_ax_dkv_source(const usp_a2a_geom *g, int u, int64_t b, int64_t t, int kh, int64_t d) {
    int k0, nk;
    usp_ax_kv_heads(g, u, &k0, &nk);
    if (kh < k0 || kh >= k0 + nk) return -1;
    int64_t off = 0;
    for (int q = 0; q < u; q++) {
        int q0, qn;
        usp_ax_kv_heads(g, q, &q0, &qn);
        off += (int64_t)g->B * g->Ls * qn * g->D;
    }
    return off + ((b * g->Ls + t) * nk + (kh - k0)) * g->D + d;
}

#endif
