/* rows.cu: the row-wise kernels of ring attention, one warp per (b, row, head).
 *
 * bwd_prep: DELTA = rowsum(O * dO), read once, coalesced along D. Where D is a power of
 *           two from 8 to 256 and every row starts on 16 bytes (the layouts of usp's
 *           executor and of PyTorch's contiguous tensors), with USP_GPU_PREP_VEC=1:
 *           D / 8 lanes a row and 8 elements a lane, in 16-byte loads
 *           (prep_vec_kernel); else one warp a row, an element a lane at a time.
 * merge:    (O, LSE) <- the union of (O, LSE) and (O_blk, LSE_blk),
 *           overflow-safe: lse = max + log1p(exp(-|lse - lse_blk|)).
 * Both are memory-bound; O, O_blk may be fp32 or 16-bit. */
#include "kernels.h"
#include "plugins/naive_kernels.cuh"
#include <stdlib.h>
#include <string.h>

namespace {

constexpr int ROW_WARPS = 8;

/* grid (ceil(L*H / 8), B), 8 warps: warp -> (row, head). */
__global__ void prep_kernel(const usp_kprep_args a) {
    int64_t t = blockIdx.x * (int64_t)ROW_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31, b = blockIdx.y, H = a.o.h;
    if (t >= (int64_t)a.o.l * H) return;
    int i = (int)(t / H), h = (int)(t % H);
    int64_t oi = naive::at(a.o, b, i, h), di = naive::at(a.dout, b, i, h);
    float s = 0.0f;
    for (int d = lane; d < a.o.d; d += 32)
        s += naive::ld(a.o.ptr, a.o.dtype, oi + d) * naive::ld(a.dout.ptr, a.dout.dtype, di + d);
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) a.delta.ptr[naive::at(a.delta, b, h, i)] = s;
}

/* 8 elements of a row at p (16-byte aligned: two float4 of fp32, one uint4 of 16-bit) */
template <typename T> __device__ __forceinline__ void load8(const T *p, float (&x)[8]);
template <> __device__ __forceinline__ void load8<float>(const float *p, float (&x)[8]) {
    const float4 a = reinterpret_cast<const float4 *>(p)[0], b = reinterpret_cast<const float4 *>(p)[1];
    x[0] = a.x; x[1] = a.y; x[2] = a.z; x[3] = a.w; x[4] = b.x; x[5] = b.y; x[6] = b.z; x[7] = b.w;
}
template <> __device__ __forceinline__ void load8<__nv_bfloat16>(const __nv_bfloat16 *p, float (&x)[8]) {
    const uint4 u = *reinterpret_cast<const uint4 *>(p);
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
    for (int i = 0; i < 4; ++i) { const float2 f = __bfloat1622float2(h[i]); x[2 * i] = f.x; x[2 * i + 1] = f.y; }
}
template <> __device__ __forceinline__ void load8<__half>(const __half *p, float (&x)[8]) {
    const uint4 u = *reinterpret_cast<const uint4 *>(p);
    const __half2 *h = reinterpret_cast<const __half2 *>(&u);
    for (int i = 0; i < 4; ++i) { const float2 f = __half22float2(h[i]); x[2 * i] = f.x; x[2 * i + 1] = f.y; }
}

/* grid (ceil(L*H / (8 * 32 / G)), B), 8 warps; G = D / 8 lanes a (row, head), in the order
 * of bwd_prep's warps (head fastest), lane g of its group elements 8g..8g+7. */
template <typename TO, typename TD, int G>
__global__ void prep_vec_kernel(const usp_kprep_args a) {
    constexpr int PER_WARP = 32 / G;
    const int lane = threadIdx.x & 31, b = blockIdx.y, H = a.o.h;
    const int64_t t = (blockIdx.x * (int64_t)ROW_WARPS + (threadIdx.x >> 5)) * PER_WARP + lane / G;
    const bool ok = t < (int64_t)a.o.l * H;
    float s = 0.0f;
    if (ok) {
        const int i = (int)(t / H), h = (int)(t % H), g = lane % G;
        float o[8], d[8];
        load8(static_cast<const TO *>(a.o.ptr) + naive::at(a.o, b, i, h) + 8 * g, o);
        load8(static_cast<const TD *>(a.dout.ptr) + naive::at(a.dout, b, i, h) + 8 * g, d);
#pragma unroll
        for (int e = 0; e < 8; ++e) s = fmaf(o[e], d[e], s);
    }
#pragma unroll
    for (int off = G / 2; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (ok && lane % G == 0) {
        const int i = (int)(t / H), h = (int)(t % H);
        a.delta.ptr[naive::at(a.delta, b, h, i)] = s;
    }
}

template <typename TO, typename TD, int G>
void prep_vec_launch(const usp_kprep_args *a, int64_t rows, cudaStream_t st) {
    constexpr int ROWS_A_BLOCK = ROW_WARPS * (32 / G);
    dim3 grid((unsigned)((rows + ROWS_A_BLOCK - 1) / ROWS_A_BLOCK), a->o.b);
    prep_vec_kernel<TO, TD, G><<<grid, ROW_WARPS * 32, 0, st>>>(*a);
}

/* The 16-byte kernel of (O dtype, dO dtype, D), if there is one: true when launched. */
template <typename TO, typename TD>
bool prep_vec_d(const usp_kprep_args *a, int64_t rows, cudaStream_t st) {
    switch (a->o.d) {
    case 8: prep_vec_launch<TO, TD, 1>(a, rows, st); return true;
    case 16: prep_vec_launch<TO, TD, 2>(a, rows, st); return true;
    case 32: prep_vec_launch<TO, TD, 4>(a, rows, st); return true;
    case 64: prep_vec_launch<TO, TD, 8>(a, rows, st); return true;
    case 128: prep_vec_launch<TO, TD, 16>(a, rows, st); return true;
    case 256: prep_vec_launch<TO, TD, 32>(a, rows, st); return true;
    default: return false;
    }
}

bool prep_vec(const usp_kprep_args *a, int64_t rows, cudaStream_t st) {
    const usp_dtype o = a->o.dtype, d = a->dout.dtype;
    if (o == USP_F64 || d == USP_F64 || !usp_rows16(a->o) || !usp_rows16(a->dout)) return false;
    if (d == USP_BF16 && o == USP_F32) return prep_vec_d<float, __nv_bfloat16>(a, rows, st);
    if (d == USP_BF16 && o == USP_BF16) return prep_vec_d<__nv_bfloat16, __nv_bfloat16>(a, rows, st);
    if (d == USP_F16 && o == USP_F32) return prep_vec_d<float, __half>(a, rows, st);
    if (d == USP_F16 && o == USP_F16) return prep_vec_d<__half, __half>(a, rows, st);
    if (d == USP_F32 && o == USP_F32) return prep_vec_d<float, float>(a, rows, st);
    return false;
}

__global__ void merge_kernel(const usp_kmerge_args a) {
    int64_t t = blockIdx.x * (int64_t)ROW_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31, b = blockIdx.y, H = a.o.h;
    if (t >= (int64_t)a.rows * H) return;
    int i = a.row_begin + (int)(t / H), h = (int)(t % H);
    float *lp = a.lse.ptr + naive::at(a.lse, b, h, i);
    float l0 = *lp, l1 = a.lse_blk.ptr[naive::at(a.lse_blk, b, h, i)];
    float mx = fmaxf(l0, l1), w0 = 0.0f, w1 = 0.0f, ln = -INFINITY;
    if (mx != -INFINITY) {   /* both -inf: LSE stays -inf and O = 0 */
        ln = mx + log1pf(expf(-fabsf(l0 - l1)));
        w0 = expf(l0 - ln);
        w1 = expf(l1 - ln);
    }
    int64_t oi = naive::at(a.o, b, i, h), bi = naive::at(a.o_blk, b, i, h);
    for (int d = lane; d < a.o.d; d += 32) {
        /* a weight of 0 must not multiply an O that was never written */
        float x0 = w0 == 0.0f ? 0.0f : w0 * naive::ld(a.o.ptr, a.o.dtype, oi + d);
        float x1 = w1 == 0.0f ? 0.0f : w1 * naive::ld(a.o_blk.ptr, a.o_blk.dtype, bi + d);
        naive::st(a.o.ptr, a.o.dtype, oi + d, x0 + x1);
    }
    __syncwarp();   /* every lane has read *lp */
    if (lane == 0) *lp = ln;
}

} // namespace

int usp_prep_launch(const usp_kprep_args *a, cudaStream_t st, char *why, size_t why_len) {
    int64_t rows = (int64_t)a->o.l * a->o.h;
    if (rows <= 0) return USP_KERNEL_OK;
    const char *vec = getenv("USP_GPU_PREP_VEC");   /* =1: the 16-byte kernel (opt-in until run) */
    if (vec && !strcmp(vec, "1") && prep_vec(a, rows, st)) {
        USP_CUDA_LAUNCHED();
        return USP_KERNEL_OK;
    }
    dim3 grid((unsigned)((rows + ROW_WARPS - 1) / ROW_WARPS), a->o.b);
    prep_kernel<<<grid, ROW_WARPS * 32, 0, st>>>(*a);
    USP_CUDA_LAUNCHED();
    return USP_KERNEL_OK;
}

int usp_merge_launch(const usp_kmerge_args *a, cudaStream_t st, char *why, size_t why_len) {
    int64_t rows = (int64_t)a->rows * a->o.h;
    if (rows <= 0) return USP_KERNEL_OK;
    dim3 grid((unsigned)((rows + ROW_WARPS - 1) / ROW_WARPS), a->o.b);
    merge_kernel<<<grid, ROW_WARPS * 32, 0, st>>>(*a);
    USP_CUDA_LAUNCHED();
    return USP_KERNEL_OK;
}
