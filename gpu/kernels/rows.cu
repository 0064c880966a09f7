/* rows.cu: the row-wise kernels of ring attention, one warp per (b, row, head).
 *
 * bwd_prep: DELTA = rowsum(O * dO), read once, coalesced along D.
 * merge:    (O, LSE) <- the union of (O, LSE) and (O_blk, LSE_blk),
 *           overflow-safe: lse = max + log1p(exp(-|lse - lse_blk|)).
 * Both are memory-bound; O, O_blk may be fp32 or 16-bit. */
#include "kernels.h"
#include "plugins/naive_kernels.cuh"

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
