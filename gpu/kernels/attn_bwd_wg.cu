/* attn_bwd_wg.cu: attention backward on Hopper's warpgroup MMA (wgmma, sm_90a).
 *
 * One CTA of 2 warpgroups owns BN = 128 keys of one K/V head (64 keys a
 * warpgroup); K and V stay in shared memory, dK and dV accumulate in
 * registers, and the CTA walks every query tile (BM = 64) of every query head
 * of its GQA group that can see its keys. Working transposed makes every
 * product a wgmma without moving P:
 *
 *   S^T  = K Q^T       (64 keys x BM)   SS, both K-major
 *   dP^T = V dO^T                        SS, both K-major
 *   P^T  = exp(scale S^T - LSE),  dS^T = P^T * (dP^T - DELTA)   registers
 *   dV  += P^T dO      (64 keys x D)    RS: P^T from registers, dO MN-major
 *   dK  += dS^T Q                        RS: dS^T from registers, Q MN-major
 *   dQ  += dS K        (BM x D)         SS: dS^T written to shared memory and
 *                                        read MN-major, K MN-major; fp32 atomics
 *
 * For D = 128 the two warpgroups split dQ's columns (64 each); for D = 64 they
 * split its keys, and the two partial dQ are summed in shared memory, each
 * warpgroup adding half the rows (wb_pair_dq).
 *
 * Masks (usp/rowmask.h): as attn_bwd.cu; under per-row masks each query
 * tile's intervals come with its LSE and DELTA into shared memory.
 *
 * Shared memory at D = 128: K, V 2 x 32 KB, Q, dO 2 x 2 x 16 KB, dS^T 16 KB,
 * LSE, DELTA and the intervals 2 KB: 146 KB, one CTA an SM. */
#include "kernels.h"
#include "wgcommon.cuh"
#include <math.h>

namespace {

using namespace uspk;

constexpr int WB_BM = 64;
constexpr int WB_BN = 128;
constexpr int WB_NTH = 256;

/* At D = 64 four warps hand their dQ fragments (32 floats a lane) to the
 * other warpgroup's warp of the same rows: 16 KB. */
constexpr int WB_DQ_XCH_FLOATS = 4 * 32 * 32;

template <int D>
constexpr int wb_smem_bytes() {
    return (2 * WB_BN * D + 4 * WB_BM * D + WB_BN * WB_BM) * 2 + 8 * WB_BM * 4 + 1024 +
           (D == 64 ? WB_DQ_XCH_FLOATS * 4 : 0);
}

/* 4-byte async copy (LSE, DELTA rows); src_bytes = 0 writes zero. */
__device__ __forceinline__ void cp_async4(void *dst, const void *src, int src_bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(src_bytes));
}

/* P^T of the thread's 32 elements, in place of S^T (fp32, kept for dS^T),
 * and packed as the A fragments of dV += P^T dO. Runs while the tensor cores
 * still compute dP^T. */
template <typename T>
__device__ __forceinline__ void wb_probs(const UspBwdParams &p, float (&s)[32], const float *lse, const int *mlo,
                                         const int *mhi, int key_row, int n0, int m0, bool masked,
                                         uint32_t (&pa)[4][4]) {
    const int t = threadIdx.x & 3;
    const float sl2 = p.scale * USP_LOG2E;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int q = 8 * j + 2 * t + (e & 1);   /* query in the tile */
            const int r = m0 + q;
            float x = bwd_prob(p, s[4 * j + e], lse[q], r, sl2);
            if (masked) {
                /* per-row arrays: the tile's copy in shared memory (zero past the rows) */
                usp_key_interval iv = p.mask_lo ? usp_row_keys(mlo, mhi, WB_BM, 0, q, p.kv_len, 0, 0)
                                                : usp_row_keys(NULL, NULL, 0, 0, r, p.kv_len, p.causal, p.diag);
                if (!usp_key_visible(iv, n0 + key_row + (e >> 1) * 8)) x = 0.0f;
            }
            s[4 * j + e] = x;
        }
        /* A fragments of k-step j/2: n8 block j is columns (2t, 2t+1) of half j&1 */
        const int kk = j >> 1, hi = (j & 1) * 2;
        pa[kk][hi] = elem<T>::pack2(s[4 * j], s[4 * j + 1]);
        pa[kk][hi + 1] = elem<T>::pack2(s[4 * j + 2], s[4 * j + 3]);
    }
}

/* dS^T = P^T * (dP^T - DELTA) of the thread's 32 elements, packed as the A
 * fragments of dK += dS^T Q and stored to shared memory (atom layout, rows =
 * keys, columns = queries) for dQ += dS K. */
template <typename T>
__device__ __forceinline__ void wb_dscores(const float (&pr)[32], const float (&dp)[32], const float *dl, T *sdS,
                                           int key_row, uint32_t (&da)[4][4]) {
    const int t = threadIdx.x & 3;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        float ds[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) ds[e] = pr[4 * j + e] * (dp[4 * j + e] - dl[8 * j + 2 * t + (e & 1)]);
        const int kk = j >> 1, hi = (j & 1) * 2;
        da[kk][hi] = elem<T>::pack2(ds[0], ds[1]);
        da[kk][hi + 1] = elem<T>::pack2(ds[2], ds[3]);
        *reinterpret_cast<uint32_t *>(sdS + wsw<WB_BN>(key_row, j) + 2 * t) = da[kk][hi];
        *reinterpret_cast<uint32_t *>(sdS + wsw<WB_BN>(key_row + 8, j) + 2 * t) = da[kk][hi + 1];
    }
}

/* dQ rows (row0, row0 + 8) of the warp's 64 columns from col0 += scale * acc,
 * with 8-byte atomics. Measured against other ways on an H200 (gpu/NOTES.md,
 * v2-v4): each warpgroup adding its own keys' dQ (twice the atomics, no CTA
 * barrier) ran a third slower; 16-byte atomics (half the operations) and
 * shared memory + bulk reductions by the copy engine (cp.reduce.async.bulk,
 * one operation a row) were 1-3% slower. */
__device__ __forceinline__ void wb_add_dq(const UspBwdParams &p, const float (&acc)[32], float *gdq, int row0,
                                          int col0) {
    const int t = threadIdx.x & 3;
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
        int r = row0 + hf * 8;
        if (r >= p.q_len) continue;
        float *row = gdq + (int64_t)r * p.dq_sl + col0 + 2 * t;
#pragma unroll
        for (int j = 0; j < 8; ++j)
            atomicAdd(reinterpret_cast<float2 *>(row + 8 * j),
                      make_float2(acc[4 * j + 2 * hf] * p.scale, acc[4 * j + 2 * hf + 1] * p.scale));
    }
}

/* D = 64: both warpgroups hold a dQ of all 64 columns for the same 64 rows,
 * each over its own 64 keys. Warp w of one warpgroup and warp w of the other
 * hold the same rows: rows 0-31 (warps 0, 1) are summed and added by
 * warpgroup 0, rows 32-63 by warpgroup 1, so each dQ element gets one atomic
 * add a tile instead of two. Returns whether this warp adds its (now summed)
 * fragment. `xch` is 16 KB of shared memory, free until the next tile. */
__device__ __forceinline__ bool wb_pair_dq(float (&acc)[32], float *xch, int wgi, int warp, int lane) {
    const bool keep = (wgi == 0) == (warp < 2);
    float *slot = xch + warp * 32 * 32 + lane;   /* [warp][register][lane]: no bank conflicts */
    if (!keep) {
#pragma unroll
        for (int i = 0; i < 32; ++i) slot[i * 32] = acc[i];
    }
    named_barrier<64>(1 + warp);   /* the two warps of rows 16*warp.. */
    if (keep) {
#pragma unroll
        for (int i = 0; i < 32; ++i) acc[i] += slot[i * 32];
    }
    return keep;
}

template <typename T, int D>
__global__ void __launch_bounds__(WB_NTH, 1) bwd_wg_kernel(const UspBwdParams p) {
    constexpr int BM = WB_BM, BN = WB_BN, ND = D / 2;
    extern __shared__ unsigned char smem_raw[];
    T *sK = reinterpret_cast<T *>(align1024(smem_raw));   /* BN x D */
    T *sV = sK + BN * D;                                    /* BN x D */
    T *sQ = sV + BN * D;                                    /* 2 x BM x D */
    T *sdO = sQ + 2 * BM * D;                               /* 2 x BM x D */
    T *sdS = sdO + 2 * BM * D;                              /* BN x BM: dS^T */
    float *sL = reinterpret_cast<float *>(sdS + BN * BM);   /* 2 x BM: LSE */
    float *sDl = sL + 2 * BM;                               /* 2 x BM: DELTA */
    int *sLo = reinterpret_cast<int *>(sDl + 2 * BM);       /* 2 x BM: mask_lo of the tile */
    int *sHi = sLo + 2 * BM;                                /* 2 x BM: mask_hi */
    float *sX = reinterpret_cast<float *>(sHi + 2 * BM);    /* D = 64: dQ exchange */

    __shared__ uint32_t tile_flags[BWD_FLAG_WORDS];
    __shared__ int red[2];
    const BwdWork wk = bwd_work<WB_BM, WB_BN>(p, blockIdx.z, tile_flags, red);
    if (wk.iters == 0) return;   /* no query sees these keys */
    const int hk = wk.hk, b = wk.b;
    const int wgi = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
    const int n0 = wk.n0;
    const int key_row = wgi * 64 + warp * 16 + (lane >> 2);   /* tile key of e>>1 = 0 */

    const T *gk = static_cast<const T *>(p.k) + b * p.k_sb + (int64_t)(p.kv_begin + n0) * p.k_sl + hk * p.k_sh;
    const T *gv = static_cast<const T *>(p.v) + b * p.v_sb + (int64_t)(p.kv_begin + n0) * p.v_sl + hk * p.v_sh;
    load_tile_wg<BN, D, WB_NTH>(sK, gk, p.k_sl, p.kv_len - n0);
    load_tile_wg<BN, D, WB_NTH>(sV, gv, p.v_sl, p.kv_len - n0);

    auto q_tile = [&](int it, int &h, int &m0) {
        h = hk * wk.group + it / wk.nm;
        m0 = (wk.mt_first + it % wk.nm) * BM;
    };
    auto prefetch = [&](int it, int stage) {
        int h, m0;
        q_tile(it, h, m0);
        const T *gq = static_cast<const T *>(p.q) + b * p.q_sb + (int64_t)(p.q_begin + m0) * p.q_sl + h * p.q_sh;
        const T *gd = static_cast<const T *>(p.dout) + b * p.do_sb + (int64_t)(p.q_begin + m0) * p.do_sl + h * p.do_sh;
        load_tile_wg<BM, D, WB_NTH>(sQ + stage * BM * D, gq, p.q_sl, p.q_len - m0);
        load_tile_wg<BM, D, WB_NTH>(sdO + stage * BM * D, gd, p.do_sl, p.q_len - m0);
        const int i = threadIdx.x & (BM - 1);
        const bool ok = m0 + i < p.q_len;
        if (threadIdx.x < BM) {
            const float *src = p.lse + b * p.lse_sb + h * p.lse_sh + p.q_begin + m0 + (ok ? i : 0);
            cp_async4(sL + stage * BM + i, src, ok ? 4 : 0);
        } else if (threadIdx.x < 2 * BM) {
            const float *src = p.delta + b * p.dl_sb + h * p.dl_sh + p.q_begin + m0 + (ok ? i : 0);
            cp_async4(sDl + stage * BM + i, src, ok ? 4 : 0);
        } else if (p.mask_lo) {   /* rows past the block: [0, 0), no key */
            const bool lo = threadIdx.x < 3 * BM;
            const int32_t *src = (lo ? p.mask_lo : p.mask_hi) + (int64_t)b * p.q_len + m0 + (ok ? i : 0);
            cp_async4((lo ? sLo : sHi) + stage * BM + i, src, ok ? 4 : 0);
        }
    };
    prefetch(0, 0);
    cp_async_commit();

    float dv[ND], dk[ND];
#pragma unroll
    for (int i = 0; i < ND; ++i) dv[i] = dk[i] = 0.0f;
    const T *sKw = sK + wgi * 64 * 64, *sVw = sV + wgi * 64 * 64;   /* this warpgroup's 64 keys */

    for (int it = 0; it < wk.iters; ++it) {
        const int stage = it & 1;
        cp_async_wait<0>();
        fence_async_smem();
        __syncthreads();   /* tile `it` landed; the other stage and dS^T are free */
        int h, m0;
        q_tile(it, h, m0);
        const T *cQ = sQ + stage * BM * D, *cdO = sdO + stage * BM * D;

        /* S^T and dP^T as two groups: the exponentials of P^T run while the
         * tensor cores compute dP^T; the next tile's loads are issued behind both */
        float s[32], dp[32];
        wg_arrive();
#pragma unroll
        for (int kc = 0; kc < D / 16; ++kc)
            wg<T>::template ss64<0, 0>(s, wg_desc_k<BN>(sKw, kc), wg_desc_k<BM>(cQ, kc), kc > 0);
        wg_commit();
#pragma unroll
        for (int kc = 0; kc < D / 16; ++kc)
            wg<T>::template ss64<0, 0>(dp, wg_desc_k<BN>(sVw, kc), wg_desc_k<BM>(cdO, kc), kc > 0);
        wg_commit();
        if (it + 1 < wk.iters) prefetch(it + 1, stage ^ 1);
        cp_async_commit();

        const bool masked = bwd_tile_masked<BM, BN>(p, tile_flags, n0, m0 / BM);
        uint32_t pa[4][4], da[4][4];
        wg_wait<1>();
        wg_fence_regs(s);
        wb_probs<T>(p, s, sL + stage * BM, sLo + stage * BM, sHi + stage * BM, key_row, n0, m0, masked, pa);
        wg_wait<0>();
        wg_fence_regs(dp);
        wb_dscores<T>(s, dp, sDl + stage * BM, sdS, key_row, da);

        wg_fence_regs(dv);
        wg_fence_regs(dk);
        wg_arrive();
#pragma unroll
        for (int kk = 0; kk < BM / 16; ++kk) rs_mma<T, D>::mma(dv, pa[kk], wg_desc_mn<BM>(cdO, kk));
#pragma unroll
        for (int kk = 0; kk < BM / 16; ++kk) rs_mma<T, D>::mma(dk, da[kk], wg_desc_mn<BM>(cQ, kk));
        wg_commit();

        fence_async_smem();   /* dS^T stores -> the dQ wgmma */
        __syncthreads();

        float dq[32];
        wg_arrive();
        if (D == 128) {   /* columns 64*wgi.. of dQ, over all BN keys */
#pragma unroll
            for (int kk = 0; kk < BN / 16; ++kk)
                wg<T>::template ss64<1, 1>(dq, wg_desc_mn<BN>(sdS, kk), wg_desc_mn<BN>(sK + wgi * BN * 64, kk),
                                           kk > 0);
        } else {          /* all 64 columns, over this warpgroup's 64 keys */
#pragma unroll
            for (int kk = 0; kk < 4; ++kk)
                wg<T>::template ss64<1, 1>(dq, wg_desc_mn<BN>(sdS + wgi * 64 * 64, kk),
                                           wg_desc_mn<BN>(sK + wgi * 64 * 64, kk), kk > 0);
        }
        wg_commit();
        wg_wait<0>();
        wg_fence_regs(dq);
        wg_fence_regs(dv);
        wg_fence_regs(dk);

        float *gdq = p.dq + b * p.dq_sb + (int64_t)p.q_begin * p.dq_sl + h * p.dq_sh;
        if (D == 128 || wb_pair_dq(dq, sX, wgi, warp, lane))
            wb_add_dq(p, dq, gdq, m0 + warp * 16 + (lane >> 2), D == 128 ? wgi * 64 : 0);
    }

    const int krow = n0 + key_row;
    float *gdk = p.dk + b * p.dk_sb + (int64_t)p.kv_begin * p.dk_sl + hk * p.dk_sh;
    float *gdv = p.dv + b * p.dv_sb + (int64_t)p.kv_begin * p.dv_sl + hk * p.dv_sh;
    wg_add_kv<D>(dk, gdk, p.dk_sl, krow, p.kv_len, p.scale);
    wg_add_kv<D>(dv, gdv, p.dv_sl, krow, p.kv_len, 1.0f);
}

template <typename T, int D>
int wb_launch(const UspBwdParams &p, cudaStream_t st, char *why, size_t why_len) {
    constexpr int smem = wb_smem_bytes<D>();
    auto kern = bwd_wg_kernel<T, D>;
    USP_CUDA_TRY(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    /* under a mask plan (maskplan.cu): a 1-d grid of key tiles by descending work */
    UspBwdParams q = p;
    UspPlanMem plan;
    int ctas = 0;
    int rc = usp_mask_plan_bwd(q, WB_BN, st, &plan, &ctas, why, why_len);
    if (rc != USP_KERNEL_OK) return rc;
    dim3 grid = ctas ? dim3(ctas) : dim3((p.kv_len + WB_BN - 1) / WB_BN, p.hkv, p.b);
    kern<<<grid, WB_NTH, smem, st>>>(q);
    cudaError_t e = cudaGetLastError();
    usp_mask_plan_release(&plan, st);
    if (e != cudaSuccess) {
        snprintf(why, why_len, "bwd_wg_kernel launch failed: %s", cudaGetErrorString(e));
        return USP_KERNEL_ECUDA;
    }
    return USP_KERNEL_OK;
}

} // namespace

int usp_wg_bwd(const UspBwdParams &p, usp_dtype in, cudaStream_t st, char *why, size_t why_len) {
    if (p.q_len <= 0 || p.kv_len <= 0) return USP_KERNEL_OK;
    if (p.d == 256) return usp_wg_bwd256(p, in, st, why, why_len);
    if (usp_ws_bwd_enabled()) return usp_ws_bwd(p, in, st, why, why_len);
    return usp_wg_bwd_tiles(p, in, st, why, why_len);
}

int usp_wg_bwd_tiles(const UspBwdParams &p, usp_dtype in, cudaStream_t st, char *why, size_t why_len) {
    if (p.q_len <= 0 || p.kv_len <= 0) return USP_KERNEL_OK;
    if (in == USP_BF16)
        return p.d == 64 ? wb_launch<__nv_bfloat16, 64>(p, st, why, why_len)
                         : wb_launch<__nv_bfloat16, 128>(p, st, why, why_len);
    return p.d == 64 ? wb_launch<__half, 64>(p, st, why, why_len) : wb_launch<__half, 128>(p, st, why, why_len);
}
