/* tma.cuh: mbarriers, the tensor copy engine (TMA) and register reallocation
 * on Hopper (sm_90 / sm_90a), for the warp-specialized kernels.
 *
 * Device side: mbarrier init / arrive / expect_tx / wait on a parity;
 * 4-d tensor loads (global -> shared, completing on an mbarrier with their
 * byte count) and 4-d tensor reduce-adds (shared -> global, bulk groups);
 * setmaxnreg. Host side: 4-d tensor maps (columns, rows, heads, batch) of a
 * row-strided tensor, made through the driver entry point that the CUDA
 * runtime hands out (no link to libcuda).
 *
 * Shapes: a map's box is box_cols x box_rows x 1 x 1 with the 128-byte swizzle,
 * so box_cols x element size must be 128 bytes (64 16-bit or 32 fp32 columns);
 * the box lands in shared memory as rows of 128 bytes whose 16-byte chunk c sits
 * at c ^ (row & 7), 1024-byte aligned (the atom layout of wgcommon.cuh). */
#ifndef USP_GPU_TMA_CUH
#define USP_GPU_TMA_CUH

#include <cuda.h>
#include <cudaTypedefs.h>
#include "kcommon.cuh"

namespace uspk {

__device__ __forceinline__ void mbar_init(uint64_t *bar, int count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count));
}
__device__ __forceinline__ void mbar_init_fence() {
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
/* Arrives and adds `bytes` to the transactions the phase waits for. */
__device__ __forceinline__ void mbar_arrive_tx(uint64_t *bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes)
                 : "memory");
}
/* Adds `bytes` to the transactions the phase waits for, without arriving. */
__device__ __forceinline__ void mbar_expect_tx_only(uint64_t *bar, uint32_t bytes) {
    asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void mbar_arrive1(uint64_t *bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)) : "memory");
}
/* Waits until the phase of parity `parity` has completed. */
__device__ __forceinline__ void mbar_wait_parity(uint64_t *bar, uint32_t parity) {
    asm volatile(
        "{\n.reg .pred p;\n"
        "TMA_WAIT_%=:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
        "@!p bra TMA_WAIT_%=;\n}\n" ::"r"(smem_u32(bar)),
        "r"(parity)
        : "memory");
}
/* A box of the 4-d map at (c0, c1, c2, c3) into dst, completing on bar. */
__device__ __forceinline__ void tma_load_4d(void *dst, const CUtensorMap *map, uint64_t *bar, int c0, int c1, int c2,
                                            int c3) {
    asm volatile(
        "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5, %6}], "
        "[%2];\n" ::"r"(smem_u32(dst)),
        "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
        : "memory");
}
/* Adds the box at src to the map's elements at (c0, c1, c2, c3); elements
 * outside the map are left alone. Part of the thread's current bulk group. */
__device__ __forceinline__ void tma_reduce_add_4d(const CUtensorMap *map, const void *src, int c0, int c1, int c2,
                                                  int c3) {
    asm volatile(
        "cp.reduce.async.bulk.tensor.4d.global.shared::cta.add.tile.bulk_group [%0, {%2, %3, %4, %5}], [%1];\n" ::"l"(
            reinterpret_cast<uint64_t>(map)),
        "r"(smem_u32(src)), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
        : "memory");
}
__device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
/* The thread's bulk groups but N are done reading shared memory. */
template <int N>
__device__ __forceinline__ void bulk_wait_read() { asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(N) : "memory"); }
/* The thread's bulk groups but N are complete (writes made). */
template <int N>
__device__ __forceinline__ void bulk_wait() { asm volatile("cp.async.bulk.wait_group %0;\n" ::"n"(N) : "memory"); }

template <int N>
__device__ __forceinline__ void regs_inc() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N)); }
template <int N>
__device__ __forceinline__ void regs_dec() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N)); }

/* ---- host: tensor maps ------------------------------------------------------ */

inline PFN_cuTensorMapEncodeTiled_v12000 tma_encode_fn() {
    static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
    static bool tried = false;
    if (!tried) {
        tried = true;
        void *f = nullptr;
        cudaDriverEntryPointQueryResult q;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q) ==
                cudaSuccess &&
            q == cudaDriverEntryPointSuccess)
            fn = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
        else
            (void)cudaGetLastError();
    }
    return fn;
}

/* 4-d map (d columns, rows, heads, batch) of a tensor of `esize`-byte elements
 * (2: bf16 / fp16 by dt; 4: fp32) whose row 0 is `base`; strides in elements;
 * boxes of 128 bytes of columns x box_rows rows, 128-byte swizzle. False when the
 * driver refuses (alignment, strides) or cannot be reached. */
inline bool tma_map_4d(CUtensorMap *m, const void *base, usp_dtype dt, int d, int rows, int heads, int batch,
                       int64_t sl, int64_t sh, int64_t sb, int box_rows) {
    PFN_cuTensorMapEncodeTiled_v12000 enc = tma_encode_fn();
    if (!enc) return false;
    const int es = dt == USP_F32 ? 4 : 2;
    cuuint64_t dims[4] = {(cuuint64_t)d, (cuuint64_t)rows, (cuuint64_t)heads, (cuuint64_t)batch};
    cuuint64_t strides[3] = {(cuuint64_t)sl * es, (cuuint64_t)sh * es, (cuuint64_t)sb * es};
    cuuint32_t box[4] = {(cuuint32_t)(128 / es), (cuuint32_t)box_rows, 1, 1};
    cuuint32_t estr[4] = {1, 1, 1, 1};
    CUtensorMapDataType ty = dt == USP_F32    ? CU_TENSOR_MAP_DATA_TYPE_FLOAT32
                             : dt == USP_BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                              : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
    CUresult r = enc(m, ty, 4, const_cast<void *>(base), dims, strides, box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE,
                     CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    return r == CUDA_SUCCESS;
}

} // namespace uspk

#endif
