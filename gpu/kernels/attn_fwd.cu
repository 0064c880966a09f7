/* attn_fwd.cu: tiled attention forward on tensor cores (mma.sync, sm_80+).
 *
 * One CTA of 4 warps computes BM = 128 query rows of one head; each warp owns
 * 32 rows (two m16 tiles), so every K/V fragment read from shared memory
 * feeds two MMAs. Keys are visited in tiles of BN with the online softmax
 * (running row max m and sum l in fp32, exponentials in base 2 with the scale
 * folded in). K/V tiles are double-buffered: tile j+1 is in flight (cp.async)
 * while tile j is computed. Q stays in shared memory for the whole CTA.
 *
 * Shared memory: Q (BM x D) + 2 x K (BN x D) + 2 x V (BN x D), 16-bit:
 * 96 KB at D = 128, BN = 64, so two CTAs fit on an SM.
 *
 * Mask (usp/rowmask.h): block-local query i sees the block-local keys of one
 * interval: the per-row arrays when given, else [0, kv_len) or, causal,
 * [0, i + diag + 1). The CTA visits only the key tiles of the union of its
 * rows' intervals; only tiles that not every row sees whole (the diagonal,
 * document and window edges, the end of the keys) pay for the per-element
 * mask. */
#include "kcommon.cuh"
#include "kernels.h"
#include <math.h>

namespace {

using namespace uspk;

constexpr int FWD_BM = 128;
constexpr int FWD_WARPS = 4;

template <int D> struct fwd_cfg;
template <> struct fwd_cfg<64> { static constexpr int BN = 64; };
template <> struct fwd_cfg<128> { static constexpr int BN = 64; };

template <int D, int BN>
constexpr int fwd_smem_bytes() { return (FWD_BM * D + 4 * BN * D) * 2; }

/* S[mt][nt] = Q rows (warp's 32) x K tile^T, fp32. */
template <typename T, int D, int BN>
__device__ __forceinline__ void fwd_qk(float s[2][BN / 8][4], const T *sQ, const T *cK, int wrow) {
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < BN / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0.0f;
#pragma unroll
    for (int kc = 0; kc < D / 16; ++kc) {
        uint32_t qa[2][4];
        ld_a<D>(qa[0], sQ, wrow, kc);
        ld_a<D>(qa[1], sQ, wrow + 16, kc);
#pragma unroll
        for (int np = 0; np < BN / 16; ++np) {
            uint32_t kb[4];
            ld_b_nk<D>(kb, cK, np * 16, kc);
#pragma unroll
            for (int mt = 0; mt < 2; ++mt) {
                elem<T>::mma(s[mt][2 * np], qa[mt], kb[0], kb[1]);
                elem<T>::mma(s[mt][2 * np + 1], qa[mt], kb[2], kb[3]);
            }
        }
    }
}

/* Sets masked scores to -inf. riv: key intervals of this thread's rows
 * (mt, half); n0: block-local key of the tile's first column. */
template <int BN>
__device__ __forceinline__ void fwd_mask(float s[2][BN / 8][4], const usp_key_interval (&riv)[2][2], int n0) {
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < BN / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                int c = n0 + nt * 8 + (lane & 3) * 2 + (e & 1);
                if (!usp_key_visible(riv[mt][e >> 1], c)) s[mt][nt][e] = -INFINITY;
            }
}

template <typename T, typename TO, int D, int BN>
__global__ void __launch_bounds__(FWD_WARPS * 32, 2) fwd_kernel(const UspFwdParams p) {
    constexpr int BM = FWD_BM, NTH = FWD_WARPS * 32, DT = D / 8;
    extern __shared__ __align__(128) unsigned char smem_raw[];
    T *sQ = reinterpret_cast<T *>(smem_raw);   /* BM x D */
    T *sK = sQ + BM * D;                        /* 2 x BN x D */
    T *sV = sK + 2 * BN * D;                    /* 2 x BN x D */

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    /* reversed: under a causal mask the last query tiles have the most keys */
    const int m0 = (gridDim.x - 1 - blockIdx.x) * BM;
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

    load_tile<BM, D, NTH>(sQ, gq, p.q_sl, p.q_len - m0);
    load_tile<BN, D, NTH>(sK, gk + (int64_t)jt0 * BN * p.k_sl, p.k_sl, p.kv_len - jt0 * BN);
    load_tile<BN, D, NTH>(sV, gv + (int64_t)jt0 * BN * p.v_sl, p.v_sl, p.kv_len - jt0 * BN);
    cp_async_commit();

    const float sl2 = p.scale * USP_LOG2E;
    const int wrow = warp * 32;                       /* warp's first row in the tile */
    const int r_base = m0 + wrow + (lane >> 2);       /* block-local row of (mt 0, half 0) */
    float o[2][DT][4];
    float mx[2][2], l[2][2];
    usp_key_interval riv[2][2];   /* keys of this thread's rows */
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
        riv[mt][0] = row_keys(p, b, r_base + mt * 16);
        riv[mt][1] = row_keys(p, b, r_base + mt * 16 + 8);
#pragma unroll
        for (int dt = 0; dt < DT; ++dt)
#pragma unroll
            for (int e = 0; e < 4; ++e) o[mt][dt][e] = 0.0f;
        mx[mt][0] = mx[mt][1] = -INFINITY;
        l[mt][0] = l[mt][1] = 0.0f;
    }

    for (int t = 0; t < ntiles; ++t) {
        const int j = jt0 + t;   /* key tile */
        if (t + 1 < ntiles) {
            int64_t n1 = (int64_t)(j + 1) * BN;
            int st = (t + 1) & 1;
            load_tile<BN, D, NTH>(sK + st * BN * D, gk + n1 * p.k_sl, p.k_sl, p.kv_len - (int)n1);
            load_tile<BN, D, NTH>(sV + st * BN * D, gv + n1 * p.v_sl, p.v_sl, p.kv_len - (int)n1);
        }
        cp_async_commit();
        cp_async_wait<1>();   /* everything but the group just issued */
        __syncthreads();
        const T *cK = sK + (t & 1) * BN * D, *cV = sV + (t & 1) * BN * D;

        float s[2][BN / 8][4];
        fwd_qk<T, D, BN>(s, sQ, cK, wrow);
        const int n0 = j * BN;
        if (usp_tile_masked(kr, n0, n0 + BN)) fwd_mask<BN>(s, riv, n0);

        /* online softmax, per row (mt, half); a row's 4 threads share it */
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
            for (int hf = 0; hf < 2; ++hf) {
                float tmax = -INFINITY;
#pragma unroll
                for (int nt = 0; nt < BN / 8; ++nt)
                    tmax = fmaxf(tmax, fmaxf(s[mt][nt][2 * hf], s[mt][nt][2 * hf + 1]));
                tmax = quad_max(tmax);
                float mnew = fmaxf(mx[mt][hf], tmax);
                /* a row with nothing visible yet keeps exp2(-inf - 0) = 0 */
                float mref = mnew == -INFINITY ? 0.0f : mnew * sl2;
                float corr = exp2f(mx[mt][hf] * sl2 - mref);
                mx[mt][hf] = mnew;
                float sum = 0.0f;
#pragma unroll
                for (int nt = 0; nt < BN / 8; ++nt)
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        float pv = exp2f(fmaf(s[mt][nt][2 * hf + e], sl2, -mref));
                        s[mt][nt][2 * hf + e] = pv;
                        sum += pv;
                    }
                l[mt][hf] = l[mt][hf] * corr + sum;
#pragma unroll
                for (int dt = 0; dt < DT; ++dt) {
                    o[mt][dt][2 * hf] *= corr;
                    o[mt][dt][2 * hf + 1] *= corr;
                }
            }

        /* O += P V: P's C fragments are A fragments once packed to 16 bits */
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
            uint32_t pa[2][4];
#pragma unroll
            for (int mt = 0; mt < 2; ++mt) {
                pa[mt][0] = elem<T>::pack2(s[mt][2 * kk][0], s[mt][2 * kk][1]);
                pa[mt][1] = elem<T>::pack2(s[mt][2 * kk][2], s[mt][2 * kk][3]);
                pa[mt][2] = elem<T>::pack2(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
                pa[mt][3] = elem<T>::pack2(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
            }
#pragma unroll
            for (int dp = 0; dp < D / 16; ++dp) {
                uint32_t vb[4];
                ld_b_kn<D>(vb, cV, kk * 16, dp);
#pragma unroll
                for (int mt = 0; mt < 2; ++mt) {
                    elem<T>::mma(o[mt][2 * dp], pa[mt], vb[0], vb[1]);
                    elem<T>::mma(o[mt][2 * dp + 1], pa[mt], vb[2], vb[3]);
                }
            }
        }
        __syncthreads();   /* this stage is refilled by the next iteration's prefetch */
    }

    /* normalise and store; l = 0 only for rows that saw no key */
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
            float lt = quad_sum(l[mt][hf]);
            float inv = lt > 0.0f ? 1.0f / lt : 0.0f;
            int r = r_base + mt * 16 + hf * 8;
            if (r >= p.q_len) continue;
            int64_t grow = p.q_begin + r;
            TO *orow = static_cast<TO *>(p.o) + b * p.o_sb + grow * p.o_sl + h * p.o_sh;
#pragma unroll
            for (int dt = 0; dt < DT; ++dt)
                out2<TO>::store(orow + dt * 8 + (lane & 3) * 2, o[mt][dt][2 * hf] * inv,
                                o[mt][dt][2 * hf + 1] * inv);
            if ((lane & 3) == 0)
                p.lse[b * p.lse_sb + h * p.lse_sh + grow] =
                    lt > 0.0f ? (mx[mt][hf] * sl2 + log2f(lt)) * USP_LN2 : -INFINITY;
        }
}

template <typename T, typename TO, int D>
int fwd_launch(const UspFwdParams &p, cudaStream_t st, char *why, size_t why_len) {
    constexpr int BN = fwd_cfg<D>::BN;
    constexpr int smem = fwd_smem_bytes<D, BN>();
    auto kern = fwd_kernel<T, TO, D, BN>;
    USP_CUDA_TRY(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    dim3 grid((p.q_len + FWD_BM - 1) / FWD_BM, p.h, p.b);
    kern<<<grid, FWD_WARPS * 32, smem, st>>>(p);
    USP_CUDA_LAUNCHED();
    return USP_KERNEL_OK;
}

template <typename T, typename TO>
int fwd_by_d(const UspFwdParams &p, cudaStream_t st, char *why, size_t why_len) {
    if (p.d == 64) return fwd_launch<T, TO, 64>(p, st, why, why_len);
    return fwd_launch<T, TO, 128>(p, st, why, why_len);
}

} // namespace

int usp_tc_supports(usp_dtype in, int d) {
    /* D = 256 has wgmma kernels only (sm_90a); elsewhere it takes the simple ones */
    return (in == USP_BF16 || in == USP_F16) && (d == 64 || d == 128 || (d == 256 && usp_wgmma_enabled()));
}

int usp_tc_fwd(const UspFwdParams &p, usp_dtype in, usp_dtype out, cudaStream_t st,
               char *why, size_t why_len) {
    if (p.q_len <= 0) return USP_KERNEL_OK;
    if (usp_wgmma_enabled()) {
        if (usp_ws_fwd_enabled()) return usp_ws_fwd(p, in, out, st, why, why_len);
        return usp_wg_fwd(p, in, out, st, why, why_len);
    }
    bool o32 = out == USP_F32;
    if (in == USP_BF16)
        return o32 ? fwd_by_d<__nv_bfloat16, float>(p, st, why, why_len)
                   : fwd_by_d<__nv_bfloat16, __nv_bfloat16>(p, st, why, why_len);
    return o32 ? fwd_by_d<__half, float>(p, st, why, why_len)
               : fwd_by_d<__half, __half>(p, st, why, why_len);
}
