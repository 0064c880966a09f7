/* kcommon.cuh: what the tiled attention kernels share.
 *
 * Tensor-core tiles are mma.sync m16n8k16 (bf16 or fp16 in, fp32 out) fed by
 * ldmatrix from shared memory; global -> shared copies are cp.async, 16 bytes
 * a thread. Shared tiles are row-major with rows of D elements cut into
 * 16-byte chunks; chunk c of row r is stored at chunk c ^ (r & 7) so that the
 * 8 rows one ldmatrix reads (or one cp.async wave writes) hit 8 different
 * 16-byte bank groups: no bank conflicts, no padding.
 *
 * Fragment layouts (PTX ISA, mma.m16n8k16, lane = threadIdx.x % 32,
 * g = lane / 4, t = lane % 4):
 *   A 16x16: a[0] = (g, 2t..2t+1), a[1] = (g+8, 2t..), a[2] = (g, 2t+8..), a[3] = (g+8, 2t+8..)
 *   B 16x8 : b[0] = (k 2t..2t+1, n g), b[1] = (k 2t+8.., n g)
 *   C 16x8 : c[0..1] = (g, 2t..2t+1), c[2..3] = (g+8, 2t..2t+1)
 */
#ifndef USP_GPU_KCOMMON_CUH
#define USP_GPU_KCOMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include "kernels.h"

#define USP_LOG2E 1.4426950408889634f
#define USP_LN2 0.6931471805599453f

namespace uspk {

/* ---- 16-bit element types ------------------------------------------------ */

template <typename T> struct elem;

template <> struct elem<__nv_bfloat16> {
    static __device__ __forceinline__ uint32_t pack2(float lo, float hi) {
        __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&v);
    }
    static __device__ __forceinline__ float2 unpack2(uint32_t u) {
        __nv_bfloat162 v = *reinterpret_cast<__nv_bfloat162 *>(&u);
        return __bfloat1622float2(v);
    }
    static __device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
    static __device__ __forceinline__ __nv_bfloat16 from_f(float x) { return __float2bfloat16_rn(x); }
    /* c += a * b, one m16n8k16 tile */
    static __device__ __forceinline__ void mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
            "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};

template <> struct elem<__half> {
    static __device__ __forceinline__ uint32_t pack2(float lo, float hi) {
        __half2 v = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&v);
    }
    static __device__ __forceinline__ float2 unpack2(uint32_t u) {
        __half2 v = *reinterpret_cast<__half2 *>(&u);
        return __half22float2(v);
    }
    static __device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
    static __device__ __forceinline__ __half from_f(float x) { return __float2half_rn(x); }
    static __device__ __forceinline__ void mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
            "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};

/* fp32 output or accumulator stores of two neighbours. */
template <typename TO> struct out2;
template <> struct out2<float> {
    static __device__ __forceinline__ void store(float *p, float a, float b) {
        *reinterpret_cast<float2 *>(p) = make_float2(a, b);
    }
};
template <> struct out2<__nv_bfloat16> {
    static __device__ __forceinline__ void store(__nv_bfloat16 *p, float a, float b) {
        *reinterpret_cast<__nv_bfloat162 *>(p) = __floats2bfloat162_rn(a, b);
    }
};
template <> struct out2<__half> {
    static __device__ __forceinline__ void store(__half *p, float a, float b) {
        *reinterpret_cast<__half2 *>(p) = __floats2half2_rn(a, b);
    }
};

/* ---- shared-memory tiles ------------------------------------------------- */

/* Element offset of (row, chunk*8) in a swizzled tile with rows of D elements. */
template <int D>
__device__ __forceinline__ int swz(int row, int chunk) {
    return row * D + ((chunk ^ (row & 7)) << 3);
}

__device__ __forceinline__ uint32_t smem_u32(const void *p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

/* 16-byte async copy; src_bytes = 0 fills the destination with zeros. */
__device__ __forceinline__ void cp_async16(void *dst, const void *src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
                 :: "r"(smem_u32(dst)), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" :: "n"(N)); }

/* ROWS x D tile from global rows `stride` elements apart; rows >= valid are zero. */
template <int ROWS, int D, int NTHREADS, typename T>
__device__ __forceinline__ void load_tile(T *s, const T *g, int64_t stride, int valid) {
    constexpr int CPR = D / 8;
    static_assert((ROWS * CPR) % NTHREADS == 0, "tile chunks must split evenly over threads");
#pragma unroll
    for (int i = 0; i < ROWS * CPR / NTHREADS; ++i) {
        int c = threadIdx.x + i * NTHREADS;
        int r = c / CPR, ch = c % CPR;
        bool ok = r < valid;
        const T *src = ok ? g + r * stride + ch * 8 : g;
        cp_async16(s + swz<D>(r, ch), src, ok ? 16 : 0);
    }
}

__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t r[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(p)));
}

/* A fragment (16 rows from r0, 16 columns from chunk pair c0*2) of a row-major tile. */
template <int D, typename T>
__device__ __forceinline__ void ld_a(uint32_t a[4], const T *s, int r0, int kc) {
    int lane = threadIdx.x & 31;
    int row = r0 + (lane & 7) + ((lane >> 3) & 1) * 8;
    ldsm_x4(a, s + swz<D>(row, kc * 2 + (lane >> 4)));
}
/* Two B fragments (n rows n0..n0+15 of a [n][k] tile, k chunk pair kc):
 * b[0], b[1] for n0..n0+7 and b[2], b[3] for n0+8..n0+15. */
template <int D, typename T>
__device__ __forceinline__ void ld_b_nk(uint32_t b[4], const T *s, int n0, int kc) {
    int lane = threadIdx.x & 31;
    int row = n0 + (lane & 7) + (lane >> 4) * 8;
    ldsm_x4(b, s + swz<D>(row, kc * 2 + ((lane >> 3) & 1)));
}
/* Two B fragments from a [k][n] tile (k rows k0..k0+15, n chunk pair nc):
 * b[0], b[1] for columns nc*16..+7 and b[2], b[3] for nc*16+8..+15. */
template <int D, typename T>
__device__ __forceinline__ void ld_b_kn(uint32_t b[4], const T *s, int k0, int nc) {
    int lane = threadIdx.x & 31;
    int row = k0 + (lane & 7) + ((lane >> 3) & 1) * 8;
    ldsm_x4_t(b, s + swz<D>(row, nc * 2 + (lane >> 4)));
}
/* A fragment of the transpose of a [k][m] tile: A = S^T, rows m0.., k from k0. */
template <int D, typename T>
__device__ __forceinline__ void ld_a_t(uint32_t a[4], const T *s, int m0, int k0) {
    int lane = threadIdx.x & 31;
    int mi = lane >> 3;
    int row = k0 + (lane & 7) + (mi >> 1) * 8;
    ldsm_x4_t(a, s + swz<D>(row, (m0 >> 3) + (mi & 1)));
}

__device__ __forceinline__ float quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

/* ---- work of a thread block ---------------------------------------------- */

/* Rows of the BM-row query tile at m0 that see no key at all: O = 0, LSE = -inf. */
template <typename TO, int D, int BM>
__device__ void fwd_write_empty(const UspFwdParams &p, int m0, int b, int h) {
    int rows = min(BM, p.q_len - m0);
    for (int idx = threadIdx.x; idx < rows * D; idx += blockDim.x) {
        int r = idx / D, c = idx % D;
        TO *o = static_cast<TO *>(p.o) + b * p.o_sb + (int64_t)(p.q_begin + m0 + r) * p.o_sl + h * p.o_sh;
        o[c] = TO(0.0f);
    }
    for (int r = threadIdx.x; r < rows; r += blockDim.x)
        p.lse[b * p.lse_sb + h * p.lse_sh + p.q_begin + m0 + r] = -INFINITY;
}

/* Where a backward CTA's (head, query tile) sequence starts and how long it
 * is: the CTA owns a BN-key tile and visits BM-row query tiles. */
struct BwdWork {
    int n0, mt_first, nm, iters, group;
};

template <int BM, int BN>
__device__ __forceinline__ BwdWork bwd_work(const UspBwdParams &p) {
    BwdWork w;
    w.n0 = blockIdx.x * BN;
    w.group = p.h / p.hkv;
    int m_first = p.causal ? max(0, w.n0 - p.diag) : 0;   /* first row that sees key n0 */
    w.mt_first = m_first / BM;
    int mtiles = (p.q_len + BM - 1) / BM;
    w.nm = m_first < p.q_len ? mtiles - w.mt_first : 0;
    w.iters = w.group * w.nm;
    return w;
}

} // namespace uspk

#endif
