/* attn_bwd_ws.cu: attention backward on Hopper with warp specialization
 * (sm_90a), D = 64 and 128: a producer warp streaming query tiles by TMA
 * through an mbarrier pipeline, two consumer warpgroups owning the keys.
 *
 * One CTA of 3 warpgroups owns BN = 128 keys of one K/V head and walks every
 * query tile (BM = 64 rows) of every query head of its GQA group that can see
 * them (the tile order, the mask and the mask plan of attn_bwd_wg.cu: bwd_work).
 *   warpgroup 0 (producer, 24 registers after setmaxnreg): warp 0 loads K and V
 *     once, then per query tile Q and dO by TMA (4-d maps over the block's rows:
 *     rows past its end load as zeros) and LSE, DELTA and the rows' key
 *     intervals by its 32 lanes into WSB_STAGES stages; a stage is "full" when
 *     the 32 lanes arrived and the TMA bytes landed, and is refilled once the
 *     eight consumer warps arrived on its "empty" mbarrier.
 *   warpgroups 1, 2 (consumers, 240 registers): 64 keys each, dK and dV in
 *     registers for the whole walk. Per tile, transposed as in attn_bwd_wg.cu:
 *       S^T  = K Q^T, dP^T = V dO^T           SS wgmma (two commit groups)
 *       P^T  = exp2(scale log2e S^T - LSE log2e)       while dP^T runs
 *       dS^T = P^T (dP^T - DELTA)             registers, and 16-bit into shared
 *                                             memory (two buffers, by tile parity)
 *       dV  += P^T dO, dK += dS^T Q           RS wgmma
 *       dQ   = dS K (64 rows x 64 columns)    SS wgmma over all 128 keys once
 *                                             both warpgroups wrote dS^T
 *     D = 128: consumer c computes dQ columns 64c..64c+63 of every tile;
 *     D = 64: consumer (tile index & 1) computes the tile's whole dQ.
 *     dQ (times scale) goes to shared memory (fp32, 128-byte swizzle) and one
 *     thread of the warpgroup adds it to dQ in global memory with TMA tensor
 *     reduce-adds (cp.reduce.async.bulk.tensor ... add: the copy engine does the
 *     fp32 additions in L2, one operation per 8 KB box, no atomics from the
 *     warps; rows past the block are left alone).
 * Masked query tiles test each element against its row's interval: by default
 * (MREL) the producer writes each row's keys relative to the key tile, clipped to
 * it (rel_keys), and the test is one compare a side; with USP_GPU_BWD_MASK=elem,
 * usp_row_keys on the row's mask words per element (the way before, 12-17% slower at
 * D = 128 on masked calls and about as much on the causal one, whose diagonal tiles
 * take the same test; gpu/NOTES.md).
 * USP_GPU_BWD_MASK=persist (PERSIST; under a mask plan, 64-row tiles; producer 56
 * registers, consumers 224): one CTA an SM
 * walks units (key tile, K/V head) of the plan's order, one a round of gridDim.x units,
 * dealt back and forth; dK and dV restart at zero a unit. The producer loads the next
 * unit's first Q/dO as soon as a stage frees, then its K/V once every consumer warp has
 * passed the last dQ product of the unit before (mbarrier kvEmpty: the dQ products read
 * K), so K/V land under the dK/dV epilogue; it writes each tile's mask flag (the plan's
 * group range, usp_tile_masked) beside its LSE. USP_GPU_BWD_MASK=...,red (p.kv_red): the
 * dK/dV epilogue adds by fp32 reductions (wg_add_kv<D, true>) instead of loads and stores.
 * Named barriers: 1 (256 threads) once per tile between the dS^T stores and
 * the dQ products; 2, 3 (128) in each consumer around its dQ staging buffer;
 * with the dQ writer warp (=wsxq, =wsxvq) 4, 5 and 6, 7 (160: a consumer and the writer).
 *
 * Shared memory (D = 128, 2 stages): K, V 2 x 32 KB, Q, dO 2 x 2 x 16 KB,
 * dS^T 2 x 16 KB, dQ staging 32 KB, LSE / DELTA / intervals 2 KB: 195 KB.
 * D = 64 (3 stages): 147 KB.
 *
 * D = 64 without per-row masks (the default; USP_GPU_BWD=ws128 / ws128r / ws64x): query
 * tiles of BM = 128 rows, two stages (192 KB). S^T and dP^T are m64n128 (64 registers
 * each), P^T is packed with dS^T once dP^T has landed, and both warpgroups
 * compute dQ every tile: warpgroup c rows 64c..64c+63 over all 128 keys.
 * By default (and =ws64x) each warpgroup issues its dK products after its dQ products
 * (dV, barrier 1, dQ, dK), so that the dQ staging and the reduce-adds' issue run while
 * dK's products are on the tensor cores (v7/v8 staged dQ only once all of the tile's
 * products were done), and computes P^T without a branch per element (wsb_probs_rows;
 * ncu put half of v8's stall samples at D = 64 in wsb_probs, one exponential at a time);
 * =ws128r: v8's loop (wsb_probs, dQ staged after dK).
 * D = 128: by default (and USP_GPU_BWD=wsxq) that loop on the 64-row tiles (dQ columns 64c..
 * per warpgroup; P^T packed while dP^T runs, as in v7's loop) with dQ's reduce-adds issued by
 * warp 1 of the producer warpgroup, to which each consumer hands its staged dQ by a named
 * barrier that it arrives at without waiting (as FlashAttention-3's backward adds dQ;
 * gpu/NOTES.md v14); =wsx: the same loop with the consumers' lead thread adding dQ (v11);
 * =wsxv, =wsxvq: wsx, wsxq also issuing dV's products as soon as P^T is packed, under dP^T
 * and dS^T; =ws (reduce-adds) and =wsa (atomics) keep v7's loop there.
 * Per-row masks: by default at D = 128 (USP_GPU_BWD_MASK=xv) the same loop as =wsxvq (=wsxv
 * under USP_GPU_BWD=wsx or wsxv), masked tiles by rel_keys (wsb_probs_rows<.., WSB_REL>: one
 * compare a side, the mask a template argument chosen once a tile), the others without a
 * test; =x: without dV early; =rel: v7's 64-row loop (the default before v15). D = 64 with
 * =x (opt-in): v9's 128-row loop (the plan's 64-row groups two a tile, bwd_work_planned);
 * =x64: that loop on 64-row tiles, each warpgroup the tile's dQ over its own 64 keys, both
 * reduce-added.
 * USP_GPU_BWD_PROF=1 (bf16, D = 128's two default kernels): the PROF instantiations count
 * each CTA's phases and the launcher prints a line "PHASES bwd ..." a call (wsb_prof_report). */
#include "kernels.h"
#include "prof.cuh"
#include "tma.cuh"
#include "wgcommon.cuh"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <type_traits>
#include <vector>

namespace {

using namespace uspk;

constexpr int WSB_BM = 64;
constexpr int WSB_BN = 128;
constexpr int WSB_NTH = 384;
/* Named barriers of the dQ writer warp (DQW) and consumer c: WSB_DQ_FULL + c, consumer c's dQ
 * staged (128 arrive, the writer's 32 wait); WSB_DQ_EMPTY + c, the reduce-adds have read it
 * (the writer's 32 arrive, consumer c's 128 wait). 1, 2, 3 are the consumers' own. */
constexpr int WSB_DQ_FULL = 4, WSB_DQ_EMPTY = 6;

/* Stages of Q / dO: by head dim and query tile rows (BM = 128 only at D = 64). */
template <int D, int BM> struct wsb_cfg { static constexpr int STAGES = 2; };
template <> struct wsb_cfg<64, 64> { static constexpr int STAGES = 3; };

template <int D, int BM>
constexpr int wsb_smem_bytes() {
    constexpr int S = wsb_cfg<D, BM>::STAGES;
    return (2 * WSB_BN * D + 2 * S * BM * D + 2 * WSB_BN * BM) * 2   /* K, V, Q, dO, dS^T */
           + WSB_BM * 128 * 4                                        /* dQ staging: 2 x 64 x 64 fp32 */
           + 4 * S * BM * 4                                          /* LSE, DELTA, lo, hi */
           + (2 + 2 * S) * 8 + 4 * S + 1024;                         /* barriers, flags, alignment */
}

/* S^T = K Q^T and dP^T = V dO^T steps: m64nBMk16, both operands K-major. */
template <typename T, int BM>
__device__ __forceinline__ void wsb_ss(float (&d)[BM / 2], uint64_t da, uint64_t db, int scale_d) {
    if constexpr (BM == 128)
        wg<T>::template ss128<0, 0>(d, da, db, scale_d);
    else
        wg<T>::template ss64<0, 0>(d, da, db, scale_d);
}

/* A row's keys iv relative to a key tile at n0, clipped to the tile [0, WSB_BN] (which
 * keeps every test of a key of the tile as it was), lo in bits 0..15, hi in 16..31. */
__device__ __forceinline__ int rel_keys(usp_key_interval iv, int n0) {
    const int lo = min(max(iv.lo - n0, 0), WSB_BN), hi = min(max(iv.hi - n0, 0), WSB_BN);
    return lo | (hi << 16);
}

/* P^T of the thread's BM / 2 elements in place of S^T, and (PACK) packed as
 * the A fragments of dV += P^T dO. lse2: LSE log2e of the tile's rows (+inf:
 * P = 0). With BM = 128 the packing waits for wsb_dscores (registers). Masked
 * tiles: mlo, mhi the rows' mask words, or (MREL) mlo the rows' rel_keys. */
template <typename T, int BM, bool PACK, bool MREL>
__device__ __forceinline__ void wsb_probs(const UspBwdParams &p, float (&s)[BM / 2], const float *lse2,
                                          const int *mlo, const int *mhi, int key_row, int n0, int m0, bool masked,
                                          uint32_t (&pa)[BM / 16][4]) {
    const int t = threadIdx.x & 3;
    const float sl2 = p.scale * USP_LOG2E;
#pragma unroll
    for (int j = 0; j < BM / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int q = 8 * j + 2 * t + (e & 1);   /* query in the tile */
            float x = exp2f(fmaf(s[4 * j + e], sl2, -lse2[q]));
            if (MREL && masked) {   /* the row's keys relative to n0, clipped: one compare each side */
                const int kr = key_row + (e >> 1) * 8, w = mlo[q];
                if (kr < (w & 0xffff) || kr >= (w >> 16)) x = 0.0f;
            } else if (masked) {
                usp_key_interval iv = p.mask_lo ? usp_row_keys(mlo, mhi, BM, 0, q, p.kv_len, 0, 0)
                                                : usp_row_keys(NULL, NULL, 0, 0, m0 + q, p.kv_len, p.causal, p.diag);
                if (!usp_key_visible(iv, n0 + key_row + (e >> 1) * 8)) x = 0.0f;
            }
            s[4 * j + e] = x;
        }
        if (PACK) {
            const int kk = j >> 1, hi = (j & 1) * 2;
            pa[kk][hi] = elem<T>::pack2(s[4 * j], s[4 * j + 1]);
            pa[kk][hi + 1] = elem<T>::pack2(s[4 * j + 2], s[4 * j + 3]);
        }
    }
}

/* P^T in place of S^T for the 128-row tiles without per-row masks (the default at D = 64):
 * MASKED (the causal diagonal, keys past the block) is a template argument, so that the
 * unmasked tiles run the BM / 2 exponentials as one block of independent instructions
 * (wsb_probs tests `masked` per element: a branch around each exponential, which keeps
 * ptxas from interleaving them). LSE log2e of the rows 2t, 2t + 1 by one 8-byte load;
 * ex2.approx.ftz (results below 2^-126 flush to 0: no such P reaches a 16-bit dS). */
__device__ __forceinline__ float wsb_ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
/* MASK: WSB_UNMASKED; WSB_CAUSAL, the causal diagonal and keys past the block (usp_row_keys
 * of the row, no per-row masks); WSB_REL, per-row masks by the rows' rel_keys words (rel, as
 * the producer wrote them for MREL: one compare a side, the words of rows 2t, 2t + 1 by one
 * 8-byte load, as LSE). */
enum { WSB_UNMASKED = 0, WSB_CAUSAL = 1, WSB_REL = 2 };
template <int BM, int MASK>
__device__ __forceinline__ void wsb_probs_rows(const UspBwdParams &p, float (&s)[BM / 2], const float *lse2,
                                               const int *rel, int key_row, int n0, int m0) {
    const int t = threadIdx.x & 3;
    const float sl2 = p.scale * USP_LOG2E;
#pragma unroll
    for (int j = 0; j < BM / 8; ++j) {
        const float2 l = *reinterpret_cast<const float2 *>(lse2 + 8 * j + 2 * t);
        int2 w = make_int2(0, 0);
        if (MASK == WSB_REL) w = *reinterpret_cast<const int2 *>(rel + 8 * j + 2 * t);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            float x = wsb_ex2(fmaf(s[4 * j + e], sl2, -((e & 1) ? l.y : l.x)));
            if (MASK == WSB_CAUSAL) {
                const int q = 8 * j + 2 * t + (e & 1);   /* query in the tile */
                usp_key_interval iv = usp_row_keys(NULL, NULL, 0, 0, m0 + q, p.kv_len, p.causal, p.diag);
                if (!usp_key_visible(iv, n0 + key_row + (e >> 1) * 8)) x = 0.0f;
            } else if (MASK == WSB_REL) {   /* the row's keys relative to n0, clipped to [0, BN] */
                const int kr = key_row + (e >> 1) * 8, wv = (e & 1) ? w.y : w.x;
                if (kr < (wv & 0xffff) || kr >= (wv >> 16)) x = 0.0f;
            }
            s[4 * j + e] = x;
        }
    }
}

/* wsb_probs_rows, then P^T packed as the A fragments of dV += P^T dO: the 64-row tiles at
 * D = 128 (USP_GPU_BWD=wsx, wsxv), where the packing runs while dP^T is on the tensor cores. */
template <typename T, int BM, int MASK>
__device__ __forceinline__ void wsb_probs_rows_pack(const UspBwdParams &p, float (&s)[BM / 2], const float *lse2,
                                                    const int *rel, int key_row, int n0, int m0,
                                                    uint32_t (&pa)[BM / 16][4]) {
    wsb_probs_rows<BM, MASK>(p, s, lse2, rel, key_row, n0, m0);
#pragma unroll
    for (int j = 0; j < BM / 8; ++j) {
        const int kk = j >> 1, hi = (j & 1) * 2;
        pa[kk][hi] = elem<T>::pack2(s[4 * j], s[4 * j + 1]);
        pa[kk][hi + 1] = elem<T>::pack2(s[4 * j + 2], s[4 * j + 3]);
    }
}

/* dS^T = P^T (dP^T - DELTA): A fragments of dK += dS^T Q, and into sdS (atom
 * layout, rows = keys, columns = queries) for dQ = dS K; (PACK) P^T's A
 * fragments too, when wsb_probs left them. */
template <typename T, int BM, bool PACK>
__device__ __forceinline__ void wsb_dscores(const float (&pr)[BM / 2], const float (&dp)[BM / 2], const float *dl,
                                            T *sdS, int key_row, uint32_t (&pa)[BM / 16][4],
                                            uint32_t (&da)[BM / 16][4]) {
    const int t = threadIdx.x & 3;
#pragma unroll
    for (int j = 0; j < BM / 8; ++j) {
        float ds[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) ds[e] = pr[4 * j + e] * (dp[4 * j + e] - dl[8 * j + 2 * t + (e & 1)]);
        const int kk = j >> 1, hi = (j & 1) * 2;
        if (PACK) {
            pa[kk][hi] = elem<T>::pack2(pr[4 * j], pr[4 * j + 1]);
            pa[kk][hi + 1] = elem<T>::pack2(pr[4 * j + 2], pr[4 * j + 3]);
        }
        da[kk][hi] = elem<T>::pack2(ds[0], ds[1]);
        da[kk][hi + 1] = elem<T>::pack2(ds[2], ds[3]);
        *reinterpret_cast<uint32_t *>(sdS + wsw<WSB_BN>(key_row, j) + 2 * t) = da[kk][hi];
        *reinterpret_cast<uint32_t *>(sdS + wsw<WSB_BN>(key_row + 8, j) + 2 * t) = da[kk][hi + 1];
    }
}

/* The warp's dQ fragment (rows 16 warp + g, + 8; columns 8j + 2t) times
 * `mul` into a 64 x 64 fp32 staging region: two TMA boxes of 32 columns x 64
 * rows, rows of 128 bytes, 16-byte chunk c at c ^ (row & 7). */
__device__ __forceinline__ void wsb_stage_dq(const float (&acc)[32], float *rq, int warp, float mul) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
            const int r = warp * 16 + g + hf * 8;
            const int chunk = 2 * (j & 3) + (t >> 1);
            float *dst = rq + (j >> 2) * (WSB_BM * 32) + r * 32 + ((chunk ^ (r & 7)) << 2) + 2 * (t & 1);
            *reinterpret_cast<float2 *>(dst) = make_float2(acc[4 * j + 2 * hf] * mul, acc[4 * j + 2 * hf + 1] * mul);
        }
}

/* ---- USP_GPU_BWD_PROF=1: per-CTA phase counters (measurement only) --------
 *
 * The PROF instantiations of the D = 128 default kernels (bf16; without and with per-row
 * masks: the writer-warp loop, LATE_DK 3 and 4) record, per CTA, %globaltimer at entry and at
 * each consumer warpgroup's end, the SM, and consumer warpgroup 0's clock64() cycles: in all;
 * its prologue (up to its first tile's Q/dO landed: K/V, the first stage, the CTA's work);
 * waiting for later stages; at barrier 1 (the other consumer's dS^T); for the dQ writer's
 * hand-back; in masked tiles (from the stage landed to the stage handed back); in the dK/dV
 * epilogue; and its tiles and masked tiles. The launcher prints one line "PHASES bwd ..." a
 * call (wsb_prof_report). The clock reads slow the kernel a little: read proportions, not
 * rates. The default kernels are the PROF = false instantiations, which hold none of it. */
constexpr int WSB_PROF_CTAS = 4096;
/* A record's words: the times and the SM, then consumer 0's counters (WBP_CYC on, as WsbProf) */
enum { WBP_G0 = PROF_G0, WBP_END0 = PROF_END0, WBP_END1 = PROF_END1, WBP_SM = PROF_SM, WBP_CYC = PROF_COUNTERS,
       WBP_PRO, WBP_WFULL, WBP_WB1, WBP_WDQ, WBP_MCYC, WBP_EPI, WBP_TILES, WBP_MTILES, WBP_WORDS };
__device__ unsigned long long g_wsb_prof[WSB_PROF_CTAS * WBP_WORDS];

/* A consumer thread's counters (PROF; kept by every thread, written by the lead of each),
 * by the record's words: v[WBP_CYC] holds the clock at the start until the end. */
struct WsbProf {
    long long v[WBP_WORDS];
};

/* A consumer's end: its time (the lead of each consumer warpgroup) and consumer 0's counters. */
template <bool PROF>
__device__ __forceinline__ void wsb_prof_exit(WsbProf &pf, int c) {
    if constexpr (PROF) {
        unsigned long long *r = prof_record(g_wsb_prof, WBP_WORDS, WSB_PROF_CTAS);
        if ((threadIdx.x & 127) != 0 || !r) return;
        r[WBP_END0 + c] = prof_gtime();
        pf.v[WBP_CYC] = clock64() - pf.v[WBP_CYC];
        if (c == 0)
            for (int w = WBP_CYC; w < WBP_WORDS; ++w) r[w] = (unsigned long long)pf.v[w];
    }
}

template <typename T, int D, bool DQ_TMA, int BM, int LATE_DK = 0, bool MREL = false, bool PERSIST = false,
          bool PROF = false>
__global__ void __launch_bounds__(WSB_NTH, 1)
    bwd_ws_kernel(const __grid_constant__ CUtensorMap tq, const __grid_constant__ CUtensorMap tk,
                  const __grid_constant__ CUtensorMap tv, const __grid_constant__ CUtensorMap tdo,
                  const __grid_constant__ CUtensorMap tdq, const UspBwdParams p) {
    static_assert(BM == 64 || (BM == 128 && D == 64), "128-row query tiles at D = 64 only");
    static_assert(!LATE_DK || ((BM == 128 || D == 128 || MREL) && DQ_TMA),
                  "dK after dQ: 128-row tiles at D = 64, D = 128, or 64-row tiles at D = 64 under "
                  "per-row masks, with reduce-adds only");
    static_assert(!MREL || BM == 64 || LATE_DK, "relative intervals with 64-row query tiles, or in the dK-after-dQ loop");
    static_assert(!PERSIST || BM == 64, "the persistent grid runs the plan's 64-row groups");
    /* LATE_DK 3, 4 (=wsxq, =wsxvq): LATE_DK 1, 2 with dQ's reduce-adds issued by warp 1 of the
     * producer warpgroup (DQW) */
    constexpr bool DQW = LATE_DK >= 3;
    static_assert(!DQW || (D == 128 && BM == 64 && !PERSIST),
                  "the dQ writer warp: D = 128, 64-row tiles, not the persistent grid");
    static_assert(!PROF || DQW, "phase counters: the writer-warp loop (D = 128's defaults)");
    if constexpr (PROF) prof_entry(prof_record(g_wsb_prof, WBP_WORDS, WSB_PROF_CTAS), WBP_G0, WBP_SM);
    /* BM = 128: the two warpgroups split each tile's dQ by rows (64 each), every tile;
     * per-row masks and a mask plan only with MREL (USP_GPU_BWD_MASK=x; else the launcher
     * sends those to BM = 64) */
    constexpr int BN = WSB_BN, S = wsb_cfg<D, BM>::STAGES, ND = D / 2;
    constexpr bool PACK = BM == 64;   /* P^T packed under dP^T (BM = 128: registers) */
    extern __shared__ unsigned char smem_raw[];
    T *sK = reinterpret_cast<T *>(align1024(smem_raw));   /* BN x D */
    T *sV = sK + BN * D;                                    /* BN x D */
    T *sQ = sV + BN * D;                                    /* S x BM x D */
    T *sdO = sQ + S * BM * D;                               /* S x BM x D */
    T *sdS = sdO + S * BM * D;                              /* 2 x BN x BM: dS^T */
    float *sdQ = reinterpret_cast<float *>(sdS + 2 * BN * BM);   /* 2 x (64 x 64) fp32 */
    float *sL = sdQ + WSB_BM * 128;                             /* S x BM: LSE log2e */
    float *sDl = sL + S * BM;                               /* S x BM: DELTA */
    int *sLo = reinterpret_cast<int *>(sDl + S * BM);       /* S x BM: mask_lo of the tile */
    int *sHi = sLo + S * BM;                                /* S x BM: mask_hi */
    uint64_t *bars = reinterpret_cast<uint64_t *>(sHi + S * BM);
    uint64_t *barKV = bars, *full = bars + 1, *empty = full + S, *kvEmpty = empty + S;
    int *sMsk = reinterpret_cast<int *>(kvEmpty + 1);   /* S (PERSIST): the stage's tile needs the mask */

    __shared__ uint32_t tile_flags[BWD_FLAG_WORDS];
    __shared__ int red[2];
    /* the CTA's units: PERSIST, one a round of gridDim.x units of the plan's order (key
     * tile item order[u / hkv], K/V head u % hkv), dealt back and forth (CTA i takes unit i
     * of even rounds, unit gridDim.x - 1 - i of odd ones), so that the descending work of
     * the order evens out over the rounds; else one, its own */
    BwdWork wk;
    if constexpr (PERSIST)
        wk.iters = 0;
    else if constexpr (BM == 64 || MREL)
        wk = bwd_work<BM, BN>(p, blockIdx.z, tile_flags, red);
    else
        wk = bwd_work_causal<BM, BN>(p, blockIdx.z);
    if (!PERSIST && wk.iters == 0) return;   /* no query sees these keys */
    const int u_end = PERSIST ? p.plan_items * p.hkv : 1;
    auto unit_of = [&](int round) {
        if (!PERSIST) return round;
        const int g = (int)gridDim.x, i = (int)blockIdx.x;
        return round * g + ((round & 1) ? g - 1 - i : i);
    };
    const int wgi = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;

    if (threadIdx.x == 0) {
        mbar_init(barKV, 1);
        for (int s = 0; s < S; ++s) {
            mbar_init(full + s, 32);   /* the producer warp's lanes; the TMA bytes */
            mbar_init(empty + s, 8);   /* lane 0 of each consumer warp */
        }
        mbar_init(kvEmpty, 8);         /* PERSIST: lane 0 of each consumer warp, after a unit's last dQ */
        mbar_init_fence();
    }
    __syncthreads();

    auto q_tile = [&](int it, int &h, int &m0) {
        h = wk.hk * wk.group + it / wk.nm;
        m0 = (wk.mt_first + it % wk.nm) * BM;
    };

    if (wgi == 0) {   /* producer */
        /* PERSIST: 56 registers (its unit loop spilled 76-164 bytes at 24), the consumers 224 */
        regs_dec<PERSIST ? 56 : 24>();
        if constexpr (DQW) {
            if (warp == 1) {   /* the dQ writer: adds each consumer's staged dQ by TMA reduce-adds */
                /* q_tile(it), stepped; few live values (24 registers) */
                const int iters = wk.iters, nm = wk.nm, b = wk.b, m_first = wk.mt_first * BM;
                int h = wk.hk * wk.group, m0 = m_first, k = 0;
                for (int it = 0; it < iters; ++it) {
#pragma unroll 1
                    for (int c = 0; c < 2; ++c) {
                        named_barrier<160>(WSB_DQ_FULL + c);   /* consumer c staged the tile's dQ */
                        if (lane == 0) {
                            const float *rq = sdQ + c * WSB_BM * 64;
                            tma_reduce_add_4d(&tdq, rq, 64 * c, m0, h, b);
                            tma_reduce_add_4d(&tdq, rq + WSB_BM * 32, 64 * c + 32, m0, h, b);
                            bulk_commit();
                        }
                        __syncwarp();   /* the warp whole at the next barrier */
                    }
                    if (it + 1 < iters) {   /* no hand-back after the last tile: no arrival left over */
                        if (lane == 0) bulk_wait_read<1>();   /* consumer 0's region read */
                        __syncwarp();
                        named_barrier_arrive<160>(WSB_DQ_EMPTY);
                        if (lane == 0) bulk_wait_read<0>();
                        __syncwarp();
                        named_barrier_arrive<160>(WSB_DQ_EMPTY + 1);
                    }
                    m0 += BM;
                    if (++k == nm) {
                        k = 0;
                        m0 = m_first;
                        ++h;
                    }
                }
                if (lane == 0) bulk_wait<0>();   /* the reduce-adds are done before the CTA exits */
                return;
            }
        }
        if (warp != 0) return;
        int itg = 0, nu = 0;   /* tiles and (non-empty) units so far */
        for (int round = 0;; ++round) {
            const int un = unit_of(round);
            if (un >= u_end) break;
            if (PERSIST) {
                wk = bwd_unit_planned<BN>(p, un);
                if (wk.iters == 0) continue;
            }
            const int hk = wk.hk, b = wk.b, n0 = wk.n0;
            /* K and V: at once, or (PERSIST, later units) after the first tile's Q and dO,
             * once the consumers' last dQ of the unit before has read K */
            auto load_kv = [&]() {
                mbar_arrive_tx(barKV, 2 * BN * D * 2);
#pragma unroll
                for (int a = 0; a < D / 64; ++a) {
                    tma_load_4d(sK + a * BN * 64, &tk, barKV, a * 64, n0, hk, b);
                    tma_load_4d(sV + a * BN * 64, &tv, barKV, a * 64, n0, hk, b);
                }
            };
            if (lane == 0 && nu == 0) load_kv();
            int h = hk * wk.group, mt = wk.mt_first;   /* q_tile(it), stepped (no divisions) */
            for (int it = 0; it < wk.iters; ++it, ++itg) {
                const int st = itg % S;
                const uint32_t ph = (itg / S) & 1;
                const int m0 = mt * BM;
                int4 g = make_int4(0, 0, 0, 0);   /* PERSIST: the tile's group range, read before the wait */
                if (PERSIST && lane == 0) g = p.mask_groups[(int64_t)b * ((p.q_len + BM - 1) / BM) + mt];
                mbar_wait_parity(empty + st, ph ^ 1);
                if (lane == 0) {
                    mbar_expect_tx_only(full + st, 2 * BM * D * 2);
#pragma unroll
                    for (int a = 0; a < D / 64; ++a) {
                        tma_load_4d(sQ + st * BM * D + a * BM * 64, &tq, full + st, a * 64, m0, h, b);
                        tma_load_4d(sdO + st * BM * D + a * BM * 64, &tdo, full + st, a * 64, m0, h, b);
                    }
                    if (PERSIST) {
                        sMsk[st] = usp_tile_masked(usp_key_range{g.x, g.y, g.z, g.w}, n0, n0 + BN);
                        if (it == 0 && nu > 0) {
                            mbar_wait_parity(kvEmpty, (nu - 1) & 1);
                            load_kv();
                        }
                    }
                }
                const int64_t lrow = b * p.lse_sb + h * p.lse_sh + p.q_begin;
                const int64_t drow = b * p.dl_sb + h * p.dl_sh + p.q_begin;
#pragma unroll
                for (int u = 0; u < BM / 32; ++u) {
                    const int i = lane + 32 * u, r = m0 + i;
                    const bool ok = r < p.q_len;
                    const float lv = ok ? p.lse[lrow + r] : -INFINITY;
                    /* +inf gives P = 0: rows past the end, rows that saw no key */
                    sL[st * BM + i] = lv != -INFINITY ? lv * USP_LOG2E : INFINITY;
                    sDl[st * BM + i] = ok ? p.delta[drow + r] : 0.0f;
                    if (MREL) {   /* clipped as usp_row_keys clips; rows past the block: none */
                        const usp_key_interval iv = row_keys(p, b, r);
                        sLo[st * BM + i] = rel_keys(iv, n0);
                    } else if (p.mask_lo) {   /* rows past the block: [0, 0), no key */
                        sLo[st * BM + i] = ok ? p.mask_lo[(int64_t)b * p.q_len + r] : 0;
                        sHi[st * BM + i] = ok ? p.mask_hi[(int64_t)b * p.q_len + r] : 0;
                    }
                }
                mbar_arrive1(full + st);
                if (++mt == wk.mt_first + wk.nm) {
                    mt = wk.mt_first;
                    ++h;
                }
            }
            ++nu;
        }
        return;
    }

    /* consumers */
    regs_inc<PERSIST ? 224 : 240>();
    WsbProf pf{};
    if constexpr (PROF) pf.v[WBP_CYC] = clock64();
    const int c = wgi - 1;
    const int key_row = c * 64 + warp * 16 + (lane >> 2);   /* tile key of e>>1 = 0 */
    const bool warp_lead = lane == 0, wg_lead = (threadIdx.x & 127) == 0;
    float *rq = sdQ + c * WSB_BM * 64;   /* this warpgroup's dQ staging region */
    const T *sKc = sK + c * 64 * 64, *sVc = sV + c * 64 * 64;

    int itg = 0, nu = 0;   /* tiles and (non-empty) units so far */
    for (int round = 0;; ++round) {
        const int un = unit_of(round);
        if (un >= u_end) break;
        if (PERSIST) {
            wk = bwd_unit_planned<BN>(p, un);
            if (wk.iters == 0) continue;
        }
        const int hk = wk.hk, b = wk.b, n0 = wk.n0;
        float dv[ND], dk[ND];
#pragma unroll
        for (int i = 0; i < ND; ++i) dv[i] = dk[i] = 0.0f;
        mbar_wait_parity(barKV, nu & 1);

        if constexpr (LATE_DK) {
            /* dQ by reduce-adds, per tile dV's products, the 256-thread barrier, dQ's, then dK's,
             * so that the dQ staging runs while dK's products are on the tensor cores; P^T by
             * wsb_probs_rows (no branch per element). BM = 128 at D = 64 and BM = 64 at
             * D = 128, each the default without per-row masks (LATE_DK 1); =wsxv at D = 128:
             * LATE_DK 2, dV's products issued as soon as P^T is packed, before waiting for
             * dP^T; =wsxq, =wsxvq: LATE_DK 3, 4, the same two loops with the reduce-adds
             * issued by the dQ writer warp (DQW): consumer c waits only for the writer's
             * hand-back of its staging region (named barrier WSB_DQ_EMPTY + c, arrived once
             * the reduce-adds of the tile before have read it) and arrives, without waiting, at
             * WSB_DQ_FULL + c once it has staged (v11's loop: a wait for the reduce-adds'
             * reads in its lead thread and two 128-thread barriers a tile around the staging).
             * At BM = 64 P^T is packed while dP^T runs, as in v7's loop. (Waiting for
             * dK only in the next tile, after its S^T products were issued, made ptxas
             * serialize the wgmmas at D = 64: not enough registers with dK's accumulators and
             * A fragments live across iterations.) */
            constexpr bool EARLY_DV = LATE_DK == 2 || LATE_DK == 4;
            static_assert(!EARLY_DV || PACK, "dV before dP^T: P^T packed under dP^T (BM = 64)");
            const int dq_col0 = D == 128 ? 64 * c : 0;   /* this warpgroup's dQ columns */
            /* D = 64 with 64-row tiles (USP_GPU_BWD_MASK=x64): each warpgroup the tile's whole dQ
             * over its own 64 keys (k-steps 4c..4c+3), both reduce-added (a branch around the dQ
             * products, one warpgroup a tile as v7's loop, made ptxas serialize the wgmmas,
             * C7520) */
            constexpr bool KSPLIT = D == 64 && BM == 64;
            constexpr int KQ = KSPLIT ? BN / 32 : BN / 16;
            const int kq0 = KSPLIT ? 4 * c : 0;
            for (int it = 0; it < wk.iters; ++it) {
                const int st = it % S;
                const uint32_t ph = (it / S) & 1;
                int h, m0;
                q_tile(it, h, m0);
                const T *cQ = sQ + st * BM * D, *cdO = sdO + st * BM * D;
                T *cdS = sdS + (it & 1) * BN * BM;
                if (MREL && p.kv_pref && it == max(wk.iters - 2, 0)) {
                    /* =xp: the epilogue's dK/dV rows into L2 two tiles before it: thread t of
                     * a row quad its 128-byte line t of the rows key_row, key_row + 8 */
                    const int t = lane & 3;
                    if (t < D / 32)
#pragma unroll
                        for (int hf = 0; hf < 2; ++hf) {
                            const int r = n0 + key_row + 8 * hf;
                            if (r < p.kv_len) {
                                const int64_t rk = (int64_t)(p.kv_begin + r);
                                asm volatile("prefetch.global.L2 [%0];" ::"l"(
                                    p.dk + b * p.dk_sb + rk * p.dk_sl + hk * p.dk_sh + 32 * t));
                                asm volatile("prefetch.global.L2 [%0];" ::"l"(
                                    p.dv + b * p.dv_sb + rk * p.dv_sl + hk * p.dv_sh + 32 * t));
                            }
                        }
                }
                long long pc = 0;   /* PROF: the clock before the wait, then at the stage's landing */
                if constexpr (PROF) pc = clock64();
                mbar_wait_parity(full + st, ph);
                if constexpr (PROF) {
                    const long long now = clock64();
                    if (it == 0 && nu == 0) pf.v[WBP_PRO] = now - pf.v[WBP_CYC];
                    else pf.v[WBP_WFULL] += now - pc;
                    pc = now;
                }

                float s[BM / 2], dp[BM / 2];
                wg_arrive();
#pragma unroll
                for (int kc = 0; kc < D / 16; ++kc)
                    wsb_ss<T, BM>(s, wg_desc_k<BN>(sKc, kc), wg_desc_k<BM>(cQ, kc), kc > 0);
                wg_commit();
                wg_arrive();
#pragma unroll
                for (int kc = 0; kc < D / 16; ++kc)
                    wsb_ss<T, BM>(dp, wg_desc_k<BN>(sVc, kc), wg_desc_k<BM>(cdO, kc), kc > 0);
                wg_commit();

                const bool masked = bwd_tile_masked<BM, BN>(p, tile_flags, n0, m0 / BM);
                uint32_t pa[BM / 16][4], da[BM / 16][4];
                wg_wait<1>();
                wg_fence_regs(s);
                /* masked tiles: MREL (per-row masks) by the rows' relative intervals, else the
                 * causal diagonal by usp_row_keys */
                constexpr int MK = MREL ? WSB_REL : WSB_CAUSAL;
                const int *rel = sLo + st * BM;
                if constexpr (PACK) {
                    if (masked)
                        wsb_probs_rows_pack<T, BM, MK>(p, s, sL + st * BM, rel, key_row, n0, m0, pa);
                    else
                        wsb_probs_rows_pack<T, BM, WSB_UNMASKED>(p, s, sL + st * BM, rel, key_row, n0, m0, pa);
                } else if (masked) {
                    wsb_probs_rows<BM, MK>(p, s, sL + st * BM, rel, key_row, n0, m0);
                } else {
                    wsb_probs_rows<BM, WSB_UNMASKED>(p, s, sL + st * BM, rel, key_row, n0, m0);
                }
                if constexpr (EARLY_DV) {   /* =wsxv: dV's products under dP^T and dS^T */
                    wg_fence_regs(dv);
                    wg_arrive();
#pragma unroll
                    for (int kk = 0; kk < BM / 16; ++kk) rs_mma<T, D>::mma(dv, pa[kk], wg_desc_mn<BM>(cdO, kk));
                    wg_commit();
                    wg_wait<1>();   /* dP^T landed; dV's products go on */
                } else {
                    wg_wait<0>();
                }
                wg_fence_regs(dp);
                /* cdS was last read by the dQ products of tile it - 2, which both warpgroups
                 * waited for before barrier 1 of tile it - 1 */
                wsb_dscores<T, BM, !PACK>(s, dp, sDl + st * BM, cdS, key_row, pa, da);

                wg_fence_regs(dk);
                if constexpr (!EARLY_DV) {
                    wg_fence_regs(dv);
                    wg_arrive();
#pragma unroll
                    for (int kk = 0; kk < BM / 16; ++kk) rs_mma<T, D>::mma(dv, pa[kk], wg_desc_mn<BM>(cdO, kk));
                    wg_commit();
                }
                fence_async_smem();   /* dS^T stores -> the dQ wgmma */
                long long pb = 0;
                if constexpr (PROF) pb = clock64();
                named_barrier<256>(1);
                if constexpr (PROF) pf.v[WBP_WB1] += clock64() - pb;
                /* dQ over all 128 keys: D = 64, BM = 128 rows 64c.. (dS^T's column atom c);
                 * D = 128 columns 64c.. (K's column atom c); D = 64, BM = 64 (KSPLIT) the whole
                 * tile over keys 64c.. */
                float dq[32];
                wg_arrive();
#pragma unroll
                for (int kk = 0; kk < KQ; ++kk)
                    wg<T>::template ss64<1, 1>(dq, wg_desc_mn<BN>(cdS + (BM == 128 ? c : 0) * BN * 64, kq0 + kk),
                                               wg_desc_mn<BN>(sK + (D == 128 ? c : 0) * BN * 64, kq0 + kk), kk > 0);
                wg_commit();
#pragma unroll
                for (int kk = 0; kk < BM / 16; ++kk) rs_mma<T, D>::mma(dk, da[kk], wg_desc_mn<BM>(cQ, kk));
                wg_commit();
                if constexpr (DQW) {   /* the dQ writer warp issues the reduce-adds */
                    if constexpr (PROF) pb = clock64();
                    if (it > 0) named_barrier<160>(WSB_DQ_EMPTY + c);   /* it has read tile it - 1's dQ */
                    if constexpr (PROF) pf.v[WBP_WDQ] += clock64() - pb;
                } else {
                    if (wg_lead) bulk_wait_read<0>();   /* the last reduce-adds have read the staging region */
                    named_barrier<128>(2 + c);
                }
                wg_wait<1>();   /* dV, dQ done; dK on the tensor cores */
                wg_fence_regs(dq);
                wsb_stage_dq(dq, rq, warp, p.scale);
                fence_async_smem();
                if constexpr (DQW) {
                    named_barrier_arrive<160>(WSB_DQ_FULL + c);
                } else {
                    named_barrier<128>(2 + c);
                    if (wg_lead) {
                        const int dq_row0 = m0 + (BM == 128 ? 64 * c : 0);
                        tma_reduce_add_4d(&tdq, rq, dq_col0, dq_row0, h, b);
                        tma_reduce_add_4d(&tdq, rq + WSB_BM * 32, dq_col0 + 32, dq_row0, h, b);
                        bulk_commit();
                    }
                }
                wg_wait<0>();
                wg_fence_regs(dv);
                wg_fence_regs(dk);
                if (warp_lead) mbar_arrive1(empty + st);   /* Q, dO, LSE, DELTA of this stage read */
                if constexpr (PROF) {
                    ++pf.v[WBP_TILES];
                    if (masked) {
                        ++pf.v[WBP_MTILES];
                        pf.v[WBP_MCYC] += clock64() - pc;
                    }
                }
            }
        }
        /* the loop of every other variant (none under LATE_DK) */
        const int iters = LATE_DK ? 0 : wk.iters;
        for (int it = 0; it < iters; ++it, ++itg) {
            const int st = itg % S;
            const uint32_t ph = (itg / S) & 1;
            int h, m0;
            q_tile(it, h, m0);
            const T *cQ = sQ + st * BM * D, *cdO = sdO + st * BM * D;
            T *cdS = sdS + (itg & 1) * BN * BM;
            mbar_wait_parity(full + st, ph);

            float s[BM / 2], dp[BM / 2];
            wg_arrive();
#pragma unroll
            for (int kc = 0; kc < D / 16; ++kc)
                wsb_ss<T, BM>(s, wg_desc_k<BN>(sKc, kc), wg_desc_k<BM>(cQ, kc), kc > 0);
            wg_commit();
#pragma unroll
            for (int kc = 0; kc < D / 16; ++kc)
                wsb_ss<T, BM>(dp, wg_desc_k<BN>(sVc, kc), wg_desc_k<BM>(cdO, kc), kc > 0);
            wg_commit();

            const bool masked = PERSIST ? sMsk[st] != 0 : bwd_tile_masked<BM, BN>(p, tile_flags, n0, m0 / BM);
            uint32_t pa[BM / 16][4], da[BM / 16][4];
            wg_wait<1>();
            wg_fence_regs(s);
            wsb_probs<T, BM, PACK, MREL>(p, s, sL + st * BM, sLo + st * BM, sHi + st * BM, key_row, n0, m0, masked, pa);
            wg_wait<0>();
            wg_fence_regs(dp);
            /* cdS was last read by the dQ products of tile it - 2, which both
             * warpgroups finished before barrier 1 of tile it - 1 */
            wsb_dscores<T, BM, !PACK>(s, dp, sDl + st * BM, cdS, key_row, pa, da);

            wg_fence_regs(dv);
            wg_fence_regs(dk);
            wg_arrive();
#pragma unroll
            for (int kk = 0; kk < BM / 16; ++kk) rs_mma<T, D>::mma(dv, pa[kk], wg_desc_mn<BM>(cdO, kk));
#pragma unroll
            for (int kk = 0; kk < BM / 16; ++kk) rs_mma<T, D>::mma(dk, da[kk], wg_desc_mn<BM>(cQ, kk));
            wg_commit();

            fence_async_smem();   /* dS^T stores -> the dQ wgmma */
            named_barrier<256>(1);

            /* D = 128: columns 64c.. of every tile; D = 64: the whole tile every other
             * tile (BM = 64), rows 64c.. of every tile (BM = 128) */
            const bool mine = D == 128 || BM == 128 || (itg & 1) == c;
            const int dq_row0 = m0 + (BM == 128 ? 64 * c : 0);   /* first dQ row of this warpgroup */
            float dq[32];
            if (mine) {
                wg_arrive();
#pragma unroll
                for (int kk = 0; kk < BN / 16; ++kk)
                    wg<T>::template ss64<1, 1>(dq, wg_desc_mn<BN>(cdS + (BM == 128 ? c : 0) * BN * 64, kk),
                                               wg_desc_mn<BN>(sK + (D == 128 ? c : 0) * BN * 64, kk), kk > 0);
                wg_commit();
            }
            wg_wait<0>();
            wg_fence_regs(dv);
            wg_fence_regs(dk);
            if (warp_lead) {
                mbar_arrive1(empty + st);   /* Q, dO, LSE, DELTA of this stage read */
                if (PERSIST && it == wk.iters - 1) mbar_arrive1(kvEmpty);   /* and K, V of the unit */
            }
            if (mine && !DQ_TMA) {   /* USP_GPU_BWD=wsa: 8-byte atomics from the registers, for timing */
                wg_fence_regs(dq);
                float *gdq = p.dq + b * p.dq_sb + (int64_t)p.q_begin * p.dq_sl + h * p.dq_sh;
                const int t = lane & 3, col0 = D == 128 ? c * 64 : 0;
#pragma unroll
                for (int hf = 0; hf < 2; ++hf) {
                    const int r = dq_row0 + warp * 16 + (lane >> 2) + hf * 8;
                    if (r >= p.q_len) continue;
                    float *row = gdq + (int64_t)r * p.dq_sl + col0 + 2 * t;
#pragma unroll
                    for (int j = 0; j < 8; ++j)
                        atomicAdd(reinterpret_cast<float2 *>(row + 8 * j),
                                  make_float2(dq[4 * j + 2 * hf] * p.scale, dq[4 * j + 2 * hf + 1] * p.scale));
                }
            }
            if (mine && DQ_TMA) {
                wg_fence_regs(dq);
                if (wg_lead) bulk_wait_read<0>();   /* the last reduce has read the region */
                named_barrier<128>(2 + c);
                wsb_stage_dq(dq, rq, warp, p.scale);
                fence_async_smem();
                named_barrier<128>(2 + c);
                if (wg_lead) {
                    const int col0 = D == 128 ? c * 64 : 0;
                    tma_reduce_add_4d(&tdq, rq, col0, dq_row0, h, b);
                    tma_reduce_add_4d(&tdq, rq + WSB_BM * 32, col0 + 32, dq_row0, h, b);
                    bulk_commit();
                }
            }
        }

        const int krow = n0 + key_row;
        float *gdk = p.dk + b * p.dk_sb + (int64_t)p.kv_begin * p.dk_sl + hk * p.dk_sh;
        float *gdv = p.dv + b * p.dv_sb + (int64_t)p.kv_begin * p.dv_sl + hk * p.dv_sh;
        long long pe = 0;
        if constexpr (PROF) pe = clock64();
        if (p.kv_red) {
            wg_add_kv<D, true>(dk, gdk, p.dk_sl, krow, p.kv_len, p.scale);
            wg_add_kv<D, true>(dv, gdv, p.dv_sl, krow, p.kv_len, 1.0f);
        } else {
            wg_add_kv<D>(dk, gdk, p.dk_sl, krow, p.kv_len, p.scale);
            wg_add_kv<D>(dv, gdv, p.dv_sl, krow, p.kv_len, 1.0f);
        }
        if constexpr (PROF) pf.v[WBP_EPI] += clock64() - pe;
        ++nu;
    }
    if (DQ_TMA && wg_lead) bulk_wait<0>();
    wsb_prof_exit<PROF>(pf, c);
}

/* USP_GPU_BWD_PROF=1: after a PROF kernel (nctas CTAs) launched on st after event ev0
 * (recorded before the mask plan), waits for it and prints on stderr one line: the call's
 * time and the kernel's span (the difference is the plan kernel and the launches), how the
 * SMs' time was spent, and consumer warpgroup 0's cycles a CTA: its prologue, a tile
 * (unmasked, masked), its dK/dV epilogue, and its waits in the loop. */
void wsb_prof_report(const char *kind, int nctas, cudaEvent_t ev0, cudaStream_t st) {
    ProfCall c;
    if (!prof_collect(g_wsb_prof, WBP_WORDS, nctas, WSB_PROF_CTAS, ev0, st, "bwd", &c)) return;
    const std::vector<double> &sum = c.sum;
    const ProfSmTime &t = c.t;
    const double cyc = sum[WBP_CYC], tiles = sum[WBP_TILES], mt = sum[WBP_MTILES];
    const double loop = cyc - sum[WBP_PRO] - sum[WBP_EPI];   /* the tiles, waits included */
    fprintf(stderr,
            "PHASES bwd %s ctas %d sms %d tiles %.0f masked %.0f | call %.1f us, kernel %.1f us | SM time: CTAs %.1f%%, "
            "idle before the first %.1f%%, after the last %.1f%%, between %.1f%% | consumer 0 a CTA: %.0f cycles, "
            "prologue %.0f, epilogue %.0f; a tile %.0f cycles (unmasked %.0f, masked %.0f); waits in the loop: "
            "stage %.1f%%, barrier 1 %.1f%%, dQ hand-back %.1f%% of all cycles\n",
            kind, c.n, t.sms, tiles, mt, c.call_ms * 1e3, t.span_ns * 1e-3, t.busy, t.head, t.tail, t.between,
            cyc / c.seen, sum[WBP_PRO] / c.seen, sum[WBP_EPI] / c.seen, tiles > 0 ? loop / tiles : 0.0,
            tiles > mt ? (loop - sum[WBP_MCYC]) / (tiles - mt) : 0.0, mt > 0 ? sum[WBP_MCYC] / mt : 0.0,
            100.0 * sum[WBP_WFULL] / cyc, 100.0 * sum[WBP_WB1] / cyc, 100.0 * sum[WBP_WDQ] / cyc);
}

template <typename T, int D, int BM>
int wsb_launch(const UspBwdParams &p, usp_dtype in, cudaStream_t st, char *why, size_t why_len) {
    CUtensorMap tq, tk, tv, tdo, tdq;
    const T *q0 = static_cast<const T *>(p.q) + (int64_t)p.q_begin * p.q_sl;
    const T *k0 = static_cast<const T *>(p.k) + (int64_t)p.kv_begin * p.k_sl;
    const T *v0 = static_cast<const T *>(p.v) + (int64_t)p.kv_begin * p.v_sl;
    const T *d0 = static_cast<const T *>(p.dout) + (int64_t)p.q_begin * p.do_sl;
    float *dq0 = p.dq + (int64_t)p.q_begin * p.dq_sl;
    bool ok = tma_map_4d(&tq, q0, in, D, p.q_len, p.h, p.b, p.q_sl, p.q_sh, p.q_sb, BM) &&
              tma_map_4d(&tdo, d0, in, D, p.q_len, p.h, p.b, p.do_sl, p.do_sh, p.do_sb, BM) &&
              tma_map_4d(&tk, k0, in, D, p.kv_len, p.hkv, p.b, p.k_sl, p.k_sh, p.k_sb, WSB_BN) &&
              tma_map_4d(&tv, v0, in, D, p.kv_len, p.hkv, p.b, p.v_sl, p.v_sh, p.v_sb, WSB_BN) &&
              tma_map_4d(&tdq, dq0, USP_F32, D, p.q_len, p.h, p.b, p.dq_sl, p.dq_sh, p.dq_sb, WSB_BM);
    if (!ok) {
        if (usp_ws_bwd_enabled() >= 2) {   /* USP_GPU_BWD=ws: this kernel or a failure */
            snprintf(why, why_len, "attn_bwd_ws: cuTensorMapEncodeTiled refused the block's tensor maps");
            return USP_KERNEL_ECUDA;
        }
        return usp_wg_bwd_tiles(p, in, st, why, why_len);
    }
    constexpr int smem = wsb_smem_bytes<D, BM>();
    /* dQ by default: TMA reduce-adds at D = 128 and with 128-row tiles at D = 64, 8-byte
     * atomics from the registers with 64-row tiles at D = 64 (masked calls): the faster way at
     * each on an H100 (gpu/NOTES.md, v7 measured, v8). =wsa: atomics everywhere, =ws: reduce-adds
     * everywhere (64-row tiles); =ws128: 128-row tiles at D = 64 with atomics */
    int mode = usp_ws_bwd_enabled();
    if (D == 64 && mode >= 7) mode = 1;   /* =wsx, =wsxv, =wsxq, =wsxvq change D = 128 only */
    const bool atomics = mode == 3 || (D == 64 && (mode == 4 || ((mode == 1 || mode == 6) && BM == 64)));
    /* USP_GPU_BWD_PROF=1 (bf16, D = 128, the writer-warp defaults): the PROF instantiation
     * and a line of phases; ev0 marks the call's start, before the mask plan */
    constexpr bool prof_ok = std::is_same<T, __nv_bfloat16>::value && D == 128 && BM == 64;
    cudaEvent_t ev0 = nullptr;
    if (prof_ok && prof_env_on("USP_GPU_BWD_PROF") && cudaEventCreate(&ev0) == cudaSuccess)
        (void)cudaEventRecord(ev0, st);
    /* under a mask plan (maskplan.cu): a 1-d grid of key tiles by descending work */
    UspBwdParams q = p;
    UspPlanMem plan;
    int ctas = 0;
    if (BM == 64 || p.mask_lo) {   /* BM = 128 runs per-row masks (=x) on the plan's groups, two a tile */
        int rc = usp_mask_plan_bwd(q, WSB_BN, st, &plan, &ctas, why, why_len);
        if (rc != USP_KERNEL_OK) {
            if (ev0) (void)cudaEventDestroy(ev0);
            return rc;
        }
    }
    /* USP_GPU_BWD_MASK (usp_ws_bwd_mask_mode), with 64-row tiles and the default way of adding
     * dQ there (reduce-adds at D = 128, atomics at D = 64; other ways take elem): masked query
     * tiles on intervals relative to the key tile unless elem; persist, under a plan, one CTA
     * an SM over the plan's units (the next unit's K/V loaded under the dK/dV epilogue); red,
     * dK and dV by reductions */
    const int mm = BM == 64 && atomics == (D == 64) ? usp_ws_bwd_mask_mode() : 0;
    const bool mrel = mm & 1, persist = (mm & 2) && ctas > 0;
    q.kv_red = (mm & 4) != 0;
    q.kv_pref = (usp_ws_bwd_mask_mode() & 64) != 0;
    int nsm = 0;
    if (persist) {
        int dev = 0;
        USP_CUDA_TRY(cudaGetDevice(&dev));
        USP_CUDA_TRY(cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, dev));
    }
    auto kern = atomics ? bwd_ws_kernel<T, D, false, BM> : bwd_ws_kernel<T, D, true, BM>;
    if constexpr (BM == 128) {   /* by default and =ws64x: dK's products after dQ's, under the dQ
                                   * staging, P^T without a branch per element; =ws128r: v8's loop;
                                   * per-row masks (usp_ws_bwd sends them here only with
                                   * USP_GPU_BWD_MASK=x): that loop, masked tiles by rel_keys */
        if (mode == 1 || mode == 6) kern = bwd_ws_kernel<T, D, true, BM, 1>;
        if (p.mask_lo) kern = bwd_ws_kernel<T, D, true, BM, 1, true, false>;
    }
    if constexpr (BM == 64) {
        constexpr bool A = D != 64;   /* the default dQ way of 64-row tiles: DQ_TMA at D = 128 */
        if (mm)
            kern = mrel && persist ? bwd_ws_kernel<T, D, A, BM, false, true, true>
                   : mrel         ? bwd_ws_kernel<T, D, A, BM, false, true, false>
                   : persist      ? bwd_ws_kernel<T, D, A, BM, false, false, true>
                                  : kern;
        /* D = 64, per-row masks, USP_GPU_BWD_MASK=x64: the loop of D = 128's default on the
         * 64-row tiles (dK after dQ, masked tiles by rel_keys, unmasked ones without a test),
         * dQ by reduce-adds, each warpgroup the whole tile's over its own 64 keys */
        if constexpr (D == 64)
            if (p.mask_lo && (mm & 17) == 17 && !persist) kern = bwd_ws_kernel<T, D, true, BM, 1, true, false>;
    }
    if constexpr (D == 128) {   /* by default (and =wsxq): v9's loop on the 64-row tiles with the dQ
                                 * writer warp (v14, 1.07 / 1.14x v11's loop on an H100,
                                 * gpu/NOTES.md); =wsx: v11's loop (the lead thread adds dQ);
                                 * =wsxv, =wsxvq: wsx, wsxq with dV's products before dP^T is
                                 * waited for; =ws, =wsa: v7's loop; per-row masks: the same
                                 * loops (by default as =xv: dV early, with the writer warp
                                 * unless =wsx or =wsxv), masked tiles by rel_keys (a compare a
                                 * side), unmasked ones without a test; USP_GPU_BWD_MASK=rel
                                 * (or elem, persist) keeps v7's loop for them */
        const bool dqw = mode == 1 || mode == 9 || mode == 10;
        if (!persist && mode != 2 && mode != 3) {
            const bool early_dv = mode == 8 || mode == 10 || (p.mask_lo && (mm & 32));
            if (!p.mask_lo || (mm & 9) == 9 || (mm & 33) == 33) {
                if (p.mask_lo)
                    kern = early_dv ? (dqw ? bwd_ws_kernel<T, D, true, BM, 4, true, false>
                                           : bwd_ws_kernel<T, D, true, BM, 2, true, false>)
                                    : (dqw ? bwd_ws_kernel<T, D, true, BM, 3, true, false>
                                           : bwd_ws_kernel<T, D, true, BM, 1, true, false>);
                else
                    kern = early_dv ? (dqw ? bwd_ws_kernel<T, D, true, BM, 4> : bwd_ws_kernel<T, D, true, BM, 2>)
                                    : (dqw ? bwd_ws_kernel<T, D, true, BM, 3> : bwd_ws_kernel<T, D, true, BM, 1>);
            }
        }
    }
    const char *prof = nullptr;   /* USP_GPU_BWD_PROF: the kind of kernel whose phases are counted */
    if constexpr (prof_ok) {
        if (ev0 && kern == bwd_ws_kernel<T, D, true, BM, 3>) {
            kern = bwd_ws_kernel<T, D, true, BM, 3, false, false, true>;
            prof = "causal-or-full";
        } else if (ev0 && kern == bwd_ws_kernel<T, D, true, BM, 4, true, false>) {
            kern = bwd_ws_kernel<T, D, true, BM, 4, true, false, true>;
            prof = "per-row-masks";
        }
    }
    if (ev0 && !prof) {
        fprintf(stderr, "PHASES bwd: not counted (USP_GPU_BWD_PROF counts D = 128's default kernels, bf16)\n");
        (void)cudaEventDestroy(ev0);
        ev0 = nullptr;
    }
    USP_CUDA_TRY(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    dim3 grid = ctas ? dim3(persist && nsm > 0 && nsm < ctas ? nsm : ctas)
                     : dim3((p.kv_len + WSB_BN - 1) / WSB_BN, p.hkv, p.b);
    kern<<<grid, WSB_NTH, smem, st>>>(tq, tk, tv, tdo, tdq, q);
    cudaError_t e = cudaGetLastError();
    if (prof && e == cudaSuccess) wsb_prof_report(prof, (int)(grid.x * grid.y * grid.z), ev0, st);
    else if (ev0) (void)cudaEventDestroy(ev0);
    usp_mask_plan_release(&plan, st);
    if (e != cudaSuccess) {
        snprintf(why, why_len, "bwd_ws_kernel launch failed: %s", cudaGetErrorString(e));
        return USP_KERNEL_ECUDA;
    }
    return USP_KERNEL_OK;
}

} // namespace

int usp_ws_bwd(const UspBwdParams &p, usp_dtype in, cudaStream_t st, char *why, size_t why_len) {
    if (p.q_len <= 0 || p.kv_len <= 0) return USP_KERNEL_OK;
    /* 128-row query tiles at D = 64 where no per-row mask is given: by default and with
     * USP_GPU_BWD=ws64x (dQ by TMA reduce-adds, dK after dQ), =ws128 (atomics), =ws128r (v8's
     * loop); =ws, =wsa: 64-row tiles */
    const int mode = usp_ws_bwd_enabled();
    /* per-row masks at D = 64 with USP_GPU_BWD_MASK=x (and the default dQ way): 128-row tiles
     * too, in the ws64x loop with masked tiles by rel_keys */
    const bool xm = (mode == 1 || mode >= 6) && (usp_ws_bwd_mask_mode() & 9) == 9;
    const bool big = p.d == 64 && (mode == 1 || mode >= 4) && (!p.mask_lo || xm);   /* =wsx.. (7-10): as unset */
    if (in == USP_BF16)
        return p.d == 128 ? wsb_launch<__nv_bfloat16, 128, 64>(p, in, st, why, why_len)
               : big      ? wsb_launch<__nv_bfloat16, 64, 128>(p, in, st, why, why_len)
                          : wsb_launch<__nv_bfloat16, 64, 64>(p, in, st, why, why_len);
    return p.d == 128 ? wsb_launch<__half, 128, 64>(p, in, st, why, why_len)
           : big      ? wsb_launch<__half, 64, 128>(p, in, st, why, why_len)
                      : wsb_launch<__half, 64, 64>(p, in, st, why, why_len);
}

int usp_ws_bwd_mask_mode(void) {
    /* Bit 0 (the default): masked query tiles of the 64-row kernels test keys against
     * intervals relative to the key tile (written by the producer, clipped: one compare a
     * side); USP_GPU_BWD_MASK=elem clears it (usp_row_keys on the mask words per element, the
     * way before; 12-17% slower, gpu/NOTES.md). Words joined by ','
     * or '+' add: "persist" (2), under a mask plan a persistent grid (slower, measured);
     * "red" (4), dK and dV added by reductions. Read at each call (tools/bench-gpu --alt-env). */
    const char *e = getenv("USP_GPU_BWD_MASK");
    if (!e) return 33;   /* rel and xv: D = 128 per-row masks in the unmasked default's loop */
    /* "x" (8, a word of its own): per-row masks in the loops without a test per element of
     * unmasked tiles (dK after dQ: the 64-row loop of D = 128, the 128-row loop of D = 64);
     * with rel only (not with elem), and not with persist at D = 128 */
    /* "x64" (16): at D = 64 that loop on the 64-row tiles instead (x: on 128-row tiles);
     * "xv" (32): at D = 128 x with =wsxv's loop (dV's products issued before dP^T is waited for);
     * "xp" (64): with x, x64 or xv the CTA's dK/dV rows are prefetched into L2 two tiles
     * before the end (for the epilogue's loads) */
    int x = 0;
    for (const char *w = e; *w;) {
        const size_t n = strcspn(w, ",+");
        if (n == 1 && w[0] == 'x') x |= 8;
        if (n == 3 && !strncmp(w, "x64", 3)) x |= 16;
        if (n == 2 && !strncmp(w, "xv", 2)) x |= 32;
        if (n == 2 && !strncmp(w, "xp", 2)) x |= 64;
        w += n + (w[n] != 0);
    }
    return (strstr(e, "elem") ? 0 : 1) | (strstr(e, "persist") ? 2 : 0) | (strstr(e, "red") ? 4 : 0) | x;
}

int usp_ws_bwd_enabled(void) {
    /* unset: this kernel (1; D = 128: dQ by TMA reduce-adds issued by the dQ writer warp in
     * v9's loop, as =wsxq, per-row masks too (as =wsxvq, USP_GPU_BWD_MASK's default xv);
     * D = 64: 128-row query tiles with reduce-adds, or under per-row masks 64-row tiles with
     * atomics; the kernel of
     * attn_bwd_wg.cu if the driver refuses the tensor maps); USP_GPU_BWD=wg:
     * attn_bwd_wg.cu's kernel (0); =ws: this one with TMA reduce-adds, no fallback (2);
     * =wsa: this one with dQ atomics, no fallback (3). Read at each call (a getenv beside
     * a kernel launch), so that one process can time them all (tools/bench-gpu --alt-env). */
    const char *e = getenv("USP_GPU_BWD");
    if (e && !strcmp(e, "wg")) return 0;
    if (e && !strcmp(e, "ws")) return 2;
    if (e && !strcmp(e, "wsa")) return 3;   /* dQ by atomics from the registers instead of TMA reduce-adds */
    /* D = 64 with 128-row query tiles (both warpgroups add 64 dQ rows each every tile), dQ by
     * atomics (ws128) or TMA reduce-adds in v8's loop (ws128r, the default until ws64x); other
     * head dims as unset */
    if (e && !strcmp(e, "ws128")) return 4;
    if (e && !strcmp(e, "ws128r")) return 5;
    /* D = 64, 128-row tiles, reduce-adds, each warpgroup's dK products issued after its dQ
     * products so that they run under the dQ staging, P^T without a branch per element: the
     * default there (ws64x, as unset; ws128r gives v8's loop); other head dims and per-row
     * masks as unset */
    if (e && !strcmp(e, "ws64x")) return 6;
    /* D = 128: v9's loop on the 64-row tiles, P^T packed while dP^T runs, the consumers'
     * lead thread adding dQ (wsx, v11, the default before v15), and with dV's products issued
     * before waiting for dP^T (wsxv); D = 64 as unset */
    if (e && !strcmp(e, "wsx")) return 7;
    if (e && !strcmp(e, "wsxv")) return 8;
    /* D = 128: wsxq (9, as unset) and wsxvq (10): wsx, wsxv with dQ's reduce-adds issued by a warp of the
     * producer warpgroup, to which each consumer warpgroup hands its staged dQ by a named
     * barrier (arrive, no wait), as FlashAttention-3's backward does; D = 64 as unset */
    if (e && !strcmp(e, "wsxq")) return 9;
    if (e && !strcmp(e, "wsxvq")) return 10;
    return 1;
}
