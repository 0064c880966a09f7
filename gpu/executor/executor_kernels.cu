/* executor_kernels.cu: the executor's own small kernels (executor_cuda.h).
 * Memory-bound, one thread per element over a grid-stride loop. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stddef.h>
extern "C" {
#include "usp/error.h" /* a C header without its own extern "C" */
}
#include "executor_cuda.h"

namespace {

const int kThreads = 256;

unsigned blocks_for(int64_t n) {
    int64_t b = (n + kThreads - 1) / kThreads;
    return (unsigned)(b > 65535 * 8 ? 65535 * 8 : (b < 1 ? 1 : b));
}

usp_status launched(const char *what) {
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return usp_fail(USP_EINTERNAL, "%s: %s", what, cudaGetErrorString(e));
    return USP_OK;
}

__global__ void fill_kernel(float *x, int64_t n, float value) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] = value;
}

__global__ void add_kernel(float *x, const float *y, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] += y[i];
}

__device__ void store(void *dst, usp_dtype dt, int64_t i, double v) {
    if (dt == USP_BF16) static_cast<__nv_bfloat16 *>(dst)[i] = __double2bfloat16(v);
    else if (dt == USP_F16) static_cast<__half *>(dst)[i] = __double2half(v);
    else static_cast<float *>(dst)[i] = (float)v;
}

__global__ void from_f32_kernel(void *dst, usp_dtype dt, const float *src, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        store(dst, dt, i, (double)src[i]);
}

/* The counter-based normal of core/inputs.c, element for element. */
__device__ uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

__device__ double uniform_open(uint64_t bits) { return ((double)(bits >> 11) + 0.5) * 0x1.0p-53; }

__device__ double input_value(uint64_t seed, int tensor, uint64_t index) {
    const uint64_t golden = 0x9e3779b97f4a7c15ULL;
    const double two_pi = 6.283185307179586476925286766559;
    uint64_t stream = mix64(seed ^ mix64(golden * ((uint64_t)tensor + 1)));
    uint64_t counter = 2 * index;
    double u1 = uniform_open(mix64(stream ^ mix64(counter)));
    double u2 = uniform_open(mix64(stream ^ mix64(counter + 1)));
    return sqrt(-2.0 * log(u1)) * cos(two_pi * u2);
}

__global__ void generate_kernel(void *dst, usp_dtype dt, usp_gpu_shard_desc g, const int64_t *tokens, int64_t n) {
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t d = e % g.head_dim, r = e / g.head_dim;
        int64_t h = r % g.heads;
        r /= g.heads;
        int64_t i = r % g.shard_seq, b = r / g.shard_seq;
        uint64_t global = (uint64_t)(((b * g.seq + tokens[i]) * g.heads + h) * g.head_dim + d);
        store(dst, dt, e, input_value(g.seed, (int)g.tensor, global));
    }
}

} // namespace

extern "C" usp_status usp_gpu_fill_f32(float *x, int64_t n, float value, cudaStream_t st) {
    if (n <= 0) return USP_OK;
    fill_kernel<<<blocks_for(n), kThreads, 0, st>>>(x, n, value);
    return launched("fill");
}

extern "C" usp_status usp_gpu_add_f32(float *x, const float *y, int64_t n, cudaStream_t st) {
    if (n <= 0) return USP_OK;
    add_kernel<<<blocks_for(n), kThreads, 0, st>>>(x, y, n);
    return launched("accumulate");
}

extern "C" usp_status usp_gpu_from_f32(void *dst, usp_dtype dt, const float *src, int64_t n, cudaStream_t st) {
    if (n <= 0) return USP_OK;
    from_f32_kernel<<<blocks_for(n), kThreads, 0, st>>>(dst, dt, src, n);
    return launched("dtype conversion");
}

extern "C" usp_status usp_gpu_generate_shard(void *dst, usp_dtype dt, const usp_gpu_shard_desc *desc,
                                             const int64_t *tokens, cudaStream_t st) {
    int64_t n = (int64_t)desc->batch * desc->shard_seq * desc->heads * desc->head_dim;
    if (n <= 0) return USP_OK;
    generate_kernel<<<blocks_for(n), kThreads, 0, st>>>(dst, dt, *desc, tokens, n);
    return launched("input generation");
}
