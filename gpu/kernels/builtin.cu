/* builtin.cu: the usp_kernel of usp_gpu.
 *
 * Checks the descriptors (shapes agree, block inside the tensors, dtypes),
 * then sends bf16/fp16 inputs with D = 64 or 128 (256 on sm_90a) and 16-byte aligned rows
 * to the tiled tensor-core kernels, and everything else (fp32 inputs, other
 * head dims, odd strides) to the simple kernels of plugins/naive_kernels.cuh. */
#include "kernels.h"
#include "plugins/naive_kernels.cuh"
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

namespace {

int refuse(char *why, size_t why_len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
    return USP_KERNEL_EUNSUPPORTED;
}

bool is_input_dtype(usp_dtype d) { return d == USP_BF16 || d == USP_F16 || d == USP_F32; }

/* Shapes and dtypes common to forward and backward. */
int check_qkv(const usp_ktensor &q, const usp_ktensor &k, const usp_ktensor &v, const usp_block &blk,
              char *why, size_t why_len) {
    if (!q.ptr || !k.ptr || !v.ptr) return refuse(why, why_len, "a Q/K/V pointer is NULL");
    if (!is_input_dtype(q.dtype)) return refuse(why, why_len, "input dtype %s not taken", usp_dtype_name(q.dtype));
    if (k.dtype != q.dtype || v.dtype != q.dtype) return refuse(why, why_len, "Q, K, V dtypes differ");
    if (k.b != q.b || v.b != q.b) return refuse(why, why_len, "batch differs between Q, K, V");
    if (k.d != q.d || v.d != q.d || q.d <= 0) return refuse(why, why_len, "head dims differ or are not positive");
    if (v.l != k.l || v.h != k.h) return refuse(why, why_len, "K and V shapes differ");
    if (k.h <= 0 || q.h % k.h != 0) return refuse(why, why_len, "query heads %d not a multiple of K/V heads %d", q.h, k.h);
    if (blk.q_begin < 0 || blk.q_len < 0 || blk.q_begin + blk.q_len > q.l)
        return refuse(why, why_len, "query rows [%d, %d) outside 0..%d", blk.q_begin, blk.q_begin + blk.q_len, q.l);
    if (blk.kv_begin < 0 || blk.kv_len < 0 || blk.kv_begin + blk.kv_len > k.l)
        return refuse(why, why_len, "key rows [%d, %d) outside 0..%d", blk.kv_begin, blk.kv_begin + blk.kv_len, k.l);
    return USP_KERNEL_OK;
}

int check_like(const usp_ktensor &x, const usp_ktensor &ref, const char *name, char *why, size_t why_len) {
    if (!x.ptr) return refuse(why, why_len, "%s is NULL", name);
    if (x.b != ref.b || x.l != ref.l || x.h != ref.h || x.d != ref.d)
        return refuse(why, why_len, "%s shape (%d,%d,%d,%d) differs from (%d,%d,%d,%d)", name, x.b, x.l, x.h,
                      x.d, ref.b, ref.l, ref.h, ref.d);
    return USP_KERNEL_OK;
}

int check_stats(const usp_kstats &s, const usp_ktensor &ref, const char *name, char *why, size_t why_len) {
    if (!s.ptr) return refuse(why, why_len, "%s is NULL", name);
    if (s.b != ref.b || s.h != ref.h || s.l != ref.l)
        return refuse(why, why_len, "%s shape (%d,%d,%d) is not (B,H,L) = (%d,%d,%d)", name, s.b, s.h, s.l, ref.b,
                      ref.h, ref.l);
    return USP_KERNEL_OK;
}

/* Per-row intervals: both arrays or neither; int32 aligned. */
int check_mask(const int32_t *lo, const int32_t *hi, char *why, size_t why_len) {
    if (!lo != !hi) return refuse(why, why_len, "mask_lo and mask_hi: give both or neither");
    if ((reinterpret_cast<uintptr_t>(lo) & 3) || (reinterpret_cast<uintptr_t>(hi) & 3))
        return refuse(why, why_len, "mask arrays are not 4-byte aligned");
    return USP_KERNEL_OK;
}

#define USP_CHECK(x)                       \
    do {                                   \
        int rc_ = (x);                     \
        if (rc_ != USP_KERNEL_OK) return rc_; \
    } while (0)

UspFwdParams fwd_params(const usp_kfwd_args *a) {
    UspFwdParams p;
    p.q = a->q.ptr; p.k = a->k.ptr; p.v = a->v.ptr; p.o = a->o.ptr; p.lse = a->lse.ptr;
    p.q_sb = a->q.sb; p.q_sl = a->q.sl; p.q_sh = a->q.sh;
    p.k_sb = a->k.sb; p.k_sl = a->k.sl; p.k_sh = a->k.sh;
    p.v_sb = a->v.sb; p.v_sl = a->v.sl; p.v_sh = a->v.sh;
    p.o_sb = a->o.sb; p.o_sl = a->o.sl; p.o_sh = a->o.sh;
    p.lse_sb = a->lse.sb; p.lse_sh = a->lse.sh;
    p.b = a->q.b; p.h = a->q.h; p.hkv = a->k.h; p.d = a->q.d;
    p.q_begin = a->blk.q_begin; p.q_len = a->blk.q_len;
    p.kv_begin = a->blk.kv_begin; p.kv_len = a->blk.kv_len;
    p.causal = a->blk.causal; p.diag = a->blk.diag;
    p.scale = a->scale;
    p.mask_lo = a->mask_lo; p.mask_hi = a->mask_hi;
    return p;
}

UspBwdParams bwd_params(const usp_kbwd_args *a) {
    UspBwdParams p;
    p.q = a->q.ptr; p.k = a->k.ptr; p.v = a->v.ptr; p.dout = a->dout.ptr;
    p.lse = a->lse.ptr; p.delta = a->delta.ptr;
    p.dq = static_cast<float *>(a->dq.ptr); p.dk = static_cast<float *>(a->dk.ptr);
    p.dv = static_cast<float *>(a->dv.ptr);
    p.q_sb = a->q.sb; p.q_sl = a->q.sl; p.q_sh = a->q.sh;
    p.k_sb = a->k.sb; p.k_sl = a->k.sl; p.k_sh = a->k.sh;
    p.v_sb = a->v.sb; p.v_sl = a->v.sl; p.v_sh = a->v.sh;
    p.do_sb = a->dout.sb; p.do_sl = a->dout.sl; p.do_sh = a->dout.sh;
    p.dq_sb = a->dq.sb; p.dq_sl = a->dq.sl; p.dq_sh = a->dq.sh;
    p.dk_sb = a->dk.sb; p.dk_sl = a->dk.sl; p.dk_sh = a->dk.sh;
    p.dv_sb = a->dv.sb; p.dv_sl = a->dv.sl; p.dv_sh = a->dv.sh;
    p.lse_sb = a->lse.sb; p.lse_sh = a->lse.sh; p.dl_sb = a->delta.sb; p.dl_sh = a->delta.sh;
    p.b = a->q.b; p.h = a->q.h; p.hkv = a->k.h; p.d = a->q.d;
    p.q_begin = a->blk.q_begin; p.q_len = a->blk.q_len;
    p.kv_begin = a->blk.kv_begin; p.kv_len = a->blk.kv_len;
    p.causal = a->blk.causal; p.diag = a->blk.diag;
    p.scale = a->scale;
    p.mask_lo = a->mask_lo; p.mask_hi = a->mask_hi;
    return p;
}

int builtin_forward(const usp_kfwd_args *a, void *stream, char *why, size_t why_len) {
    USP_CHECK(check_qkv(a->q, a->k, a->v, a->blk, why, why_len));
    USP_CHECK(check_like(a->o, a->q, "O", why, why_len));
    USP_CHECK(check_stats(a->lse, a->q, "LSE", why, why_len));
    if (a->o.dtype != USP_F32 && a->o.dtype != a->q.dtype)
        return refuse(why, why_len, "O dtype %s: fp32 or the input dtype", usp_dtype_name(a->o.dtype));
    if (!(a->scale > 0.0f)) return refuse(why, why_len, "scale %g is not positive", (double)a->scale);
    USP_CHECK(check_mask(a->mask_lo, a->mask_hi, why, why_len));
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    bool tc = usp_tc_supports(a->q.dtype, a->q.d) && usp_rows16(a->q) && usp_rows16(a->k) &&
              usp_rows16(a->v) && (reinterpret_cast<uintptr_t>(a->o.ptr) & 7) == 0 && a->o.sl % 2 == 0 &&
              a->o.sh % 2 == 0 && a->o.sb % 2 == 0;
    if (tc) return usp_tc_fwd(fwd_params(a), a->q.dtype, a->o.dtype, st, why, why_len);
    return naive::launch_fwd(a, st, why, why_len);
}

int builtin_bwd_prep(const usp_kprep_args *a, void *stream, char *why, size_t why_len) {
    USP_CHECK(check_like(a->dout, a->o, "dO", why, why_len));
    USP_CHECK(check_stats(a->delta, a->o, "DELTA", why, why_len));
    if (!a->o.ptr) return refuse(why, why_len, "O is NULL");
    return usp_prep_launch(a, static_cast<cudaStream_t>(stream), why, why_len);
}

int builtin_backward(const usp_kbwd_args *a, void *stream, char *why, size_t why_len) {
    USP_CHECK(check_qkv(a->q, a->k, a->v, a->blk, why, why_len));
    USP_CHECK(check_like(a->dout, a->q, "dO", why, why_len));
    USP_CHECK(check_like(a->dq, a->q, "dQ", why, why_len));
    USP_CHECK(check_like(a->dk, a->k, "dK", why, why_len));
    USP_CHECK(check_like(a->dv, a->k, "dV", why, why_len));
    USP_CHECK(check_stats(a->lse, a->q, "LSE", why, why_len));
    USP_CHECK(check_stats(a->delta, a->q, "DELTA", why, why_len));
    if (a->dout.dtype != a->q.dtype) return refuse(why, why_len, "dO dtype differs from Q's");
    if (a->dq.dtype != USP_F32 || a->dk.dtype != USP_F32 || a->dv.dtype != USP_F32)
        return refuse(why, why_len, "dQ, dK, dV must be fp32 accumulators");
    if (!(a->scale > 0.0f)) return refuse(why, why_len, "scale %g is not positive", (double)a->scale);
    USP_CHECK(check_mask(a->mask_lo, a->mask_hi, why, why_len));
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    bool tc = usp_tc_supports(a->q.dtype, a->q.d) && usp_rows16(a->q) && usp_rows16(a->k) &&
              usp_rows16(a->v) && usp_rows16(a->dout) && a->dq.sl % 2 == 0 && a->dq.sh % 2 == 0 &&
              a->dq.sb % 2 == 0 && (reinterpret_cast<uintptr_t>(a->dq.ptr) & 7) == 0 &&
              (reinterpret_cast<uintptr_t>(a->dk.ptr) & 7) == 0 && (reinterpret_cast<uintptr_t>(a->dv.ptr) & 7) == 0 &&
              a->dk.sl % 2 == 0 && a->dv.sl % 2 == 0 && a->dk.sh % 2 == 0 && a->dv.sh % 2 == 0 &&
              a->dk.sb % 2 == 0 && a->dv.sb % 2 == 0;
    if (tc) return usp_tc_bwd(bwd_params(a), a->q.dtype, st, why, why_len);
    return naive::launch_bwd(a, st, why, why_len);
}

int builtin_merge(const usp_kmerge_args *a, void *stream, char *why, size_t why_len) {
    USP_CHECK(check_like(a->o_blk, a->o, "O_blk", why, why_len));
    if (!a->o.ptr) return refuse(why, why_len, "O is NULL");
    USP_CHECK(check_stats(a->lse, a->o, "LSE", why, why_len));
    USP_CHECK(check_stats(a->lse_blk, a->o, "LSE_blk", why, why_len));
    if (a->row_begin < 0 || a->rows < 0 || a->row_begin + a->rows > a->o.l)
        return refuse(why, why_len, "rows [%d, %d) outside 0..%d", a->row_begin, a->row_begin + a->rows, a->o.l);
    return usp_merge_launch(a, static_cast<cudaStream_t>(stream), why, why_len);
}

const usp_kernel builtin_kernel = {
    USP_KERNEL_ABI_VERSION,
    sizeof(usp_kernel),
    "usp built-in (wgmma tiles on sm_90a, mma.sync elsewhere)",
    (1u << USP_BF16) | (1u << USP_F16) | (1u << USP_F32),
    builtin_forward,
    builtin_bwd_prep,
    builtin_backward,
    builtin_merge,
};

} // namespace

int usp_wgmma_enabled(void) {
    static int forced = -1;   /* USP_GPU_TILES=mma: the mma.sync kernels everywhere */
    if (forced < 0) {
        const char *e = getenv("USP_GPU_TILES");
        forced = e && !strcmp(e, "mma") ? 1 : 0;
    }
    if (forced) return 0;
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess)
        return 0;
    return major == 9 && minor == 0;
}

extern "C" const usp_kernel *usp_kernel_builtin(void) { return &builtin_kernel; }
