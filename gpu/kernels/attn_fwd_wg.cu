/* attn_fwd_wg.cu: attention forward on Hopper's warpgroup MMA (wgmma, sm_90a).
 *
 * One CTA of 2 warpgroups computes BM = 128 query rows of one head (64 rows a
 * warpgroup). For each tile of BN = 128 keys:
 *   S = Q K^T   wgmma, A = Q and B = K from shared memory (both K-major);
 *   online softmax on the S registers (fp32, base 2, scale folded in);
 *   O += P V    wgmma, A = P from registers (the accumulator layout of S is the
 *               register-operand layout), B = V from shared memory read
 *               MN-major (the transpose flag), so V needs no transpose.
 * K/V tiles are double-buffered with cp.async; every thread fences its copies
 * into the async proxy before the barrier that precedes the wgmma reads.
 *
 * Shared memory at D = 128: Q 32 KB + 2 x (K 32 KB + V 32 KB) = 160 KB, one
 * CTA an SM; registers: S 64 + O 64 + P 32 a thread.
 *
 * Masks are those of attn_fwd.cu (usp/rowmask.h): the CTA visits the key tiles
 * of the union of its rows' intervals, and tiles that not every row sees whole
 * are masked element by element. */
#include "kernels.h"
#include "wgcommon.cuh"
#include <math.h>

namespace {

using namespace uspk;

constexpr int WF_BM = 128;
constexpr int WF_NTH = 256;

/* Key tile and CTAs an SM by head dim: at D = 64 a 64-key tile keeps S, O and
 * P within 128 registers, so two CTAs share an SM and one's softmax overlaps
 * the other's products; at D = 128 one CTA of 128-key tiles. */
template <int D> struct wf_cfg;
template <> struct wf_cfg<128> { static constexpr int BN = 128, MINB = 1; };
template <> struct wf_cfg<64> { static constexpr int BN = 64, MINB = 2; };
/* D = 256: O alone is 128 registers, so 64-key tiles (S 32); shared memory
 * Q 64 KB + 2 x (K 32 KB + V 32 KB) = 192 KB. */
template <> struct wf_cfg<256> { static constexpr int BN = 64, MINB = 1; };

template <int D>
constexpr int wf_smem_bytes() { return (WF_BM * D + 4 * wf_cfg<D>::BN * D) * 2 + 1024; }

/* S = Q K^T over one K tile: N = BN. */
template <typename T, int BN> struct qk;
template <typename T> struct qk<T, 128> {
    static __device__ __forceinline__ void mma(float (&s)[64], uint64_t da, uint64_t db, int acc) {
        wg<T>::template ss128<0, 0>(s, da, db, acc);
    }
};
template <typename T> struct qk<T, 64> {
    static __device__ __forceinline__ void mma(float (&s)[32], uint64_t da, uint64_t db, int acc) {
        wg<T>::template ss64<0, 0>(s, da, db, acc);
    }
};

/* Scores that the mask hides become -inf. Element e of n8 block j sits at
 * row r_base + (e>>1)*8 (interval riv[e>>1]), column n0 + 8j + 2t + (e&1). */
template <int BN>
__device__ __forceinline__ void wf_mask(float (&s)[BN / 2], const usp_key_interval (&riv)[2], int n0) {
    const int t = threadIdx.x & 3;
#pragma unroll
    for (int j = 0; j < BN / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            int c = n0 + 8 * j + 2 * t + (e & 1);
            if (!usp_key_visible(riv[e >> 1], c)) s[4 * j + e] = -INFINITY;
        }
}

template <typename T, typename TO, int D>
__global__ void __launch_bounds__(WF_NTH, wf_cfg<D>::MINB) fwd_wg_kernel(const UspFwdParams p) {
    constexpr int BM = WF_BM, BN = wf_cfg<D>::BN, ND = D / 2;
    extern __shared__ unsigned char smem_raw[];
    T *sQ = reinterpret_cast<T *>(align1024(smem_raw));   /* BM x D */
    T *sK = sQ + BM * D;                                    /* 2 x BN x D */
    T *sV = sK + 2 * BN * D;                                /* 2 x BN x D */

    const int wgi = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
    const int m0 = (gridDim.x - 1 - blockIdx.x) * BM;   /* heavy causal tiles first */
    const int h = blockIdx.y, b = blockIdx.z, hk = h / (p.h / p.hkv);

    __shared__ int red[4];
    const usp_key_range kr = cta_key_range(p, b, m0, min(BM, p.q_len - m0), red);
    int jt0, jt1;
    usp_tile_range(kr, BN, &jt0, &jt1);
    const int ntiles = jt1 - jt0;
    if (ntiles <= 0) {
        fwd_write_empty<TO, D, BM>(p, m0, b, h);
        return;
    }
    const T *gq = static_cast<const T *>(p.q) + b * p.q_sb + (int64_t)(p.q_begin + m0) * p.q_sl + h * p.q_sh;
    const T *gk = static_cast<const T *>(p.k) + b * p.k_sb + (int64_t)p.kv_begin * p.k_sl + hk * p.k_sh;
    const T *gv = static_cast<const T *>(p.v) + b * p.v_sb + (int64_t)p.kv_begin * p.v_sl + hk * p.v_sh;
    load_tile_wg<BM, D, WF_NTH>(sQ, gq, p.q_sl, p.q_len - m0);
    load_tile_wg<BN, D, WF_NTH>(sK, gk + (int64_t)jt0 * BN * p.k_sl, p.k_sl, p.kv_len - jt0 * BN);
    load_tile_wg<BN, D, WF_NTH>(sV, gv + (int64_t)jt0 * BN * p.v_sl, p.v_sl, p.kv_len - jt0 * BN);
    cp_async_commit();

    const float sl2 = p.scale * USP_LOG2E;
    const int r_base = m0 + wgi * 64 + warp * 16 + (lane >> 2);   /* block-local row of e = 0 */
    const T *sQw = sQ + wgi * 64 * 64;                             /* this warpgroup's 64 rows */
    float o[ND]; /* O of this warpgroup's 64 rows x D, fp32: D/2 registers a thread */
#pragma unroll
    for (int i = 0; i < ND; ++i) o[i] = 0.0f;
    float mx[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    const usp_key_interval riv[2] = {row_keys(p, b, r_base), row_keys(p, b, r_base + 8)};

    for (int t = 0; t < ntiles; ++t) {
        const int j = jt0 + t;   /* key tile */
        if (t + 1 < ntiles) {
            int64_t n1 = (int64_t)(j + 1) * BN;
            int st = (t + 1) & 1;
            load_tile_wg<BN, D, WF_NTH>(sK + st * BN * D, gk + n1 * p.k_sl, p.k_sl, p.kv_len - (int)n1);
            load_tile_wg<BN, D, WF_NTH>(sV + st * BN * D, gv + n1 * p.v_sl, p.v_sl, p.kv_len - (int)n1);
        }
        cp_async_commit();
        cp_async_wait<1>();
        fence_async_smem();
        __syncthreads();
        const T *cK = sK + (t & 1) * BN * D, *cV = sV + (t & 1) * BN * D;

        float s[BN / 2];
        wg_arrive();
#pragma unroll
        for (int kc = 0; kc < D / 16; ++kc)
            qk<T, BN>::mma(s, wg_desc_k<BM>(sQw, kc), wg_desc_k<BN>(cK, kc), kc > 0);
        wg_commit();
        wg_wait<0>();
        wg_fence_regs(s);

        const int n0 = j * BN;
        if (usp_tile_masked(kr, n0, n0 + BN)) wf_mask<BN>(s, riv, n0);

        /* online softmax: this thread's rows are e>>1 = 0, 1; a row's 4 threads share it */
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
            float tmax = -INFINITY;
#pragma unroll
            for (int jj = 0; jj < BN / 8; ++jj) tmax = fmaxf(tmax, fmaxf(s[4 * jj + 2 * hf], s[4 * jj + 2 * hf + 1]));
            tmax = quad_max(tmax);
            float mnew = fmaxf(mx[hf], tmax);
            float mref = mnew == -INFINITY ? 0.0f : mnew * sl2;
            float corr = exp2f(mx[hf] * sl2 - mref);
            mx[hf] = mnew;
            float sum = 0.0f;
#pragma unroll
            for (int jj = 0; jj < BN / 8; ++jj)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    float pv_ = exp2f(fmaf(s[4 * jj + 2 * hf + e], sl2, -mref));
                    s[4 * jj + 2 * hf + e] = pv_;
                    sum += pv_;
                }
            l[hf] = l[hf] * corr + sum;
#pragma unroll
            for (int jj = 0; jj < D / 8; ++jj) {
                o[4 * jj + 2 * hf] *= corr;
                o[4 * jj + 2 * hf + 1] *= corr;
            }
        }

        uint32_t pa[BN / 16][4];
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
            pa[kk][0] = elem<T>::pack2(s[8 * kk + 0], s[8 * kk + 1]);
            pa[kk][1] = elem<T>::pack2(s[8 * kk + 2], s[8 * kk + 3]);
            pa[kk][2] = elem<T>::pack2(s[8 * kk + 4], s[8 * kk + 5]);
            pa[kk][3] = elem<T>::pack2(s[8 * kk + 6], s[8 * kk + 7]);
        }
        wg_fence_regs(o);
        wg_arrive();
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) rs_mma<T, D>::mma(o, pa[kk], wg_desc_mn<BN>(cV, kk));
        wg_commit();
        wg_wait<0>();
        wg_fence_regs(o);
        __syncthreads();   /* this stage is refilled by the next iteration's prefetch */
    }

    wg_store_o<TO, D>(p, b, h, r_base, o, l, mx, sl2);
}

template <typename T, typename TO, int D>
int wf_launch(const UspFwdParams &p, cudaStream_t st, char *why, size_t why_len) {
    constexpr int smem = wf_smem_bytes<D>();
    auto kern = fwd_wg_kernel<T, TO, D>;
    USP_CUDA_TRY(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    dim3 grid((p.q_len + WF_BM - 1) / WF_BM, p.h, p.b);
    kern<<<grid, WF_NTH, smem, st>>>(p);
    USP_CUDA_LAUNCHED();
    return USP_KERNEL_OK;
}

template <typename T, typename TO>
int wf_by_d(const UspFwdParams &p, cudaStream_t st, char *why, size_t why_len) {
    if (p.d == 64) return wf_launch<T, TO, 64>(p, st, why, why_len);
    if (p.d == 256) return wf_launch<T, TO, 256>(p, st, why, why_len);
    return wf_launch<T, TO, 128>(p, st, why, why_len);
}

} // namespace

int usp_wg_fwd(const UspFwdParams &p, usp_dtype in, usp_dtype out, cudaStream_t st, char *why, size_t why_len) {
    if (p.q_len <= 0) return USP_KERNEL_OK;
    bool o32 = out == USP_F32;
    if (in == USP_BF16)
        return o32 ? wf_by_d<__nv_bfloat16, float>(p, st, why, why_len)
                   : wf_by_d<__nv_bfloat16, __nv_bfloat16>(p, st, why, why_len);
    return o32 ? wf_by_d<__half, float>(p, st, why, why_len) : wf_by_d<__half, __half>(p, st, why, why_len);
}
