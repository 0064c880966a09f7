/* bench_gpu.c: flat entry points into the built-in kernels for tools/bench-gpu.
 *
 * tools/bench-gpu (Python) loads libusp_bench_gpu.so with ctypes and calls
 * these on PyTorch's device tensors, so our kernels and SDPA's backends run
 * on the same inputs, in the same process, timed the same way. Tensors are
 * contiguous (B, L, H, D); LSE and DELTA (B, H, L) fp32; dQ/dK/dV fp32 and
 * accumulated (+=). dtype and odtype are usp_dtype values (F32 1, F16 2,
 * BF16 3). Return 0, or non-zero with usp_bench_error() saying why.
 * The _masked forms take per-row key intervals (usp/rowmask.h): device int32
 * lo, hi of (B, L); NULL for the causal flag's mask. */
#include <stdio.h>
#include <string.h>
#include "usp/kernel.h"

#define BENCH_API __attribute__((visibility("default")))

static char bench_why[256];

BENCH_API const char *usp_bench_error(void) { return bench_why; }

BENCH_API int usp_bench_abi_version(void) { return (int)USP_KERNEL_ABI_VERSION; }

static usp_block full_block(int L, int causal) {
    usp_block b = {0, L, 0, L, causal, 0};
    return b;
}

BENCH_API int usp_bench_forward_masked(void *q, void *k, void *v, void *o, float *lse, int dtype, int odtype,
                                       int B, int L, int H, int Hkv, int D, int causal, double scale,
                                       const int32_t *lo, const int32_t *hi, void *stream) {
    const usp_kernel *kern = usp_kernel_builtin();
    usp_kfwd_args a;
    memset(&a, 0, sizeof a);
    a.mask_lo = lo;
    a.mask_hi = hi;
    a.q = usp_ktensor_bshd(q, (usp_dtype)dtype, B, L, H, D);
    a.k = usp_ktensor_bshd(k, (usp_dtype)dtype, B, L, Hkv, D);
    a.v = usp_ktensor_bshd(v, (usp_dtype)dtype, B, L, Hkv, D);
    a.o = usp_ktensor_bshd(o, (usp_dtype)odtype, B, L, H, D);
    a.lse = usp_kstats_bhl(lse, B, H, L);
    a.blk = full_block(L, causal);
    a.scale = (float)scale;
    return kern->forward(&a, stream, bench_why, sizeof bench_why);
}

BENCH_API int usp_bench_forward(void *q, void *k, void *v, void *o, float *lse, int dtype, int odtype, int B,
                                int L, int H, int Hkv, int D, int causal, double scale, void *stream) {
    return usp_bench_forward_masked(q, k, v, o, lse, dtype, odtype, B, L, H, Hkv, D, causal, scale, NULL, NULL,
                                    stream);
}

/* bwd_prep (DELTA from O and dO) then backward: what one backward costs. */
BENCH_API int usp_bench_backward_masked(void *q, void *k, void *v, void *o, void *dout, float *lse, float *delta,
                                        float *dq, float *dk, float *dv, int dtype, int odtype, int B, int L,
                                        int H, int Hkv, int D, int causal, double scale, const int32_t *lo,
                                        const int32_t *hi, void *stream) {
    const usp_kernel *kern = usp_kernel_builtin();
    usp_kprep_args p;
    p.o = usp_ktensor_bshd(o, (usp_dtype)odtype, B, L, H, D);
    p.dout = usp_ktensor_bshd(dout, (usp_dtype)dtype, B, L, H, D);
    p.delta = usp_kstats_bhl(delta, B, H, L);
    int rc = kern->bwd_prep(&p, stream, bench_why, sizeof bench_why);
    if (rc) return rc;
    usp_kbwd_args a;
    memset(&a, 0, sizeof a);
    a.mask_lo = lo;
    a.mask_hi = hi;
    a.q = usp_ktensor_bshd(q, (usp_dtype)dtype, B, L, H, D);
    a.k = usp_ktensor_bshd(k, (usp_dtype)dtype, B, L, Hkv, D);
    a.v = usp_ktensor_bshd(v, (usp_dtype)dtype, B, L, Hkv, D);
    a.dout = p.dout;
    a.lse = usp_kstats_bhl(lse, B, H, L);
    a.delta = p.delta;
    a.dq = usp_ktensor_bshd(dq, USP_F32, B, L, H, D);
    a.dk = usp_ktensor_bshd(dk, USP_F32, B, L, Hkv, D);
    a.dv = usp_ktensor_bshd(dv, USP_F32, B, L, Hkv, D);
    a.blk = full_block(L, causal);
    a.scale = (float)scale;
    return kern->backward(&a, stream, bench_why, sizeof bench_why);
}

BENCH_API int usp_bench_backward(void *q, void *k, void *v, void *o, void *dout, float *lse, float *delta,
                                 float *dq, float *dk, float *dv, int dtype, int odtype, int B, int L, int H,
                                 int Hkv, int D, int causal, double scale, void *stream) {
    return usp_bench_backward_masked(q, k, v, o, dout, lse, delta, dq, dk, dv, dtype, odtype, B, L, H, Hkv, D,
                                     causal, scale, NULL, NULL, stream);
}
