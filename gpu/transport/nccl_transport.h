/* nccl_transport.h: the communication steps of a schedule, through NCCL
 * (inside usp_gpu).
 *
 * Communicators are non-blocking (ncclConfig_t.blocking = 0): a call that
 * returns ncclInProgress is waited for by polling ncclCommGetAsyncError, with
 * a deadline and the TCP links checked in between, so a peer that never
 * arrives or fails elsewhere ends the wait with a message. The world
 * communicator lives as long as the process; the ulysses and ring groups are
 * split from it per configuration (mesh and layout) and kept until the next
 * configuration differs. */
#ifndef USP_GPU_NCCL_TRANSPORT_H
#define USP_GPU_NCCL_TRANSPORT_H

#include <cuda_runtime_api.h>
#include <nccl.h>
#include "bootstrap.h"
#include "transport.h"
#include "usp/config.h"

/* The one check of every NCCL call: ncclInProgress is not a failure on a
 * non-blocking communicator (the caller waits for it). */
#define USP_NCCL_CHECK(call)                                                           \
    do {                                                                               \
        ncclResult_t usp_nccl_r_ = (call);                                             \
        if (usp_nccl_r_ != ncclSuccess && usp_nccl_r_ != ncclInProgress)               \
            return usp_fail(USP_EINTERNAL, "%s: %s (%s)", #call,                      \
                            ncclGetErrorString(usp_nccl_r_), ncclGetLastError(NULL));  \
    } while (0)

typedef struct {
    usp_transport base;           /* ops: usp_transport_open_nccl's */
    int rank, world;
    ncclComm_t world_comm;
    ncclComm_t ulysses, ring;     /* NULL where the group has one rank */
    int group_key[3];             /* ulysses, ring, layout the groups were split for */
    usp_links *links;
    double timeout_s;
} usp_nccl;

usp_status usp_nccl_open(usp_nccl *n, usp_links *links, int rank, int world, const ncclUniqueId *id,
                         double timeout_s);
/* Makes (or keeps) the ulysses and ring communicators of configuration c;
 * collective over the world. */
usp_status usp_nccl_split(usp_nccl *n, const usp_config *c);
/* Async errors of every communicator: USP_OK while none. */
usp_status usp_nccl_poll(usp_nccl *n);
/* Ends every communicator now, waking NCCL kernels that wait for a peer. */
void usp_nccl_abort(usp_nccl *n);
void usp_nccl_close(usp_nccl *n);

/* ALL_TO_ALL: piece i of send to ulysses rank i, piece j of recv from j. */
usp_status usp_nccl_all_to_all(usp_nccl *n, const void *send, void *recv, size_t piece_bytes,
                               cudaStream_t st);
/* ALL_TO_ALL_V: send_bytes[i] at send + send_off[i] to ulysses rank i,
 * recv_bytes[j] from rank j to recv + recv_off[j] (grouped ncclSend/ncclRecv,
 * each peer's own byte count; zero-byte pieces are skipped). */
usp_status usp_nccl_all_to_all_v(usp_nccl *n, const void *send, const size_t *send_off, const size_t *send_bytes,
                                 void *recv, const size_t *recv_off, const size_t *recv_bytes, cudaStream_t st);
/* SENDRECV: (s0, s1) to ring rank `to`, (d0, d1) from ring rank `from`;
 * b0 and b1 are the bytes of each pair. */
usp_status usp_nccl_sendrecv(usp_nccl *n, const void *s0, const void *s1, void *d0, void *d1, size_t b0,
                             size_t b1, int to, int from, cudaStream_t st);
/* ALLGATHER: block `bytes` of s0 and s1 to every ring rank; d0, d1 hold R blocks. */
usp_status usp_nccl_allgather(usp_nccl *n, const void *s0, const void *s1, void *d0, void *d1, size_t bytes,
                              cudaStream_t st);
/* REDUCE_SCATTER: block i of s0, s1 (count floats or doubles each) summed
 * into d0, d1 on ring rank i. */
usp_status usp_nccl_reduce_scatter(usp_nccl *n, const void *s0, const void *s1, void *d0, void *d1,
                                   size_t count, int is_f64, cudaStream_t st);
/* Rank 0 receives `bytes` from every rank into root (world * bytes, rank
 * order); the others send `mine`. World communicator. */
usp_status usp_nccl_gather(usp_nccl *n, const void *mine, void *root, size_t bytes, cudaStream_t st);
/* A common instant: a one-float all-reduce on the world communicator. */
usp_status usp_nccl_barrier(usp_nccl *n, float *scratch, cudaStream_t st);

#endif
