/* executor_cuda.h: the CUDA check of the executor's host code, and the few
 * kernels of its own (executor_kernels.cu): buffer fills and sums, dtype conversion
 * of the inputs, and inputs generated on the GPU. Inside usp_gpu. */
#ifndef USP_GPU_EXECUTOR_CUDA_H
#define USP_GPU_EXECUTOR_CUDA_H

#include <stdint.h>
#include <cuda_runtime_api.h>
#include "usp/config.h"
#include "usp/inputs.h"

/* The one check of every CUDA runtime call in the executor's host code. */
#define USP_CUDA_CHECK(call)                                                             \
    do {                                                                                 \
        cudaError_t usp_cuda_e_ = (call);                                                \
        if (usp_cuda_e_ != cudaSuccess)                                                  \
            return usp_fail(USP_EINTERNAL, "%s: %s", #call, cudaGetErrorString(usp_cuda_e_)); \
    } while (0)

#ifdef __cplusplus
extern "C" {
#endif

/* x[0..n) = value (fp32 buffers: -inf for LSE). */
usp_status usp_gpu_fill_f32(float *x, int64_t n, float value, cudaStream_t st);

/* x[0..n) += y[0..n) (the dK/dV accumulators). */
usp_status usp_gpu_add_f32(float *x, const float *y, int64_t n, cudaStream_t st);

/* dst (dtype dt) = src (fp32), rounded to nearest even: exact for inputs
 * already rounded to dt on the host. */
usp_status usp_gpu_from_f32(void *dst, usp_dtype dt, const float *src, int64_t n, cudaStream_t st);

/* One rank's shard (B, Ls, nh, D) of generated tensor t, in dtype dt:
 * element (b, i, h, d) is usp_input_value(seed, t, global index of
 * (b, tokens[i], h, d) in (B, L, nh, D)), rounded to dt. tokens: Ls global
 * token indices in device memory. */
typedef struct {
    int batch, seq, shard_seq, heads, head_dim;
    uint64_t seed;
    usp_tensor_id tensor;
} usp_gpu_shard_desc;

usp_status usp_gpu_generate_shard(void *dst, usp_dtype dt, const usp_gpu_shard_desc *desc,
                                  const int64_t *tokens, cudaStream_t st);

#ifdef __cplusplus
}
#endif

#endif
