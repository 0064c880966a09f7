/* usp/gpu_pack.h: the copies around the ulysses all-to-all, on the GPU.
 *
 * SEND and RECV hold U pieces back to back, piece u for (or from) ulysses
 * rank u. With Hu = H/U query heads per rank, Hkvu K/V heads per rank
 * (Hkv/U, or 1 when Hkv < U, replicated), kv0(u) = floor(u*Hkv/U) the first
 * K/V head of rank u, and Lr = U*Ls, an even split is:
 *
 *   pattern  pack: src -> SEND piece u              unpack: RECV piece u -> dst
 *   Q        (B,Ls,H,D) heads [u*Hu, +Hu)           (B,Lr,Hu,D) tokens [u*Ls, +Ls)
 *            piece (B,Ls,Hu,D)
 *   KV       (B,Ls,Hkv,D) heads [kv0(u), +Hkvu)     (B,Lr,Hkvu,D) tokens [u*Ls, +Ls)
 *            piece (B,Ls,Hkvu,D)
 *   O        (B,Lr,Hu,D) tokens [u*Ls, +Ls)         (B,Ls,H,D) heads [u*Hu, +Hu)
 *            piece (B,Ls,Hu,D)
 *   LSE      (B,Hu,Lr) tokens [u*Ls, +Ls)           (B,H,Ls) heads [u*Hu, +Hu)
 *            piece (B,Hu,Ls)
 *   DKV      (B,Lr,Hkvu,D) tokens [u*Ls, +Ls)       (B,Ls,Hkv,D): every K/V head is the
 *            piece (B,Ls,Hkvu,D)                    sum of the pieces that hold it, in
 *                                                   rank order (replicas when Hkv < U)
 *
 * An uneven split (H % U != 0, or neither of Hkv and U dividing the other;
 * usp/layout.h) gives each rank its own head counts: the pieces then differ
 * in size, lie one after the other at the offsets usp_gpu_a2a_send_offset /
 * recv_offset give, and the packing rank is dims.rank (gpu/a2a_index.h has
 * the arithmetic). The even split is the case where all pieces are alike.
 *
 * These are the layouts of usp/a2a.h (the host version) and its piece sizes
 * (usp_a2a_piece_elems). So pack(Q) -> all-to-all -> unpack gives each ulysses rank its heads of
 * every rank's tokens, in ulysses-rank order, and O / LSE / DKV go back the
 * same way. Calls are asynchronous on `stream` (a cudaStream_t as void *). */
#ifndef USP_GPU_PACK_H
#define USP_GPU_PACK_H

/* The project's C headers get C linkage in CUDA C++ translation units; the
 * standard headers they include come first, outside the extern "C". */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#ifdef __cplusplus
extern "C" {
#endif
#include "usp/config.h"
#include "usp/schedule.h"

typedef struct {
    int batch;      /* B */
    int seq_shard;  /* Ls = L / (ulysses * ring): a rank's tokens before the all-to-all */
    int ulysses;    /* U */
    int heads, kv_heads, head_dim;   /* H, Hkv, D of the whole problem */
    int rank;       /* the packing (unpacking) rank's ulysses rank, 0..U-1 */
} usp_a2a_dims;

/* The dims of a (validated) configuration, for ulysses rank 0 (any rank of an
 * even split), and for ulysses rank u. */
usp_a2a_dims usp_a2a_dims_of(const usp_config *c);
usp_a2a_dims usp_a2a_dims_rank(const usp_config *c, int ulysses_rank);

/* Elements of the first piece of pattern a (of every piece when the split is
 * even); of the piece to (from) ulysses rank p, and where it lies in SEND
 * (RECV), for rank g->rank. p = U gives the whole of SEND (RECV). */
long usp_gpu_a2a_piece_elems(usp_a2a a, const usp_a2a_dims *g);
long usp_gpu_a2a_send_elems(usp_a2a a, const usp_a2a_dims *g, int p);
long usp_gpu_a2a_send_offset(usp_a2a a, const usp_a2a_dims *g, int p);
long usp_gpu_a2a_recv_elems(usp_a2a a, const usp_a2a_dims *g, int p);
long usp_gpu_a2a_recv_offset(usp_a2a a, const usp_a2a_dims *g, int p);

/* Elements are of dtype dt (fp64, fp32, fp16, bf16); DKV sums in dt's
 * precision (fp32 for 16-bit), in rank order, as usp_a2a_unpack does on the
 * host: fp32 and fp64 results are bit-identical to it. */
usp_status usp_gpu_a2a_pack(usp_a2a a, const usp_a2a_dims *g, usp_dtype dt, const void *src, void *send,
                            void *stream);
usp_status usp_gpu_a2a_unpack(usp_a2a a, const usp_a2a_dims *g, usp_dtype dt, const void *recv, void *dst,
                              void *stream);

/* The same with the pieces in another dtype than their tensor: the O, dQ, dK,
 * dV all-to-alls of a 16-bit run on a 16-bit wire (usp_wire_dtype). pack_to
 * rounds src_dt to send_dt (nearest even); unpack_from widens recv_dt to
 * dst_dt (DKV sums in fp32 after widening). fp64 converts to nothing. */
usp_status usp_gpu_a2a_pack_to(usp_a2a a, const usp_a2a_dims *g, usp_dtype src_dt, usp_dtype send_dt,
                               const void *src, void *send, void *stream);
usp_status usp_gpu_a2a_unpack_from(usp_a2a a, const usp_a2a_dims *g, usp_dtype recv_dt, usp_dtype dst_dt,
                                   const void *recv, void *dst, void *stream);

#ifdef __cplusplus
}
#endif

#endif
