/* attn_bwd.cu: tiled attention backward on tensor cores (mma.sync, sm_80+).
 *
 * One CTA of 8 warps owns BN = 128 keys of one K/V head. K and V stay in
 * shared memory, dK and dV accumulate in registers, and the CTA walks every
 * query tile (BM = 64 rows) of every query head of its GQA group that can
 * see those keys:
 *
 *   S  = Q K^T,   P = exp(scale * S - LSE)         (BM x BN)
 *   dP = dO V^T,  dS = P * (dP - DELTA)            (BM x BN)
 *   dV += P^T dO, dK += scale * dS^T Q             (BN x D, registers)
 *   dQ += scale * dS K                             (BM x D, fp32 atomics)
 *
 * P and dS go through shared memory (16-bit) because the dV/dK products need
 * them transposed. Q/dO tiles are double-buffered (cp.async). dK/dV are owned
 * by one CTA, so their final += needs no atomics; dQ rows are shared by all
 * key tiles, hence atomics (two floats at a time).
 *
 * Warp tiling (w = warp 0..7):
 *   S, dP:   rows 32*(w/4).., keys 32*(w%4)..     (2 x 4 m16n8 tiles each)
 *   dV, dK:  keys 32*(w/2).., columns (D/2)*(w%2)..
 *   dQ:      rows 32*(w/4).., columns (D/4)*(w%4)..
 *
 * Masks (usp/rowmask.h): the CTA visits the query tiles from the first to the
 * last row that sees one of its keys (bwd_work), and applies the per-element
 * predicate on the tiles where some row does not see all of its keys.
 *
 * Shared memory at D = 128: K, V 2 x 32 KB, Q, dO 2 x 2 x 16 KB, P, dS 2 x 16 KB
 * = 160 KB: one CTA an SM. */
#include "kcommon.cuh"
#include "kernels.h"
#include <math.h>

namespace {

using namespace uspk;

constexpr int BWD_BM = 64;
constexpr int BWD_BN = 128;
constexpr int BWD_WARPS = 8;
constexpr int BWD_NTH = BWD_WARPS * 32;

template <int D>
constexpr int bwd_smem_bytes() {
    return (2 * BWD_BN * D + 4 * BWD_BM * D + 2 * BWD_BM * BWD_BN) * 2;
}
template <int D> struct bwd_minb { static constexpr int v = 1; };

/* S (or dP) for the warp's 32 x 32 piece: A rows from sA (BM x D), B from sB (BN x D). */
template <typename T, int D>
__device__ __forceinline__ void bwd_nt(float acc[2][4][4], const T *sA, const T *sB, int wm, int wn) {
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.0f;
#pragma unroll
    for (int kc = 0; kc < D / 16; ++kc) {
        uint32_t a[2][4];
        ld_a<D>(a[0], sA, wm * 32, kc);
        ld_a<D>(a[1], sA, wm * 32 + 16, kc);
#pragma unroll
        for (int np = 0; np < 2; ++np) {
            uint32_t bb[4];
            ld_b_nk<D>(bb, sB, wn * 32 + np * 16, kc);
#pragma unroll
            for (int mt = 0; mt < 2; ++mt) {
                elem<T>::mma(acc[mt][2 * np], a[mt], bb[0], bb[1]);
                elem<T>::mma(acc[mt][2 * np + 1], a[mt], bb[2], bb[3]);
            }
        }
    }
}

/* acc (keys x D/2) += sX^T (keys x BM) sY (BM x D/2): the dV and dK products. */
template <typename T, int D>
__device__ __forceinline__ void bwd_tn(float acc[2][D / 16][4], const T *sX, const T *sY, int wk, int wd) {
#pragma unroll
    for (int kq = 0; kq < BWD_BM / 16; ++kq) {
        uint32_t a[2][4];
        ld_a_t<BWD_BN>(a[0], sX, wk * 32, kq * 16);
        ld_a_t<BWD_BN>(a[1], sX, wk * 32 + 16, kq * 16);
#pragma unroll
        for (int dp = 0; dp < D / 32; ++dp) {
            uint32_t bb[4];
            ld_b_kn<D>(bb, sY, kq * 16, wd * (D / 32) + dp);
#pragma unroll
            for (int mt = 0; mt < 2; ++mt) {
                elem<T>::mma(acc[mt][2 * dp], a[mt], bb[0], bb[1]);
                elem<T>::mma(acc[mt][2 * dp + 1], a[mt], bb[2], bb[3]);
            }
        }
    }
}

/* dQ rows of the warp (32 x D/4) = dS (BM x BN) K (BN x D), then atomically added. */
template <typename T, int D>
__device__ __forceinline__ void bwd_dq(const UspBwdParams &p, const T *sdS, const T *sK, int wm, int wd,
                                       float *gdq, int m0) {
    float acc[2][D / 32][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < D / 32; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < BWD_BN / 16; ++kk) {
        uint32_t a[2][4];
        ld_a<BWD_BN>(a[0], sdS, wm * 32, kk);
        ld_a<BWD_BN>(a[1], sdS, wm * 32 + 16, kk);
#pragma unroll
        for (int dp = 0; dp < D / 64; ++dp) {
            uint32_t bb[4];
            ld_b_kn<D>(bb, sK, kk * 16, wd * (D / 64) + dp);
#pragma unroll
            for (int mt = 0; mt < 2; ++mt) {
                elem<T>::mma(acc[mt][2 * dp], a[mt], bb[0], bb[1]);
                elem<T>::mma(acc[mt][2 * dp + 1], a[mt], bb[2], bb[3]);
            }
        }
    }
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
            int r = m0 + wm * 32 + mt * 16 + (lane >> 2) + hf * 8;
            if (r >= p.q_len) continue;
            float *row = gdq + (int64_t)r * p.dq_sl + wd * (D / 4) + (lane & 3) * 2;
#pragma unroll
            for (int nt = 0; nt < D / 32; ++nt)
                atomicAdd(reinterpret_cast<float2 *>(row + nt * 8),
                          make_float2(acc[mt][nt][2 * hf] * p.scale, acc[mt][nt][2 * hf + 1] * p.scale));
        }
}

/* dK or dV rows of the CTA += acc * mul (the CTA owns them: plain read-modify-write). */
template <int D>
__device__ __forceinline__ void bwd_store_kv(float acc[2][D / 16][4], float *g, int64_t sl, int n0, int kv_len,
                                             int wk, int wd, float mul) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
            int r = n0 + wk * 32 + mt * 16 + (lane >> 2) + hf * 8;
            if (r >= kv_len) continue;
            float *row = g + (int64_t)r * sl + wd * (D / 2) + (lane & 3) * 2;
#pragma unroll
            for (int nt = 0; nt < D / 16; ++nt) {
                float2 *q2 = reinterpret_cast<float2 *>(row + nt * 8);
                float2 v = *q2;
                v.x += acc[mt][nt][2 * hf] * mul;
                v.y += acc[mt][nt][2 * hf + 1] * mul;
                *q2 = v;
            }
        }
}

template <typename T, int D>
__global__ void __launch_bounds__(BWD_NTH, bwd_minb<D>::v) bwd_kernel(const UspBwdParams p) {
    constexpr int BM = BWD_BM, BN = BWD_BN;
    extern __shared__ __align__(128) unsigned char smem_raw[];
    T *sK = reinterpret_cast<T *>(smem_raw);   /* BN x D */
    T *sV = sK + BN * D;                        /* BN x D */
    T *sQ = sV + BN * D;                        /* 2 x BM x D */
    T *sdO = sQ + 2 * BM * D;                   /* 2 x BM x D */
    T *sP = sdO + 2 * BM * D;                   /* BM x BN */
    T *sdS = sP + BM * BN;                      /* BM x BN */

    __shared__ uint32_t tile_flags[BWD_FLAG_WORDS];
    __shared__ int red[2];
    const int hk = blockIdx.y, b = blockIdx.z;
    const BwdWork wk = bwd_work<BWD_BM, BWD_BN>(p, b, tile_flags, red);
    if (wk.iters == 0) return;   /* no query sees these keys: nothing to add */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int n0 = wk.n0;

    const T *gk = static_cast<const T *>(p.k) + b * p.k_sb + (int64_t)(p.kv_begin + n0) * p.k_sl + hk * p.k_sh;
    const T *gv = static_cast<const T *>(p.v) + b * p.v_sb + (int64_t)(p.kv_begin + n0) * p.v_sl + hk * p.v_sh;
    load_tile<BN, D, BWD_NTH>(sK, gk, p.k_sl, p.kv_len - n0);
    load_tile<BN, D, BWD_NTH>(sV, gv, p.v_sl, p.kv_len - n0);

    /* (head, query tile) of iteration it */
    auto q_tile = [&](int it, int &h, int &m0) {
        h = hk * wk.group + it / wk.nm;
        m0 = (wk.mt_first + it % wk.nm) * BM;
    };
    auto prefetch = [&](int it, int stage) {
        int h, m0;
        q_tile(it, h, m0);
        const T *gq = static_cast<const T *>(p.q) + b * p.q_sb + (int64_t)(p.q_begin + m0) * p.q_sl + h * p.q_sh;
        const T *gd = static_cast<const T *>(p.dout) + b * p.do_sb + (int64_t)(p.q_begin + m0) * p.do_sl + h * p.do_sh;
        load_tile<BM, D, BWD_NTH>(sQ + stage * BM * D, gq, p.q_sl, p.q_len - m0);
        load_tile<BM, D, BWD_NTH>(sdO + stage * BM * D, gd, p.do_sl, p.q_len - m0);
    };
    prefetch(0, 0);
    cp_async_commit();

    const float sl2 = p.scale * USP_LOG2E;
    const int wm = warp >> 2, wn = warp & 3;    /* S, dP and dQ tiling */
    const int wkv = warp >> 1, wd = warp & 1;   /* dK, dV tiling */
    float dv[2][D / 16][4], dk[2][D / 16][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < D / 16; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) dv[mt][nt][e] = dk[mt][nt][e] = 0.0f;

    for (int it = 0; it < wk.iters; ++it) {
        const int stage = it & 1;
        cp_async_wait<0>();
        __syncthreads();   /* tile `it` landed; nobody still reads the other stage, sP or sdS */
        if (it + 1 < wk.iters) prefetch(it + 1, stage ^ 1);
        cp_async_commit();

        int h, m0;
        q_tile(it, h, m0);
        const T *cQ = sQ + stage * BM * D, *cdO = sdO + stage * BM * D;

        float s[2][4][4], dp[2][4][4];
        bwd_nt<T, D>(s, cQ, sK, wm, wn);
        bwd_nt<T, D>(dp, cdO, sV, wm, wn);

        const bool masked = bwd_tile_masked<BM, BN>(p, tile_flags, n0, m0 / BM);
        const float *glse = p.lse + b * p.lse_sb + h * p.lse_sh + p.q_begin;
        const float *gdl = p.delta + b * p.dl_sb + h * p.dl_sh + p.q_begin;
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
            for (int hf = 0; hf < 2; ++hf) {
                const int rl = wm * 32 + mt * 16 + (lane >> 2) + hf * 8;   /* row in the tile */
                const int r = m0 + rl;
                /* +inf makes P = 0 for rows past the end and rows that saw no key */
                float lse2 = INFINITY, dl = 0.0f;
                if (r < p.q_len) {
                    float lv = glse[r];
                    if (lv != -INFINITY) lse2 = lv * USP_LOG2E;
                    dl = gdl[r];
                }
                usp_key_interval iv = {0, 0};
                if (masked) iv = row_keys(p, b, r);
#pragma unroll
                for (int nt = 0; nt < 4; ++nt) {
                    const int cl = wn * 32 + nt * 8 + (lane & 3) * 2;        /* key in the tile */
                    float pv[2], ds[2];
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        float x = exp2f(fmaf(s[mt][nt][2 * hf + e], sl2, -lse2));
                        if (masked && !usp_key_visible(iv, n0 + cl + e)) x = 0.0f;
                        pv[e] = x;
                        ds[e] = x * (dp[mt][nt][2 * hf + e] - dl);
                    }
                    const int off = swz<BN>(rl, cl >> 3) + (cl & 7);
                    *reinterpret_cast<uint32_t *>(sP + off) = elem<T>::pack2(pv[0], pv[1]);
                    *reinterpret_cast<uint32_t *>(sdS + off) = elem<T>::pack2(ds[0], ds[1]);
                }
            }
        __syncthreads();   /* P and dS complete */

        bwd_tn<T, D>(dv, sP, cdO, wkv, wd);
        bwd_tn<T, D>(dk, sdS, cQ, wkv, wd);
        float *gdq = p.dq + b * p.dq_sb + (int64_t)(p.q_begin) * p.dq_sl + h * p.dq_sh;
        bwd_dq<T, D>(p, sdS, sK, wm, wn, gdq, m0);
    }

    float *gdk = p.dk + b * p.dk_sb + (int64_t)(p.kv_begin) * p.dk_sl + hk * p.dk_sh;
    float *gdv = p.dv + b * p.dv_sb + (int64_t)(p.kv_begin) * p.dv_sl + hk * p.dv_sh;
    bwd_store_kv<D>(dk, gdk, p.dk_sl, n0, p.kv_len, wkv, wd, p.scale);
    bwd_store_kv<D>(dv, gdv, p.dv_sl, n0, p.kv_len, wkv, wd, 1.0f);
}

template <typename T, int D>
int bwd_launch(const UspBwdParams &p, cudaStream_t st, char *why, size_t why_len) {
    constexpr int smem = bwd_smem_bytes<D>();
    auto kern = bwd_kernel<T, D>;
    USP_CUDA_TRY(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    dim3 grid((p.kv_len + BWD_BN - 1) / BWD_BN, p.hkv, p.b);
    kern<<<grid, BWD_NTH, smem, st>>>(p);
    USP_CUDA_LAUNCHED();
    return USP_KERNEL_OK;
}

} // namespace

int usp_tc_bwd(const UspBwdParams &p, usp_dtype in, cudaStream_t st, char *why, size_t why_len) {
    if (p.q_len <= 0 || p.kv_len <= 0) return USP_KERNEL_OK;
    if (usp_wgmma_enabled()) return usp_wg_bwd(p, in, st, why, why_len);
    if (in == USP_BF16)
        return p.d == 64 ? bwd_launch<__nv_bfloat16, 64>(p, st, why, why_len)
                         : bwd_launch<__nv_bfloat16, 128>(p, st, why, why_len);
    return p.d == 64 ? bwd_launch<__half, 64>(p, st, why, why_len)
                     : bwd_launch<__half, 128>(p, st, why, why_len);
}
