/* naive_kernels.cuh: attention the simplest way that is still right.
 *
 * One thread per query row (forward, dQ, DELTA, merge) or per key row (dK,
 * dV), fp32 math, elements read through a dtype switch. Slow by design: it
 * shows what each kernel.h function must compute, serves as the example
 * plugin (naive_plugin.cu), and is the built-in fallback for what the tiled
 * kernels do not take (fp32 inputs, head dims other than 64 and 128).
 * Head dims up to NAIVE_DMAX. */
#ifndef USP_NAIVE_KERNELS_CUH
#define USP_NAIVE_KERNELS_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include "usp/kernel.h"

#define NAIVE_DMAX 256

/* Internal linkage: several translation units include these kernels. */
namespace naive {
namespace {

__device__ __forceinline__ float ld(const void *p, usp_dtype dt, int64_t i) {
    switch (dt) {
    case USP_BF16: return __bfloat162float(static_cast<const __nv_bfloat16 *>(p)[i]);
    case USP_F16: return __half2float(static_cast<const __half *>(p)[i]);
    case USP_F64: return (float)static_cast<const double *>(p)[i];
    default: return static_cast<const float *>(p)[i];
    }
}
__device__ __forceinline__ void st(void *p, usp_dtype dt, int64_t i, float x) {
    switch (dt) {
    case USP_BF16: static_cast<__nv_bfloat16 *>(p)[i] = __float2bfloat16_rn(x); break;
    case USP_F16: static_cast<__half *>(p)[i] = __float2half_rn(x); break;
    case USP_F64: static_cast<double *>(p)[i] = x; break;
    default: static_cast<float *>(p)[i] = x;
    }
}
/* Element offset of (b, l, h, 0). */
__device__ __forceinline__ int64_t at(const usp_ktensor &t, int b, int64_t l, int h) {
    return b * t.sb + l * t.sl + h * t.sh;
}
__device__ __forceinline__ int64_t at(const usp_kstats &t, int b, int h, int64_t l) {
    return b * t.sb + h * t.sh + l;
}
/* Keys block-local query i of batch b sees (usp/rowmask.h): the per-row
 * arrays of ABI 2 when given, else the block's causal/diag. */
template <typename A>
__device__ __forceinline__ usp_key_interval keys_of(const A &a, int b, int i) {
    return usp_row_keys(a.mask_lo, a.mask_hi, a.blk.q_len, b, i, a.blk.kv_len, a.blk.causal, a.blk.diag);
}

/* grid (ceil(q_len/128), H, B): one thread per query row, online softmax. */
__global__ void fwd(const usp_kfwd_args a) {
    int i = blockIdx.x * blockDim.x + threadIdx.x, h = blockIdx.y, b = blockIdx.z;
    if (i >= a.blk.q_len) return;
    const int D = a.q.d, hk = h / (a.q.h / a.k.h);
    const int64_t qi = a.blk.q_begin + i;
    float q[NAIVE_DMAX], acc[NAIVE_DMAX];
    for (int d = 0; d < D; ++d) {
        q[d] = ld(a.q.ptr, a.q.dtype, at(a.q, b, qi, h) + d) * a.scale;
        acc[d] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    const usp_key_interval iv = keys_of(a, b, i);
    for (int j = iv.lo; j < iv.hi; ++j) {
        int64_t kj = at(a.k, b, a.blk.kv_begin + j, hk), vj = at(a.v, b, a.blk.kv_begin + j, hk);
        float s = 0.0f;
        for (int d = 0; d < D; ++d) s += q[d] * ld(a.k.ptr, a.k.dtype, kj + d);
        float mn = fmaxf(m, s), corr = expf(m - mn), p = expf(s - mn);
        l = l * corr + p;
        for (int d = 0; d < D; ++d) acc[d] = acc[d] * corr + p * ld(a.v.ptr, a.v.dtype, vj + d);
        m = mn;
    }
    int64_t oi = at(a.o, b, qi, h);
    for (int d = 0; d < D; ++d) st(a.o.ptr, a.o.dtype, oi + d, l > 0.0f ? acc[d] / l : 0.0f);
    a.lse.ptr[at(a.lse, b, h, qi)] = l > 0.0f ? m + logf(l) : -INFINITY;
}

/* grid (ceil(L/128), H, B): DELTA = rowsum(O * dO). */
__global__ void prep(const usp_kprep_args a) {
    int i = blockIdx.x * blockDim.x + threadIdx.x, h = blockIdx.y, b = blockIdx.z;
    if (i >= a.o.l) return;
    int64_t oi = at(a.o, b, i, h), di = at(a.dout, b, i, h);
    float s = 0.0f;
    for (int d = 0; d < a.o.d; ++d)
        s += ld(a.o.ptr, a.o.dtype, oi + d) * ld(a.dout.ptr, a.dout.dtype, di + d);
    a.delta.ptr[at(a.delta, b, h, i)] = s;
}

/* P of (query i, key j) from the final LSE; 0 where masked or the row saw nothing. */
__device__ __forceinline__ float prob(const usp_kbwd_args &a, int b, int h, int hk, int i, int j) {
    float lse = a.lse.ptr[at(a.lse, b, h, a.blk.q_begin + i)];
    if (!usp_key_visible(keys_of(a, b, i), j) || lse == -INFINITY) return 0.0f;
    int64_t qi = at(a.q, b, a.blk.q_begin + i, h), kj = at(a.k, b, a.blk.kv_begin + j, hk);
    float s = 0.0f;
    for (int d = 0; d < a.q.d; ++d) s += ld(a.q.ptr, a.q.dtype, qi + d) * ld(a.k.ptr, a.k.dtype, kj + d);
    return expf(s * a.scale - lse);
}
/* dP of (query i, key j) = dO_i . V_j */
__device__ __forceinline__ float dprob(const usp_kbwd_args &a, int b, int h, int hk, int i, int j) {
    int64_t oi = at(a.dout, b, a.blk.q_begin + i, h), vj = at(a.v, b, a.blk.kv_begin + j, hk);
    float s = 0.0f;
    for (int d = 0; d < a.q.d; ++d) s += ld(a.dout.ptr, a.dout.dtype, oi + d) * ld(a.v.ptr, a.v.dtype, vj + d);
    return s;
}

/* grid (ceil(q_len/128), H, B): dQ_i += scale * sum_j dS_ij K_j. */
__global__ void bwd_dq(const usp_kbwd_args a) {
    int i = blockIdx.x * blockDim.x + threadIdx.x, h = blockIdx.y, b = blockIdx.z;
    if (i >= a.blk.q_len) return;
    const int D = a.q.d, hk = h / (a.q.h / a.k.h);
    float dl = a.delta.ptr[at(a.delta, b, h, a.blk.q_begin + i)];
    float acc[NAIVE_DMAX];
    for (int d = 0; d < D; ++d) acc[d] = 0.0f;
    for (int j = 0; j < a.blk.kv_len; ++j) {
        float p = prob(a, b, h, hk, i, j);
        if (p == 0.0f) continue;
        float ds = p * (dprob(a, b, h, hk, i, j) - dl);
        int64_t kj = at(a.k, b, a.blk.kv_begin + j, hk);
        for (int d = 0; d < D; ++d) acc[d] += ds * ld(a.k.ptr, a.k.dtype, kj + d);
    }
    float *dq = static_cast<float *>(a.dq.ptr) + at(a.dq, b, a.blk.q_begin + i, h);
    for (int d = 0; d < D; ++d) dq[d] += acc[d] * a.scale;
}

/* grid (ceil(kv_len/128), Hkv, B): dK_j, dV_j over every query head of the group. */
__global__ void bwd_dkv(const usp_kbwd_args a) {
    int j = blockIdx.x * blockDim.x + threadIdx.x, hk = blockIdx.y, b = blockIdx.z;
    if (j >= a.blk.kv_len) return;
    const int D = a.q.d, group = a.q.h / a.k.h;
    float dk[NAIVE_DMAX], dv[NAIVE_DMAX];
    for (int d = 0; d < D; ++d) dk[d] = dv[d] = 0.0f;
    for (int h = hk * group; h < (hk + 1) * group; ++h)
        for (int i = 0; i < a.blk.q_len; ++i) {
            float p = prob(a, b, h, hk, i, j);
            if (p == 0.0f) continue;
            float ds = p * (dprob(a, b, h, hk, i, j) - a.delta.ptr[at(a.delta, b, h, a.blk.q_begin + i)]);
            int64_t qi = at(a.q, b, a.blk.q_begin + i, h), oi = at(a.dout, b, a.blk.q_begin + i, h);
            for (int d = 0; d < D; ++d) {
                dv[d] += p * ld(a.dout.ptr, a.dout.dtype, oi + d);
                dk[d] += ds * ld(a.q.ptr, a.q.dtype, qi + d);
            }
        }
    float *gk = static_cast<float *>(a.dk.ptr) + at(a.dk, b, a.blk.kv_begin + j, hk);
    float *gv = static_cast<float *>(a.dv.ptr) + at(a.dv, b, a.blk.kv_begin + j, hk);
    for (int d = 0; d < D; ++d) {
        gk[d] += dk[d] * a.scale;
        gv[d] += dv[d];
    }
}

/* grid (ceil(rows*H/128), B): one thread per (row, head) merges (O, LSE) with the block's. */
__global__ void merge(const usp_kmerge_args a) {
    int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    int b = blockIdx.y, H = a.o.h;
    if (t >= (int64_t)a.rows * H) return;
    int i = a.row_begin + (int)(t / H), h = (int)(t % H);
    float *lp = a.lse.ptr + at(a.lse, b, h, i);
    float l0 = *lp, l1 = a.lse_blk.ptr[at(a.lse_blk, b, h, i)];
    float mx = fmaxf(l0, l1);
    float w0 = 0.0f, w1 = 0.0f, ln = -INFINITY;
    if (mx != -INFINITY) {   /* both -inf: keep -inf and O = 0 */
        ln = mx + log1pf(expf(-fabsf(l0 - l1)));
        w0 = expf(l0 - ln);
        w1 = expf(l1 - ln);
    }
    int64_t oi = at(a.o, b, i, h), bi = at(a.o_blk, b, i, h);
    for (int d = 0; d < a.o.d; ++d) {
        float x0 = w0 == 0.0f ? 0.0f : w0 * ld(a.o.ptr, a.o.dtype, oi + d);
        float x1 = w1 == 0.0f ? 0.0f : w1 * ld(a.o_blk.ptr, a.o_blk.dtype, bi + d);
        st(a.o.ptr, a.o.dtype, oi + d, x0 + x1);
    }
    *lp = ln;
}

inline int grid_x(int64_t n) { return (int)((n + 127) / 128); }

inline int check(cudaError_t e, const char *what, char *why, size_t why_len) {
    if (e == cudaSuccess) return USP_KERNEL_OK;
    snprintf(why, why_len, "%s: %s", what, cudaGetErrorString(e));
    return USP_KERNEL_ECUDA;
}

inline int launch_fwd(const usp_kfwd_args *a, cudaStream_t s, char *why, size_t why_len) {
    if (a->q.d > NAIVE_DMAX) {
        snprintf(why, why_len, "head dim %d > %d", a->q.d, NAIVE_DMAX);
        return USP_KERNEL_EUNSUPPORTED;
    }
    if (a->blk.q_len <= 0) return USP_KERNEL_OK;
    fwd<<<dim3(grid_x(a->blk.q_len), a->q.h, a->q.b), 128, 0, s>>>(*a);
    return check(cudaGetLastError(), "naive forward launch", why, why_len);
}
inline int launch_prep(const usp_kprep_args *a, cudaStream_t s, char *why, size_t why_len) {
    if (a->o.l <= 0) return USP_KERNEL_OK;
    prep<<<dim3(grid_x(a->o.l), a->o.h, a->o.b), 128, 0, s>>>(*a);
    return check(cudaGetLastError(), "naive bwd_prep launch", why, why_len);
}
inline int launch_bwd(const usp_kbwd_args *a, cudaStream_t s, char *why, size_t why_len) {
    if (a->q.d > NAIVE_DMAX) {
        snprintf(why, why_len, "head dim %d > %d", a->q.d, NAIVE_DMAX);
        return USP_KERNEL_EUNSUPPORTED;
    }
    if (a->blk.q_len <= 0 || a->blk.kv_len <= 0) return USP_KERNEL_OK;
    bwd_dq<<<dim3(grid_x(a->blk.q_len), a->q.h, a->q.b), 128, 0, s>>>(*a);
    int rc = check(cudaGetLastError(), "naive dq launch", why, why_len);
    if (rc != USP_KERNEL_OK) return rc;
    bwd_dkv<<<dim3(grid_x(a->blk.kv_len), a->k.h, a->q.b), 128, 0, s>>>(*a);
    return check(cudaGetLastError(), "naive dk/dv launch", why, why_len);
}
inline int launch_merge(const usp_kmerge_args *a, cudaStream_t s, char *why, size_t why_len) {
    if (a->rows <= 0) return USP_KERNEL_OK;
    merge<<<dim3(grid_x((int64_t)a->rows * a->o.h), a->o.b), 128, 0, s>>>(*a);
    return check(cudaGetLastError(), "naive merge launch", why, why_len);
}

} // namespace
} // namespace naive

#endif
