/* wgcommon.cuh: shared-memory tiles and descriptors for wgmma (sm_90a).
 *
 * A tile of R rows x D columns (16-bit) is stored as D/64 "atoms" of R rows x
 * 64 columns; an atom row is 128 bytes, and its 16-byte chunk c sits at chunk
 * c ^ (row & 7): the 128-byte swizzle that wgmma's descriptors name. Atoms
 * start on 1024-byte boundaries (R is a multiple of 8 and tiles are 1024-byte
 * aligned), so the descriptors' base offset is 0.
 *
 * The same tile serves wgmma as:
 *   K-major operand (rows = M or N, columns = K): LBO unused, SBO = 1024
 *     (8 rows); the k-th 16-column step starts (k%4)*32 bytes into atom k/4;
 *   MN-major operand (rows = K, columns = M or N; transpose flag set):
 *     LBO = R*128 (next 64 columns), SBO = 1024 (next 8 rows of K); the k-th
 *     16-row step starts k*2048 bytes in. */
#ifndef USP_GPU_WGCOMMON_CUH
#define USP_GPU_WGCOMMON_CUH

#include "kcommon.cuh"
#include "wgmma.cuh"

namespace uspk {

/* Element offset of (row, 16-byte chunk) in an atom-layout tile of R rows. */
template <int R>
__device__ __forceinline__ int wsw(int row, int chunk) {
    return ((chunk >> 3) * R + row) * 64 + (((chunk & 7) ^ (row & 7)) << 3);
}

/* ROWS x D tile into atom layout by NTHREADS threads (tid = 0..NTHREADS-1);
 * rows >= valid are zero. */
template <int ROWS, int D, int NTHREADS, typename T>
__device__ __forceinline__ void load_tile_wg(T *s, const T *g, int64_t stride, int valid, int tid = threadIdx.x) {
    constexpr int CPR = D / 8;
    static_assert((ROWS * CPR) % NTHREADS == 0, "tile chunks must split evenly over threads");
#pragma unroll
    for (int i = 0; i < ROWS * CPR / NTHREADS; ++i) {
        int c = tid + i * NTHREADS;
        int r = c / CPR, ch = c % CPR;
        bool ok = r < valid;
        const T *src = ok ? g + r * stride + ch * 8 : g;
        cp_async16(s + wsw<ROWS>(r, ch), src, ok ? 16 : 0);
    }
}

__device__ __forceinline__ uint64_t wg_desc(const void *p, uint32_t lbo, uint32_t sbo) {
    uint32_t a = smem_u32(p);
    return (uint64_t)((a & 0x3FFFF) >> 4) | ((uint64_t)((lbo & 0x3FFFF) >> 4) << 16) |
           ((uint64_t)((sbo & 0x3FFFF) >> 4) << 32) | (1ull << 62);
}
/* K-major operand of an R-row tile, 16-column step k. */
template <int R, typename T>
__device__ __forceinline__ uint64_t wg_desc_k(const T *tile, int k) {
    return wg_desc(tile + (k >> 2) * R * 64 + (k & 3) * 16, 16, 1024);
}
/* MN-major operand of an R-row tile (rows = K), 16-row step k. */
template <int R, typename T>
__device__ __forceinline__ uint64_t wg_desc_mn(const T *tile, int k) {
    return wg_desc(tile + k * 16 * 64, R * 128, 1024);
}

__device__ __forceinline__ void wg_arrive() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wg_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
/* cp.async (generic proxy) writes, then wgmma (async proxy) reads: fence in each writer. */
__device__ __forceinline__ void fence_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

/* Barrier of THREADS threads (a multiple of 32) under id 1.. (0 is __syncthreads). */
template <int THREADS>
__device__ __forceinline__ void named_barrier(int id) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "n"(THREADS) : "memory");
}
/* Arrives at barrier id of THREADS threads without waiting (the writer's side of a
 * hand-over: its shared-memory writes before it are seen by the threads of its bar.sync). */
template <int THREADS>
__device__ __forceinline__ void named_barrier_arrive(int id) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "n"(THREADS) : "memory");
}

/* Accumulates A (registers, 64 x 16) times a 16 x N shared tile into an
 * accumulator N wide: the products whose N is the head dim (O += P V,
 * dV += P^T dO, dK += dS^T Q). */
template <typename T, int N> struct rs_mma;
template <typename T> struct rs_mma<T, 128> {
    static __device__ __forceinline__ void mma(float (&d)[64], const uint32_t (&a)[4], uint64_t db) {
        wg<T>::template rs128<1>(d, a, db, 1);
    }
};
template <typename T> struct rs_mma<T, 256> {
    static __device__ __forceinline__ void mma(float (&d)[128], const uint32_t (&a)[4], uint64_t db) {
        wg<T>::template rs256<1>(d, a, db, 1);
    }
};
template <typename T> struct rs_mma<T, 64> {
    static __device__ __forceinline__ void mma(float (&d)[32], const uint32_t (&a)[4], uint64_t db) {
        wg<T>::template rs64<1>(d, a, db, 1);
    }
};

/* O / l and the LSE of a thread's two rows r_base, r_base + 8 of head h, batch b, from a
 * warpgroup's O accumulator (D wide), its rows' sums l and maxima mx (of S, scaled by sl2 = scale log2 e). */
template <typename TO, int D>
__device__ __forceinline__ void wg_store_o(const UspFwdParams &p, int b, int h, int r_base, const float (&o)[D / 2],
                                           const float (&l)[2], const float (&mx)[2], float sl2) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
        float lt = quad_sum(l[hf]);
        float inv = lt > 0.0f ? 1.0f / lt : 0.0f;
        int r = r_base + hf * 8;
        if (r >= p.q_len) continue;
        int64_t grow = p.q_begin + r;
        TO *orow = static_cast<TO *>(p.o) + b * p.o_sb + grow * p.o_sl + h * p.o_sh;
#pragma unroll
        for (int jj = 0; jj < D / 8; ++jj)
            out2<TO>::store(orow + 8 * jj + (lane & 3) * 2, o[4 * jj + 2 * hf] * inv, o[4 * jj + 2 * hf + 1] * inv);
        if ((lane & 3) == 0)
            p.lse[b * p.lse_sb + h * p.lse_sh + grow] = lt > 0.0f ? (mx[hf] * sl2 + log2f(lt)) * USP_LN2 : -INFINITY;
    }
}

/* dK or dV rows of the warpgroup (the thread's rows key_row0, + 8 below kv_len;
 * columns 8j + 2t) += acc * mul, owned by this CTA: no atomics. RED: the same +=
 * by fp32 reductions in L2 (8-byte atomics whose value is not read): the warps
 * do not wait for the rows to come in. */
template <int D, bool RED = false>
__device__ __forceinline__ void wg_add_kv(const float (&acc)[D / 2], float *g, int64_t sl, int key_row0, int kv_len,
                                          float mul) {
    const int t = threadIdx.x & 3;
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
        int r = key_row0 + hf * 8;
        if (r >= kv_len) continue;
        float *row = g + (int64_t)r * sl + 2 * t;
#pragma unroll
        for (int j = 0; j < D / 8; ++j) {
            if (RED) {
                atomicAdd(reinterpret_cast<float2 *>(row + 8 * j),
                          make_float2(acc[4 * j + 2 * hf] * mul, acc[4 * j + 2 * hf + 1] * mul));
            } else {
                float2 *q2 = reinterpret_cast<float2 *>(row + 8 * j);
                float2 v = *q2;
                v.x += acc[4 * j + 2 * hf] * mul;
                v.y += acc[4 * j + 2 * hf + 1] * mul;
                *q2 = v;
            }
        }
    }
}

/* Rounds a dynamic shared-memory base up to 1024 bytes (atoms must be aligned). */
__device__ __forceinline__ unsigned char *align1024(unsigned char *p) {
    return p + ((1024 - (smem_u32(p) & 1023)) & 1023);
}

} // namespace uspk

#endif
