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

/* ---- the mask (usp/rowmask.h) --------------------------------------------- *
 * One key interval a query row: the per-row arrays when given, else the
 * block's causal/diag. Kernels visit the key tiles of the union of their
 * rows' intervals (usp_tile_range) and apply the per-element predicate
 * (usp_key_visible) only on tiles that not every row sees whole
 * (usp_tile_masked). */

/* Interval of block-local row r of batch b; empty for rows past the block. */
template <typename P>
__device__ __forceinline__ usp_key_interval row_keys(const P &p, int b, int r) {
    if (r < 0 || r >= p.q_len) {
        usp_key_interval none;
        none.lo = none.hi = 0;
        return none;
    }
    return usp_row_keys(p.mask_lo, p.mask_hi, p.q_len, b, r, p.kv_len, p.causal, p.diag);
}

/* The backward's P = exp(scale S - LSE) of block-local query row r from its
 * score s, by exp2 (sl2 = scale * log2 e; lse the row's LSE): 0 for rows past
 * the block and rows that saw no key (LSE = -inf), through +inf. */
template <typename P>
__device__ __forceinline__ float bwd_prob(const P &p, float s, float lse, int r, float sl2) {
    const float lse2 = (r < p.q_len && lse != -INFINITY) ? lse * USP_LOG2E : INFINITY;
    return exp2f(fmaf(s, sl2, -lse2));
}

__device__ __forceinline__ usp_key_range warp_key_range(usp_key_range r) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        r.any_lo = min(r.any_lo, __shfl_xor_sync(0xffffffffu, r.any_lo, o));
        r.any_hi = max(r.any_hi, __shfl_xor_sync(0xffffffffu, r.any_hi, o));
        r.all_lo = max(r.all_lo, __shfl_xor_sync(0xffffffffu, r.all_lo, o));
        r.all_hi = min(r.all_hi, __shfl_xor_sync(0xffffffffu, r.all_hi, o));
    }
    return r;
}

/* A group's key range as the plan stores it (int4: any_lo, any_hi, all_lo, all_hi), and back. */
__device__ __forceinline__ int4 range_int4(usp_key_range r) { return make_int4(r.any_lo, r.any_hi, r.all_lo, r.all_hi); }
__device__ __forceinline__ usp_key_range int4_range(int4 v) {
    usp_key_range r;
    r.any_lo = v.x;
    r.any_hi = v.y;
    r.all_lo = v.z;
    r.all_hi = v.w;
    return r;
}

/* The mask plan's first pass (maskplan.cu's fast kernel, attn_fwd_ws.cu's in-kernel plan): the
 * key range of every 64-row group g = warp, warp + NW, ... < b ng (ng groups a batch) of the
 * rows' intervals lo/hi (NULL: the block's causal/diag mask), a warp a group, two rows a lane,
 * the loads of UNROLL groups in flight before any is reduced; lane 0 of the group's warp calls
 * put(g, range). */
template <int NW, int UNROLL, typename Put>
__device__ __forceinline__ void plan_group_ranges(const int32_t *lo, const int32_t *hi, int b, int ng, int q_len,
                                                  int kv_len, int causal, int diag, int warp, int lane, Put put) {
    constexpr int RPL = USP_PLAN_GROUP / 32;
    const int ngt = b * ng;
    for (int g0 = warp; g0 < ngt; g0 += NW * UNROLL) {
        int32_t vlo[UNROLL][RPL], vhi[UNROLL][RPL];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const int g = g0 + NW * u, bb = g / ng, r0 = (g % ng) * USP_PLAN_GROUP;
#pragma unroll
            for (int k = 0; k < RPL; ++k) {
                const int row = r0 + lane + 32 * k;
                vlo[u][k] = vhi[u][k] = 0;
                if (lo && g < ngt && row < q_len) {
                    const int64_t at = (int64_t)bb * q_len + row;
                    vlo[u][k] = __ldg(lo + at);
                    vhi[u][k] = __ldg(hi + at);
                }
            }
        }
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const int g = g0 + NW * u, bb = g / ng, r0 = (g % ng) * USP_PLAN_GROUP;
            if (g >= ngt) break;   /* the same g in every lane of the warp */
            usp_key_range r = usp_key_range_none();
#pragma unroll
            for (int k = 0; k < RPL; ++k) {
                const int row = r0 + lane + 32 * k;
                if (row < q_len)   /* usp_row_keys on the loaded words: the same clipping */
                    r = usp_key_range_add(r, lo ? usp_row_keys(&vlo[u][k], &vhi[u][k], 1, 0, 0, kv_len, causal, diag)
                                                : usp_row_keys(NULL, NULL, q_len, bb, row, kv_len, causal, diag));
            }
            r = warp_key_range(r);
            if (lane == 0) put(g, r);
        }
    }
}

/* The forward plan's work of query tile t of batch bb: the key tiles (of bn keys) of the union
 * of its `per` groups' ranges (groups: ng a batch). */
__device__ __forceinline__ int plan_fwd_tile_work(const int4 *groups, int ng, int bb, int t, int per, int bn) {
    usp_key_range r = usp_key_range_none();
    for (int k = 0; k < per; ++k) {
        const int gi = t * per + k;
        if (gi < ng) r = usp_key_range_merge(r, int4_range(groups[bb * ng + gi]));
    }
    int first, end;
    usp_tile_range(r, bn, &first, &end);
    return end > first ? end - first : 0;
}

/* Key range of rows [m0, m0 + rows) of batch b, the same in every thread of
 * the CTA (every thread must call it; red: 4 ints of shared memory). */
template <typename P>
__device__ usp_key_range cta_key_range(const P &p, int b, int m0, int rows, int *red) {
    usp_key_range r = usp_key_range_none();
    for (int i = threadIdx.x; i < rows; i += blockDim.x) r = usp_key_range_add(r, row_keys(p, b, m0 + i));
    r = warp_key_range(r);
    if (threadIdx.x == 0) {
        red[0] = INT32_MAX;
        red[1] = INT32_MIN;
        red[2] = INT32_MIN;
        red[3] = INT32_MAX;
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0) {
        atomicMin(&red[0], r.any_lo);
        atomicMax(&red[1], r.any_hi);
        atomicMax(&red[2], r.all_lo);
        atomicMin(&red[3], r.all_hi);
    }
    __syncthreads();
    r.any_lo = red[0];
    r.any_hi = red[1];
    r.all_lo = red[2];
    r.all_hi = red[3];
    return r;
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
    int b, hk;   /* batch and K/V head of the CTA */
};

/* Query tiles a backward CTA visits under per-row masks are flagged in
 * shared memory when they need the per-element mask; tiles past this count
 * are always masked (right, slower). 2048 tiles of 64 rows: 128K rows. */
constexpr int BWD_FLAG_TILES = 2048;
constexpr int BWD_FLAG_WORDS = BWD_FLAG_TILES / 32;

/* Whether query tile t (of BM rows) needs the per-element mask. */
template <int BM, int BN>
__device__ __forceinline__ bool bwd_tile_masked(const UspBwdParams &p, const uint32_t *flags, int n0, int t) {
    if (!p.mask_lo) return n0 + BN > p.kv_len || (p.causal && n0 + BN - 1 > t * BM + p.diag);
    return t >= BWD_FLAG_TILES || ((flags[t >> 5] >> (t & 31)) & 1u);
}

template <int BM, int BN>
__device__ __forceinline__ BwdWork bwd_work_causal(const UspBwdParams &p, int b) {
    BwdWork w;
    w.b = b;
    w.hk = blockIdx.y;
    w.n0 = blockIdx.x * BN;
    w.group = p.h / p.hkv;
    int m_first = p.causal ? max(0, w.n0 - p.diag) : 0;   /* first row that sees key n0 */
    w.mt_first = m_first / BM;
    int mtiles = (p.q_len + BM - 1) / BM;
    w.nm = m_first < p.q_len ? mtiles - w.mt_first : 0;
    w.iters = w.group * w.nm;
    return w;
}

/* With the call's mask plan (maskplan.cu; 1-d grid, BM = USP_PLAN_GROUP): CTA i
 * takes key tile item p.work_order[i / hkv] of K/V head i % hkv; its query
 * tiles come from the plan's ktile_rows and their flags from the plan's 64-row
 * groups (a tile needs the per-element mask unless every row sees every key of
 * [n0, n0 + BN)). No row is read. Every thread must call it (one barrier). */
/* Unit u of the plan: key tile item p.work_order[u / hkv] of K/V head u % hkv. */
template <int BN>
__device__ __forceinline__ BwdWork bwd_unit_planned(const UspBwdParams &p, int u) {
    BwdWork w;
    const int item = p.work_order[u / p.hkv];
    const int nkt = (p.kv_len + BN - 1) / BN;
    w.hk = u % p.hkv;
    w.b = item / nkt;
    w.n0 = (item % nkt) * BN;
    w.group = p.h / p.hkv;
    const int2 kr = p.ktile_rows[item];
    w.mt_first = kr.x;
    w.nm = kr.y;
    w.iters = w.group * w.nm;
    return w;
}

/* BM = R USP_PLAN_GROUP rows (R = 2: the 128-row tiles of D = 64): the query tiles that hold
 * the plan's groups of the key tile; a tile needs the mask if one of its R groups does (a
 * group whose rows see none of the tile's keys does, so tiles wider than the plan's range are
 * masked where they pass it). */
template <int BM, int BN>
__device__ BwdWork bwd_work_planned(const UspBwdParams &p, uint32_t *flags) {
    static_assert(BM % USP_PLAN_GROUP == 0, "planned query tiles are whole 64-row groups of the plan");
    constexpr int R = BM / USP_PLAN_GROUP;
    BwdWork w = bwd_unit_planned<BN>(p, blockIdx.x);
    if constexpr (R > 1) if (w.nm > 0) {
        const int g_end = w.mt_first + w.nm;
        w.mt_first /= R;
        w.nm = (g_end - 1) / R - w.mt_first + 1;
        w.iters = w.group * w.nm;
    }
    const int ng = (p.q_len + USP_PLAN_GROUP - 1) / USP_PLAN_GROUP;
    const int lane = threadIdx.x & 31;
    for (int t0 = (w.mt_first & ~31) + (int)(threadIdx.x & ~31u); t0 < w.mt_first + w.nm; t0 += (int)blockDim.x) {
        const int t = t0 + lane;
        bool masked = false;
        if constexpr (R == 1) {
            if (t < w.mt_first + w.nm && t < ng) {
                const int4 g = p.mask_groups[(int64_t)w.b * ng + t];
                masked = usp_tile_masked(usp_key_range{g.x, g.y, g.z, g.w}, w.n0, w.n0 + BN);
            }
        } else {
#pragma unroll
            for (int k = 0; k < R; ++k)
                if (t < w.mt_first + w.nm && R * t + k < ng) {
                    const int4 g = p.mask_groups[(int64_t)w.b * ng + R * t + k];
                    if (usp_tile_masked(usp_key_range{g.x, g.y, g.z, g.w}, w.n0, w.n0 + BN)) masked = true;
                }
        }
        const unsigned bits = __ballot_sync(0xffffffffu, masked);
        if (lane == 0 && (t0 >> 5) < BWD_FLAG_WORDS) flags[t0 >> 5] = bits;
    }
    __syncthreads();
    return w;
}

/* Under per-row masks without a plan: every row of batch b is read once (16 rows a thread
 * in flight) to find the first and last row that sees a key of this CTA's
 * tile [n0, n0 + BN), and to flag the query tiles where some row does not
 * see the whole key tile. Every thread must call it (two barriers). */
template <int BM, int BN>
__device__ BwdWork bwd_work(const UspBwdParams &p, int b, uint32_t *flags, int *red) {
    if (p.work_order) return bwd_work_planned<BM, BN>(p, flags);
    if (!p.mask_lo) return bwd_work_causal<BM, BN>(p, b);
    static_assert(BM % 32 == 0, "a warp's 32 rows lie in one query tile");
    constexpr int UNROLL = 16;
    BwdWork w;
    w.b = b;
    w.hk = blockIdx.y;
    w.n0 = blockIdx.x * BN;
    w.group = p.h / p.hkv;
    const int kend = min(w.n0 + BN, p.kv_len), lane = threadIdx.x & 31;
    for (int i = threadIdx.x; i < BWD_FLAG_WORDS; i += blockDim.x) flags[i] = 0u;
    if (threadIdx.x == 0) {
        red[0] = INT32_MAX;
        red[1] = -1;
    }
    __syncthreads();
    int first = INT32_MAX, last = -1;
    for (int r0 = 0; r0 < p.q_len; r0 += UNROLL * (int)blockDim.x) {
        usp_key_interval iv[UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) iv[u] = row_keys(p, b, r0 + u * (int)blockDim.x + (int)threadIdx.x);
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const int r = r0 + u * (int)blockDim.x + (int)threadIdx.x;
            if (iv[u].lo < kend && iv[u].hi > w.n0 && iv[u].lo < iv[u].hi) {
                first = min(first, r);
                last = max(last, r);
            }
            const bool whole = iv[u].lo <= w.n0 && iv[u].hi >= w.n0 + BN;
            const unsigned partial = __ballot_sync(0xffffffffu, r < p.q_len && !whole);
            const int t = (r - lane) / BM;
            if (lane == 0 && partial && t < BWD_FLAG_TILES) atomicOr(&flags[t >> 5], 1u << (t & 31));
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        first = min(first, __shfl_xor_sync(0xffffffffu, first, o));
        last = max(last, __shfl_xor_sync(0xffffffffu, last, o));
    }
    if (lane == 0) {
        atomicMin(&red[0], first);
        atomicMax(&red[1], last);
    }
    __syncthreads();
    first = red[0];
    last = red[1];
    w.mt_first = last >= 0 ? first / BM : 0;
    w.nm = last >= 0 ? last / BM - w.mt_first + 1 : 0;
    w.iters = w.group * w.nm;
    return w;
}

} // namespace uspk

#endif
