/* nccl_transport.c: communication steps through NCCL (see nccl_transport.h). */
#include "nccl_transport.h"

#include <string.h>
#include "executor_cuda.h"
#include "nccl_watchdog.h"
#include "usp/layout.h"
#include "usp/schedule.h"

static ncclConfig_t config_of(int blocking) {
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = blocking;
    return cfg;
}

/* Waits until comm has no operation in progress (non-blocking communicators;
 * a blocking one is always ready). */
static usp_status wait_ready(usp_nccl *n, ncclComm_t comm, const char *what) {
    if (!comm) return USP_OK;
    double deadline = usp_now_s() + n->timeout_s;
    for (;;) {
        ncclResult_t state;
        USP_NCCL_CHECK(ncclCommGetAsyncError(comm, &state));
        if (state == ncclSuccess) return USP_OK;
        if (state != ncclInProgress)
            return usp_fail(USP_EINTERNAL, "%s: NCCL: %s (%s)", what, ncclGetErrorString(state),
                            ncclGetLastError(comm));
        USP_TRY(usp_links_check(n->links, 1));
        if (usp_now_s() > deadline)
            return usp_fail(USP_EINTERNAL, "%s: NCCL still busy after %.0f s (a peer never joined?)", what,
                            n->timeout_s);
    }
}

/* The watchdog aborts what exists now. */
static void publish_comms(usp_nccl *n) {
    ncclComm_t all[4] = {n->ulysses, n->ring, n->data, n->world_comm};
    if (n->watch) usp_watchdog_set_comms(n->watch, all, 4);
}

/* After the watchdog fired: the communicators are aborted and freed by it. */
static usp_status watchdog_result(usp_nccl *n) {
    usp_status st = usp_watchdog_disarm(n->watch);
    if (st != USP_OK) {
        n->world_comm = n->data = n->ulysses = n->ring = NULL;
        n->gone = 1;
    }
    return st;
}

static usp_status usable(const usp_nccl *n) {
    if (n->gone) return usp_fail(USP_EINTERNAL, "the NCCL communicators were aborted");
    return USP_OK;
}

/* ------------------------------------------------------------ set-up */

static usp_status split_call(usp_nccl *n, int color, int key, ncclComm_t *out) {
    ncclConfig_t cfg = config_of(1);
    USP_NCCL_CHECK(ncclCommSplit(n->world_comm, color, key, out, &cfg));
    return USP_OK;
}

/* A blocking communicator of the ranks with `color`, ordered by key. */
static usp_status split_into(usp_nccl *n, int color, int key, ncclComm_t *dst, const char *what) {
    ncclComm_t made = NULL;
    usp_watchdog_arm(n->watch, what, 1);
    usp_status st = split_call(n, color, key, &made);
    USP_TRY(watchdog_result(n));
    /* a non-blocking parent stays busy until the split is done */
    if (st == USP_OK) st = wait_ready(n, n->world_comm, what);
    if (st == USP_OK) st = wait_ready(n, made, what);
    if (st != USP_OK) return st;
    *dst = made;
    publish_comms(n);
    return USP_OK;
}

static usp_status init_world(usp_nccl *n, const ncclUniqueId *id) {
    ncclConfig_t cfg = config_of(0);
    ncclUniqueId copy = *id;
    USP_NCCL_CHECK(ncclCommInitRankConfig(&n->world_comm, n->world, copy, n->rank, &cfg));
    return USP_OK;
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
    USP_TRY(usp_watchdog_start(&n->watch, links, timeout_s));
    USP_TRY(init_world(n, id));
    publish_comms(n);
    USP_TRY(wait_ready(n, n->world_comm, "NCCL world communicator"));
    return split_into(n, 0, rank, &n->data, "NCCL data communicator");
}

static usp_status finalize_call(ncclComm_t comm) {
    USP_NCCL_CHECK(ncclCommFinalize(comm));
    return USP_OK;
}

static usp_status destroy_call(ncclComm_t comm) {
    USP_NCCL_CHECK(ncclCommDestroy(comm));
    return USP_OK;
}

/* Flushes then frees one communicator (every rank does the same). */
static usp_status finalize(usp_nccl *n, ncclComm_t *comm, const char *what) {
    if (!*comm) return USP_OK;
    usp_watchdog_arm(n->watch, what, 0);
    usp_status st = finalize_call(*comm);
    USP_TRY(watchdog_result(n));
    if (st == USP_OK) st = wait_ready(n, *comm, what);
    ncclComm_t dead = *comm;
    *comm = NULL;
    publish_comms(n);
    if (st == USP_OK) st = destroy_call(dead);
    return st;
}

static usp_status free_groups(usp_nccl *n) {
    USP_TRY(finalize(n, &n->ulysses, "finalizing the ulysses communicator"));
    USP_TRY(finalize(n, &n->ring, "finalizing the ring communicator"));
    n->group_key[0] = -1;
    return USP_OK;
}

/* color: which group of that kind this rank is in; key: its index there. */
static usp_status split_group(usp_nccl *n, const usp_config *c, usp_group g, ncclComm_t *out) {
    int ring_rank, ulysses_rank;
    usp_coords_of(c, n->rank, &ring_rank, &ulysses_rank);
    int color = g == USP_GROUP_ULYSSES ? ring_rank : ulysses_rank;
    return split_into(n, color, usp_group_index(c, g, n->rank), out,
                      g == USP_GROUP_ULYSSES ? "splitting the ulysses groups" : "splitting the ring groups");
}

usp_status usp_nccl_split(usp_nccl *n, const usp_config *c) {
    int key[3] = {c->ulysses, c->ring, (int)c->layout};
    if (!memcmp(key, n->group_key, sizeof key)) return USP_OK;
    USP_TRY(usable(n));
    USP_TRY(free_groups(n));
    if (c->ulysses > 1) USP_TRY(split_group(n, c, USP_GROUP_ULYSSES, &n->ulysses));
    if (c->ring > 1) USP_TRY(split_group(n, c, USP_GROUP_RING, &n->ring));
    memcpy(n->group_key, key, sizeof key);
    return USP_OK;
}

usp_status usp_nccl_poll(usp_nccl *n) {
    ncclComm_t comms[4] = {n->world_comm, n->data, n->ulysses, n->ring};
    USP_TRY(usable(n));
    for (int i = 0; i < 4; i++) {
        if (!comms[i]) continue;
        ncclResult_t state;
        USP_NCCL_CHECK(ncclCommGetAsyncError(comms[i], &state));
        if (state != ncclSuccess && state != ncclInProgress)
            return usp_fail(USP_EINTERNAL, "NCCL: %s (%s)", ncclGetErrorString(state), ncclGetLastError(comms[i]));
    }
    return USP_OK;
}

static void abort_call(ncclComm_t comm) {
    if (comm) (void)ncclCommAbort(comm); /* nothing more to do if even this fails */
}

void usp_nccl_abort(usp_nccl *n) {
    ncclComm_t all[4] = {n->ulysses, n->ring, n->data, n->world_comm};
    n->world_comm = n->data = n->ulysses = n->ring = NULL;
    publish_comms(n); /* the watchdog must not abort them a second time */
    if (!n->gone)
        for (int i = 0; i < 4; i++) abort_call(all[i]);
    n->gone = 1;
    usp_watchdog_stop(n->watch);
    n->watch = NULL;
}

void usp_nccl_close(usp_nccl *n) {
    usp_status st = n->gone ? USP_EINTERNAL : free_groups(n);
    if (st == USP_OK) st = finalize(n, &n->data, "finalizing the data communicator");
    if (st == USP_OK && n->world_comm) {
        st = finalize_call(n->world_comm);
        if (st == USP_OK) st = wait_ready(n, n->world_comm, "finalizing the world communicator");
        if (st == USP_OK) st = destroy_call(n->world_comm);
        n->world_comm = NULL;
    }
    if (st != USP_OK) { usp_nccl_abort(n); return; }
    usp_watchdog_stop(n->watch);
    n->watch = NULL;
}

/* ------------------------------------------------------------ steps */

static usp_status group_start(void) {
    USP_NCCL_CHECK(ncclGroupStart());
    return USP_OK;
}

static usp_status group_end(void) {
    USP_NCCL_CHECK(ncclGroupEnd());
    return USP_OK;
}

/* Ends a group of calls: with blocking communicators its kernels are on the
 * stream when this returns. */
static usp_status end_group(usp_nccl *n, const char *what) {
    usp_watchdog_arm(n->watch, what, 1);
    usp_status st = group_end();
    USP_TRY(watchdog_result(n));
    return st;
}

static usp_status p2p(int send, const void *buf, size_t bytes, int peer, ncclComm_t comm, cudaStream_t st) {
    if (send) USP_NCCL_CHECK(ncclSend(buf, bytes, ncclUint8, peer, comm, st));
    else USP_NCCL_CHECK(ncclRecv((void *)buf, bytes, ncclUint8, peer, comm, st));
    return USP_OK;
}

usp_status usp_nccl_all_to_all(usp_nccl *n, const void *send, void *recv, size_t piece_bytes,
                               cudaStream_t st) {
    USP_TRY(usable(n));
    int size;
    USP_NCCL_CHECK(ncclCommCount(n->ulysses, &size));
    USP_TRY(group_start());
    for (int i = 0; i < size; i++) {
        USP_TRY(p2p(1, (const char *)send + (size_t)i * piece_bytes, piece_bytes, i, n->ulysses, st));
        USP_TRY(p2p(0, (char *)recv + (size_t)i * piece_bytes, piece_bytes, i, n->ulysses, st));
    }
    return end_group(n, "all-to-all");
}

usp_status usp_nccl_sendrecv(usp_nccl *n, const void *s0, const void *s1, void *d0, void *d1, size_t b0,
                             size_t b1, int to, int from, cudaStream_t st) {
    USP_TRY(usable(n));
    USP_TRY(group_start());
    USP_TRY(p2p(1, s0, b0, to, n->ring, st));
    USP_TRY(p2p(1, s1, b1, to, n->ring, st));
    USP_TRY(p2p(0, d0, b0, from, n->ring, st));
    USP_TRY(p2p(0, d1, b1, from, n->ring, st));
    return end_group(n, "ring send/recv");
}

usp_status usp_nccl_allgather(usp_nccl *n, const void *s0, const void *s1, void *d0, void *d1, size_t bytes,
                              cudaStream_t st) {
    USP_TRY(usable(n));
    USP_TRY(group_start());
    USP_NCCL_CHECK(ncclAllGather(s0, d0, bytes, ncclUint8, n->ring, st));
    USP_NCCL_CHECK(ncclAllGather(s1, d1, bytes, ncclUint8, n->ring, st));
    return end_group(n, "all-gather");
}

usp_status usp_nccl_reduce_scatter(usp_nccl *n, const void *s0, const void *s1, void *d0, void *d1,
                                   size_t count, int is_f64, cudaStream_t st) {
    ncclDataType_t t = is_f64 ? ncclFloat64 : ncclFloat32;
    USP_TRY(usable(n));
    USP_TRY(group_start());
    USP_NCCL_CHECK(ncclReduceScatter(s0, d0, count, t, ncclSum, n->ring, st));
    USP_NCCL_CHECK(ncclReduceScatter(s1, d1, count, t, ncclSum, n->ring, st));
    return end_group(n, "reduce-scatter");
}

usp_status usp_nccl_gather(usp_nccl *n, const void *mine, void *root, size_t bytes, cudaStream_t st) {
    if (n->world == 1) {
        USP_CUDA_CHECK(cudaMemcpyAsync(root, mine, bytes, cudaMemcpyDeviceToDevice, st));
        return USP_OK;
    }
    USP_TRY(usable(n));
    USP_TRY(group_start());
    if (n->rank == 0)
        for (int g = 0; g < n->world; g++)
            USP_TRY(p2p(0, (char *)root + (size_t)g * bytes, bytes, g, n->data, st));
    USP_TRY(p2p(1, mine, bytes, 0, n->data, st));
    return end_group(n, "gathering to rank 0");
}

usp_status usp_nccl_barrier(usp_nccl *n, float *scratch, cudaStream_t st) {
    if (n->world == 1) return USP_OK;
    USP_TRY(usable(n));
    USP_TRY(group_start());
    USP_NCCL_CHECK(ncclAllReduce(scratch, scratch, 1, ncclFloat32, ncclSum, n->data, st));
    return end_group(n, "barrier");
}
