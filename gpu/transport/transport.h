/* transport.h: how the rank processes move data (inside usp_gpu): one small
 * struct of operations, one file per implementation.
 *
 *   nccl_transport.c  NCCL communicators: one rank per GPU, any number of
 *                     machines (the default).
 *   ipc_transport.c   CUDA IPC between the rank processes of one machine:
 *                     several ranks may share one GPU, which NCCL refuses.
 *
 * usp_transport_open picks one (usp_transport_choose; rank 0's
 * USP_TRANSPORT holds for all): without USP_TRANSPORT, IPC when two ranks
 * report the same GPU (PCI bus id on one host), else NCCL; ranks on several
 * machines that repeat a GPU are refused with one line. USP_TRANSPORT=ipc
 * takes IPC for any world on one machine; USP_TRANSPORT=nccl takes NCCL,
 * and ranks that share a GPU are then refused with one line.
 *
 * Every operation is enqueued on `st` (a CUDA stream of the calling rank)
 * and is collective over the group it names: every member calls it, in the
 * same order as the other members. An operation may block the host until
 * its peers have enqueued their side (IPC does), never until the GPU has
 * run it; every such wait has the transport's deadline and ends on a peer's
 * failure reported over the TCP links. Group ranks are indices inside the
 * group (usp_group_index of usp/schedule.h). */
#ifndef USP_GPU_TRANSPORT_H
#define USP_GPU_TRANSPORT_H

#include <cuda_runtime_api.h>
#include <stddef.h>
#include "bootstrap.h"
#include "usp/config.h"

typedef struct usp_transport usp_transport;

typedef struct {
    const char *name;   /* "nccl", "ipc" */
    /* 1: after a failure this rank's streams may wait forever on a peer's
     * event (nothing can abort them), so device memory is not freed (a free
     * would wait for them too) and is left to the process's end. */
    int keep_memory_on_failure;
    /* The ulysses and ring groups of configuration c (kept while c's mesh
     * and layout stay); collective over the world. */
    usp_status (*split)(usp_transport *t, const usp_config *c);
    /* ALL_TO_ALL_V in this rank's ulysses group: send_bytes[i] bytes at
     * send + send_off[i] to group rank i, recv_bytes[j] bytes from group
     * rank j to recv + recv_off[j]; n is the group's size. */
    usp_status (*all_to_all_v)(usp_transport *t, int n, const void *send, const size_t *send_off,
                               const size_t *send_bytes, void *recv, const size_t *recv_off,
                               const size_t *recv_bytes, cudaStream_t st);
    /* SENDRECV in the ring group: (s0, s1) to ring rank `to`, (d0, d1) from
     * ring rank `from`; b0 and b1 bytes each. */
    usp_status (*sendrecv)(usp_transport *t, const void *s0, const void *s1, void *d0, void *d1, size_t b0,
                           size_t b1, int to, int from, cudaStream_t st);
    /* ALLGATHER in the ring group: block `bytes` of s0 and s1 to every ring
     * rank; d0, d1 hold R blocks in ring-rank order. */
    usp_status (*allgather)(usp_transport *t, const void *s0, const void *s1, void *d0, void *d1, size_t bytes,
                            cudaStream_t st);
    /* REDUCE_SCATTER in the ring group: block i of s0, s1 (count fp32 each)
     * summed into d0, d1 on ring rank i. */
    usp_status (*reduce_scatter)(usp_transport *t, const void *s0, const void *s1, void *d0, void *d1,
                                 size_t count, cudaStream_t st);
    /* World: rank 0 receives `bytes` from every rank into root (world *
     * bytes, rank order); the others send `mine`. */
    usp_status (*gather)(usp_transport *t, const void *mine, void *root, size_t bytes, cudaStream_t st);
    /* World: a common instant on st (scratch: one float of device memory). */
    usp_status (*barrier)(usp_transport *t, float *scratch, cudaStream_t st);
    /* Between runs: what the transport holds of this run's buffers goes
     * (IPC unmaps its peers' buffers); collective over the world, called
     * before the buffers are freed. */
    usp_status (*end_run)(usp_transport *t);
    /* Asynchronous errors: USP_OK while none. */
    usp_status (*poll)(usp_transport *t);
    /* Ends every operation now (wakes kernels that wait for a peer). */
    void (*abort)(usp_transport *t);
    /* Orderly end after a world barrier; frees t. */
    void (*close)(usp_transport *t);
} usp_transport_ops;

/* Every implementation's struct begins with this. */
struct usp_transport {
    const usp_transport_ops *ops;
};

/* What the transport needs from the process: its rank and GPU, the TCP
 * links (open), rank 0's NCCL unique id (any bytes when world is 1). */
typedef struct {
    int rank, world, device;
    usp_links *links;
    double timeout_s;
    const void *nccl_id;   /* an ncclUniqueId */
} usp_transport_env;

/* Picks (USP_TRANSPORT, then the GPUs the ranks report) and opens one;
 * collective over the world. */
usp_status usp_transport_open(const usp_transport_env *e, usp_transport **out);
/* The two implementations (transport.c calls them). */
usp_status usp_transport_open_nccl(const usp_transport_env *e, usp_transport **out);
usp_status usp_transport_open_ipc(const usp_transport_env *e, usp_transport **out);

/* The even all-to-all: piece i of send to group rank i, piece j of recv from j. */
usp_status usp_transport_all_to_all(usp_transport *t, int n, const void *send, void *recv, size_t piece_bytes,
                                    cudaStream_t st);

/* The choice of usp_transport_open, as a pure function (tested on the host):
 * world ranks on hosts host_ids[g] (equal ids: one machine) with GPUs
 * gpu_ids[g] (equal ids on one machine: one GPU), and the USP_TRANSPORT
 * value (NULL or "" when unset). Returns 0 for NCCL, 1 for IPC, or -1 with
 * the reason in why. */
int usp_transport_choose(int world, const char *const *host_ids, const char *const *gpu_ids, const char *setting,
                         char *why, size_t why_len);

#endif
