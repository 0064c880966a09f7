/* ipc_transport.c: the communication steps through CUDA IPC between the
 * rank processes of one machine (see transport.h). Several ranks may share
 * one GPU (NCCL refuses that); ranks on different GPUs of the machine work
 * too, through peer access.
 *
 * A receiver pulls: it maps the sender's buffer (cudaIpcOpenMemHandle of the
 * allocation's base, found with cuMemGetAddressRange, plus the offset) and
 * copies (or, for the reduce-scatter, adds) on its own stream. Each rank has
 * two interprocess events, SENT and DONE, created once; an operation with
 * its peers is, on every rank:
 *
 *   1. record SENT on st (the data it exposes is ready there); send each
 *      reader a READY note with the handles and offsets of what it reads;
 *   2. per READY received: wait on the sender's SENT, copy; then record DONE
 *      and send each sender a DONE note;
 *   3. per DONE received: wait on the reader's DONE (so st, and every step
 *      after this one, follows the readers' copies: the sender does not
 *      overwrite a piece before it was read); send the reader an ACK;
 *   4. wait for the ACK of every sender.
 *
 * A stream waits on the record of an IPC event that the other process's host
 * issued before the wait; the notes order that: a rank waits on SENT (DONE)
 * only after the note sent after recording it, and records SENT (DONE) again
 * only after every wait on its last record was issued (the DONEs of step 3,
 * the ACKs of step 4). Notes go over the TCP links, tagged with a count of
 * the operations each pair of ranks had together, so every wait has the
 * links' deadline and ends on a peer's failure. Mappings are kept for the run
 * (usp_gpu_execute ends it with end_run: unmap, then a world barrier before
 * any buffer is freed). */
#define _POSIX_C_SOURCE 200809L
#include "transport.h"

#include <cuda.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "executor/executor_cuda.h"
#include "usp/schedule.h"

typedef struct {
    int peer;
    uint64_t base;   /* the allocation's address in the peer: stays for the run */
    void *ptr;
} ipc_map;

typedef struct {
    usp_transport base;
    int rank, world, device;
    usp_links *links;
    double timeout_s;
    cudaEvent_t sent, done;             /* this rank's, interprocess */
    cudaEvent_t *peer_sent, *peer_done; /* [world]: the peers', opened */
    unsigned *seq;                      /* [world]: operations with each peer so far */
    usp_config cfg;                     /* the groups' configuration */
    int have_cfg;
    ipc_map *maps;
    int nmaps, cap;
} usp_ipc;

/* One region a reader reads: where it lies in the sender's allocation. */
typedef struct {
    cudaIpcMemHandle_t handle;
    uint64_t base, offset, bytes;
} ipc_ref;

typedef struct {
    ipc_ref ref[2];
} ready_note;

typedef struct {
    cudaIpcEventHandle_t sent, done;
} events_note;

enum { PHASE_READY = 1, PHASE_DONE, PHASE_ACK, PHASE_EVENTS };

static unsigned tag_of(int phase, unsigned seq) { return ((unsigned)phase << 24) | (seq & 0xffffffu); }

/* ------------------------------------------------------------ memory */

typedef CUresult (*address_range_fn)(CUdeviceptr *base, size_t *size, CUdeviceptr ptr);

static usp_status address_range(const void *ptr, void **base) {
    static address_range_fn fn;
    if (!fn) {
        void *f = NULL;
        enum cudaDriverEntryPointQueryResult q;
        if (cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &f, 12000, cudaEnableDefault, &q) !=
                cudaSuccess || q != cudaDriverEntryPointSuccess || !f)
            return usp_fail(USP_EINTERNAL, "IPC transport: the driver has no cuMemGetAddressRange");
        fn = (address_range_fn)f;
    }
    CUdeviceptr b = 0;
    size_t size = 0;
    if (fn(&b, &size, (CUdeviceptr)(uintptr_t)ptr) != CUDA_SUCCESS)
        return usp_fail(USP_EINTERNAL, "IPC transport: %p is not device memory of cudaMalloc", ptr);
    *base = (void *)(uintptr_t)b;
    return USP_OK;
}

static usp_status ref_of(const void *ptr, size_t bytes, ipc_ref *r) {
    memset(r, 0, sizeof *r);
    r->bytes = bytes;
    if (!bytes) return USP_OK;
    void *base = NULL;
    USP_TRY(address_range(ptr, &base));
    USP_CUDA_CHECK(cudaIpcGetMemHandle(&r->handle, base));
    r->base = (uint64_t)(uintptr_t)base;
    r->offset = (uint64_t)((const char *)ptr - (const char *)base);
    return USP_OK;
}

/* The peer's allocation, mapped once per run (its buffers stay allocated
 * until end_run, so its address names it). */
static usp_status map_ref(usp_ipc *x, int peer, const ipc_ref *r, const char **ptr) {
    for (int i = 0; i < x->nmaps; i++)
        if (x->maps[i].peer == peer && x->maps[i].base == r->base) {
            *ptr = (const char *)x->maps[i].ptr + r->offset;
            return USP_OK;
        }
    if (x->nmaps == x->cap) {
        int cap = x->cap ? 2 * x->cap : 16;
        ipc_map *m = realloc(x->maps, (size_t)cap * sizeof *m);
        if (!m) return usp_fail(USP_EINTERNAL, "out of host memory");
        x->maps = m;
        x->cap = cap;
    }
    void *p = NULL;
    cudaError_t e = cudaIpcOpenMemHandle(&p, r->handle, cudaIpcMemLazyEnablePeerAccess);
    if (e != cudaSuccess)
        return usp_fail(USP_EINTERNAL, "IPC transport: mapping a buffer of rank %d: %s", peer, cudaGetErrorString(e));
    x->maps[x->nmaps++] = (ipc_map){peer, r->base, p};
    *ptr = (const char *)p + r->offset;
    return USP_OK;
}

static void unmap_all(usp_ipc *x) {
    for (int i = 0; i < x->nmaps; i++) cudaIpcCloseMemHandle(x->maps[i].ptr);
    x->nmaps = 0;
}

/* ------------------------------------------------------------ one operation */

/* What a peer reads from this rank. */
typedef struct {
    int peer;
    const void *src[2];
    size_t bytes[2];
} ipc_out;

/* What this rank reads from a peer, and where it goes (copied, or added as fp32). */
typedef struct {
    int peer;
    void *dst[2];
    size_t bytes[2];
    int add;
} ipc_in;

static usp_status pull(const ipc_in *in, const char *const *src, cudaStream_t st) {
    for (int k = 0; k < 2; k++) {
        if (!in->bytes[k]) continue;
        if (in->add)
            USP_TRY(usp_gpu_add_f32((float *)in->dst[k], (const float *)src[k], (int64_t)(in->bytes[k] / sizeof(float)),
                                    st));
        else
            USP_CUDA_CHECK(cudaMemcpyAsync(in->dst[k], src[k], in->bytes[k], cudaMemcpyDeviceToDevice, st));
    }
    return USP_OK;
}

static usp_status recv_note(usp_ipc *x, int peer, int phase, void *body, size_t n, const char *what) {
    return usp_links_recv(x->links, peer, tag_of(phase, x->seq[peer]), body, n, what);
}

static usp_status send_note(usp_ipc *x, int peer, int phase, const void *body, size_t n) {
    return usp_links_send(x->links, peer, tag_of(phase, x->seq[peer]), body, n);
}

static int listed(const ipc_out *outs, int nout, const ipc_in *ins, int nin, int upto_out, int upto_in, int peer) {
    for (int i = 0; i < upto_out && i < nout; i++)
        if (outs[i].peer == peer) return 1;
    for (int i = 0; i < upto_in && i < nin; i++)
        if (ins[i].peer == peer) return 1;
    return 0;
}

/* The four steps of the header with the peers of outs and ins (never this rank). */
static usp_status exchange(usp_ipc *x, const ipc_out *outs, int nout, const ipc_in *ins, int nin, cudaStream_t st,
                           const char *what) {
    /* one more operation with every peer involved, once each */
    for (int i = 0; i < nout; i++)
        if (!listed(outs, nout, ins, nin, i, 0, outs[i].peer)) x->seq[outs[i].peer]++;
    for (int i = 0; i < nin; i++)
        if (!listed(outs, nout, ins, nin, nout, i, ins[i].peer)) x->seq[ins[i].peer]++;
    if (nout > 0) USP_CUDA_CHECK(cudaEventRecord(x->sent, st));
    for (int i = 0; i < nout; i++) {
        ready_note r;
        for (int k = 0; k < 2; k++) USP_TRY(ref_of(outs[i].src[k], outs[i].bytes[k], &r.ref[k]));
        USP_TRY(send_note(x, outs[i].peer, PHASE_READY, &r, sizeof r));
    }
    for (int i = 0; i < nin; i++) {
        ready_note r;
        const char *src[2] = {NULL, NULL};
        USP_TRY(recv_note(x, ins[i].peer, PHASE_READY, &r, sizeof r, what));
        for (int k = 0; k < 2; k++) {
            if (r.ref[k].bytes != ins[i].bytes[k])
                return usp_fail(USP_EINTERNAL, "rank %d, %s: rank %d sends %llu bytes where %zu are expected",
                                x->rank, what, ins[i].peer, (unsigned long long)r.ref[k].bytes, ins[i].bytes[k]);
            if (r.ref[k].bytes) USP_TRY(map_ref(x, ins[i].peer, &r.ref[k], &src[k]));
        }
        USP_CUDA_CHECK(cudaStreamWaitEvent(st, x->peer_sent[ins[i].peer], 0));
        USP_TRY(pull(&ins[i], src, st));
    }
    if (nin > 0) USP_CUDA_CHECK(cudaEventRecord(x->done, st));
    for (int i = 0; i < nin; i++) USP_TRY(send_note(x, ins[i].peer, PHASE_DONE, NULL, 0));
    for (int i = 0; i < nout; i++) {
        char none;
        USP_TRY(recv_note(x, outs[i].peer, PHASE_DONE, &none, 0, what));
        USP_CUDA_CHECK(cudaStreamWaitEvent(st, x->peer_done[outs[i].peer], 0));
        USP_TRY(send_note(x, outs[i].peer, PHASE_ACK, NULL, 0));
    }
    for (int i = 0; i < nin; i++) {
        char none;
        USP_TRY(recv_note(x, ins[i].peer, PHASE_ACK, &none, 0, what));
    }
    return USP_OK;
}

/* ------------------------------------------------------------ operations */

static usp_ipc *ipc_of(usp_transport *t) { return (usp_ipc *)t; }

static usp_status need_groups(usp_ipc *x) {
    if (!x->have_cfg) return usp_fail(USP_EINTERNAL, "IPC transport: no groups (split first)");
    return USP_OK;
}

static usp_status op_split(usp_transport *t, const usp_config *c) {
    usp_ipc *x = ipc_of(t);
    x->cfg = *c;
    x->have_cfg = 1;
    return USP_OK;
}

static usp_status op_all_to_all_v(usp_transport *t, int n, const void *send, const size_t *send_off,
                                  const size_t *send_bytes, void *recv, const size_t *recv_off,
                                  const size_t *recv_bytes, cudaStream_t st) {
    usp_ipc *x = ipc_of(t);
    USP_TRY(need_groups(x));
    if (n != usp_group_size(&x->cfg, USP_GROUP_ULYSSES))
        return usp_fail(USP_EINTERNAL, "all-to-all over %d ranks in a group of %d", n,
                        usp_group_size(&x->cfg, USP_GROUP_ULYSSES));
    int me = usp_group_index(&x->cfg, USP_GROUP_ULYSSES, x->rank);
    ipc_out *outs = usp_calloc((size_t)n, sizeof *outs);
    ipc_in *ins = usp_calloc((size_t)n, sizeof *ins);
    if (!outs || !ins) { free(outs); free(ins); return USP_EINTERNAL; }
    int nout = 0, nin = 0;
    usp_status s = USP_OK;
    for (int i = 0; i < n && s == USP_OK; i++) {
        int peer = usp_group_member(&x->cfg, USP_GROUP_ULYSSES, x->rank, i);
        if (i == me) {
            if (send_bytes[i] != recv_bytes[i])
                s = usp_fail(USP_EINTERNAL, "all-to-all: own piece %zu bytes sent, %zu received", send_bytes[i],
                             recv_bytes[i]);
            else if (send_bytes[i] &&
                     cudaMemcpyAsync((char *)recv + recv_off[i], (const char *)send + send_off[i], send_bytes[i],
                                     cudaMemcpyDeviceToDevice, st) != cudaSuccess)
                s = usp_fail(USP_EINTERNAL, "all-to-all: %s", cudaGetErrorString(cudaGetLastError()));
            continue;
        }
        outs[nout++] = (ipc_out){peer, {(const char *)send + send_off[i], NULL}, {send_bytes[i], 0}};
        ins[nin++] = (ipc_in){peer, {(char *)recv + recv_off[i], NULL}, {recv_bytes[i], 0}, 0};
    }
    if (s == USP_OK) s = exchange(x, outs, nout, ins, nin, st, "all-to-all");
    free(outs);
    free(ins);
    return s;
}

static usp_status op_sendrecv(usp_transport *t, const void *s0, const void *s1, void *d0, void *d1, size_t b0,
                              size_t b1, int to, int from, cudaStream_t st) {
    usp_ipc *x = ipc_of(t);
    USP_TRY(need_groups(x));
    int gto = usp_group_member(&x->cfg, USP_GROUP_RING, x->rank, to);
    int gfrom = usp_group_member(&x->cfg, USP_GROUP_RING, x->rank, from);
    if (gto == x->rank || gfrom == x->rank) { /* a ring of one */
        if (b0) USP_CUDA_CHECK(cudaMemcpyAsync(d0, s0, b0, cudaMemcpyDeviceToDevice, st));
        if (b1) USP_CUDA_CHECK(cudaMemcpyAsync(d1, s1, b1, cudaMemcpyDeviceToDevice, st));
        return USP_OK;
    }
    ipc_out out = {gto, {s0, s1}, {b0, b1}};
    ipc_in in = {gfrom, {d0, d1}, {b0, b1}, 0};
    return exchange(x, &out, 1, &in, 1, st, "ring send/recv");
}

/* All-gather and reduce-scatter: every other ring rank is both a reader and a sender. */
static usp_status ring_collective(usp_ipc *x, const void *s0, const void *s1, void *d0, void *d1, size_t bytes,
                                  int reduce, cudaStream_t st) {
    USP_TRY(need_groups(x));
    int n = usp_group_size(&x->cfg, USP_GROUP_RING), me = usp_group_index(&x->cfg, USP_GROUP_RING, x->rank);
    const char *what = reduce ? "reduce-scatter" : "all-gather";
    /* own part first: the reduce-scatter adds the others to it */
    const char *src[2] = {s0, s1};
    char *dst[2] = {d0, d1};
    for (int k = 0; k < 2; k++) {
        const char *from = reduce ? src[k] + (size_t)me * bytes : src[k];
        char *to = reduce ? dst[k] : dst[k] + (size_t)me * bytes;
        if (bytes) USP_CUDA_CHECK(cudaMemcpyAsync(to, from, bytes, cudaMemcpyDeviceToDevice, st));
    }
    if (n == 1) return USP_OK;
    ipc_out *outs = usp_calloc((size_t)n, sizeof *outs);
    ipc_in *ins = usp_calloc((size_t)n, sizeof *ins);
    if (!outs || !ins) { free(outs); free(ins); return USP_EINTERNAL; }
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (i == me) continue;
        int peer = usp_group_member(&x->cfg, USP_GROUP_RING, x->rank, i);
        if (reduce) { /* peer i reads my block i; I add its block `me` */
            outs[m] = (ipc_out){peer, {(const char *)s0 + (size_t)i * bytes, (const char *)s1 + (size_t)i * bytes},
                                {bytes, bytes}};
            ins[m] = (ipc_in){peer, {d0, d1}, {bytes, bytes}, 1};
        } else {      /* peer i reads my block; I copy its block to slot i */
            outs[m] = (ipc_out){peer, {s0, s1}, {bytes, bytes}};
            ins[m] = (ipc_in){peer, {(char *)d0 + (size_t)i * bytes, (char *)d1 + (size_t)i * bytes}, {bytes, bytes}, 0};
        }
        m++;
    }
    usp_status s = exchange(x, outs, m, ins, m, st, what);
    free(outs);
    free(ins);
    return s;
}

static usp_status op_allgather(usp_transport *t, const void *s0, const void *s1, void *d0, void *d1, size_t bytes,
                               cudaStream_t st) {
    return ring_collective(ipc_of(t), s0, s1, d0, d1, bytes, 0, st);
}

/* The peers' blocks add into d0, d1 in ring-rank order after this rank's own:
 * fp32 sums whose order differs from NCCL's (within the gradients' tolerances). */
static usp_status op_reduce_scatter(usp_transport *t, const void *s0, const void *s1, void *d0, void *d1,
                                    size_t count, cudaStream_t st) {
    return ring_collective(ipc_of(t), s0, s1, d0, d1, count * sizeof(float), 1, st);
}

static usp_status op_gather(usp_transport *t, const void *mine, void *root, size_t bytes, cudaStream_t st) {
    usp_ipc *x = ipc_of(t);
    if (x->rank != 0) {
        ipc_out out = {0, {mine, NULL}, {bytes, 0}};
        return exchange(x, &out, 1, NULL, 0, st, "gathering to rank 0");
    }
    if (bytes) USP_CUDA_CHECK(cudaMemcpyAsync(root, mine, bytes, cudaMemcpyDeviceToDevice, st));
    if (x->world == 1) return USP_OK;
    ipc_in *ins = usp_calloc((size_t)x->world, sizeof *ins);
    if (!ins) return USP_EINTERNAL;
    for (int g = 1; g < x->world; g++) ins[g - 1] = (ipc_in){g, {(char *)root + (size_t)g * bytes, NULL}, {bytes, 0}, 0};
    usp_status s = exchange(x, NULL, 0, ins, x->world - 1, st, "gathering to rank 0");
    free(ins);
    return s;
}

/* Every rank's st waits for every other rank's: SENT to all, and DONE back. */
static usp_status op_barrier(usp_transport *t, float *scratch, cudaStream_t st) {
    (void)scratch;
    usp_ipc *x = ipc_of(t);
    if (x->world == 1) return USP_OK;
    ipc_out *outs = usp_calloc((size_t)x->world, sizeof *outs);
    ipc_in *ins = usp_calloc((size_t)x->world, sizeof *ins);
    if (!outs || !ins) { free(outs); free(ins); return USP_EINTERNAL; }
    int m = 0;
    for (int g = 0; g < x->world; g++) {
        if (g == x->rank) continue;
        outs[m] = (ipc_out){g, {NULL, NULL}, {0, 0}};
        ins[m] = (ipc_in){g, {NULL, NULL}, {0, 0}, 0};
        m++;
    }
    usp_status s = exchange(x, outs, m, ins, m, st, "barrier");
    free(outs);
    free(ins);
    return s;
}

static usp_status op_end_run(usp_transport *t) {
    usp_ipc *x = ipc_of(t);
    USP_CUDA_CHECK(cudaDeviceSynchronize()); /* nothing of this process still reads a mapping */
    unmap_all(x);
    return usp_links_barrier(x->links);
}

static usp_status op_poll(usp_transport *t) { (void)t; return USP_OK; }

static void free_ipc(usp_ipc *x) {
    unmap_all(x);
    for (int g = 0; g < x->world && x->peer_sent; g++) {
        if (x->peer_sent[g]) cudaEventDestroy(x->peer_sent[g]);
        if (x->peer_done[g]) cudaEventDestroy(x->peer_done[g]);
    }
    if (x->sent) cudaEventDestroy(x->sent);
    if (x->done) cudaEventDestroy(x->done);
    free(x->peer_sent);
    free(x->peer_done);
    free(x->seq);
    free(x->maps);
    free(x);
}

/* Nothing: a copy in flight may still read a mapping, and a stream may wait
 * on a peer's event that never comes; mappings and events stay until the
 * process ends (keep_memory_on_failure). */
static void op_abort(usp_transport *t) { (void)t; }

static void op_close(usp_transport *t) { free_ipc(ipc_of(t)); }

static const usp_transport_ops ipc_ops = {
    "ipc", 1, op_split, op_all_to_all_v, op_sendrecv, op_allgather, op_reduce_scatter, op_gather, op_barrier,
    op_end_run, op_poll, op_abort, op_close};

/* Every rank's SENT and DONE events, opened in every other rank. */
static usp_status open_events(usp_ipc *x) {
    unsigned flags = cudaEventInterprocess | cudaEventDisableTiming;
    USP_CUDA_CHECK(cudaEventCreateWithFlags(&x->sent, flags));
    USP_CUDA_CHECK(cudaEventCreateWithFlags(&x->done, flags));
    events_note mine;
    USP_CUDA_CHECK(cudaIpcGetEventHandle(&mine.sent, x->sent));
    USP_CUDA_CHECK(cudaIpcGetEventHandle(&mine.done, x->done));
    for (int g = 0; g < x->world; g++)
        if (g != x->rank) USP_TRY(usp_links_send(x->links, g, tag_of(PHASE_EVENTS, 0), &mine, sizeof mine));
    for (int g = 0; g < x->world; g++) {
        if (g == x->rank) continue;
        events_note theirs;
        USP_TRY(usp_links_recv(x->links, g, tag_of(PHASE_EVENTS, 0), &theirs, sizeof theirs,
                               "opening the IPC transport"));
        cudaError_t e = cudaIpcOpenEventHandle(&x->peer_sent[g], theirs.sent);
        if (e == cudaSuccess) e = cudaIpcOpenEventHandle(&x->peer_done[g], theirs.done);
        if (e != cudaSuccess)
            return usp_fail(USP_EINTERNAL, "rank %d: IPC transport: opening the events of rank %d: %s", x->rank, g,
                            cudaGetErrorString(e));
    }
    return usp_links_barrier(x->links);
}

usp_status usp_transport_open_ipc(const usp_transport_env *e, usp_transport **out) {
    usp_ipc *x = usp_calloc(1, sizeof *x);
    if (!x) return USP_EINTERNAL;
    x->base.ops = &ipc_ops;
    x->rank = e->rank;
    x->world = e->world;
    x->device = e->device;
    x->links = e->links;
    x->timeout_s = e->timeout_s;
    x->peer_sent = usp_calloc((size_t)e->world, sizeof *x->peer_sent);
    x->peer_done = usp_calloc((size_t)e->world, sizeof *x->peer_done);
    x->seq = usp_calloc((size_t)e->world, sizeof *x->seq);
    usp_status st = x->peer_sent && x->peer_done && x->seq ? USP_OK : USP_EINTERNAL;
    if (st == USP_OK && e->world > 1) st = open_events(x);
    if (st != USP_OK) {
        free_ipc(x);
        return st;
    }
    *out = &x->base;
    return USP_OK;
}
