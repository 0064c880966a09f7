/* attn_bwd_wg256.cu: attention backward at head dim 256 on Hopper's
 * warpgroup MMA (wgmma, sm_90a).
 *
 * At D = 256 the dK and dV of 64 keys are 2 x 64 x 256 fp32 = 128 registers a
 * thread for one warpgroup, so attn_bwd_wg.cu's layout (each warpgroup owns
 * 64 keys and all of their dK/dV columns) does not fit. Here one CTA of 2
 * warpgroups owns BN = 64 keys of one K/V head and the warpgroups split the
 * head dim: warpgroup g accumulates columns 128 g .. 128 g + 127 of dK, dV and
 * of each query tile's dQ. For each query tile (BM = 64 rows):
 *
 *   S^T  = K Q^T    (64 keys x 64 queries, over D)   warpgroup 0, SS
 *   dP^T = V dO^T                                     warpgroup 1, SS
 *   both at once; then each warpgroup hands half of its rows (fp32, through
 *   shared memory) to the other, so that warps 0-1 of warpgroup 0 hold S^T and
 *   dP^T of keys 0-31 and warps 2-3 of warpgroup 1 those of keys 32-63:
 *   (USP_GPU_BWD=s4; by default warp w of both warpgroups share the 16 keys,
 *   warpgroup 0 keeping key row g, warpgroup 1 row g + 8: see S8 below)
 *   P^T = exp(scale S^T - LSE), dS^T = P^T (dP^T - DELTA) in fp32 there,
 *   stored in 16 bits to shared memory (rows = keys, columns = queries);
 *   dV  += P^T dO    (64 keys x 128 columns a warpgroup)  SS, dO MN-major
 *   dK  += dS^T Q                                         SS, Q MN-major
 *   dQ   = dS K      (64 queries x 128 columns)           SS, dS^T and K MN-major,
 *                    issued first; added by TMA reduce-adds (the default, DQ_TMA
 *                    and DQ_SPLIT below) or (USP_GPU_BWD=s8, s4) with fp32
 *                    atomics while dV, dK run.
 *
 * Shared memory (bytes): K, V 2 x 32 K; Q, dO 2 stages x 2 x 32 K; P^T, dS^T
 * 2 x 8 K; the fp32 hand-over 16 K; LSE and DELTA 1 K: 225 KB + 1 KB of
 * alignment, one CTA an SM. Registers: dK, dV, dQ 3 x 64 a thread.
 * Masks as in attn_bwd_wg.cu (usp/rowmask.h: the block's causal/diag or the
 * per-row intervals). Shared memory is at the 227 KB limit, so on masked
 * tiles the intervals are read from global memory (L1) rather than staged.
 *
 * DQ_TMA (USP_GPU_BWD=s8r): dQ without atomics from the warps. Once a tile's
 * dV and dK products have completed, warpgroup g no longer reads its half
 * (atoms 2g, 2g + 1) of the tile's Q and dO stage: it writes its 64 x 128 fp32
 * dQ (times scale) there, as four TMA boxes of 32 columns x 64 rows (128-byte
 * swizzle; Q atoms 2g, 2g + 1, then dO atoms 2g, 2g + 1: 8 KB each), and one
 * thread adds them to dQ with cp.reduce.async.bulk.tensor (fp32 adds done in
 * L2 by the copy engine, 4 operations a warpgroup a tile instead of 8K 8-byte
 * atomics; rows past the block are left alone by the map). The next load into
 * that stage (tile it + 2) must wait for those reads, so it is issued after
 * the CTA barrier in the middle of tile it + 1 (after the P^T, dS^T stores),
 * behind each issuing thread's bulk_wait_read, instead of right after the S^T
 * issue: the load then runs under the dQ, dV and dK products (3/4 of a tile's
 * products). No extra shared memory.
 * DQ_SPLIT (USP_GPU_BWD=s8r2: v10's default): the same, with dV and dK
 * in two commit groups; once dV has completed, the warpgroup's dO atoms take
 * dQ's columns 64-127 (two reduce-adds) while dK still runs, and its Q atoms
 * the rest after.
 * PT (the default; USP_GPU_BWD=s8p forces it): DQ_SPLIT with the tile's LSE
 * turned into LSE log2 e (+inf for rows past the block or without keys) once a row,
 * by the thread whose cp.async staged it, and the mask a template argument of the
 * P^T code (w2_scores_row_pt): unmasked tiles run 16 fma + exp2 a thread with no test
 * per element, as the D = 64 and D = 128 backward (attn_bwd_ws.cu, wsb_probs_rows);
 * masked tiles keep the per-element test. The same floats as DQ_SPLIT. When the
 * driver refuses dQ's tensor map, the default falls back to the atomics (s8r, s8r2,
 * s8p: an error instead). */
#include "kernels.h"
#include "tma.cuh"
#include "wgcommon.cuh"
#include <math.h>
#include <stdlib.h>
#include <string.h>

namespace {

using namespace uspk;

constexpr int W2_D = 256;
constexpr int W2_BM = 64;
constexpr int W2_BN = 64;
constexpr int W2_NTH = 256;
constexpr int W2_XCH_FLOATS = 4 * 32 * 32; /* [warp][register][lane] */

constexpr int w2_smem_bytes() {
    return (2 * W2_BN * W2_D + 4 * W2_BM * W2_D + 2 * W2_BN * W2_BM) * 2 + W2_XCH_FLOATS * 4 + 4 * W2_BM * 4 + 1024;
}

__device__ __forceinline__ void w2_cp_async4(void *dst, const void *src, int src_bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(src_bytes));
}

/* P and dS = P (dP - DELTA) of query m0 + q and key `key` (0 where the mask
 * hides the key) from the score s and dP dp. */
__device__ __forceinline__ void w2_p_ds(const UspBwdParams &p, float s, float dp, const float *lse, const float *dl,
                                        int b, int m0, int q, int key, bool masked, float sl2, float &pr, float &ds) {
    const int r = m0 + q;
    float x = bwd_prob(p, s, lse[q], r, sl2);
    if (masked && !usp_key_visible(row_keys(p, b, r), key)) x = 0.0f;
    pr = x;
    ds = x * (dp - dl[q]);
}

/* P^T and dS^T of the thread's elements (rows key_row, key_row + 8 of the
 * tile; columns 8j + 2t + {0, 1} for j in [J0, J0 + NJ)), in fp32, stored in
 * 16 bits to sP and sdS (atom layout of 64 rows). */
template <typename T>
__device__ __forceinline__ void w2_scores(const UspBwdParams &p, const float (&s)[32], const float (&dp)[32],
                                          const float *lse, const float *dl, int b, int key_row, int n0, int m0,
                                          bool masked, T *sP, T *sdS) {
    const int t = threadIdx.x & 3;
    const float sl2 = p.scale * USP_LOG2E;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        float pr[4], ds[4];
#pragma unroll
        for (int e = 0; e < 4; ++e)
            w2_p_ds(p, s[4 * j + e], dp[4 * j + e], lse, dl, b, m0, 8 * j + 2 * t + (e & 1),
                    n0 + key_row + (e >> 1) * 8, masked, sl2, pr[e], ds[e]);
        *reinterpret_cast<uint32_t *>(sP + wsw<W2_BN>(key_row, j) + 2 * t) = elem<T>::pack2(pr[0], pr[1]);
        *reinterpret_cast<uint32_t *>(sP + wsw<W2_BN>(key_row + 8, j) + 2 * t) = elem<T>::pack2(pr[2], pr[3]);
        *reinterpret_cast<uint32_t *>(sdS + wsw<W2_BN>(key_row, j) + 2 * t) = elem<T>::pack2(ds[0], ds[1]);
        *reinterpret_cast<uint32_t *>(sdS + wsw<W2_BN>(key_row + 8, j) + 2 * t) = elem<T>::pack2(ds[2], ds[3]);
    }
}

/* S8: S^T (sv) and dP^T (dv) of the thread's element 8j + 2t + e of row
 * key_row + 8 hi, from `own` and `oth` as w2_scores_row below names them. */
__device__ __forceinline__ void w2_row_sd(const float (&own)[32], const float (&oth)[16], int hi, int j, int e,
                                          float &sv, float &dv) {
    const float mine = hi ? own[4 * j + 2 + e] : own[4 * j + e];
    sv = hi ? oth[2 * j + e] : mine;
    dv = hi ? mine : oth[2 * j + e];
}

/* The same for one of the thread's two rows (S8): row key_row + 8 hi, all 64
 * queries; `own` is this warp's product (S^T if !hi, else dP^T, both rows),
 * `oth` the other product's 16 elements of that row from the paired warp. */
template <typename T>
__device__ __forceinline__ void w2_scores_row(const UspBwdParams &p, const float (&own)[32], const float (&oth)[16],
                                              const float *lse, const float *dl, int b, int key_row, int hi,
                                              int n0, int m0, bool masked, T *sP, T *sdS) {
    const int t = threadIdx.x & 3, row = key_row + 8 * hi;
    const float sl2 = p.scale * USP_LOG2E;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        float pr[2], ds[2];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            float sv, dv;
            w2_row_sd(own, oth, hi, j, e, sv, dv);
            w2_p_ds(p, sv, dv, lse, dl, b, m0, 8 * j + 2 * t + e, n0 + row, masked, sl2, pr[e], ds[e]);
        }
        *reinterpret_cast<uint32_t *>(sP + wsw<W2_BN>(row, j) + 2 * t) = elem<T>::pack2(pr[0], pr[1]);
        *reinterpret_cast<uint32_t *>(sdS + wsw<W2_BN>(row, j) + 2 * t) = elem<T>::pack2(ds[0], ds[1]);
    }
}

/* PT: the staged LSE of block-local query row r as bwd_prob uses it, LSE log2 e, or +inf for
 * rows past the block and rows that saw no key (the same expression as bwd_prob's). */
template <typename P>
__device__ __forceinline__ float w2_lse2(const P &p, float lse, int r) {
    return (r < p.q_len && lse != -INFINITY) ? lse * USP_LOG2E : INFINITY;
}

/* PT (the default; USP_GPU_BWD=s8p): w2_scores_row with the tile's LSE already LSE log2 e (+inf past the
 * block: w2_lse2, at staging) and the mask a template argument, so that an unmasked tile's
 * P^T is 16 fma + exp2 in a row with no test; a MASKED tile keeps the per-element test of
 * w2_p_ds. The same floats as w2_scores_row: exp2f(fmaf(s, sl2, -lse2)), then x (dP - DELTA). */
template <typename T, bool MASKED>
__device__ __forceinline__ void w2_scores_row_pt(const UspBwdParams &p, const float (&own)[32], const float (&oth)[16],
                                                 const float *lse2, const float *dl, int b, int key_row, int hi,
                                                 int n0, int m0, T *sP, T *sdS) {
    const int t = threadIdx.x & 3, row = key_row + 8 * hi;
    const float sl2 = p.scale * USP_LOG2E;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        const float2 l = *reinterpret_cast<const float2 *>(lse2 + 8 * j + 2 * t);
        const float2 d = *reinterpret_cast<const float2 *>(dl + 8 * j + 2 * t);
        float pr[2], ds[2];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            float sv, dv;
            w2_row_sd(own, oth, hi, j, e, sv, dv);
            float x = exp2f(fmaf(sv, sl2, -(e ? l.y : l.x)));
            if (MASKED && !usp_key_visible(row_keys(p, b, m0 + 8 * j + 2 * t + e), n0 + row)) x = 0.0f;
            pr[e] = x;
            ds[e] = x * (dv - (e ? d.y : d.x));
        }
        *reinterpret_cast<uint32_t *>(sP + wsw<W2_BN>(row, j) + 2 * t) = elem<T>::pack2(pr[0], pr[1]);
        *reinterpret_cast<uint32_t *>(sdS + wsw<W2_BN>(row, j) + 2 * t) = elem<T>::pack2(ds[0], ds[1]);
    }
}

/* dQ rows (row0, row0 + 8), 128 columns from col0, += scale * acc (8-byte atomics). */
__device__ __forceinline__ void w2_add_dq(const UspBwdParams &p, const float (&acc)[64], float *gdq, int row0,
                                          int col0) {
    const int t = threadIdx.x & 3;
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
        int r = row0 + hf * 8;
        if (r >= p.q_len) continue;
        float *row = gdq + (int64_t)r * p.dq_sl + col0 + 2 * t;
#pragma unroll
        for (int j = 0; j < 16; ++j)
            atomicAdd(reinterpret_cast<float2 *>(row + 8 * j),
                      make_float2(acc[4 * j + 2 * hf] * p.scale, acc[4 * j + 2 * hf + 1] * p.scale));
    }
}

/* DQ_TMA: the warp's dQ fragment (rows 16 warp + g, + 8 of the tile; the
 * warpgroup's columns 8j + 2t, J0 <= j < J1) times `mul` into fp32 TMA boxes
 * of 32 columns x 64 rows (box j / 4 at box[j / 4]), rows of 128 bytes whose
 * 16-byte chunk c sits at c ^ (row & 7). */
template <int J0, int J1>
__device__ __forceinline__ void w2_stage_dq(const float (&acc)[64], float *const (&box)[4], int warp, float mul) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int j = J0; j < J1; ++j)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
            const int r = warp * 16 + g + hf * 8;
            const int chunk = 2 * (j & 3) + (t >> 1);
            float *dst = box[j >> 2] + r * 32 + ((chunk ^ (r & 7)) << 2) + 2 * (t & 1);
            *reinterpret_cast<float2 *>(dst) = make_float2(acc[4 * j + 2 * hf] * mul, acc[4 * j + 2 * hf + 1] * mul);
        }
}

/* dK or dV rows (row0, row0 + 8), 128 columns from col0, += acc * mul (owned by this CTA). */
__device__ __forceinline__ void w2_store_kv(const float (&acc)[64], float *g, int64_t sl, int row0, int col0,
                                            int kv_len, float mul) {
    const int t = threadIdx.x & 3;
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
        int r = row0 + hf * 8;
        if (r >= kv_len) continue;
        float *row = g + (int64_t)r * sl + col0 + 2 * t;
#pragma unroll
        for (int j = 0; j < 16; ++j) {
            float2 *q2 = reinterpret_cast<float2 *>(row + 8 * j);
            float2 v = *q2;
            v.x += acc[4 * j + 2 * hf] * mul;
            v.y += acc[4 * j + 2 * hf + 1] * mul;
            *q2 = v;
        }
    }
}

/* S8 (the default; USP_GPU_BWD=s4 for !S8): P^T and dS^T on all eight warps, each pair of warps w
 * (one a warpgroup, the same 16 keys) splitting the 64 queries: warpgroup 0
 * takes queries 0-31, warpgroup 1 queries 32-63; each hands the other the
 * half of its product the other needs (16 floats a thread each way). */
template <typename T, bool S8, bool DQ_TMA, bool DQ_SPLIT = false, bool PT = false>
__global__ void __launch_bounds__(W2_NTH, 1)
    bwd_wg256_kernel(const __grid_constant__ CUtensorMap tdq, const UspBwdParams p) {
    static_assert(S8 || !DQ_TMA, "dQ by reduce-adds with the eight-warp scores only");
    static_assert(DQ_TMA || !DQ_SPLIT, "the split staging is of the reduce-adds");
    static_assert(S8 || !PT, "LSE log2 e staged with the eight-warp scores only");
    constexpr int BM = W2_BM, BN = W2_BN, D = W2_D;
    extern __shared__ unsigned char smem_raw[];
    T *sK = reinterpret_cast<T *>(align1024(smem_raw));   /* BN x D */
    T *sV = sK + BN * D;                                    /* BN x D */
    T *sQ = sV + BN * D;                                    /* 2 x BM x D */
    T *sdO = sQ + 2 * BM * D;                               /* 2 x BM x D */
    T *sP = sdO + 2 * BM * D;                               /* BN x BM: P^T */
    T *sdS = sP + BN * BM;                                  /* BN x BM: dS^T */
    float *sX = reinterpret_cast<float *>(sdS + BN * BM);   /* fp32 hand-over */
    float *sL = sX + W2_XCH_FLOATS;                         /* 2 x BM: LSE */
    float *sDl = sL + 2 * BM;                               /* 2 x BM: DELTA */

    __shared__ uint32_t tile_flags[BWD_FLAG_WORDS];
    __shared__ int red[2];
    const int hk = blockIdx.y, b = blockIdx.z;
    const BwdWork wk = bwd_work<W2_BM, W2_BN>(p, b, tile_flags, red);
    if (wk.iters == 0) return;
    const int wgi = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
    const int n0 = wk.n0;
    const int key_row = warp * 16 + (lane >> 2);   /* tile key of e>>1 = 0, in either warpgroup */
    /* warps 0-1 of warpgroup 0 and 2-3 of warpgroup 1 compute P^T and dS^T */
    const bool keep = (wgi == 0) == (warp < 2);

    const T *gk = static_cast<const T *>(p.k) + b * p.k_sb + (int64_t)(p.kv_begin + n0) * p.k_sl + hk * p.k_sh;
    const T *gv = static_cast<const T *>(p.v) + b * p.v_sb + (int64_t)(p.kv_begin + n0) * p.v_sl + hk * p.v_sh;
    load_tile_wg<BN, D, W2_NTH>(sK, gk, p.k_sl, p.kv_len - n0);
    load_tile_wg<BN, D, W2_NTH>(sV, gv, p.v_sl, p.kv_len - n0);

    auto q_tile = [&](int it, int &h, int &m0) {
        h = hk * wk.group + it / wk.nm;
        m0 = (wk.mt_first + it % wk.nm) * BM;
    };
    auto prefetch = [&](int it, int stage) {
        int h, m0;
        q_tile(it, h, m0);
        const T *gq = static_cast<const T *>(p.q) + b * p.q_sb + (int64_t)(p.q_begin + m0) * p.q_sl + h * p.q_sh;
        const T *gd = static_cast<const T *>(p.dout) + b * p.do_sb + (int64_t)(p.q_begin + m0) * p.do_sl + h * p.do_sh;
        load_tile_wg<BM, D, W2_NTH>(sQ + stage * BM * D, gq, p.q_sl, p.q_len - m0);
        load_tile_wg<BM, D, W2_NTH>(sdO + stage * BM * D, gd, p.do_sl, p.q_len - m0);
        const int i = threadIdx.x & (BM - 1);
        const bool ok = m0 + i < p.q_len;
        if (threadIdx.x < BM) {
            const float *src = p.lse + b * p.lse_sb + h * p.lse_sh + p.q_begin + m0 + (ok ? i : 0);
            w2_cp_async4(sL + stage * BM + i, src, ok ? 4 : 0);
        } else if (threadIdx.x < 2 * BM) {
            const float *src = p.delta + b * p.dl_sb + h * p.dl_sh + p.q_begin + m0 + (ok ? i : 0);
            w2_cp_async4(sDl + stage * BM + i, src, ok ? 4 : 0);
        }
    };
    prefetch(0, 0);
    cp_async_commit();

    float dv[64], dk[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) dv[i] = dk[i] = 0.0f;
    const int half = wgi * 2 * 64;   /* element offset of this warpgroup's 128 columns: atoms 2g, 2g+1 */
    const bool wg_lead = (threadIdx.x & 127) == 0;   /* DQ_TMA: issues the warpgroup's reduce-adds */
    float *slot = sX + warp * 32 * 32 + lane;

    for (int it = 0; it < wk.iters; ++it) {
        const int stage = it & 1;
        cp_async_wait<0>();
        if (PT && threadIdx.x < BM) {
            /* the thread's own cp.async of LSE row threadIdx.x (prefetch) has completed:
             * LSE log2 e in its place, +inf past the block (zero-filled there) or without keys */
            int h2, m2;
            q_tile(it, h2, m2);
            float *l = sL + stage * BM + threadIdx.x;
            *l = w2_lse2(p, *l, m2 + threadIdx.x);
        }
        fence_async_smem();
        __syncthreads();   /* tile `it` landed; the other stage, sP, sdS and sX are free */
        int h, m0;
        q_tile(it, h, m0);
        const T *cQ = sQ + stage * BM * D, *cdO = sdO + stage * BM * D;

        /* warpgroup 0: S^T = K Q^T; warpgroup 1: dP^T = V dO^T (the same registers) */
        float s[32];
        wg_arrive();
        {
            const T *A = wgi == 0 ? sK : sV;
            const T *B = wgi == 0 ? cQ : cdO;
#pragma unroll
            for (int kc = 0; kc < D / 16; ++kc)
                wg<T>::template ss64<0, 0>(s, wg_desc_k<BN>(A, kc), wg_desc_k<BM>(B, kc), kc > 0);
        }
        wg_commit();
        if (!DQ_TMA) {
            if (it + 1 < wk.iters) prefetch(it + 1, stage ^ 1);
            cp_async_commit();
        }
        wg_wait<0>();
        wg_fence_regs(s);

        /* hand-over: a keeping warp gets the other product of its 16 rows from
         * warp `warp` of the other warpgroup */
        if (S8) {
            /* warpgroup 0 keeps row g of its 16 keys and gets dP^T of it from warpgroup 1;
             * warpgroup 1 keeps row g + 8 and gets S^T of it from warpgroup 0 */
            const int give = wgi ? 0 : 2;   /* the elements of the row the other warp keeps */
#pragma unroll
            for (int j = 0; j < 8; ++j)
#pragma unroll
                for (int e = 0; e < 2; ++e) slot[(4 * j + 2 * wgi + e) * 32] = give ? s[4 * j + 2 + e] : s[4 * j + e];
            named_barrier<64>(1 + warp);
            const bool masked = bwd_tile_masked<BM, BN>(p, tile_flags, n0, m0 / BM);
            float oth[16];
#pragma unroll
            for (int j = 0; j < 8; ++j)
#pragma unroll
                for (int e = 0; e < 2; ++e) oth[2 * j + e] = slot[(4 * j + 2 * (1 - wgi) + e) * 32];
            if (!PT)
                w2_scores_row<T>(p, s, oth, sL + stage * BM, sDl + stage * BM, b, key_row, wgi, n0, m0, masked, sP,
                                 sdS);
            else if (masked)
                w2_scores_row_pt<T, true>(p, s, oth, sL + stage * BM, sDl + stage * BM, b, key_row, wgi, n0, m0, sP,
                                          sdS);
            else
                w2_scores_row_pt<T, false>(p, s, oth, sL + stage * BM, sDl + stage * BM, b, key_row, wgi, n0, m0, sP,
                                           sdS);
        }
        float other[32];
        if (!S8 && !keep) {
#pragma unroll
            for (int i = 0; i < 32; ++i) slot[i * 32] = s[i];
        }
        if (!S8) named_barrier<64>(1 + warp);
        if (!S8 && keep) {
#pragma unroll
            for (int i = 0; i < 32; ++i) other[i] = slot[i * 32];
            const bool masked = bwd_tile_masked<BM, BN>(p, tile_flags, n0, m0 / BM);
            if (wgi == 0)
                w2_scores<T>(p, s, other, sL + stage * BM, sDl + stage * BM, b, key_row, n0, m0, masked, sP, sdS);
            else
                w2_scores<T>(p, other, s, sL + stage * BM, sDl + stage * BM, b, key_row, n0, m0, masked, sP, sdS);
        }
        fence_async_smem();   /* P^T, dS^T stores -> the wgmma reads */
        if (DQ_TMA && wg_lead) bulk_wait_read<0>();   /* tile it - 1's dQ has been read from stage ^ 1 */
        __syncthreads();
        if (DQ_TMA) {   /* stage ^ 1 is free: tile it + 1 loads under this tile's products */
            if (it + 1 < wk.iters) prefetch(it + 1, stage ^ 1);
            cp_async_commit();
        }

        /* dQ first (its atomics run while dV and dK are on the tensor cores) */
        float dq[64];
        wg_arrive();
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk)
            wg<T>::template ss128<1, 1>(dq, wg_desc_mn<BN>(sdS, kk), wg_desc_mn<BN>(sK + half * BN, kk), kk > 0);
        wg_commit();
        wg_fence_regs(dv);
        wg_fence_regs(dk);
#pragma unroll
        for (int kk = 0; kk < BM / 16; ++kk)
            wg<T>::template ss128<0, 1>(dv, wg_desc_k<BN>(sP, kk), wg_desc_mn<BM>(cdO + half * BM, kk), 1);
        if (DQ_SPLIT) wg_commit();   /* dV alone: its dO atoms take half of dQ while dK runs */
#pragma unroll
        for (int kk = 0; kk < BM / 16; ++kk)
            wg<T>::template ss128<0, 1>(dk, wg_desc_k<BN>(sdS, kk), wg_desc_mn<BM>(cQ + half * BM, kk), 1);
        wg_commit();
        if (!DQ_TMA) {
            wg_wait<1>();
            wg_fence_regs(dq);
            float *gdq = p.dq + b * p.dq_sb + (int64_t)p.q_begin * p.dq_sl + h * p.dq_sh;
            w2_add_dq(p, dq, gdq, m0 + key_row, wgi * 128);
        }
        T *qa = const_cast<T *>(cQ) + half * BM, *da = const_cast<T *>(cdO) + half * BM;
        float *const box[4] = {reinterpret_cast<float *>(qa), reinterpret_cast<float *>(qa + BM * 64),
                               reinterpret_cast<float *>(da), reinterpret_cast<float *>(da + BM * 64)};
        if (DQ_SPLIT) {
            /* dQ and dV complete (dK may run): the warpgroup's dO atoms take dQ's columns 64-127 */
            wg_wait<1>();
            wg_fence_regs(dq);
            w2_stage_dq<8, 16>(dq, box, warp, p.scale);
            fence_async_smem();
            named_barrier<128>(5 + wgi);
            if (wg_lead) {
                tma_reduce_add_4d(&tdq, box[2], wgi * 128 + 64, m0, h, b);
                tma_reduce_add_4d(&tdq, box[3], wgi * 128 + 96, m0, h, b);
                bulk_commit();
            }
        }
        wg_wait<0>();
        wg_fence_regs(dv);
        wg_fence_regs(dk);
        if (DQ_TMA) {
            /* this warpgroup's wgmma reads of the stage are complete (S^T / dP^T before the
             * CTA barrier, dV / dK above): its atoms 2g, 2g + 1 of Q and dO take its dQ
             * (DQ_SPLIT: those of Q, the rest is on its way from dO's) */
            constexpr int K1 = DQ_SPLIT ? 2 : 4;   /* boxes 0 .. K1 - 1 */
            wg_fence_regs(dq);
            w2_stage_dq<0, 4 * K1>(dq, box, warp, p.scale);
            fence_async_smem();   /* the staging stores -> the copy engine's reads */
            named_barrier<128>(5 + wgi);
            if (wg_lead) {
#pragma unroll
                for (int k = 0; k < K1; ++k) tma_reduce_add_4d(&tdq, box[k], wgi * 128 + 32 * k, m0, h, b);
                bulk_commit();
            }
        }
    }
    if (DQ_TMA && wg_lead) bulk_wait<0>();   /* the last reduce-adds are done before the CTA exits */

    const int krow = n0 + key_row;
    float *gdk = p.dk + b * p.dk_sb + (int64_t)p.kv_begin * p.dk_sl + hk * p.dk_sh;
    float *gdv = p.dv + b * p.dv_sb + (int64_t)p.kv_begin * p.dv_sl + hk * p.dv_sh;
    w2_store_kv(dk, gdk, p.dk_sl, krow, wgi * 128, p.kv_len, p.scale);
    w2_store_kv(dv, gdv, p.dv_sl, krow, wgi * 128, p.kv_len, 1.0f);
}

template <typename T>
int w2_launch(const UspBwdParams &p, cudaStream_t st, char *why, size_t why_len) {
    constexpr int smem = w2_smem_bytes();
    /* P^T and dS^T on all eight warps (1.27-1.29x the four-warp kernel on an H100, gpu/NOTES.md
     * v8), dQ by TMA reduce-adds with half of it staged while dK runs (1.07x the atomics on an
     * H100, gpu/NOTES.md v10), P^T from LSE log2 e staged once a row and the mask a template
     * argument, no test per element on unmasked tiles (the default: 1.08x v10's kernel on an
     * H200, gpu/NOTES.md v12). USP_GPU_BWD=s8: dQ by atomics (v8's default); =s4: scores on four
     * warps and atomics, as v6; =s8r: reduce-adds staged after dV and dK; =s8r2: v10's kernel
     * (P^T with a test per element); =s8p: the default's kernel; s8r, s8r2 and s8p are an error
     * (not the atomics) when the driver refuses dQ's tensor map */
    const char *e = getenv("USP_GPU_BWD");
    const bool s4 = e && !strcmp(e, "s4"), s8 = e && !strcmp(e, "s8"), s8r = e && !strcmp(e, "s8r");
    const bool s8r2 = e && !strcmp(e, "s8r2");
    const bool forced = s8r || s8r2 || (e && !strcmp(e, "s8p"));
    CUtensorMap tdq;
    memset(&tdq, 0, sizeof tdq);   /* unused by the atomic kernels */
    const bool tma = !s4 && !s8 &&
                     tma_map_4d(&tdq, p.dq + (int64_t)p.q_begin * p.dq_sl, USP_F32, W2_D, p.q_len, p.h, p.b,
                                p.dq_sl, p.dq_sh, p.dq_sb, W2_BM);
    if (forced && !tma) {
        snprintf(why, why_len, "attn_bwd_wg256: cuTensorMapEncodeTiled refused dQ's tensor map");
        return USP_KERNEL_ECUDA;
    }
    auto kern = s4    ? bwd_wg256_kernel<T, false, false>
                : !tma ? bwd_wg256_kernel<T, true, false>
                : s8r  ? bwd_wg256_kernel<T, true, true>
                : s8r2 ? bwd_wg256_kernel<T, true, true, true> : bwd_wg256_kernel<T, true, true, true, true>;
    USP_CUDA_TRY(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    dim3 grid((p.kv_len + W2_BN - 1) / W2_BN, p.hkv, p.b);
    kern<<<grid, W2_NTH, smem, st>>>(tdq, p);
    USP_CUDA_LAUNCHED();
    return USP_KERNEL_OK;
}

} // namespace

int usp_wg_bwd256(const UspBwdParams &p, usp_dtype in, cudaStream_t st, char *why, size_t why_len) {
    if (p.q_len <= 0 || p.kv_len <= 0) return USP_KERNEL_OK;
    return in == USP_BF16 ? w2_launch<__nv_bfloat16>(p, st, why, why_len) : w2_launch<__half>(p, st, why, why_len);
}
