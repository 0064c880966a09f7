/* attn_fwd_ws.cu: attention forward on Hopper with warp specialization
 * (sm_90a): a producer warp loading with the tensor copy engine (TMA) into a
 * shared-memory pipeline, two consumer warpgroups in ping-pong.
 *
 * One CTA of 3 warpgroups computes BM = 128 query rows of one head:
 *   warpgroup 0 (producer, 24 registers a thread after setmaxnreg): one thread
 *     loads Q once and then K and V tiles of BN = 128 keys into WS_STAGES
 *     stages, each load completing on a "full" mbarrier (transaction bytes);
 *     it waits on the stage's "empty" mbarrier before refilling it.
 *   warpgroups 1, 2 (consumers, 240 registers): 64 query rows each. Per tile
 *     n they issue S_n = Q K_n^T and O += P_{n-1} V_{n-1} together, then
 *     compute the softmax of S_n while P_{n-1} V_{n-1} still runs (overlap
 *     inside the warpgroup), and rescale O after it. The two warpgroups take
 *     turns at issuing their products (two named barriers), so that one's
 *     exponentials run while the other's products occupy the tensor cores.
 * Products as in attn_fwd_wg.cu: S is SS wgmma (Q, K K-major), O += P V is RS
 * with V read MN-major. Tiles land in the atom layout of wgcommon.cuh: TMA
 * boxes of 64 columns x rows with the 128-byte swizzle, 1024-byte aligned.
 *
 * The tensor maps cover the block only (rows q_begin .. q_begin + q_len,
 * kv_begin .. kv_begin + kv_len), so rows past its end load as zeros; masks
 * (usp/rowmask.h: key tiles of the union of the rows' intervals) are those of attn_fwd_wg.cu.
 *
 * Work units: without a mask plan a CTA computes one query tile (grid of query
 * tiles x heads x batch, heavy causal tiles first). With one (maskplan.cu: per-row
 * masks, or USP_GPU_MASK_PLAN=all) the grid is persistent, at most one CTA an SM,
 * and each CTA walks its share of the units (query tile, head) in the plan's order
 * of descending work (ws_unit). At D = 64 and 128 (fwd_ws_flow_kernel, the default)
 * with two Q buffers, the look-ups in a warp of their own, and the consumers' pipeline
 * running on from one unit into the next (no fill or drain between units).
 * USP_GPU_FWD_UNITS=static (and D = 256: fwd_ws_kernel): one Q buffer; the producer
 * loads the next unit's Q as soon as both consumers are past their last S = Q K^T of
 * the current one (mbarrier emptyQ) and runs on into its K/V tiles, so a unit's loads
 * overlap the end of the previous unit, and each unit fills and drains the consumers'
 * pipeline. The stages' phases count K/V tiles over all units of the CTA (both kernels).
 * USP_GPU_FWD_UNITS=fetch (opt-in; fwd_ws_kernel<..., FETCH>): the producer takes the
 * units from a counter in the plan's order instead and hands their descriptors to the
 * consumers through shared memory (not faster on an H100: gpu/NOTES.md).
 * USP_GPU_FWD_FLOW=... (opt-in, not yet run on a GPU; fwd_ws_flow_opt_kernel, the default
 * FLOW kernel's body with the WSF_* switches): inplan (no plan kernel: each CTA makes the
 * forward plan in shared memory, ws_inplan), hgN (heads in groups of N), pdl (launched as
 * the plan kernel's programmatic dependent), nap (the descriptor warp sleeps between polls).
 * USP_GPU_FWD_PROF=1 (bf16, D = 128): the PROF instantiations count each CTA's phases and
 * the launcher prints a line "PHASES ..." a call (ws_prof_report).
 *
 * Shared memory at D = 128: Q 32 KB + 2 stages x (K 32 KB + V 32 KB) = 160 KB
 * and the barriers; flow: Q 2 x 32 KB, 192 KB, and 4 units' descriptors (4.3 KB). */
#include "kernels.h"
#include "prof.cuh"
#include "tma.cuh"
#include "wgcommon.cuh"
#include <cuda.h>
#include <cudaTypedefs.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <type_traits>
#include <vector>

namespace {

using namespace uspk;

constexpr int WS_BM = 128;
constexpr int WS_NTH = 384;

/* Key tile and pipeline depth by head dim: at D = 256, O is 128 registers, so
 * 64-key tiles (S 32); Q 64 KB + 2 x (32 + 32) KB. */
template <int D> struct ws_cfg;
template <> struct ws_cfg<64> { static constexpr int BN = 128, STAGES = 3; };
template <> struct ws_cfg<128> { static constexpr int BN = 128, STAGES = 2; };
template <> struct ws_cfg<256> { static constexpr int BN = 64, STAGES = 2; };

/* Q, K and V stages, alignment, barriers (256 bytes), and for the fetched units the unit's
 * descriptors (WS_DESC ints) and rows' key intervals (WS_BM int2), two of each. */
constexpr int WS_DESC = 16;
template <int D>
constexpr int ws_smem_bytes() {
    return (WS_BM * D + 2 * ws_cfg<D>::STAGES * ws_cfg<D>::BN * D) * 2 + 1024 + 256 + 2 * (WS_DESC * 4 + WS_BM * 8);
}

/* S = Q K^T over one K tile: N = BN. */
template <typename T, int BN> struct ws_qk;
template <typename T> struct ws_qk<T, 128> {
    static __device__ __forceinline__ void mma(float (&s)[64], uint64_t da, uint64_t db, int acc) {
        wg<T>::template ss128<0, 0>(s, da, db, acc);
    }
};
template <typename T> struct ws_qk<T, 64> {
    static __device__ __forceinline__ void mma(float (&s)[32], uint64_t da, uint64_t db, int acc) {
        wg<T>::template ss64<0, 0>(s, da, db, acc);
    }
};

/* Scores that the mask hides become -inf (as wf_mask): riv[e>>1] is the key
 * interval of row r_base + (e>>1)*8 (usp/rowmask.h). */
template <int BN>
__device__ __forceinline__ void ws_mask(float (&s)[BN / 2], const usp_key_interval (&riv)[2], int n0) {
    const int t = threadIdx.x & 3;
#pragma unroll
    for (int j = 0; j < BN / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            int c = n0 + 8 * j + 2 * t + (e & 1);
            if (!usp_key_visible(riv[e >> 1], c)) s[4 * j + e] = -INFINITY;
        }
}

/* Online softmax of one tile: new maxima, P = exp(S - max) in place, row sums;
 * returns the correction factors of the previous O and l in corr. */
template <int BN>
__device__ __forceinline__ void ws_softmax(float (&s)[BN / 2], float (&mx)[2], float (&sum)[2], float (&corr)[2],
                                           float sl2) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
        float tmax = -INFINITY;
#pragma unroll
        for (int jj = 0; jj < BN / 8; ++jj) tmax = fmaxf(tmax, fmaxf(s[4 * jj + 2 * hf], s[4 * jj + 2 * hf + 1]));
        tmax = quad_max(tmax);
        float mnew = fmaxf(mx[hf], tmax);
        float mref = mnew == -INFINITY ? 0.0f : mnew * sl2;
        corr[hf] = exp2f(mx[hf] * sl2 - mref);
        mx[hf] = mnew;
        float acc = 0.0f;
#pragma unroll
        for (int jj = 0; jj < BN / 8; ++jj)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                float pv_ = exp2f(fmaf(s[4 * jj + 2 * hf + e], sl2, -mref));
                s[4 * jj + 2 * hf + e] = pv_;
                acc += pv_;
            }
        sum[hf] = acc;
    }
}

template <typename T, int BN>
__device__ __forceinline__ void ws_pack(const float (&s)[BN / 2], uint32_t (&pa)[BN / 16][4]) {
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
        pa[kk][0] = elem<T>::pack2(s[8 * kk + 0], s[8 * kk + 1]);
        pa[kk][1] = elem<T>::pack2(s[8 * kk + 2], s[8 * kk + 3]);
        pa[kk][2] = elem<T>::pack2(s[8 * kk + 4], s[8 * kk + 5]);
        pa[kk][3] = elem<T>::pack2(s[8 * kk + 6], s[8 * kk + 7]);
    }
}

/* ---- USP_GPU_FWD_PROF=1: per-CTA phase counters (measurement only) --------
 *
 * A PROF instantiation of a kernel (bf16 in and out, D = 128 only) records, per CTA,
 * %globaltimer at entry and at each consumer's last store, the SM, and consumer
 * warpgroup 0's clock64() cycles: in all, inside the turns n > 0 of its units (the
 * steady state), waiting there for K/V tiles (fullK/fullV) and for the other
 * consumer's turn (named barrier), up to its first S issued, and its units and tiles.
 * The launcher prints one line "PHASES ..." a call (ws_prof_report). The clock reads
 * slow the kernel a little: read proportions, not rates. The default kernels are the
 * PROF = false instantiations, which hold none of it. */
constexpr int WS_PROF_CTAS = 4096;
enum { WSP_G0 = PROF_G0, WSP_END0 = PROF_END0, WSP_END1 = PROF_END1, WSP_SM = PROF_SM, WSP_CYC = PROF_COUNTERS,
       WSP_LOOP, WSP_TURNS, WSP_WKV, WSP_WTURN, WSP_FIRST, WSP_UNITS, WSP_TILES, WSP_WORDS };
__device__ unsigned long long g_ws_prof[WS_PROF_CTAS * WSP_WORDS];

/* This CTA's record, or NULL past WS_PROF_CTAS. */
__device__ __forceinline__ unsigned long long *ws_prof_rec() { return prof_record(g_ws_prof, WSP_WORDS, WS_PROF_CTAS); }
/* A consumer thread's counters (PROF). */
struct WsProf {
    long long t0, loop, wkv, wturn, first;
    int turns, units, tiles;
};
/* Kernel entry (thread 0): the start time and the SM. */
template <bool PROF>
__device__ __forceinline__ void ws_prof_entry() {
    if constexpr (PROF) prof_entry(ws_prof_rec(), WSP_G0, WSP_SM);
}
/* A consumer's end: its time (thread 0 of each consumer warpgroup) and consumer 0's counters. */
template <bool PROF>
__device__ __forceinline__ void ws_prof_exit(const WsProf &pf, int c, bool signal) {
    if constexpr (PROF) {
        unsigned long long *r = ws_prof_rec();
        if (!signal || !r) return;
        r[WSP_END0 + c] = prof_gtime();
        if (c == 0) {
            r[WSP_CYC] = clock64() - pf.t0;
            r[WSP_LOOP] = pf.loop;
            r[WSP_TURNS] = pf.turns;
            r[WSP_WKV] = pf.wkv;
            r[WSP_WTURN] = pf.wturn;
            r[WSP_FIRST] = pf.first;
            r[WSP_UNITS] = pf.units;
            r[WSP_TILES] = pf.tiles;
        }
    }
}

/* One work unit of a CTA: query tile m0 of head h of batch b, and the key
 * tiles [jt0, jt0 + ntiles) of the union of its rows' intervals. */
struct WsUnit {
    int b, h, m0, jt0, ntiles;
    usp_key_range kr;
};

/* Unit j (0, 1, ...) of this CTA; false when it has no more.
 *   Planned (p.work_order, maskplan.cu; persistent grid of G CTAs): unit j of
 *     CTA c is linear index j*G + c (j even) or j*G + G-1-c (j odd) of the
 *     p.plan_items x heads units, item work_order[index / heads], head index %
 *     heads: the items by descending work, dealt out back and forth. The range
 *     comes from the plan's 64-row groups; no barrier, so producer and
 *     consumers call it apart.
 *   Unplanned: one unit a CTA from blockIdx (heavy causal tiles first); its
 *     range is reduced by the whole CTA (barriers), so unit 0 is asked for by
 *     every thread together. */
/* Unit `lin` of the planned units (p.work_order, maskplan.cu): item
 * work_order[lin / heads], head lin % heads; its key range from the plan's
 * 64-row groups (no row is read). */
template <int BM, int BN>
__device__ __forceinline__ void ws_unit_at(const UspFwdParams &p, int lin, WsUnit &u) {
    const int item = p.work_order[lin / p.h];
    const int nt = (p.q_len + BM - 1) / BM, ng = (p.q_len + USP_PLAN_GROUP - 1) / USP_PLAN_GROUP;
    u.h = lin % p.h;
    u.b = item / nt;
    u.m0 = (item % nt) * BM;
    u.kr = usp_key_range_none();
#pragma unroll
    for (int k = 0; k < BM / USP_PLAN_GROUP; ++k) {
        const int gi = u.m0 / USP_PLAN_GROUP + k;
        if (gi < ng) {
            const int4 g = p.mask_groups[u.b * ng + gi];
            u.kr = usp_key_range_merge(u.kr, usp_key_range{g.x, g.y, g.z, g.w});
        }
    }
    int jt1;
    usp_tile_range(u.kr, BN, &u.jt0, &jt1);
    u.ntiles = jt1 - u.jt0;
}

/* ws_unit_at for the FLOW kernel's switches: hg > 0 takes the units with heads in groups of hg
 * (group by group; in a group the items in the plan's order, its heads side by side), and
 * order / groups, when not NULL, replace p.work_order / p.mask_groups (the in-kernel plan). */
template <int BM, int BN>
__device__ __forceinline__ void ws_unit_at_sw(const UspFwdParams &p, int lin, WsUnit &u, int hg, const int *order,
                                              const int4 *groups) {
    int oi = lin / p.h;
    u.h = lin % p.h;
    if (hg > 0) {
        const int per = p.plan_items * hg, grp = lin / per, hn = min(hg, p.h - grp * hg), r = lin - grp * per;
        oi = r / hn;
        u.h = grp * hg + r % hn;
    }
    const int item = (order ? order : p.work_order)[oi];
    const int nt = (p.q_len + BM - 1) / BM, ng = (p.q_len + USP_PLAN_GROUP - 1) / USP_PLAN_GROUP;
    u.b = item / nt;
    u.m0 = (item % nt) * BM;
    u.kr = usp_key_range_none();
#pragma unroll
    for (int k = 0; k < BM / USP_PLAN_GROUP; ++k) {
        const int gi = u.m0 / USP_PLAN_GROUP + k;
        if (gi < ng) {
            const int4 g = (groups ? groups : p.mask_groups)[u.b * ng + gi];
            u.kr = usp_key_range_merge(u.kr, usp_key_range{g.x, g.y, g.z, g.w});
        }
    }
    int jt1;
    usp_tile_range(u.kr, BN, &u.jt0, &jt1);
    u.ntiles = jt1 - u.jt0;
}

/* Unit j (0, 1, ...) of this CTA; false when it has no more.
 *   Planned, dealt statically (every planned kernel; persistent grid of G
 *     CTAs): unit j of CTA c is linear index j*G + c (j even) or j*G + G-1-c
 *     (j odd) of the p.plan_items x heads units (ws_unit_at): the items by
 *     descending work, dealt out back and forth. No barrier, so producer and
 *     consumers call it apart.
 *   Unplanned: one unit a CTA from blockIdx (heavy causal tiles first); its
 *     range is reduced by the whole CTA (barriers), so unit 0 is asked for by
 *     every thread together. */
template <int BM, int BN>
__device__ __forceinline__ bool ws_unit(const UspFwdParams &p, int j, WsUnit &u, int *red) {
    if (p.work_order) {
        const int G = gridDim.x, c = blockIdx.x;   /* p.plan_items * p.h < 2^31 (maskplan.cu) */
        const int lin = j * G + ((j & 1) ? G - 1 - c : c);
        if (lin >= p.plan_items * p.h) return false;
        ws_unit_at<BM, BN>(p, lin, u);
        return true;
    }
    if (j > 0) return false;
    u.m0 = (gridDim.x - 1 - blockIdx.x) * BM;   /* heavy causal tiles first */
    u.h = blockIdx.y;
    u.b = blockIdx.z;
    u.kr = cta_key_range(p, u.b, u.m0, min(BM, p.q_len - u.m0), red);
    int jt1;
    usp_tile_range(u.kr, BN, &u.jt0, &jt1);
    u.ntiles = jt1 - u.jt0;
    return true;
}

/* Rows [r0, r0 + rows) of unit u see no key: O = 0, LSE = -inf; by nthr threads, this one tid. */
template <typename TO, int D>
__device__ void ws_write_empty_rows(const UspFwdParams &p, const WsUnit &u, int r0, int rows, int tid, int nthr) {
    for (int idx = tid; idx < rows * D; idx += nthr) {
        const int r = idx / D, col = idx % D;
        TO *o = static_cast<TO *>(p.o) + u.b * p.o_sb + (int64_t)(p.q_begin + r0 + r) * p.o_sl + u.h * p.o_sh;
        o[col] = TO(0.0f);
    }
    for (int r = tid; r < rows; r += nthr) p.lse[u.b * p.lse_sb + u.h * p.lse_sh + p.q_begin + r0 + r] = -INFINITY;
}

/* Rows of consumer warpgroup c's 64 that see no key: O = 0, LSE = -inf. */
template <typename TO, int D>
__device__ void ws_write_empty(const UspFwdParams &p, const WsUnit &u, int c) {
    const int r0 = u.m0 + c * 64;
    ws_write_empty_rows<TO, D>(p, u, r0, min(64, p.q_len - r0), threadIdx.x & 127, 128);
}

/* Stage and phase of the a-th K/V tile a CTA loads (counted over its units). */
template <int S>
__device__ __forceinline__ int ws_stage(int a) { return a % S; }
template <int S>
__device__ __forceinline__ uint32_t ws_phase(int a) { return (uint32_t)(a / S) & 1u; }

/* The loading thread's K and V of one tile (keys from `key` of KV head hk, batch b) into stage
 * st, each once the consumers have released the stage's previous tile (phase ph ^ 1). */
template <typename T, int D, int BN>
__device__ __forceinline__ void ws_load_kv(T *sK, T *sV, const CUtensorMap *tk, const CUtensorMap *tv,
                                           uint64_t *fullK, uint64_t *fullV, uint64_t *emptyK, uint64_t *emptyV,
                                           int st, uint32_t ph, int key, int hk, int b) {
    mbar_wait_parity(emptyK + st, ph ^ 1);
    mbar_arrive_tx(fullK + st, BN * D * 2);
#pragma unroll
    for (int c = 0; c < D / 64; ++c) tma_load_4d(sK + st * BN * D + c * BN * 64, tk, fullK + st, c * 64, key, hk, b);
    mbar_wait_parity(emptyV + st, ph ^ 1);
    mbar_arrive_tx(fullV + st, BN * D * 2);
#pragma unroll
    for (int c = 0; c < D / 64; ++c) tma_load_4d(sV + st * BN * D + c * BN * 64, tv, fullV + st, c * 64, key, hk, b);
}

/* Issues S = Q K^T of one tile (Q: the warpgroup's 64 rows at sQw; K: the stage at sKs) and commits it. */
template <typename T, int D, int BN>
__device__ __forceinline__ void ws_issue_s(float (&s)[BN / 2], const T *sQw, const T *sKs) {
    wg_arrive();
#pragma unroll
    for (int kc = 0; kc < D / 16; ++kc)
        ws_qk<T, BN>::mma(s, wg_desc_k<WS_BM>(sQw, kc), wg_desc_k<BN>(sKs, kc), kc > 0);
    wg_commit();
}

/* Issues O += P V of one tile (V: the stage at sVs) and commits it; the caller has arrived. */
template <typename T, int D, int BN>
__device__ __forceinline__ void ws_issue_pv(float (&o)[D / 2], const uint32_t (&pa)[BN / 16][4], const T *sVs) {
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk)
        rs_mma<T, D>::mma(o, pa[kk], wg_desc_mn<BN>(sVs, kk));
    wg_commit();
}

/* l and O scaled by the correction of the new maxima, l += the tile's row sums. */
template <int D>
__device__ __forceinline__ void ws_rescale(float (&o)[D / 2], float (&l)[2], const float (&corr)[2],
                                           const float (&sum)[2]) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
        l[hf] = l[hf] * corr[hf] + sum[hf];
#pragma unroll
        for (int jj = 0; jj < D / 8; ++jj) {
            o[4 * jj + 2 * hf] *= corr[hf];
            o[4 * jj + 2 * hf + 1] *= corr[hf];
        }
    }
}

/* A unit's turn 0: S_0 alone (K/V tile a of the CTA, the unit's key tile jt0), released,
 * masked where the tile needs it, its softmax, l from its row sums and P_0 packed; emptyQ is
 * arrived at when it is the unit's only tile (nt == 1). */
template <typename T, int D, int BN, int S>
__device__ __forceinline__ void ws_turn_first(float (&s)[BN / 2], uint32_t (&pa)[BN / 16][4], float (&mx)[2],
                                              float (&l)[2], float (&sum)[2], float (&corr)[2], const T *sQw,
                                              const T *sK, uint64_t *fullK, uint64_t *emptyK, uint64_t *emptyQ,
                                              int a, int nt, int c, bool signal, const usp_key_range &kr,
                                              const usp_key_interval (&riv)[2], int jt0, float sl2) {
    const int st = ws_stage<S>(a);
    mbar_wait_parity(fullK + st, ws_phase<S>(a));
    named_barrier<256>(1 + c);
    ws_issue_s<T, D, BN>(s, sQw, sK + st * BN * D);
    named_barrier_arrive<256>(2 - c);
    wg_wait<0>();
    wg_fence_regs(s);
    if (signal) {
        mbar_arrive1(emptyK + st);
        if (nt == 1) mbar_arrive1(emptyQ);
    }
    if (usp_tile_masked(kr, jt0 * BN, jt0 * BN + BN)) ws_mask<BN>(s, riv, jt0 * BN);
    ws_softmax<BN>(s, mx, sum, corr, sl2);
    l[0] = sum[0];
    l[1] = sum[1];
    ws_pack<T, BN>(s, pa);
}

/* A unit's turn n > 0: S_n (K/V tile a + n of the CTA, the unit's key tile jt0 + n)
 * beside O += P_{n-1} V_{n-1} (tile a + n - 1), the stages released as their products
 * complete, S_n masked where the tile needs it and its softmax run under the P V, then O and
 * l rescaled and P_n packed; emptyQ is arrived at after the unit's last S (n == nlast). */
template <typename T, int D, int BN, int S, bool PROF = false>
__device__ __forceinline__ void ws_turn(float (&s)[BN / 2], float (&o)[D / 2], uint32_t (&pa)[BN / 16][4],
                                        float (&mx)[2], float (&l)[2], float (&sum)[2], float (&corr)[2],
                                        const T *sQw, const T *sK, const T *sV, uint64_t *fullK, uint64_t *fullV,
                                        uint64_t *emptyK, uint64_t *emptyV, uint64_t *emptyQ, int a, int n, int nlast,
                                        int c, bool signal, const usp_key_range &kr,
                                        const usp_key_interval (&riv)[2], int jt0, float sl2,
                                        WsProf *pf = nullptr) {
    const int st = ws_stage<S>(a + n), pst = ws_stage<S>(a + n - 1);
    long long c0 = 0, c1 = 0;
    if constexpr (PROF) c0 = clock64();
    mbar_wait_parity(fullK + st, ws_phase<S>(a + n));
    mbar_wait_parity(fullV + pst, ws_phase<S>(a + n - 1));
    if constexpr (PROF) c1 = clock64();
    named_barrier<256>(1 + c);
    if constexpr (PROF) {
        pf->wkv += c1 - c0;
        pf->wturn += clock64() - c1;
    }
    ws_issue_s<T, D, BN>(s, sQw, sK + st * BN * D);
    wg_fence_regs(o);
    ws_issue_pv<T, D, BN>(o, pa, sV + pst * BN * D);
    named_barrier_arrive<256>(2 - c);
    wg_wait<1>();
    wg_fence_regs(s);
    if (signal) {
        mbar_arrive1(emptyK + st);
        if (n == nlast) mbar_arrive1(emptyQ);
    }
    const int n0 = (jt0 + n) * BN;
    if (usp_tile_masked(kr, n0, n0 + BN)) ws_mask<BN>(s, riv, n0);
    ws_softmax<BN>(s, mx, sum, corr, sl2);
    wg_wait<0>();
    wg_fence_regs(o);
    if (signal) mbar_arrive1(emptyV + pst);
    ws_rescale<D>(o, l, corr, sum);
    ws_pack<T, BN>(s, pa);
}

/* Fields of the unit descriptor a fetching producer publishes in shared memory. */
enum { WSD_END, WSD_B, WSD_H, WSD_M0, WSD_JT0, WSD_NT, WSD_KR };

/* A unit's descriptor, all but WSD_END, as a publishing lane writes it into shared memory. */
__device__ __forceinline__ void ws_put_desc(int *d, const WsUnit &u) {
    d[WSD_B] = u.b;
    d[WSD_H] = u.h;
    d[WSD_M0] = u.m0;
    d[WSD_JT0] = u.jt0;
    d[WSD_NT] = u.ntiles;
    d[WSD_KR + 0] = u.kr.any_lo;
    d[WSD_KR + 1] = u.kr.any_hi;
    d[WSD_KR + 2] = u.kr.all_lo;
    d[WSD_KR + 3] = u.kr.all_hi;
}

/* FETCH (planned units only): warp 0 of the producer takes each next unit from
 * the call's counter (p.unit_next: units in the plan's order of descending
 * work, handed to whichever CTA asks first), and publishes its descriptor and
 * its 128 rows' key intervals in shared memory with the Q tile (barQ, 32
 * arrivals and the Q bytes), after both consumers are past their last S of the
 * previous unit (emptyQ); an END descriptor ends the CTA. The consumers read
 * no global memory between units, and consumer 1 hands the first turn of the
 * next unit to consumer 0 right after issuing its own last product (it arrives
 * on barrier 1 once at the start and after each unit's last turn; consumer 0
 * consumes the last arrival at END), so one unit's epilogue runs under the
 * next unit's first products. Without FETCH: the units of ws_unit. */
template <typename T, typename TO, int D, bool FETCH, bool PROF = false>
__global__ void __launch_bounds__(WS_NTH, 1)
    fwd_ws_kernel(const __grid_constant__ CUtensorMap tq, const __grid_constant__ CUtensorMap tk,
                  const __grid_constant__ CUtensorMap tv, const UspFwdParams p) {
    constexpr int BM = WS_BM, BN = ws_cfg<D>::BN, S = ws_cfg<D>::STAGES, ND = D / 2;
    ws_prof_entry<PROF>();
    extern __shared__ unsigned char smem_raw[];
    T *sQ = reinterpret_cast<T *>(align1024(smem_raw));   /* BM x D */
    T *sK = sQ + BM * D;                                    /* S x BN x D */
    T *sV = sK + S * BN * D;                                /* S x BN x D */
    uint64_t *bars = reinterpret_cast<uint64_t *>(sV + S * BN * D);
    uint64_t *barQ = bars, *emptyQ = bars + 1, *fullK = bars + 2, *fullV = fullK + S, *emptyK = fullV + S,
             *emptyV = emptyK + S;
    int *sDesc = reinterpret_cast<int *>(bars + 32);             /* 2 x WS_DESC ints (FETCH) */
    int2 *sRiv = reinterpret_cast<int2 *>(sDesc + 2 * WS_DESC);   /* 2 x BM rows' [lo, hi) (FETCH) */

    const int wgi = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
    __shared__ int red[4];
    WsUnit u0{};
    if constexpr (!FETCH) {
        if (!ws_unit<BM, BN>(p, 0, u0, red)) return;   /* every thread alike */
    }
    if (threadIdx.x == 0) {
        mbar_init(barQ, FETCH ? 32 : 1);
        mbar_init(emptyQ, 2);   /* one thread of each consumer warpgroup, after its unit's last S */
        for (int s = 0; s < S; ++s) {
            mbar_init(fullK + s, 1);
            mbar_init(fullV + s, 1);
            mbar_init(emptyK + s, 2);   /* one thread of each consumer warpgroup */
            mbar_init(emptyV + s, 2);
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    if (wgi == 0) {   /* producer: Q of each unit once its predecessor's last S is done, K/V through the stages */
        regs_dec<24>();
        if constexpr (FETCH) {
            if (warp != 0) return;
            const int units = p.plan_items * p.h;
            /* takes the next unit and writes its descriptor and rows' intervals into buffer k */
            auto fetch = [&](int k) {
                int lin = 0;
                if (lane == 0) lin = atomicAdd(p.unit_next, 1);
                lin = __shfl_sync(0xffffffffu, lin, 0);
                const bool more = lin < units;
                WsUnit u;
                u.b = u.h = u.m0 = u.jt0 = u.ntiles = 0;
                u.kr = usp_key_range_none();
                if (more) ws_unit_at<BM, BN>(p, lin, u);
                int *d = sDesc + k * WS_DESC;
                if (lane == 0) {
                    d[WSD_END] = !more;
                    ws_put_desc(d, u);
                }
                if (u.ntiles > 0)
                    for (int i = lane; i < BM; i += 32) {
                        const usp_key_interval iv = row_keys(p, u.b, u.m0 + i);
                        sRiv[k * BM + i] = make_int2(iv.lo, iv.hi);
                    }
                __syncwarp();
            };
            int a = 0;
            auto load_kv = [&](const int *d, int n) {   /* lane 0: K/V tile n of the unit of descriptor d */
                const int st = ws_stage<S>(a), b = d[WSD_B], hk = d[WSD_H] / (p.h / p.hkv);
                const uint32_t ph = ws_phase<S>(a);
                const int key = (d[WSD_JT0] + n) * BN;
                ws_load_kv<T, D, BN>(sK, sV, &tk, &tv, fullK, fullV, emptyK, emptyV, st, ph, key, hk, b);
                ++a;
            };
            fetch(0);
            for (int qi = 0;; ++qi) {
                /* buffer qi & 1 holds this unit (written by these lanes, published by their arrivals);
                 * buffer (qi + 1) & 1 was last read at the start of unit qi - 1, before emptyQ below */
                const int *d = sDesc + (qi & 1) * WS_DESC;
                const bool more = !d[WSD_END];
                const int nt = d[WSD_NT];
                mbar_wait_parity(emptyQ, (qi & 1) ^ 1);   /* the consumers are past the last S of unit qi - 1 */
                if (lane == 0 && nt > 0) {
                    mbar_arrive_tx(barQ, BM * D * 2);
#pragma unroll
                    for (int c = 0; c < D / 64; ++c)
                        tma_load_4d(sQ + c * BM * 64, &tq, barQ, c * 64, d[WSD_M0], d[WSD_H], d[WSD_B]);
                } else {
                    mbar_arrive1(barQ);
                }
                if (!more) break;
                if (lane == 0 && nt > 0) load_kv(d, 0);
                __syncwarp();
                fetch((qi + 1) & 1);   /* the next unit's lookups under this unit's tiles */
                if (lane == 0)
                    for (int n = 1; n < nt; ++n) load_kv(d, n);
                __syncwarp();
            }
            return;
        }
        if (threadIdx.x == 0) {
            int a = 0, qi = 0;
            WsUnit u = u0;
            for (int j = 0;;) {
                if (u.ntiles > 0) {
                    const int hk = u.h / (p.h / p.hkv);
                    mbar_wait_parity(emptyQ, (qi & 1) ^ 1);
                    mbar_arrive_tx(barQ, BM * D * 2);
#pragma unroll
                    for (int c = 0; c < D / 64; ++c) tma_load_4d(sQ + c * BM * 64, &tq, barQ, c * 64, u.m0, u.h, u.b);
                    for (int n = 0; n < u.ntiles; ++n, ++a) {
                        const int st = ws_stage<S>(a);
                        const uint32_t ph = ws_phase<S>(a);
                        const int key = (u.jt0 + n) * BN;
                        ws_load_kv<T, D, BN>(sK, sV, &tk, &tv, fullK, fullV, emptyK, emptyV, st, ph, key, hk, u.b);
                    }
                    ++qi;
                }
                if (!ws_unit<BM, BN>(p, ++j, u, nullptr)) break;
            }
        }
        return;
    }

    /* consumers */
    regs_inc<240>();
    const int c = wgi - 1;
    const bool signal = (threadIdx.x & 127) == 0;   /* releases stages for its warpgroup */
    const float sl2 = p.scale * USP_LOG2E;
    const T *sQw = sQ + c * 64 * 64;
    int a = 0, qi = 0;   /* K/V tiles and Q tiles (FETCH: published units) consumed so far */
    WsProf pf{};
    if constexpr (PROF) pf.t0 = clock64();
    WsUnit u = u0;
    const int2 *rvp = sRiv;   /* FETCH: the current unit's rows' intervals */
    if (FETCH && c == 1) named_barrier_arrive<256>(1);   /* consumer 0 takes the first turn */
    for (int j = 0;;) {
        if constexpr (FETCH) {
            mbar_wait_parity(barQ, qi & 1);
            const int *d = sDesc + (qi & 1) * WS_DESC;
            const int2 *rv = sRiv + (qi & 1) * BM;
            ++qi;
            if (d[WSD_END]) {
                if (c == 0) named_barrier<256>(1);   /* consumer 1's last hand-over */
                break;
            }
            u.b = d[WSD_B];
            u.h = d[WSD_H];
            u.m0 = d[WSD_M0];
            u.jt0 = d[WSD_JT0];
            u.ntiles = d[WSD_NT];
            u.kr = usp_key_range{d[WSD_KR], d[WSD_KR + 1], d[WSD_KR + 2], d[WSD_KR + 3]};
            rvp = rv;
            if (u.ntiles <= 0) {
                asm volatile("bar.sync %0, 128;\n" ::"r"(3 + c) : "memory");   /* the warpgroup read it */
                if (signal) mbar_arrive1(emptyQ);
            }
        }
        if (u.ntiles <= 0) {
            ws_write_empty<TO, D>(p, u, c);
        } else {
            const int ntiles = u.ntiles, jt0 = u.jt0;
            const int r_base = u.m0 + c * 64 + warp * 16 + (lane >> 2);
            float o[ND];
#pragma unroll
            for (int i = 0; i < ND; ++i) o[i] = 0.0f;
            float mx[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, sum[2], corr[2];
            uint32_t pa[BN / 16][4];
            float s[BN / 2];
            usp_key_interval riv[2];
            if constexpr (FETCH) {
                const int2 r0 = rvp[r_base - u.m0], r1 = rvp[r_base - u.m0 + 8];
                riv[0] = usp_key_interval{r0.x, r0.y};
                riv[1] = usp_key_interval{r1.x, r1.y};
            } else {
                riv[0] = row_keys(p, u.b, r_base);
                riv[1] = row_keys(p, u.b, r_base + 8);
            }

            if constexpr (!FETCH) {
                if (c == 1) named_barrier_arrive<256>(1);   /* consumer 0 takes the first turn */
                mbar_wait_parity(barQ, qi & 1);
            }

            /* turn 0: S_0 */
            ws_turn_first<T, D, BN, S>(s, pa, mx, l, sum, corr, sQw, sK, fullK, emptyK, emptyQ, a, ntiles, c, signal,
                                       u.kr, riv, jt0, sl2);
            long long l0 = 0;
            if constexpr (PROF) {
                l0 = clock64();
                if (pf.units == 0) pf.first = l0 - pf.t0;
            }

            for (int n = 1; n < ntiles; ++n)
                ws_turn<T, D, BN, S, PROF>(s, o, pa, mx, l, sum, corr, sQw, sK, sV, fullK, fullV, emptyK, emptyV,
                                           emptyQ, a, n, ntiles - 1, c, signal, u.kr, riv, jt0, sl2, &pf);
            if constexpr (PROF) {
                pf.loop += clock64() - l0;
                pf.turns += ntiles - 1;
                ++pf.units;
                pf.tiles += ntiles;
            }

            /* last turn: O += P V of the last tile */
            {
                const int pst = ws_stage<S>(a + ntiles - 1);
                mbar_wait_parity(fullV + pst, ws_phase<S>(a + ntiles - 1));
                named_barrier<256>(1 + c);
                wg_fence_regs(o);
                wg_arrive();
                ws_issue_pv<T, D, BN>(o, pa, sV + pst * BN * D);
                if (c == 0)
                    named_barrier_arrive<256>(2);   /* consumer 1's last turn; consumer 0 has none left */
                else if (FETCH)
                    named_barrier_arrive<256>(1);   /* consumer 0's first turn of its next unit */
                wg_wait<0>();
                wg_fence_regs(o);
                if (signal) mbar_arrive1(emptyV + pst);
            }

            wg_store_o<TO, D>(p, u.b, u.h, r_base, o, l, mx, sl2);
            a += ntiles;
            if constexpr (!FETCH) ++qi;
        }
        if constexpr (!FETCH) {
            if (!ws_unit<BM, BN>(p, ++j, u, nullptr)) break;
        }
    }
    ws_prof_exit<PROF>(pf, c, signal);
}

/* ---- FLOW: one pipeline over all the units of a CTA (planned, D <= 128: the default) ----
 *
 * Planned units only (dealt by CTA index as ws_unit), D = 64 and 128 (at D = 256 two Q
 * tiles and two K/V stages do not fit). Warps of the producer warpgroup:
 *   warp 1 (descriptors): walks the CTA's units, writes the rows of units that see no
 *     key itself (O = 0, LSE = -inf) and publishes every other unit in one of
 *     WS_NDESC shared-memory buffers (descriptor and its 128 rows' key intervals;
 *     fullD: 32 arrivals), then an END descriptor. A buffer is refilled once the 8
 *     consumer warps and the loading thread have read it (emptyD: 9 arrivals), so
 *     the look-ups run up to WS_NDESC units ahead and never sit in the loads' way;
 *   warp 0, lane 0 (loads): per published unit, its Q into Q buffer qi & 1 once both
 *     consumers are past their last S of unit qi - 2 (emptyQ[qi & 1]), then its K/V
 *     tiles through the stages, whose phases count K/V tiles over all units.
 * Consumers run one pipeline of turns over all units (strictly alternating with the
 * other consumer, as inside a unit): turn 0 of a unit's successor is the unit's last
 * turn, S_0 of the next unit (the other Q buffer) issued with the last P V; the next
 * unit's softmax of S_0 runs under that P V, then the unit's O is normalised and
 * stored with its LSE and the row state (O, m, l) restarts from S_0's. Only the
 * CTA's first and last units keep a turn of their own. */
constexpr int WS_NDESC = 4;

/* Run-time switches of the FLOW kernel (its last argument; USP_GPU_FWD_FLOW, ws_launch):
 *   WSF_NAP  the descriptor warp sleeps (__nanosleep) between its tests of a free buffer,
 *            so that its polling takes fewer issue slots of its scheduler (shared with two
 *            consumer warps);
 *   WSF_PDL  the kernel is launched as a programmatic dependent of the plan kernel (which
 *            lets its dependents start at once): its CTAs start and set up while the plan is
 *            made, and only the descriptor warp, the one reader of the plan, waits for it
 *            (griddepcontrol.wait). Everything the kernel reads besides the plan was written
 *            before the plan kernel started;
 *   WSF_INPLAN  no plan kernel: every CTA makes the plan's forward part itself in shared
 *            memory (ws_inplan) before its warps take their roles, and the descriptor warp
 *            reads it there (p.plan_items set by the launcher, p.work_order NULL);
 *   flags >> WSF_HG_SHIFT = hg > 0: the units in another order: heads in groups of hg, the
 *            units of a group (its heads x the items in the plan's order, heads side by side)
 *            before the next group's, so that the CTAs running side by side share fewer
 *            heads' K/V in L2 (item-major, the default, spreads a round over every head). */
enum { WSF_NAP = 1, WSF_PDL = 2, WSF_INPLAN = 4, WSF_HG_SHIFT = 8 };

/* mbar_wait with a sleep of 128 ns between failed tests. */
__device__ __forceinline__ void mbar_wait_nap(uint64_t *bar, uint32_t parity) {
    for (;;) {
        uint32_t ok;
        asm volatile(
            "{\n.reg .pred p;\n"
            "mbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\n"
            "selp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(ok)
            : "r"(smem_u32(bar)), "r"(parity)
            : "memory");
        if (ok) return;
        __nanosleep(128);
    }
}

template <int D>
constexpr int ws_flow_smem_bytes() {
    return (2 * WS_BM * D + 2 * ws_cfg<D>::STAGES * ws_cfg<D>::BN * D) * 2 + 1024 + 256 +
           WS_NDESC * (WS_DESC * 4 + WS_BM * 8);
}

/* A published unit as a consumer thread holds it: the unit and its two rows' intervals. */
struct WsFlowUnit {
    int end, b, h, m0, jt0, nt;
    usp_key_range kr;
    usp_key_interval riv[2];
};

/* Consumer thread's read of published unit k (rows rloc and rloc + 8 of its 128); lane 0 of
 * each warp releases the buffer once the warp has read it. */
__device__ __forceinline__ WsFlowUnit ws_flow_take(const int *sDesc, const int2 *sRiv, uint64_t *fullD,
                                                   uint64_t *emptyD, int k, int rloc) {
    const int kb = k % WS_NDESC;
    mbar_wait_parity(fullD + kb, (uint32_t)(k / WS_NDESC) & 1u);
    const int *d = sDesc + kb * WS_DESC;
    WsFlowUnit f;
    f.end = d[WSD_END];
    f.b = d[WSD_B];
    f.h = d[WSD_H];
    f.m0 = d[WSD_M0];
    f.jt0 = d[WSD_JT0];
    f.nt = d[WSD_NT];
    f.kr = usp_key_range{d[WSD_KR], d[WSD_KR + 1], d[WSD_KR + 2], d[WSD_KR + 3]};
    const int2 r0 = sRiv[kb * WS_BM + rloc], r1 = sRiv[kb * WS_BM + rloc + 8];
    f.riv[0] = usp_key_interval{r0.x, r0.y};
    f.riv[1] = usp_key_interval{r1.x, r1.y};
    __syncwarp();
    if ((threadIdx.x & 31) == 0) mbar_arrive1(emptyD + kb);
    return f;
}

/* Shared memory of the in-kernel plan (WSF_INPLAN): the 64-row groups' key ranges (int4),
 * then the items' work and their order (ints). */
__host__ __device__ constexpr size_t ws_inplan_bytes(int ngroups, int items) {
    return (size_t)ngroups * 16 + (size_t)items * 8;
}

/* WSF_INPLAN: what the plan kernel (maskplan.cu, forward) writes, made by all WS_NTH threads
 * of a CTA into shared memory: sG[B][ng] each 64-row group's key range (a warp a group, the
 * loads of WS_IPU groups issued together), sW[item] an item's key tiles (query tile of BM
 * rows: the union of its groups), sO the items by descending work, equal work in index
 * order (the plan kernel's stable counting sort, as a rank count: work < MP_BUCKETS there).
 * Barriers inside; the caller's __syncthreads publishes the last pass. */
constexpr int WS_IPU = 4;
template <int BM, int BN>
__device__ void ws_inplan(const UspFwdParams &p, int4 *sG, int *sW, int *sO) {
    constexpr int NW = WS_NTH / 32;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int ng = (p.q_len + USP_PLAN_GROUP - 1) / USP_PLAN_GROUP, items = p.plan_items;
    const int nt = (p.q_len + BM - 1) / BM;
    plan_group_ranges<NW, WS_IPU>(p.mask_lo, p.mask_hi, p.b, ng, p.q_len, p.kv_len, p.causal, p.diag, warp, lane,
                                  [&](int g, usp_key_range r) { sG[g] = range_int4(r); });
    __syncthreads();
    for (int it = tid; it < items; it += WS_NTH)
        sW[it] = plan_fwd_tile_work(sG, ng, it / nt, it % nt, BM / USP_PLAN_GROUP, BN);
    __syncthreads();
    for (int it = tid; it < items; it += WS_NTH) {
        const int w = sW[it];
        int rank = 0;
        for (int j = 0; j < items; ++j) {
            const int x = sW[j];
            rank += x > w || (x == w && j < it);
        }
        sO[rank] = it;
    }
}

/* The FLOW kernel's body: fwd_ws_flow_kernel (the default: OPT false, no switch, the code of
 * before the switches) and fwd_ws_flow_opt_kernel (OPT: the WSF_* switches of `flags`, and PROF). */
template <typename T, typename TO, int D, bool PROF, bool OPT>
__device__ __forceinline__ void ws_flow_body(const CUtensorMap &tq, const CUtensorMap &tk, const CUtensorMap &tv,
                                             const UspFwdParams &p, int flags) {
    if constexpr (!OPT) flags = 0;
    constexpr int BM = WS_BM, BN = ws_cfg<D>::BN, S = ws_cfg<D>::STAGES, ND = D / 2, NDS = WS_NDESC;
    ws_prof_entry<PROF>();
    static_assert(4 + 4 * S + 2 * NDS <= 32, "barriers fit their 256 bytes");
    extern __shared__ unsigned char smem_raw[];
    T *sQ = reinterpret_cast<T *>(align1024(smem_raw));   /* 2 x BM x D */
    T *sK = sQ + 2 * BM * D;                                /* S x BN x D */
    T *sV = sK + S * BN * D;                                /* S x BN x D */
    uint64_t *bars = reinterpret_cast<uint64_t *>(sV + S * BN * D);
    uint64_t *fullQ = bars, *emptyQ = bars + 2, *fullK = bars + 4, *fullV = fullK + S, *emptyK = fullV + S,
             *emptyV = emptyK + S, *fullD = emptyV + S, *emptyD = fullD + NDS;
    int *sDesc = reinterpret_cast<int *>(bars + 32);              /* NDS x WS_DESC ints */
    int2 *sRiv = reinterpret_cast<int2 *>(sDesc + NDS * WS_DESC);   /* NDS x BM rows' [lo, hi) */
    /* WSF_INPLAN: the plan's groups, work and order (ws_inplan_bytes) */
    int4 *sG = reinterpret_cast<int4 *>(sRiv + NDS * BM);
    const int ngt = p.b * ((p.q_len + USP_PLAN_GROUP - 1) / USP_PLAN_GROUP);
    int *sW = reinterpret_cast<int *>(sG + ngt), *sO = sW + p.plan_items;

    const int wgi = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
    if (flags & WSF_INPLAN) ws_inplan<BM, BN>(p, sG, sW, sO);
    if (threadIdx.x == 0) {
        for (int i = 0; i < 2; ++i) {
            mbar_init(fullQ + i, 1);
            mbar_init(emptyQ + i, 2);   /* one thread of each consumer warpgroup, after its unit's last S */
        }
        for (int s = 0; s < S; ++s) {
            mbar_init(fullK + s, 1);
            mbar_init(fullV + s, 1);
            mbar_init(emptyK + s, 2);
            mbar_init(emptyV + s, 2);
        }
        for (int i = 0; i < NDS; ++i) {
            mbar_init(fullD + i, 32);      /* the descriptor warp's lanes */
            mbar_init(emptyD + i, 8 + 1);   /* the consumer warps and the loading thread */
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    if (wgi == 0) {
        regs_dec<24>();
        if (warp == 1) {   /* descriptors */
            if (flags & WSF_PDL) asm volatile("griddepcontrol.wait;\n" ::: "memory");   /* the plan is written */
            for (int j = 0, k = 0;; ++j) {
                /* unit j of this CTA as ws_unit deals it (planned: the grid is persistent) */
                const int G = gridDim.x, lin = j * G + ((j & 1) ? G - 1 - (int)blockIdx.x : (int)blockIdx.x);
                const bool more = lin < p.plan_items * p.h;
                WsUnit u{};
                if (more) {
                    if constexpr (OPT) {
                        const bool in = flags & WSF_INPLAN;
                        ws_unit_at_sw<BM, BN>(p, lin, u, flags >> WSF_HG_SHIFT, in ? sO : nullptr, in ? sG : nullptr);
                    } else {
                        ws_unit_at<BM, BN>(p, lin, u);
                    }
                }
                if (more && u.ntiles <= 0) {
                    ws_write_empty_rows<TO, D>(p, u, u.m0, min(BM, p.q_len - u.m0), lane, 32);
                    continue;
                }
                const int kb = k % NDS;
                if (flags & WSF_NAP)
                    mbar_wait_nap(emptyD + kb, ((uint32_t)(k / NDS) & 1u) ^ 1u);
                else
                    mbar_wait_parity(emptyD + kb, ((uint32_t)(k / NDS) & 1u) ^ 1u);
                int *d = sDesc + kb * WS_DESC;
                if (lane == 0) {
                    d[WSD_END] = !more;
                    if (more) ws_put_desc(d, u);
                }
                if (more)
                    for (int i = lane; i < BM; i += 32) {
                        const usp_key_interval iv = row_keys(p, u.b, u.m0 + i);
                        sRiv[kb * BM + i] = make_int2(iv.lo, iv.hi);
                    }
                mbar_arrive1(fullD + kb);   /* releases this lane's writes */
                ++k;
                if (!more) break;
            }
        } else if (warp == 0 && lane == 0) {   /* loads */
            for (int k = 0, a = 0, qi = 0;; ++k, ++qi) {
                const int kb = k % NDS;
                mbar_wait_parity(fullD + kb, (uint32_t)(k / NDS) & 1u);
                const int *d = sDesc + kb * WS_DESC;
                const int end = d[WSD_END], b = d[WSD_B], h = d[WSD_H], m0 = d[WSD_M0], jt0 = d[WSD_JT0],
                          nt = d[WSD_NT];
                mbar_arrive1(emptyD + kb);
                if (end) break;
                const int qb = qi & 1, hk = h / (p.h / p.hkv);
                mbar_wait_parity(emptyQ + qb, ((uint32_t)(qi >> 1) & 1u) ^ 1u);
                mbar_arrive_tx(fullQ + qb, BM * D * 2);
#pragma unroll
                for (int c = 0; c < D / 64; ++c) tma_load_4d(sQ + qb * BM * D + c * BM * 64, &tq, fullQ + qb, c * 64, m0, h, b);
                for (int n = 0; n < nt; ++n, ++a) {
                    const int st = ws_stage<S>(a);
                    const uint32_t ph = ws_phase<S>(a);
                    const int key = (jt0 + n) * BN;
                    ws_load_kv<T, D, BN>(sK, sV, &tk, &tv, fullK, fullV, emptyK, emptyV, st, ph, key, hk, b);
                }
            }
        }
        return;
    }

    /* consumers */
    regs_inc<240>();
    const int c = wgi - 1;
    const bool signal = (threadIdx.x & 127) == 0;   /* releases stages for its warpgroup */
    const float sl2 = p.scale * USP_LOG2E;
    const int rloc = c * 64 + warp * 16 + (lane >> 2);   /* this thread's rows in a unit: rloc, rloc + 8 */
    int a = 0, qi = 0, k = 0;   /* K/V tiles of finished units, units started, descriptors read */
    WsProf pf{};
    if constexpr (PROF) pf.t0 = clock64();
    WsFlowUnit cu = ws_flow_take(sDesc, sRiv, fullD, emptyD, k++, rloc);
    if (cu.end) {
        ws_prof_exit<PROF>(pf, c, signal);
        return;
    }
    if (c == 1) named_barrier_arrive<256>(1);   /* consumer 0 takes the first turn */

    float o[ND];
#pragma unroll
    for (int i = 0; i < ND; ++i) o[i] = 0.0f;
    float mx[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, sum[2], corr[2];
    uint32_t pa[BN / 16][4];
    float s[BN / 2];

    /* the first unit's turn 0: S_0 */
    {
        mbar_wait_parity(fullQ, 0);
        ws_turn_first<T, D, BN, S>(s, pa, mx, l, sum, corr, sQ + c * 64 * 64, sK, fullK, emptyK, emptyQ, 0, cu.nt, c,
                                   signal, cu.kr, cu.riv, cu.jt0, sl2);
        if constexpr (PROF) pf.first = clock64() - pf.t0;
    }

    for (;;) {
        const int qb = qi & 1;
        const T *sQw = sQ + qb * BM * D + c * 64 * 64;
        long long l0 = 0;
        if constexpr (PROF) l0 = clock64();
        for (int n = 1; n < cu.nt; ++n)
            ws_turn<T, D, BN, S, PROF>(s, o, pa, mx, l, sum, corr, sQw, sK, sV, fullK, fullV, emptyK, emptyV,
                                       emptyQ + qb, a, n, cu.nt - 1, c, signal, cu.kr, cu.riv, cu.jt0, sl2, &pf);
        if constexpr (PROF) {
            pf.loop += clock64() - l0;
            pf.turns += cu.nt - 1;
            ++pf.units;
            pf.tiles += cu.nt;
        }

        const WsFlowUnit nx = ws_flow_take(sDesc, sRiv, fullD, emptyD, k++, rloc);
        const int pst = ws_stage<S>(a + cu.nt - 1);
        if (nx.end) {   /* the CTA's last turn: O += P V of the last tile */
            mbar_wait_parity(fullV + pst, ws_phase<S>(a + cu.nt - 1));
            named_barrier<256>(1 + c);
            wg_fence_regs(o);
            wg_arrive();
            ws_issue_pv<T, D, BN>(o, pa, sV + pst * BN * D);
            if (c == 0) named_barrier_arrive<256>(2);   /* consumer 1's last turn; consumer 0 has none left */
            wg_wait<0>();
            wg_fence_regs(o);
            if (signal) mbar_arrive1(emptyV + pst);
            wg_store_o<TO, D>(p, cu.b, cu.h, cu.m0 + rloc, o, l, mx, sl2);
            ws_prof_exit<PROF>(pf, c, signal);
            break;
        }

        /* S_0 of the next unit (the other Q buffer) beside the last P V of this one */
        const int st = ws_stage<S>(a + cu.nt), nqb = qb ^ 1;
        const T *sQn = sQ + nqb * BM * D + c * 64 * 64;
        mbar_wait_parity(fullQ + nqb, (uint32_t)((qi + 1) >> 1) & 1u);
        mbar_wait_parity(fullK + st, ws_phase<S>(a + cu.nt));
        mbar_wait_parity(fullV + pst, ws_phase<S>(a + cu.nt - 1));
        named_barrier<256>(1 + c);
        ws_issue_s<T, D, BN>(s, sQn, sK + st * BN * D);
        wg_fence_regs(o);
        ws_issue_pv<T, D, BN>(o, pa, sV + pst * BN * D);
        named_barrier_arrive<256>(2 - c);
        wg_wait<1>();
        wg_fence_regs(s);
        if (signal) {
            mbar_arrive1(emptyK + st);
            if (nx.nt == 1) mbar_arrive1(emptyQ + nqb);
        }
        if (usp_tile_masked(nx.kr, nx.jt0 * BN, nx.jt0 * BN + BN)) ws_mask<BN>(s, nx.riv, nx.jt0 * BN);
        float mx2[2] = {-INFINITY, -INFINITY};
        ws_softmax<BN>(s, mx2, sum, corr, sl2);
        wg_wait<0>();
        wg_fence_regs(o);
        if (signal) mbar_arrive1(emptyV + pst);
        wg_store_o<TO, D>(p, cu.b, cu.h, cu.m0 + rloc, o, l, mx, sl2);
#pragma unroll
        for (int i = 0; i < ND; ++i) o[i] = 0.0f;
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
            mx[hf] = mx2[hf];
            l[hf] = sum[hf];
        }
        ws_pack<T, BN>(s, pa);
        a += cu.nt;
        ++qi;
        cu = nx;
    }
}

template <typename T, typename TO, int D>
__global__ void __launch_bounds__(WS_NTH, 1)
    fwd_ws_flow_kernel(const __grid_constant__ CUtensorMap tq, const __grid_constant__ CUtensorMap tk,
                       const __grid_constant__ CUtensorMap tv, const UspFwdParams p) {
    ws_flow_body<T, TO, D, false, false>(tq, tk, tv, p, 0);
}

/* The FLOW kernel with the switches of USP_GPU_FWD_FLOW (flags) or USP_GPU_FWD_PROF (PROF). */
template <typename T, typename TO, int D, bool PROF>
__global__ void __launch_bounds__(WS_NTH, 1)
    fwd_ws_flow_opt_kernel(const __grid_constant__ CUtensorMap tq, const __grid_constant__ CUtensorMap tk,
                           const __grid_constant__ CUtensorMap tv, const UspFwdParams p, int flags) {
    ws_flow_body<T, TO, D, PROF, true>(tq, tk, tv, p, flags);
}

/* ---- host: settings, phase report, launch ---------------------------------- */

/* `word` is one of the comma-separated words of environment variable `name` (read at each
 * call, so that tools/bench-gpu --alt-env times settings side by side). */
bool env_word(const char *name, const char *word) {
    const char *e = getenv(name);
    const size_t n = strlen(word);
    for (const char *s = e; s && *s;) {
        const char *c = strchr(s, ',');
        const size_t len = c ? (size_t)(c - s) : strlen(s);
        if (len == n && !strncmp(s, word, n)) return true;
        s = c ? c + 1 : nullptr;
    }
    return false;
}

/* USP_GPU_FWD_PROF=1: after a PROF kernel (nctas CTAs) launched on st after event ev0
 * (recorded before the plan kernel), waits for it and prints on stderr one line: the call's
 * time and the kernel's span (the difference is the plan kernel and the launches), how the
 * SMs' time was spent (CTAs running; idle before an SM's first CTA, after its last, between
 * CTAs), and consumer warpgroup 0's cycles: a steady turn (n > 0), the rest of a unit (its
 * turn 0, last turn, the store and the hand-over), its first S, and its waits in steady turns.
 * Then the records are zeroed for the next call. */
void ws_prof_report(const char *kind, int flags, int nctas, cudaEvent_t ev0, cudaStream_t st) {
    ProfCall c;
    if (!prof_collect(g_ws_prof, WSP_WORDS, nctas, WS_PROF_CTAS, ev0, st, "fwd", &c)) return;
    const std::vector<double> &sum = c.sum;
    const ProfSmTime &t = c.t;
    const double cyc = sum[WSP_CYC], loop = sum[WSP_LOOP], turns = sum[WSP_TURNS], wkv = sum[WSP_WKV],
                 wturn = sum[WSP_WTURN], fst = sum[WSP_FIRST], units = sum[WSP_UNITS], tiles = sum[WSP_TILES];
    fprintf(stderr,
            "PHASES fwd %s%s%s%s%s ctas %d sms %d units %.0f tiles %.0f | call %.1f us, kernel %.1f us | SM time: CTAs %.1f%%, "
            "idle before the first %.1f%%, after the last %.1f%%, between %.1f%% | consumer 0 a CTA: %.0f cycles, "
            "first S at %.0f; a steady turn %.0f cycles (%.0f of %.0f tiles), the rest %.0f cycles a unit; "
            "steady turns' waits: K/V %.1f%%, turn %.1f%% of all cycles\n",
            kind, flags & WSF_NAP ? ",nap" : "", flags & WSF_PDL ? ",pdl" : "", flags >> WSF_HG_SHIFT ? ",hg" : "",
            flags & WSF_INPLAN ? ",inplan" : "", c.n, t.sms, units, tiles, c.call_ms * 1e3, t.span_ns * 1e-3, t.busy,
            t.head, t.tail, t.between, cyc / c.seen, fst / c.seen, turns > 0 ? loop / turns : 0.0, turns, tiles,
            units > 0 ? (cyc - loop) / units : 0.0, 100.0 * wkv / cyc, 100.0 * wturn / cyc);
}

template <typename T, typename TO, int D>
int ws_launch(const UspFwdParams &p, usp_dtype in, cudaStream_t st, char *why, size_t why_len) {
    CUtensorMap tq, tk, tv;
    const T *q0 = static_cast<const T *>(p.q) + (int64_t)p.q_begin * p.q_sl;
    const T *k0 = static_cast<const T *>(p.k) + (int64_t)p.kv_begin * p.k_sl;
    const T *v0 = static_cast<const T *>(p.v) + (int64_t)p.kv_begin * p.v_sl;
    if (p.kv_len <= 0) return usp_wg_fwd(p, in, sizeof(TO) == 4 ? USP_F32 : in, st, why, why_len);   /* O = 0 */
    bool ok = tma_map_4d(&tq, q0, in, D, p.q_len, p.h, p.b, p.q_sl, p.q_sh, p.q_sb, WS_BM) &&
              tma_map_4d(&tk, k0, in, D, p.kv_len, p.hkv, p.b, p.k_sl, p.k_sh, p.k_sb, ws_cfg<D>::BN) &&
              tma_map_4d(&tv, v0, in, D, p.kv_len, p.hkv, p.b, p.v_sl, p.v_sh, p.v_sb, ws_cfg<D>::BN);
    if (!ok) {
        if (usp_ws_fwd_enabled() == 2) {   /* USP_GPU_FWD=ws: this kernel or a failure */
            snprintf(why, why_len, "attn_fwd_ws: cuTensorMapEncodeTiled refused the block's tensor maps");
            return USP_KERNEL_ECUDA;
        }
        return usp_wg_fwd(p, in, sizeof(TO) == 4 ? USP_F32 : in, st, why, why_len);
    }
    constexpr int smem = ws_smem_bytes<D>();
    /* under a mask plan (maskplan.cu): a persistent grid over the query tiles by descending work,
     * dealt out back and forth by CTA index, one pipeline over a CTA's units at D <= 128
     * (USP_GPU_FWD_UNITS=static: a pipeline per unit); USP_GPU_FWD_UNITS=fetch: each CTA's
     * producer takes the next unit from the plan's counter instead (read at each call, for
     * timing them in one process; gpu/NOTES.md) */
    UspFwdParams q = p;
    UspPlanMem plan;
    int ctas = 0;
    cudaEvent_t ev0 = nullptr;   /* USP_GPU_FWD_PROF: the call's start, before the plan */
    if (prof_env_on("USP_GPU_FWD_PROF") && cudaEventCreate(&ev0) == cudaSuccess) (void)cudaEventRecord(ev0, st);
    (void)cudaGetLastError();
    constexpr int DF = D == 256 ? 128 : D;   /* FLOW kernels exist at D <= 128 */
    /* USP_GPU_FWD_FLOW=inplan (D <= 128): no plan kernel; the FLOW kernel's CTAs make the plan
     * in shared memory (WSF_INPLAN) when it fits there */
    size_t inplan_smem = 0;
    if (D <= 128 && env_word("USP_GPU_FWD_FLOW", "inplan") && !env_word("USP_GPU_FWD_UNITS", "static") &&
        !env_word("USP_GPU_FWD_UNITS", "fetch")) {
        int items = 0, c = 0, dev = 0, optin = 0;
        const int ngt = p.b * ((p.q_len + USP_PLAN_GROUP - 1) / USP_PLAN_GROUP);
        if (usp_mask_plan_fwd_shape(p, WS_BM, &items, &c) && cudaGetDevice(&dev) == cudaSuccess &&
            cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) == cudaSuccess &&
            ws_flow_smem_bytes<DF>() + ws_inplan_bytes(ngt, items) <= (size_t)optin) {
            inplan_smem = ws_inplan_bytes(ngt, items);
            q.plan_items = items;
            ctas = c;
        }
        (void)cudaGetLastError();
    }
    int rc = inplan_smem ? USP_KERNEL_OK : usp_mask_plan_fwd(q, WS_BM, ws_cfg<D>::BN, st, &plan, &ctas, why, why_len);
    if (rc != USP_KERNEL_OK) {
        if (ev0) (void)cudaEventDestroy(ev0);
        return rc;
    }
    const bool fetch = ctas && q.unit_next && env_word("USP_GPU_FWD_UNITS", "fetch");
    const bool flow = D <= 128 && ctas && !fetch && !env_word("USP_GPU_FWD_UNITS", "static");
    /* USP_GPU_FWD_UNITS=static,pad: the per-unit kernel given the FLOW kernel's shared memory
     * (the same L1 left), to time the two at equal shared memory */
    const bool pad = D <= 128 && !flow && env_word("USP_GPU_FWD_UNITS", "pad");
    int flags = 0;
    if (flow) {
        /* pdl depends on the plan kernel: none with inplan */
        flags = (env_word("USP_GPU_FWD_FLOW", "nap") ? WSF_NAP : 0) |
                (inplan_smem ? WSF_INPLAN : env_word("USP_GPU_FWD_FLOW", "pdl") ? WSF_PDL : 0);
        for (int hg : {1, 2, 4, 8}) {   /* USP_GPU_FWD_FLOW=hgN */
            char w[8];
            snprintf(w, sizeof w, "hg%d", hg);
            if (env_word("USP_GPU_FWD_FLOW", w) && hg < p.h) flags |= hg << WSF_HG_SHIFT;
        }
    }
    using Kern = void (*)(const CUtensorMap, const CUtensorMap, const CUtensorMap, const UspFwdParams);
    using KernF = void (*)(const CUtensorMap, const CUtensorMap, const CUtensorMap, const UspFwdParams, int);
    Kern kern = flow    ? fwd_ws_flow_kernel<T, TO, DF>
                : fetch ? fwd_ws_kernel<T, TO, D, true>
                        : fwd_ws_kernel<T, TO, D, false>;
    KernF kernf = flags ? fwd_ws_flow_opt_kernel<T, TO, DF, false> : nullptr;   /* FLOW with switches */
    /* USP_GPU_FWD_PROF=1 (bf16, D = 128): the PROF instantiation and a line of phases */
    constexpr bool prof_ok = std::is_same<T, __nv_bfloat16>::value && std::is_same<TO, T>::value && D == 128;
    bool prof = false;
    if constexpr (prof_ok) {
        prof = !fetch && prof_env_on("USP_GPU_FWD_PROF");
        if (prof && flow)
            kernf = fwd_ws_flow_opt_kernel<T, TO, DF, true>;
        else if (prof)
            kern = fwd_ws_kernel<T, TO, D, false, true>;
    }
    const int kern_smem = flow || pad ? ws_flow_smem_bytes<DF>() + (int)inplan_smem : smem;
    if (kernf)
        USP_CUDA_TRY(cudaFuncSetAttribute(kernf, cudaFuncAttributeMaxDynamicSharedMemorySize, kern_smem));
    else
        USP_CUDA_TRY(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, kern_smem));
    dim3 grid = ctas ? dim3(ctas) : dim3((p.q_len + WS_BM - 1) / WS_BM, p.h, p.b);
    cudaError_t e;
    if (flags & WSF_PDL) {   /* a programmatic dependent of the plan kernel */
        cudaLaunchConfig_t cfg = {};
        cfg.gridDim = grid;
        cfg.blockDim = dim3(WS_NTH);
        cfg.dynamicSmemBytes = kern_smem;
        cfg.stream = st;
        cudaLaunchAttribute at[1];
        at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at[0].val.programmaticStreamSerializationAllowed = 1;
        cfg.attrs = at;
        cfg.numAttrs = 1;
        e = cudaLaunchKernelEx(&cfg, kernf, tq, tk, tv, q, flags);
    } else if (kernf) {
        kernf<<<grid, WS_NTH, kern_smem, st>>>(tq, tk, tv, q, flags);
        e = cudaGetLastError();
    } else {
        kern<<<grid, WS_NTH, kern_smem, st>>>(tq, tk, tv, q);
        e = cudaGetLastError();
    }
    if (prof && e == cudaSuccess)
        ws_prof_report(flow ? "flow" : ctas ? (pad ? "static,pad" : "static") : "unplanned", flags,
                       (int)(grid.x * grid.y * grid.z), ev0, st);
    else if (ev0)
        (void)cudaEventDestroy(ev0);
    usp_mask_plan_release(&plan, st);
    if (e != cudaSuccess) {
        snprintf(why, why_len, "fwd_ws_kernel launch failed: %s", cudaGetErrorString(e));
        return USP_KERNEL_ECUDA;
    }
    return USP_KERNEL_OK;
}

template <typename T, typename TO>
int ws_by_d(const UspFwdParams &p, usp_dtype in, cudaStream_t st, char *why, size_t why_len) {
    if (p.d == 64) return ws_launch<T, TO, 64>(p, in, st, why, why_len);
    if (p.d == 256) return ws_launch<T, TO, 256>(p, in, st, why, why_len);
    return ws_launch<T, TO, 128>(p, in, st, why, why_len);
}

} // namespace

int usp_ws_fwd(const UspFwdParams &p, usp_dtype in, usp_dtype out, cudaStream_t st, char *why, size_t why_len) {
    if (p.q_len <= 0) return USP_KERNEL_OK;
    bool o32 = out == USP_F32;
    if (in == USP_BF16)
        return o32 ? ws_by_d<__nv_bfloat16, float>(p, in, st, why, why_len)
                   : ws_by_d<__nv_bfloat16, __nv_bfloat16>(p, in, st, why, why_len);
    return o32 ? ws_by_d<__half, float>(p, in, st, why, why_len) : ws_by_d<__half, __half>(p, in, st, why, why_len);
}

int usp_ws_fwd_enabled(void) {
    /* USP_GPU_FWD=wg: attn_fwd_wg.cu's kernel instead (0); =ws: this one, no
     * fallback (2); else this one with the fallback (1) */
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("USP_GPU_FWD");
        on = e && !strcmp(e, "wg") ? 0 : e && !strcmp(e, "ws") ? 2 : 1;
    }
    return on;
}
