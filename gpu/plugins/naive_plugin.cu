/* naive_plugin.cu: an attention-kernel plugin, as simple as it gets.
 *
 * A plugin is a shared object that exports one C function,
 * usp_kernel_entry(), returning a usp_kernel (include/usp/kernel.h): its ABI
 * version, its size, which input dtypes it takes and four functions. usp
 * loads it with `usp kernel-check --kernel naive_plugin.so` (and the GPU
 * executor with --kernel), checks the struct, then calls only through it.
 *
 * This one (ABI 2) computes with one thread per query row in fp32
 * (naive_kernels.cuh): correct on every shape and mask kernel-check tries,
 * per-row key intervals included,
 * and slow. Build (gpu/CMakeLists.txt does this):
 *   nvcc -arch=sm_90 -shared -Xcompiler -fPIC -I include naive_plugin.cu -o naive_plugin.so */
#include "naive_kernels.cuh"

/* The same source also builds naive_plugin_v1.so with -DNAIVE_PLUGIN_ABI=1: a
 * plugin of the previous ABI, which usp still loads and never hands a mask. */
#ifndef NAIVE_PLUGIN_ABI
#define NAIVE_PLUGIN_ABI USP_KERNEL_ABI_VERSION
#endif

static int naive_forward(const usp_kfwd_args *a, void *stream, char *why, size_t why_len) {
    return naive::launch_fwd(a, static_cast<cudaStream_t>(stream), why, why_len);
}
static int naive_bwd_prep(const usp_kprep_args *a, void *stream, char *why, size_t why_len) {
    return naive::launch_prep(a, static_cast<cudaStream_t>(stream), why, why_len);
}
static int naive_backward(const usp_kbwd_args *a, void *stream, char *why, size_t why_len) {
    return naive::launch_bwd(a, static_cast<cudaStream_t>(stream), why, why_len);
}
static int naive_merge(const usp_kmerge_args *a, void *stream, char *why, size_t why_len) {
    return naive::launch_merge(a, static_cast<cudaStream_t>(stream), why, why_len);
}

static const usp_kernel naive_kernel = {
    NAIVE_PLUGIN_ABI,
    sizeof(usp_kernel),
    "naive (one thread a row, fp32)",
    (1u << USP_BF16) | (1u << USP_F16) | (1u << USP_F32),
    naive_forward,
    naive_bwd_prep,
    naive_backward,
    naive_merge,
};

extern "C" __attribute__((visibility("default"))) const usp_kernel *usp_kernel_entry(void) {
    return &naive_kernel;
}
