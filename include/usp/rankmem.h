/* usp/rankmem.h: one rank's buffers in host memory, and the work on them.
 *
 * Executors that move real numbers on the CPU (the in-process executor and
 * the simulator in numerics mode) share this: a compute step is applied by
 * usp_rank_compute(), a communication step is cut into messages with
 * usp_rank_msg_pack() and put back with usp_rank_msg_unpack(). Only the
 * transport differs between them, so their outputs are bit-identical.
 *
 * fp16 and bf16 runs are a CPU emulation of the GPU's arithmetic around the
 * kernels: fp32 buffers and arithmetic (as the GPU's accumulators, LSE and
 * dK/dV ring), inputs rounded to the dtype (as the GPU holds them), and the
 * O, dQ, dK, dV all-to-all payloads rounded to usp_wire_dtype() when packed
 * (as the GPU converts them). The kernels' own 16-bit products are not
 * emulated: the error measured is that of the schedule and the wire.
 *
 * Messages of a comm step, by kind (group = the step's group; peer index =
 * position in that group):
 *   ALL_TO_ALL       to peer i: piece i of SEND;  from peer j: piece j of RECV
 *   SENDRECV         one message to usp_step_send_peer(), one from usp_step_recv_peer(): src[] / dst[]
 *   ALLGATHER        to every peer: the own block of src[];  from j: block j of dst[]
 *   REDUCE_SCATTER   to peer i: block i of src[];  from j: summed into dst[]
 * A rank sends to itself too (index = its own position); the unpacks of one
 * step must be applied in peer order 0, 1, .., n-1 so sums round the same. */
#ifndef USP_RANKMEM_H
#define USP_RANKMEM_H

#include "usp/executor.h"

typedef struct {
    const usp_schedule *sched;
    int rank;
    void *buf[USP_BUF_COUNT];     /* owner-resolved; NULL where unused */
    size_t elem[USP_BUF_COUNT];   /* bytes per element: 8 (f64) or 4 (f32, fp16, bf16) */
    /* Per-row intervals of the attention steps with a mask layer, by
     * (K/V ring rank j, layer): rows_at[j*layers + l] is the offset in rows
     * of lo then hi (each batch x the block's q_len, usp/rowmask.h), or -1. */
    int32_t *rows;
    long *rows_at;
} usp_rank_mem;

/* Allocates every buffer the rank's list uses (dtype f64 or f32 only). */
usp_status usp_rank_mem_alloc(const usp_schedule *s, int rank, usp_rank_mem *m);
void usp_rank_mem_free(usp_rank_mem *m);

/* Copies the rank's shards of q, k, v (and dout when the schedule has a
 * backward) out of the global fp64 inputs, converted to the dtype. */
usp_status usp_rank_mem_load(usp_rank_mem *m, const usp_inputs *in);
/* Writes the rank's shards of o, lse (and dq, dk, dv) into the result's
 * global fp64 arrays. */
usp_status usp_rank_mem_store(const usp_rank_mem *m, usp_result *r);

/* Applies one COMPUTE-stream step. */
void usp_rank_compute(usp_rank_mem *m, const usp_step *st);

/* Number of messages of a comm step (group size, or 1 for SENDRECV) and the
 * bytes of each. */
int usp_rank_msg_count(const usp_rank_mem *m, const usp_step *st);
/* Bytes of the message to peer index i (all-to-all pieces differ by peer
 * when the head split is uneven, usp/a2a.h); usp_rank_msg_bytes is peer 0's,
 * which every peer's equals otherwise. */
size_t usp_rank_msg_bytes_to(const usp_rank_mem *m, const usp_step *st, int i);
size_t usp_rank_msg_bytes(const usp_rank_mem *m, const usp_step *st);
/* Fills `msg` (usp_rank_msg_bytes_to long) with what goes to peer index i. */
void usp_rank_msg_pack(const usp_rank_mem *m, const usp_step *st, int i, void *msg);
/* Applies what came from peer index j. */
void usp_rank_msg_unpack(usp_rank_mem *m, const usp_step *st, int j, const void *msg);

#endif
