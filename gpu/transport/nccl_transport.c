/* nccl_transport.c: communication steps through NCCL (see nccl_transport.h). */
#include "nccl_transport.h"
#include "executor/executor_cuda.h"

#include <stdlib.h>
#include <string.h>
#include "usp/layout.h"
#include "usp/schedule.h"

static ncclConfig_t nonblocking_config(void) {
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    return cfg;
}

/* NCCL usually takes a call within microseconds: spin on it this long
 * before polling the links with 1 ms sleeps. Sleeping from the start made
 * every communication step cost at least 1 ms of host time, which stalls
 * the GPU on small problems (about 1.05 ms per call, usp calibrate). */
#define USP_NCCL_SPIN_S 0.01

/* Waits until comm has no operation in progress. */
static usp_status wait_ready(usp_nccl *n, ncclComm_t comm, const char *what) {
    if (!comm) return USP_OK;
    double start = usp_now_s(), deadline = start + n->timeout_s;
    for (;;) {
        ncclResult_t state;
        USP_NCCL_CHECK(ncclCommGetAsyncError(comm, &state));
        if (state == ncclSuccess) return USP_OK;
        if (state != ncclInProgress)
            return usp_fail(USP_EINTERNAL, "%s: NCCL: %s (%s)", what, ncclGetErrorString(state),
                            ncclGetLastError(comm));
        USP_TRY(usp_links_check(n->links, usp_now_s() - start < USP_NCCL_SPIN_S ? 0 : 1));
        if (usp_now_s() > deadline)
            return usp_fail(USP_EINTERNAL, "%s: NCCL still busy after %.0f s (a peer never joined?)", what,
                            n->timeout_s);
    }
}

usp_status usp_nccl_open(usp_nccl *n, usp_links *links, int rank, int world, const ncclUniqueId *id,
                         double timeout_s) {
    memset(n, 0, sizeof *n);
    n->rank = rank;
    n->world = world;
    n->links = links;
    n->timeout_s = timeout_s;
    n->group_key[0] = -1;
    if (world == 1) return USP_OK;
    ncclConfig_t cfg = nonblocking_config();
    ncclUniqueId copy = *id;
    USP_NCCL_CHECK(ncclCommInitRankConfig(&n->world_comm, world, copy, rank, &cfg));
    return wait_ready(n, n->world_comm, "NCCL world communicator");
}

static void destroy(ncclComm_t *comm) {
    if (!*comm) return;
    ncclCommDestroy(*comm);
    *comm = NULL;
}

/* Finalizes (flushes) then destroys the group communicators. */
static usp_status free_groups(usp_nccl *n) {
    ncclComm_t *groups[2] = {&n->ulysses, &n->ring};
    for (int i = 0; i < 2; i++) {
        if (!*groups[i]) continue;
        USP_NCCL_CHECK(ncclCommFinalize(*groups[i]));
        USP_TRY(wait_ready(n, *groups[i], "finalizing a group communicator"));
        destroy(groups[i]);
    }
    n->group_key[0] = -1;
    return USP_OK;
}

/* color: which group of that kind this rank is in; key: its index there. */
static usp_status split_one(usp_nccl *n, const usp_config *c, usp_group g, ncclComm_t *out) {
    int ring_rank, ulysses_rank;
    usp_coords_of(c, n->rank, &ring_rank, &ulysses_rank);
    int color = g == USP_GROUP_ULYSSES ? ring_rank : ulysses_rank;
    int key = usp_group_index(c, g, n->rank);
    ncclConfig_t cfg = nonblocking_config();
    const char *what = g == USP_GROUP_ULYSSES ? "splitting the ulysses groups" : "splitting the ring groups";
    USP_NCCL_CHECK(ncclCommSplit(n->world_comm, color, key, out, &cfg));
    /* a non-blocking split keeps the parent busy too until it is done */
    USP_TRY(wait_ready(n, n->world_comm, what));
    return wait_ready(n, *out, what);
}

usp_status usp_nccl_split(usp_nccl *n, const usp_config *c) {
    int key[3] = {c->ulysses, c->ring, (int)c->layout};
    if (!memcmp(key, n->group_key, sizeof key)) return USP_OK;
    USP_TRY(free_groups(n));
    if (c->ulysses > 1) USP_TRY(split_one(n, c, USP_GROUP_ULYSSES, &n->ulysses));
    if (c->ring > 1) USP_TRY(split_one(n, c, USP_GROUP_RING, &n->ring));
    memcpy(n->group_key, key, sizeof key);
    return USP_OK;
}

usp_status usp_nccl_poll(usp_nccl *n) {
    ncclComm_t comms[3] = {n->world_comm, n->ulysses, n->ring};
    for (int i = 0; i < 3; i++) {
        if (!comms[i]) continue;
        ncclResult_t state;
        USP_NCCL_CHECK(ncclCommGetAsyncError(comms[i], &state));
        if (state != ncclSuccess && state != ncclInProgress)
            return usp_fail(USP_EINTERNAL, "NCCL: %s (%s)", ncclGetErrorString(state), ncclGetLastError(comms[i]));
    }
    return USP_OK;
}

void usp_nccl_abort(usp_nccl *n) {
    ncclComm_t *comms[3] = {&n->ulysses, &n->ring, &n->world_comm};
    for (int i = 0; i < 3; i++)
        if (*comms[i]) {
            ncclCommAbort(*comms[i]);
            *comms[i] = NULL;
        }
}

void usp_nccl_close(usp_nccl *n) {
    if (free_groups(n) != USP_OK) { usp_nccl_abort(n); return; }
    if (!n->world_comm) return;
    ncclResult_t r = ncclCommFinalize(n->world_comm);
    if (r == ncclSuccess || r == ncclInProgress)
        (void)wait_ready(n, n->world_comm, "finalizing the world communicator");
    destroy(&n->world_comm);
}

/* ------------------------------------------------------------ steps */

/* Ends a group of calls and waits until NCCL has taken them. */
static usp_status end_group(usp_nccl *n, ncclComm_t comm, const char *what) {
    USP_NCCL_CHECK(ncclGroupEnd());
    return wait_ready(n, comm, what);
}

usp_status usp_nccl_all_to_all(usp_nccl *n, const void *send, void *recv, size_t piece_bytes,
                               cudaStream_t st) {
    int size, me;
    USP_NCCL_CHECK(ncclCommCount(n->ulysses, &size));
    USP_NCCL_CHECK(ncclCommUserRank(n->ulysses, &me));
    USP_NCCL_CHECK(ncclGroupStart());
    for (int i = 0; i < size; i++) {
        USP_NCCL_CHECK(ncclSend((const char *)send + (size_t)i * piece_bytes, piece_bytes, ncclUint8, i,
                                n->ulysses, st));
        USP_NCCL_CHECK(ncclRecv((char *)recv + (size_t)i * piece_bytes, piece_bytes, ncclUint8, i,
                                n->ulysses, st));
    }
    return end_group(n, n->ulysses, "all-to-all");
}

usp_status usp_nccl_all_to_all_v(usp_nccl *n, const void *send, const size_t *send_off, const size_t *send_bytes,
                                 void *recv, const size_t *recv_off, const size_t *recv_bytes, cudaStream_t st) {
    int size;
    USP_NCCL_CHECK(ncclCommCount(n->ulysses, &size));
    USP_NCCL_CHECK(ncclGroupStart());
    for (int i = 0; i < size; i++) {
        if (send_bytes[i])
            USP_NCCL_CHECK(ncclSend((const char *)send + send_off[i], send_bytes[i], ncclUint8, i, n->ulysses, st));
        if (recv_bytes[i])
            USP_NCCL_CHECK(ncclRecv((char *)recv + recv_off[i], recv_bytes[i], ncclUint8, i, n->ulysses, st));
    }
    return end_group(n, n->ulysses, "all-to-all");
}

usp_status usp_nccl_sendrecv(usp_nccl *n, const void *s0, const void *s1, void *d0, void *d1, size_t b0,
                             size_t b1, int to, int from, cudaStream_t st) {
    USP_NCCL_CHECK(ncclGroupStart());
    USP_NCCL_CHECK(ncclSend(s0, b0, ncclUint8, to, n->ring, st));
    USP_NCCL_CHECK(ncclSend(s1, b1, ncclUint8, to, n->ring, st));
    USP_NCCL_CHECK(ncclRecv(d0, b0, ncclUint8, from, n->ring, st));
    USP_NCCL_CHECK(ncclRecv(d1, b1, ncclUint8, from, n->ring, st));
    return end_group(n, n->ring, "ring send/recv");
}

usp_status usp_nccl_allgather(usp_nccl *n, const void *s0, const void *s1, void *d0, void *d1, size_t bytes,
                              cudaStream_t st) {
    USP_NCCL_CHECK(ncclGroupStart());
    USP_NCCL_CHECK(ncclAllGather(s0, d0, bytes, ncclUint8, n->ring, st));
    USP_NCCL_CHECK(ncclAllGather(s1, d1, bytes, ncclUint8, n->ring, st));
    return end_group(n, n->ring, "all-gather");
}

usp_status usp_nccl_reduce_scatter(usp_nccl *n, const void *s0, const void *s1, void *d0, void *d1,
                                   size_t count, int is_f64, cudaStream_t st) {
    ncclDataType_t t = is_f64 ? ncclFloat64 : ncclFloat32;
    USP_NCCL_CHECK(ncclGroupStart());
    USP_NCCL_CHECK(ncclReduceScatter(s0, d0, count, t, ncclSum, n->ring, st));
    USP_NCCL_CHECK(ncclReduceScatter(s1, d1, count, t, ncclSum, n->ring, st));
    return end_group(n, n->ring, "reduce-scatter");
}

usp_status usp_nccl_gather(usp_nccl *n, const void *mine, void *root, size_t bytes, cudaStream_t st) {
    if (n->world == 1) {
        USP_CUDA_CHECK(cudaMemcpyAsync(root, mine, bytes, cudaMemcpyDeviceToDevice, st));
        return USP_OK;
    }
    USP_NCCL_CHECK(ncclGroupStart());
    if (n->rank == 0) {
        for (int g = 0; g < n->world; g++)
            USP_NCCL_CHECK(ncclRecv((char *)root + (size_t)g * bytes, bytes, ncclUint8, g, n->world_comm, st));
    }
    USP_NCCL_CHECK(ncclSend(mine, bytes, ncclUint8, 0, n->world_comm, st));
    return end_group(n, n->world_comm, "gathering to rank 0");
}

usp_status usp_nccl_barrier(usp_nccl *n, float *scratch, cudaStream_t st) {
    if (n->world == 1) return USP_OK;
    USP_NCCL_CHECK(ncclAllReduce(scratch, scratch, 1, ncclFloat32, ncclSum, n->world_comm, st));
    return wait_ready(n, n->world_comm, "barrier");
}

/* ------------------------------------------------------------ the transport's operations */

static usp_nccl *nccl_of(usp_transport *t) { return (usp_nccl *)t; }

static usp_status op_split(usp_transport *t, const usp_config *c) { return usp_nccl_split(nccl_of(t), c); }

static usp_status op_all_to_all_v(usp_transport *t, int n, const void *send, const size_t *send_off,
                                  const size_t *send_bytes, void *recv, const size_t *recv_off,
                                  const size_t *recv_bytes, cudaStream_t st) {
    usp_nccl *x = nccl_of(t);
    int size;
    USP_NCCL_CHECK(ncclCommCount(x->ulysses, &size));
    if (size != n) return usp_fail(USP_EINTERNAL, "all-to-all over %d ranks in a group of %d", n, size);
    return usp_nccl_all_to_all_v(x, send, send_off, send_bytes, recv, recv_off, recv_bytes, st);
}

static usp_status op_sendrecv(usp_transport *t, const void *s0, const void *s1, void *d0, void *d1, size_t b0,
                              size_t b1, int to, int from, cudaStream_t st) {
    return usp_nccl_sendrecv(nccl_of(t), s0, s1, d0, d1, b0, b1, to, from, st);
}

static usp_status op_allgather(usp_transport *t, const void *s0, const void *s1, void *d0, void *d1, size_t bytes,
                               cudaStream_t st) {
    return usp_nccl_allgather(nccl_of(t), s0, s1, d0, d1, bytes, st);
}

static usp_status op_reduce_scatter(usp_transport *t, const void *s0, const void *s1, void *d0, void *d1,
                                    size_t count, cudaStream_t st) {
    return usp_nccl_reduce_scatter(nccl_of(t), s0, s1, d0, d1, count, 0, st);
}

static usp_status op_gather(usp_transport *t, const void *mine, void *root, size_t bytes, cudaStream_t st) {
    return usp_nccl_gather(nccl_of(t), mine, root, bytes, st);
}

static usp_status op_barrier(usp_transport *t, float *scratch, cudaStream_t st) {
    return usp_nccl_barrier(nccl_of(t), scratch, st);
}

static usp_status op_end_run(usp_transport *t) { (void)t; return USP_OK; }
static usp_status op_poll(usp_transport *t) { return usp_nccl_poll(nccl_of(t)); }
static void op_abort(usp_transport *t) { usp_nccl_abort(nccl_of(t)); }

static void op_close(usp_transport *t) {
    usp_nccl_close(nccl_of(t));
    free(t);
}

static const usp_transport_ops nccl_ops = {
    "nccl", 0, op_split, op_all_to_all_v, op_sendrecv, op_allgather, op_reduce_scatter, op_gather, op_barrier,
    op_end_run, op_poll, op_abort, op_close};

usp_status usp_transport_open_nccl(const usp_transport_env *e, usp_transport **out) {
    usp_nccl *n = usp_calloc(1, sizeof *n);
    if (!n) return USP_EINTERNAL;
    usp_status st = usp_nccl_open(n, e->links, e->rank, e->world, (const ncclUniqueId *)e->nccl_id, e->timeout_s);
    n->base.ops = &nccl_ops;
    if (st != USP_OK) {
        usp_nccl_abort(n);
        free(n);
        return st;
    }
    *out = &n->base;
    return USP_OK;
}
