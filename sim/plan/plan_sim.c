/* plan_sim.c: layer programs run in SimGrid.
 *
 * Every rank is three actors on its GPU's host, one per stream (compute,
 * activation comm, gradient/parameter comm); a step waits for its deps
 * (rank_sleep until the step they wait for wakes the rank's actors), as in
 * the simulator's engine.
 *
 * Communication goes through the network layer (sim/network/nccl.h), as the
 * simulator's engine's does: on a platform whose hosts carry the topology
 * props, every comm step is one NCCL call (all-to-all, send/recv, all-gather,
 * reduce-scatter, all-reduce) whose plan gives the transport of each pair,
 * NCCL's algorithm and protocol, the per-call and pipeline delay (paid
 * first) and the bytes to each member; every member then exchanges with
 * every other (zero bytes: a rendezvous), as in the engine; an all-to-all
 * of an uneven head split gives each peer its piece, as the engine does.
 * tests/test_plan_agree.c checks that the attention alone takes the same
 * time here as in the engine. On a platform
 * without props (known = 0) the planner keeps its own model: collectives
 * sent directly (every member its message, at once) or as NCCL-style rings
 * over islands of the fastest routes, an all-reduce as a reduce-scatter
 * round then an all-gather round, with no added delay. The bytes counted
 * per term are the logical ones (n-1 shards a round; the SENDRECV message),
 * not the protocol's inflated ones.
 *
 * All programs of one plan run in one simulation, one after the other: a
 * controller actor starts a program's actors, waits for them at a barrier,
 * and starts the next, so the platform is loaded once. SimGrid initializes
 * once per process, so the simulation runs in a forked child that writes the
 * results back through a pipe. */
#include "plan_internal.h"
#include "usp/fdio.h"
#include "network/nccl.h"
#include "network/step.h"
#include "usp/layout.h"
#include "network/shape_routes.h"
#include "plan_sendto.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <simgrid/actor.h>
#include <simgrid/barrier.h>
#include <simgrid/comm.h>
#include <simgrid/engine.h>
#include <simgrid/host.h>
#include <simgrid/link.h>
#include <simgrid/mailbox.h>
#include <simgrid/semaphore.h>
#include <xbt/dynar.h>

/* ---------------------------------------------------------- the child */

enum { MAX_CHANNELS = 16, NGROUPS = PLAN_GROUP_ZERO + 1 };

/* A member's neighbours in each channel of a ring collective. */
typedef struct {
    int ready, k;
    int succ[MAX_CHANNELS], pred[MAX_CHANNELS];
} ring_paths;

typedef struct {
    int rank;
    const plan_rank_program *rp;
    ring_paths rings[NGROUPS];
    sg_sem_t asleep_sem[PLAN_NSTREAMS]; /* a stream's actor waits on its own (rank_sleep) */
    int asleep[PLAN_NSTREAMS];          /* ... and says so here */
    char *done;
    double *start, *end;
    int *ordinal;            /* comm steps: position among its stream's comm steps (the message tag) */
    int comm_busy;           /* the attention's comm step of this rank in flight (index + 1), or 0 */
    int slowed;              /* the compute stream waits on `wake` in compute_slowed */
    sg_sem_t wake;           /* released as comm_busy changes while `slowed` */
} rank_state;

typedef struct {
    const plan_programs *progs;
    plan_program built;      /* the one running, for the ranks that run */
    int nprogs, world;
    sg_host_t *hosts;        /* [world] */
    sim_net net;             /* what NCCL would do on them (known = 0: the planner's own model) */
    plan_sim_result *results;
    const plan_program *prog;/* the one running */
    rank_state *ranks;
    sg_bar_t barrier;
    double bytes[USP_TERM_COUNT];
    int completed;           /* programs run to their end */
    int full;                /* 1: every GPU simulated, even where one per ring position would do */
    int rep_mode;            /* the program running simulates one GPU per ring position */
    int symmetric;           /* the platform gives every GPU links of its own (rep_mode allowed) */
    int zero_latency;        /* no link carries latency: a group call needs no rendezvous messages */
    int shapes;              /* routes between nodes as bypass routes of their shape (shape_routes.h) */
    struct coll_call *calls[4096];
    char error[256];
    usp_status status;       /* of the error: USP_EINVAL when the platform cannot hold the GPUs */
} sim_state;

static sim_state g;

static void fail(const char *fmt, int rank, const char *step) {
    if (!g.error[0]) snprintf(g.error, sizeof g.error, fmt, rank, step);
}

/* Actors run one at a time and switch only inside SimGrid calls, so the
 * rank's flags need no lock: an actor that must wait for them says so
 * (r->asleep) and takes its stream's semaphore; whoever changes them
 * releases the semaphore of each actor asleep, which then looks again (one
 * call into SimGrid's kernel to wait and one to wake, where a mutex and a
 * condition cost four: lock, wait, unlock, notify). */
static void rank_sleep(rank_state *r, plan_stream s) {
    r->asleep[s] = 1;
    sg_sem_acquire(r->asleep_sem[s]);
}

static void rank_wake(rank_state *r) {
    for (int s = 0; s < PLAN_NSTREAMS; s++)
        if (r->asleep[s]) {
            r->asleep[s] = 0;
            sg_sem_release(r->asleep_sem[s]);
        }
}

static void mark_done(rank_state *r, int i, double start) {
    r->start[i] = start;
    r->end[i] = simgrid_get_clock();
    r->done[i] = 1;
    rank_wake(r);
}

static int deps_done(const rank_state *r, const plan_step *st) {
    return (st->dep[0] < 0 || r->done[st->dep[0]]) && (st->dep[1] < 0 || r->done[st->dep[1]]);
}

static void wait_deps(rank_state *r, const plan_step *st) {
    while (!deps_done(r, st)) rank_sleep(r, st->stream);
}

/* The mailbox of messages from rank `from` to rank `to` on stream s, looked
 * up by name once per simulation and then kept here: SimGrid 3.32 finds a
 * mailbox by name through a call into its kernel (a switch to it and back),
 * which with formatting the name was 7% of the simulation's instructions
 * (callgrind, a ring-128 layer program at 2048 GPUs). Open addressing. */
typedef struct {
    long key;                /* (from * world + to) * PLAN_NSTREAMS + s, or -1 */
    sg_mailbox_t box;
} mailbox_slot;

static struct {
    mailbox_slot *slots;
    size_t cap, used;        /* cap: a power of two */
} boxes;

static void mailboxes_free(void) {
    free(boxes.slots);
    memset(&boxes, 0, sizeof boxes);
}

static size_t mailbox_home(long key, size_t cap) {
    uint64_t h = (uint64_t)key * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 17) & (cap - 1);
}

/* Grows the table to twice its size (at least 1024 slots); 0 out of memory. */
static int mailboxes_grow(void) {
    size_t cap = boxes.cap ? boxes.cap * 2 : 1024;
    mailbox_slot *slots = malloc(cap * sizeof *slots);
    if (!slots) return 0;
    for (size_t k = 0; k < cap; k++) slots[k].key = -1;
    for (size_t k = 0; k < boxes.cap; k++) {
        if (boxes.slots[k].key < 0) continue;
        size_t at = mailbox_home(boxes.slots[k].key, cap);
        while (slots[at].key >= 0) at = (at + 1) & (cap - 1);
        slots[at] = boxes.slots[k];
    }
    free(boxes.slots);
    boxes.slots = slots;
    boxes.cap = cap;
    return 1;
}

static sg_mailbox_t mailbox(int from, int to, plan_stream s) {
    long key = ((long)from * g.world + to) * PLAN_NSTREAMS + (long)s;
    if (boxes.cap) {
        size_t at = mailbox_home(key, boxes.cap);
        for (; boxes.slots[at].key >= 0; at = (at + 1) & (boxes.cap - 1))
            if (boxes.slots[at].key == key) return boxes.slots[at].box;
    }
    char name[48];
    snprintf(name, sizeof name, "%d>%d:%d", from, to, (int)s);
    sg_mailbox_t box = sg_mailbox_by_name(name);
    if ((boxes.used + 1) * 2 > boxes.cap && !mailboxes_grow()) return box; /* not kept */
    size_t at = mailbox_home(key, boxes.cap);
    while (boxes.slots[at].key >= 0) at = (at + 1) & (boxes.cap - 1);
    boxes.slots[at].key = key;
    boxes.slots[at].box = box;
    boxes.used++;
    return box;
}

static void *tag_token(int tag) { return (void *)(intptr_t)(tag + 1); }

/* Representative mode: ranks (dp d, ring r, ulysses u, tp t) with d = u = t
 * = 0 stand for every rank of their ring position. */
static int rep_of(const usp_mix *x, int rank) {
    int d, r, u, t;
    plan_coords_of(x, rank, &d, &r, &u, &t);
    return d == 0 && u == 0 && t == 0;
}

static int is_rep(int rank) { return !g.rep_mode || rep_of(&g.prog->mix, rank); }

/* out bytes from rank me to rank peer and in bytes back (a negative count:
 * none), peer running no actor: through a helper actor on its host
 * (plan_sendto.h), or as host-to-host transfers once the helpers are at
 * their bound. Writes the comms to comms[], returns how many. */
static int peer_flows(int me, int peer, long out, long in, sg_comm_t *comms) {
    int n = plan_peer_flows(g.hosts[peer], out, in, comms);
    if (n >= 0) return n;
    n = 0;
    if (out >= 0) comms[n++] = plan_sendto_async(g.hosts[me], g.hosts[peer], (double)out);
    if (in >= 0) comms[n++] = plan_sendto_async(g.hosts[peer], g.hosts[me], (double)in);
    return n;
}

/* One round: messages of bytes[k] to to[k] (nto of them) and one from each
 * of from[0..nfrom-1], all at once. */
static int exchange2(rank_state *r, int i, const plan_step *st, const int *to, const double *bytes, int nto,
                     const int *from, const double *from_bytes, int nfrom) {
    enum { SMALL = 32 };
    sg_comm_t small_comms[2 * SMALL];
    void *small_got[SMALL + 1];
    int big = nto + nfrom > 2 * SMALL || nfrom > SMALL;
    sg_comm_t *comms = big ? malloc((size_t)(nto + nfrom) * sizeof *comms) : small_comms;
    void **got = big ? malloc((size_t)(nfrom + 1) * sizeof *got) : small_got;
    if (!comms || !got) {
        if (big) { free(comms); free(got); }
        fail("rank %d: out of memory at %s", r->rank, st->name);
        return -1;
    }
    int nc = 0, rc = 0, ngot = 0;
    /* A rank no actor runs: the transfer over the route to its GPU, and what
     * it sends this one over the route from its GPU (this GPU's own inbound
     * traffic), both received by nobody; both ways at once where to[k] and
     * from[k] are that rank (an all-to-all), through one helper. */
    for (int k = 0; k < nto; k++) {
        long b = (long)(bytes[k] + 0.5);
        if (g.shapes) sim_shape_routes_prepare(r->rank, to[k]);
        if (is_rep(to[k])) {
            comms[nc++] = sg_mailbox_put_async(mailbox(r->rank, to[k], st->stream), tag_token(r->ordinal[i]), b);
            continue;
        }
        int both = k < nfrom && from[k] == to[k];
        long in = both ? (long)(from_bytes[k] + 0.5) : -1;
        if (both && g.shapes) sim_shape_routes_prepare(to[k], r->rank);
        nc += peer_flows(r->rank, to[k], b, in, comms + nc);
    }
    /* The last message from a rank that runs, when it is the last posted, is
     * received by one blocking call (posted and waited for in one call into
     * SimGrid's kernel, where an asynchronous receive and its wait take two):
     * posted at the same point, it ends the step at the same instant. */
    sg_mailbox_t last = NULL;
    for (int k = 0; k < nfrom; k++) {
        if (!is_rep(from[k]) && k < nto && to[k] == from[k]) continue; /* with its outbound flow */
        if (g.shapes) sim_shape_routes_prepare(from[k], r->rank);
        if (is_rep(from[k]) && k == nfrom - 1) last = mailbox(from[k], r->rank, st->stream);
        else if (is_rep(from[k])) comms[nc++] = sg_mailbox_get_async(mailbox(from[k], r->rank, st->stream), &got[ngot++]);
        else nc += peer_flows(r->rank, from[k], -1, (long)(from_bytes[k] + 0.5), comms + nc);
    }
    if (last) got[ngot++] = sg_mailbox_get(last);
    for (int k = 0; k < nc && rc == 0; k++)
        if (!comms[k] || sg_comm_wait(comms[k]) != SG_OK) { fail("rank %d: a transfer of %s failed", r->rank, st->name); rc = -1; }
    for (int k = 0; k < ngot && rc == 0; k++)
        if (got[k] != tag_token(r->ordinal[i])) {
            fail("rank %d: a message arrived out of order at %s", r->rank, st->name);
            rc = -1;
        }
    if (big) { free(comms); free(got); }
    return rc;
}

/* `n` messages of `bytes` to to[k] and from from[k], all at once. */
static int exchange(rank_state *r, int i, const plan_step *st, const int *to, const int *from, const double *bytes,
                    int n) {
    return exchange2(r, i, st, to, bytes, n, from, bytes, n);
}

/* ------------------------------------------------------- ring collectives */

/* NCCL runs all-gather, reduce-scatter and all-reduce as rings over several
 * channels; across nodes each channel enters and leaves a node through a
 * different GPU, so every NIC carries its share. Here the members of a group
 * are cut into islands (runs of consecutive members joined by the fastest
 * routes: one node); channel c enters every island at its c-th member, goes
 * around it and leaves from the member before. With equal islands there are
 * as many channels as members per island, else one plain ring. A
 * member sends (n-1)/n of the gathered tensor in total, split evenly over
 * the channels, to its successor in each: the pipelined ring's bytes, with
 * the per-call latency paid once. */
static void island_successors(int n, int m, int c, int *succ) {
    int islands = n / m;
    for (int i = 0; i < islands; i++)
        for (int j = 0; j < m; j++) {
            int exit_here = j == (c + m - 1) % m;
            succ[i * m + j] = exit_here ? ((i + 1) % islands) * m + c : i * m + (j + 1) % m;
        }
}

static int island_size(const int *members, int n) {
    double bw[n], best = 0;
    for (int i = 0; i + 1 < n; i++) {
        bw[i] = sg_host_get_route_bandwidth(g.hosts[members[i]], g.hosts[members[i + 1]]);
        if (bw[i] > best) best = bw[i];
    }
    int size = 0, start = 0;
    for (int i = 0; i + 1 < n; i++)
        if (bw[i] < best * 0.999) {
            if (!size) size = i + 1 - start;
            if (i + 1 - start != size) return n;
            start = i + 1;
        }
    return size && n - start == size ? size : n;
}

static void ring_paths_make(const rank_state *r, plan_group grp, ring_paths *rp) {
    int n = plan_group_size(&g.prog->mix, grp), members[n], me = 0;
    for (int i = 0; i < n; i++) {
        members[i] = plan_group_member(&g.prog->mix, grp, r->rank, i);
        if (members[i] == r->rank) me = i;
    }
    int m = island_size(members, n), succ[n];
    rp->k = m < MAX_CHANNELS ? m : MAX_CHANNELS;
    for (int c = 0; c < rp->k; c++) {
        island_successors(n, m, c, succ);
        rp->succ[c] = members[succ[me]];
        for (int i = 0; i < n; i++)
            if (succ[i] == me) rp->pred[c] = members[i];
    }
    rp->ready = 1;
}

/* Channels with the same neighbours travel as one message. */
static int ring_messages(const ring_paths *rp, double total, int *to, int *from, double *bytes) {
    int n = 0;
    for (int c = 0; c < rp->k; c++) {
        int k = 0;
        while (k < n && !(to[k] == rp->succ[c] && from[k] == rp->pred[c])) k++;
        if (k == n) { to[n] = rp->succ[c]; from[n] = rp->pred[c]; bytes[n++] = 0; }
        bytes[k] += total / rp->k;
    }
    return n;
}

/* ------------------------------------------------- calls of a group */

/* One collective call of one group, shared by its members: every member's
 * NCCL plan, made once by the first to arrive (sim_coll_plan_each), and
 * how many have joined. A member sleeps its delay, joins, sends its
 * non-zero flows and receives the flows sent to it, then waits until every
 * member has joined: on a platform whose links carry no latency this is the
 * same instant at which the engine's zero-byte rendezvous between every
 * pair completes, without n^2 messages. Calls are keyed by (the group's
 * first member, stream, the step's ordinal in its stream), which every
 * member agrees on (the tags of exchange). Nothing here yields to SimGrid
 * between the look-up and the insertion, so one call is made once; the
 * last member to join wakes the others (rank_wake). */
typedef struct coll_call coll_call;
struct coll_call {
    int leader, stream, ordinal, n, joined, left;
    int nreps;              /* members that run (all of them unless in representative mode) */
    int *members;           /* [n] global ranks, group order */
    double *delay;          /* [n] */
    int *send_off, *to;     /* member j sends bytes[send_off[j]..] to global ranks to[..] */
    double *bytes;
    int *recv_off, *from;   /* member j receives from global ranks from[recv_off[j]..] */
    double *from_bytes;     /* ... these bytes */
    coll_call *next;
};

enum { COLL_BUCKETS = 4096 };

typedef struct {
    int *cnt;               /* building: flows per member */
    int *from_cnt;
    int pass;               /* 0: count, 1: fill */
    int *fill_to, *fill_from;
    coll_call *c;
} coll_build;

static void coll_flow(void *ctx, int j, int k, double bytes) {
    coll_build *b = ctx;
    coll_call *c = b->c;
    if (b->pass == 0) { b->cnt[j]++; b->from_cnt[k]++; return; }
    int at = c->send_off[j] + b->fill_to[j]++;
    c->to[at] = c->members[k];
    c->bytes[at] = bytes;
    c->from_bytes[c->recv_off[k] + b->fill_from[k]] = bytes;
    c->from[c->recv_off[k] + b->fill_from[k]++] = c->members[j];
}

/* The index of `rank` among the members of its group (plan_group_member's). */
static int group_index(const usp_mix *x, plan_group grp, int rank) {
    int d, r, u, t;
    plan_coords_of(x, rank, &d, &r, &u, &t);
    switch (grp) {
    case PLAN_GROUP_TP: return t;
    case PLAN_GROUP_ULYSSES: return u;
    case PLAN_GROUP_RING: return r;
    case PLAN_GROUP_ZERO: return rank / x->tp;
    default: return 0;
    }
}

static sim_coll coll_op(const plan_step *st) {
    return st->kind == PLAN_STEP_ALL_TO_ALL ? SIM_COLL_ALLTOALL
         : st->kind == PLAN_STEP_ALLGATHER ? SIM_COLL_ALLGATHER
         : st->kind == PLAN_STEP_REDUCE_SCATTER ? SIM_COLL_REDUCESCATTER : SIM_COLL_ALLREDUCE;
}

static void coll_free(coll_call *c) {
    if (!c) return;
    free(c->members); free(c->delay); free(c->send_off); free(c->to); free(c->bytes); free(c->recv_off);
    free(c->from);
    free(c->from_bytes);
    free(c);
}

static unsigned coll_hash(int leader, int stream, int ordinal) {
    unsigned h = (unsigned)leader * 2654435761u ^ (unsigned)ordinal * 40503u ^ (unsigned)stream * 97u;
    return h % COLL_BUCKETS;
}

/* Every member's delay and flows: NCCL's plan of the call (every member's
 * step has the same size: calls whose members differ go through
 * run_comm_nccl_pairs). */
static usp_status call_flows(coll_call *c, const plan_step *st, sim_coll op, coll_build *b) {
    return sim_coll_plan_each(&g.net, op, c->members, c->n, st->message * c->n, c->delay, coll_flow, b);
}

/* The call this step is part of, made by the first member to arrive. */
static coll_call *coll_join(rank_state *r, int i, const plan_step *st, int n) {
    int leader = plan_group_member(&g.prog->mix, st->group, r->rank, 0), ordinal = r->ordinal[i];
    unsigned h = coll_hash(leader, st->stream, ordinal);
    for (coll_call *c = g.calls[h]; c; c = c->next)
        if (c->leader == leader && c->stream == (int)st->stream && c->ordinal == ordinal) return c;
    coll_call *c = calloc(1, sizeof *c);
    coll_build b = {0};
    if (!c) goto oom;
    c->leader = leader;
    c->stream = st->stream;
    c->ordinal = ordinal;
    c->n = n;
    c->members = malloc((size_t)n * sizeof *c->members);
    c->delay = malloc((size_t)n * sizeof *c->delay);
    c->send_off = calloc((size_t)n + 1, sizeof *c->send_off);
    c->recv_off = calloc((size_t)n + 1, sizeof *c->recv_off);
    b.cnt = calloc((size_t)n, sizeof *b.cnt);
    b.from_cnt = calloc((size_t)n, sizeof *b.from_cnt);
    b.c = c;
    if (!c->members || !c->delay || !c->send_off || !c->recv_off || !b.cnt || !b.from_cnt) goto oom;
    for (int k = 0; k < n; k++) {
        c->members[k] = plan_group_member(&g.prog->mix, st->group, r->rank, k);
        c->nreps += is_rep(c->members[k]);
    }
    sim_coll op = coll_op(st);
    /* twice: count the flows, then fill them in (the plans are cheap next to the simulation) */
    if (call_flows(c, st, op, &b) != USP_OK) goto oom;
    for (int k = 0; k < n; k++) {
        c->send_off[k + 1] = c->send_off[k] + b.cnt[k];
        c->recv_off[k + 1] = c->recv_off[k] + b.from_cnt[k];
    }
    int flows = c->send_off[n];
    c->to = malloc(((size_t)flows + 1) * sizeof *c->to);
    c->from = malloc(((size_t)flows + 1) * sizeof *c->from);
    c->bytes = malloc(((size_t)flows + 1) * sizeof *c->bytes);
    c->from_bytes = malloc(((size_t)flows + 1) * sizeof *c->from_bytes);
    if (!c->to || !c->from || !c->bytes || !c->from_bytes) goto oom;
    memset(b.cnt, 0, (size_t)n * sizeof *b.cnt);
    memset(b.from_cnt, 0, (size_t)n * sizeof *b.from_cnt);
    b.fill_to = b.cnt;
    b.fill_from = b.from_cnt;
    b.pass = 1;
    if (call_flows(c, st, op, &b) != USP_OK) goto oom;
    free(b.cnt);
    free(b.from_cnt);
    c->next = g.calls[h];
    g.calls[h] = c;
    return c;
oom:
    free(b.cnt);
    free(b.from_cnt);
    coll_free(c);
    fail("rank %d: out of memory at %s", r->rank, st->name);
    return NULL;
}

/* The last member to leave frees the call. */
static void coll_leave(coll_call *c) {
    if (++c->left < c->nreps) return;
    unsigned h = coll_hash(c->leader, c->stream, c->ordinal);
    for (coll_call **p = &g.calls[h]; *p; p = &(*p)->next)
        if (*p == c) { *p = c->next; break; }
    coll_free(c);
}

/* The step as one NCCL call with every member joining every other (zero
 * bytes: a rendezvous), as the simulator's engine runs it: the fallback on a
 * platform whose links carry latency, where a rendezvous costs time. */
static int run_comm_nccl_pairs(rank_state *r, int i, const plan_step *st, int n) {
    int me = 0, count = 0;
    sim_coll op = coll_op(st);
    int *members = malloc((size_t)n * 2 * sizeof *members);
    double *bytes_to = malloc((size_t)n * 2 * sizeof *bytes_to);
    if (!members || !bytes_to) {
        free(members); free(bytes_to);
        fail("rank %d: out of memory at %s", r->rank, st->name);
        return -1;
    }
    int *peers = members + n;
    double *bytes = bytes_to + n;
    for (int k = 0; k < n; k++) {
        members[k] = plan_group_member(&g.prog->mix, st->group, r->rank, k);
        if (members[k] == r->rank) me = k;
    }
    sim_coll_plan plan;
    sim_coll_plan_make(&g.net, op, members, n, me, st->message * n, &plan, bytes_to);
    if (op == SIM_COLL_ALLTOALL && st->a2a >= 0 && !usp_heads_even(&g.prog->attn))
        sim_a2a_uneven_pieces(&g.prog->attn, (usp_a2a)st->a2a, me, n, bytes_to); /* as the engine */
    for (int k = 0; k < n; k++)
        if (k != me) { peers[count] = members[k]; bytes[count++] = bytes_to[k]; }
    if (plan.delay_s > 0) sg_actor_sleep_for(plan.delay_s);
    int rc = exchange(r, i, st, peers, peers, bytes, count);
    free(members);
    free(bytes_to);
    return rc;
}

/* The step as one NCCL call through the network layer: its delay, then
 * bytes_to every member (nccl-tests' size: n shards for the group steps, the
 * message for SENDRECV). */
static int run_comm_nccl(rank_state *r, int i, const plan_step *st) {
    if (st->kind == PLAN_STEP_SENDRECV) {
        int members[2] = {r->rank, st->peer_send};
        double b[2];
        sim_coll_plan plan;
        sim_coll_plan_make(&g.net, SIM_COLL_SENDRECV, members, 2, 0, st->message, &plan, b);
        if (plan.delay_s > 0) sg_actor_sleep_for(plan.delay_s);
        return exchange(r, i, st, &st->peer_send, &st->peer_recv, &b[1], 1);
    }
    int n = plan_group_size(&g.prog->mix, st->group);
    if (n < 2) return 0;
    /* an all-to-all of an uneven head split: each member its own pieces */
    int uneven = st->kind == PLAN_STEP_ALL_TO_ALL && st->a2a >= 0 && !usp_heads_even(&g.prog->attn);
    if (!g.zero_latency || uneven) return run_comm_nccl_pairs(r, i, st, n);
    coll_call *c = coll_join(r, i, st, n);
    if (!c) return -1;
    int me = group_index(&g.prog->mix, st->group, r->rank);
    if (c->delay[me] > 0) sg_actor_sleep_for(c->delay[me]);
    /* Every member has joined when every member that runs has: in
     * representative mode the others join when their ring position's does. */
    if (++c->joined == c->nreps) /* wakes the members waiting below */
        for (int k = 0; k < n; k++)
            if (is_rep(c->members[k])) rank_wake(&g.ranks[c->members[k]]);
    int rc = exchange2(r, i, st, c->to + c->send_off[me], c->bytes + c->send_off[me],
                       c->send_off[me + 1] - c->send_off[me], c->from + c->recv_off[me],
                       c->from_bytes + c->recv_off[me], c->recv_off[me + 1] - c->recv_off[me]);
    while (c->joined < c->nreps) rank_sleep(r, st->stream);
    coll_leave(c);
    return rc;
}

static int run_comm(rank_state *r, int i, const plan_step *st) {
    int rounds = st->kind == PLAN_STEP_ALLREDUCE ? 2 : 1;
    if (st->counted && r->rank == 0) {
        int n = st->kind == PLAN_STEP_SENDRECV ? 2 : plan_group_size(&g.prog->mix, st->group);
        g.bytes[st->term] += st->kind == PLAN_STEP_SENDRECV ? st->message : (double)(n - 1) * st->message * rounds;
    }
    if (g.net.known) return run_comm_nccl(r, i, st);
    if (st->kind == PLAN_STEP_SENDRECV) {
        for (int k = 0; k < rounds; k++)
            if (exchange(r, i, st, &st->peer_send, &st->peer_recv, &st->message, 1) != 0) return -1;
        return 0;
    }
    int n = plan_group_size(&g.prog->mix, st->group), count = 0;
    if (n < 2) return 0;
    int to[n > MAX_CHANNELS ? n : MAX_CHANNELS], from[n > MAX_CHANNELS ? n : MAX_CHANNELS];
    double bytes[n > MAX_CHANNELS ? n : MAX_CHANNELS];
    if (st->kind == PLAN_STEP_ALL_TO_ALL || st->direct) {
        double piece[n];
        int me = 0;
        for (int k = 0; k < n; k++) {
            piece[k] = st->message;
            if (plan_group_member(&g.prog->mix, st->group, r->rank, k) == r->rank) me = k;
        }
        if (st->kind == PLAN_STEP_ALL_TO_ALL && st->a2a >= 0 && !usp_heads_even(&g.prog->attn))
            sim_a2a_uneven_pieces(&g.prog->attn, (usp_a2a)st->a2a, me, n, piece);
        for (int k = 0; k < n; k++) {
            int m = plan_group_member(&g.prog->mix, st->group, r->rank, k);
            if (m != r->rank) { to[count] = from[count] = m; bytes[count++] = piece[k]; }
        }
    } else {
        ring_paths *rp = &r->rings[st->group];
        if (!rp->ready) ring_paths_make(r, st->group, rp);
        count = ring_messages(rp, (n - 1) * st->message, to, from, bytes);
    }
    for (int k = 0; k < rounds; k++)
        if (exchange(r, i, st, to, from, bytes, count) != 0) return -1;
    return 0;
}

/* SimGrid runs one actor at a time and switches only inside its calls, so
 * comm_busy and slowed need no lock. */
static void set_comm_busy(rank_state *r, int busy) { /* step index + 1, or 0 */
    r->comm_busy = busy;
    if (r->slowed) sg_sem_release(r->wake);
}

/* Compute step k, `seconds` alone, runs at (1 - slowdown) of its rate while
 * an attention message listed before it transfers (as the engine's
 * stretched_end: sim/engine/engine.c): the NCCL kernel holds SMs the
 * attention kernel then lacks (sim/internal.h, comm_slowdown). Sleeps until
 * the work is done or comm_busy changes, then re-rates the work left. */
static void compute_slowed(rank_state *r, int k, double seconds, double slowdown) {
    double work = seconds;
    while (work > 0) {
        double rate = r->comm_busy && r->comm_busy - 1 < k ? 1.0 - slowdown : 1.0, t0 = simgrid_get_clock();
        r->slowed = 1;
        int timed_out = sg_sem_acquire_timeout(r->wake, work / rate);
        r->slowed = 0;
        if (timed_out) break; /* the work is done */
        work -= (simgrid_get_clock() - t0) * rate;
    }
}

static void run_stream(plan_stream s) {
    rank_state *r = sg_actor_self_get_data();
    for (int i = 0; i < r->rp->nsteps && !g.error[0]; i++) {
        const plan_step *st = &r->rp->steps[i];
        if (st->stream != s) continue;
        wait_deps(r, st);
        double start = simgrid_get_clock();
        if (st->kind == PLAN_STEP_COMPUTE) {
            if (st->seconds > 0 && st->slowdown > 0) compute_slowed(r, i, st->seconds, st->slowdown);
            else if (st->seconds > 0) sg_actor_sleep_for(st->seconds);
        } else {
            if (st->attention) set_comm_busy(r, i + 1);
            int failed = run_comm(r, i, st) != 0;
            if (st->attention) set_comm_busy(r, 0);
            if (failed) break;
        }
        mark_done(r, i, start);
    }
    sg_barrier_wait(g.barrier);
}

static void compute_actor(int argc, char **argv) { (void)argc; (void)argv; run_stream(PLAN_COMPUTE); }
static void comm_actor(int argc, char **argv) { (void)argc; (void)argv; run_stream(PLAN_COMM); }
static void bg_actor(int argc, char **argv) { (void)argc; (void)argv; run_stream(PLAN_BG); }

/* ------------------------------------------------- one program at a time */

/* sg_actor_set_stacksize takes KiB: 128 KiB (this said 128 * 1024, which
 * gave every actor 128 MiB, found by the AddressSanitizer build, whose
 * shadow memory made that cost a second an actor). */
enum { STACK_KIB = 128 };

static int setup_rank(rank_state *r, int g_rank) {
    r->rank = g_rank;
    r->rp = &g.prog->ranks[g_rank];
    int n = r->rp->nsteps + 1;
    r->done = calloc((size_t)n, 1);
    r->start = calloc((size_t)n, sizeof *r->start);
    r->end = calloc((size_t)n, sizeof *r->end);
    r->ordinal = calloc((size_t)n, sizeof *r->ordinal);
    r->wake = sg_sem_init(0);
    if (!r->done || !r->start || !r->end || !r->ordinal || !r->wake) return -1;
    for (int s = 0; s < PLAN_NSTREAMS; s++)
        if (!(r->asleep_sem[s] = sg_sem_init(0))) return -1;
    int count[PLAN_NSTREAMS] = {0};
    for (int i = 0; i < r->rp->nsteps; i++) r->ordinal[i] = count[r->rp->steps[i].stream]++;
    return 0;
}

static int start_actors(rank_state *r) {
    static void (*const code[PLAN_NSTREAMS])(int, char **) = {compute_actor, comm_actor, bg_actor};
    for (int s = 0; s < PLAN_NSTREAMS; s++) {
        char name[48];
        snprintf(name, sizeof name, "rank%d-stream%d", r->rank, s);
        sg_actor_t a = sg_actor_init(name, g.hosts[r->rank]);
        if (!a) return -1;
        sg_actor_set_data(a, r);
        sg_actor_set_stacksize(a, STACK_KIB);
        sg_actor_start(a, code[s], 0, NULL);
    }
    return 0;
}

static void free_ranks(void) {
    for (int k = 0; g.ranks && k < g.world; k++) {
        rank_state *r = &g.ranks[k];
        free(r->done); free(r->start); free(r->end); free(r->ordinal);
        if (r->wake) sg_sem_destroy(r->wake);
        for (int s = 0; s < PLAN_NSTREAMS; s++)
            if (r->asleep_sem[s]) sg_sem_destroy(r->asleep_sem[s]);
    }
    free(g.ranks);
    g.ranks = NULL;
}

/* Times relative to the program's start; busy compute of the rank that ends last. */
static void summarize(double t0, plan_sim_result *res) {
    memset(res, 0, sizeof *res);
    int critical = 0;
    for (int k = 0; k < g.world; k++) {
        if (!is_rep(k)) continue;
        const rank_state *r = &g.ranks[k];
        double busy = 0, last = 0;
        for (int i = 0; i < r->rp->nsteps; i++) {
            const plan_step *st = &r->rp->steps[i];
            if (!r->done[i]) { fail("rank %d never finished %s", k, st->name); return; }
            double end = r->end[i] - t0;
            if (end > last) last = end;
            if (!st->backward && end > res->fwd_s) res->fwd_s = end;
            if (st->stream == PLAN_COMPUTE) busy += r->end[i] - r->start[i];
            else res->comm_s[st->term] += r->end[i] - r->start[i];
        }
        if (last >= res->makespan_s) { res->makespan_s = last; critical = k; res->compute_s = busy; }
    }
    (void)critical;
    memcpy(res->bytes, g.bytes, sizeof res->bytes);
}

/* Runs g.prog (set up for the ranks that run) and puts its result in slot p. */
static int run_current(int p) {
    g.ranks = calloc((size_t)g.world, sizeof *g.ranks);
    if (!g.ranks) return -1;
    int running = 0;
    for (int k = 0; k < g.world; k++)
        if (is_rep(k)) {
            if (setup_rank(&g.ranks[k], k) != 0) return -1;
            running++;
        }
    g.barrier = sg_barrier_init((unsigned)(running * PLAN_NSTREAMS + 1));
    double t0 = simgrid_get_clock();
    for (int k = 0; k < g.world; k++)
        if (is_rep(k) && start_actors(&g.ranks[k]) != 0) return -1;
    sg_barrier_wait(g.barrier);
    sg_barrier_destroy(g.barrier);
    summarize(t0, &g.results[p]);
    free_ranks();
    for (int h = 0; h < COLL_BUCKETS; h++) /* left over only when a member failed */
        while (g.calls[h]) { coll_call *c = g.calls[h]; g.calls[h] = c->next; coll_free(c); }
    return 0;
}

/* The share of the lower bound given up for the simulation's rounding: its
 * clock and every flow's remaining bytes are doubles updated event after
 * event (1e-16 relative each, some 10^4 events on a path at ring 1024). */
static const double LOWER_BOUND_ROUNDING = 1e-9;

/* What one link carries of a step's outbound flows (group_comm_bound). */
typedef struct {
    sg_link_t link;
    double bytes;
} link_load;

/* A lower bound on a group collective's step of rank k (the paths of
 * run_comm_nccl: NCCL's delay, slept first, then every flow the member
 * sends; the step ends no sooner than its last flow): the delay, then the
 * bytes the member sends over each link of their routes at most at that
 * link's bandwidth (the network model shares a link's bandwidth among its
 * flows and never gives them more: CM02, no bandwidth factor), the most
 * loaded link deciding. Only what the member itself sends is counted, not
 * what it receives nor the other members' waits: those only make it later. */
static double group_comm_bound(int k, const plan_step *st) {
    int n = plan_group_size(&g.prog->mix, st->group);
    if (n < 2) return 0;
    int *members = malloc((size_t)n * sizeof *members), me = 0;
    double *bytes_to = malloc((size_t)n * sizeof *bytes_to);
    enum { MAX_LINKS = 256 };
    link_load load[MAX_LINKS];
    int nload = 0;
    xbt_dynar_t route = xbt_dynar_new(sizeof(sg_link_t), NULL);
    double d = 0;
    if (!members || !bytes_to || !route) goto done;
    for (int j = 0; j < n; j++) {
        members[j] = plan_group_member(&g.prog->mix, st->group, k, j);
        if (members[j] == k) me = j;
    }
    sim_coll op = coll_op(st);
    sim_coll_plan plan;
    sim_coll_plan_make(&g.net, op, members, n, me, st->message * n, &plan, bytes_to);
    if (op == SIM_COLL_ALLTOALL && st->a2a >= 0 && !usp_heads_even(&g.prog->attn))
        sim_a2a_uneven_pieces(&g.prog->attn, (usp_a2a)st->a2a, me, n, bytes_to);
    for (int j = 0; j < n && nload >= 0; j++) {
        if (j == me || !(bytes_to[j] > 0) || g.hosts[members[j]] == g.hosts[k]) continue;
        if (g.shapes) sim_shape_routes_prepare(k, members[j]);
        xbt_dynar_reset(route);
        sg_host_get_route(g.hosts[k], g.hosts[members[j]], route);
        unsigned len = xbt_dynar_length(route);
        for (unsigned l = 0; l < len && nload >= 0; l++) {
            sg_link_t link = xbt_dynar_get_as(route, l, sg_link_t);
            int at = 0;
            while (at < nload && load[at].link != link) at++;
            if (at == nload) {
                if (nload == MAX_LINKS) { nload = -1; break; } /* no bound from the links */
                load[nload].link = link;
                load[nload++].bytes = 0;
            }
            load[at].bytes += (double)(long)(bytes_to[j] + 0.5); /* the bytes exchange2 sends */
        }
    }
    double busiest = 0;
    for (int l = 0; l < nload; l++) {
        double bw = sg_link_get_bandwidth(load[l].link);
        if (bw > 0 && load[l].bytes / bw > busiest) busiest = load[l].bytes / bw;
    }
    d = (plan.delay_s > 0 ? plan.delay_s : 0) + busiest;
done:
    free(members);
    free(bytes_to);
    if (route) xbt_dynar_free(&route);
    return d;
}

/* A lower bound on the makespan of the program running, from the ranks
 * that run: every stream runs its steps one at a time and a step starts
 * once its deps have ended (the cross-rank waits, a collective's for its
 * last member, only make it later); a compute step lasts its seconds; a
 * SENDRECV (a ring hop) at least NCCL's delay, which it sleeps first, and
 * then its message over the narrowest link of its route to peer_send or from
 * peer_recv (no flow goes faster than a link of its route); a group
 * collective at least its delay and its busiest link (group_comm_bound).
 * Call on a known topology (run_comm_nccl's paths). */
static double lower_bound(void) {
    double lb = 0;
    for (int k = 0; k < g.world; k++) {
        if (!is_rep(k)) continue;
        const plan_rank_program *rp = &g.prog->ranks[k];
        double *end = calloc((size_t)rp->nsteps + 1, sizeof *end), last[PLAN_NSTREAMS] = {0};
        if (!end) return 0; /* no bound */
        int sent = -1, recvd = -1; /* the ring neighbours of the last bandwidth */
        double bw = 0;
        for (int i = 0; i < rp->nsteps; i++) {
            const plan_step *st = &rp->steps[i];
            double start = last[st->stream], d = 0;
            for (int j = 0; j < 2; j++)
                if (st->dep[j] >= 0 && st->dep[j] < i && end[st->dep[j]] > start) start = end[st->dep[j]];
            if (st->kind == PLAN_STEP_COMPUTE) d = st->seconds > 0 ? st->seconds : 0;
            else if (st->kind == PLAN_STEP_SENDRECV && st->peer_send != k && st->peer_recv != k) {
                int members[2] = {k, st->peer_send};
                double b[2];
                sim_coll_plan plan;
                sim_coll_plan_make(&g.net, SIM_COLL_SENDRECV, members, 2, 0, st->message, &plan, b);
                if (st->peer_send != sent || st->peer_recv != recvd) {
                    if (g.shapes) { sim_shape_routes_prepare(k, st->peer_send); sim_shape_routes_prepare(st->peer_recv, k); }
                    double out = sg_host_get_route_bandwidth(g.hosts[k], g.hosts[st->peer_send]);
                    double in = sg_host_get_route_bandwidth(g.hosts[st->peer_recv], g.hosts[k]);
                    bw = out < in ? out : in;
                    sent = st->peer_send;
                    recvd = st->peer_recv;
                }
                d = (plan.delay_s > 0 ? plan.delay_s : 0) + (bw > 0 ? b[1] / bw : 0);
            } else if (st->kind != PLAN_STEP_COMPUTE && st->kind != PLAN_STEP_SENDRECV) {
                d = group_comm_bound(k, st);
            }
            end[i] = start + d;
            last[st->stream] = end[i];
            if (end[i] > lb) lb = end[i];
        }
        free(end);
    }
    /* The simulation adds its times in floating point, step after step (a
     * relative 1e-16 each): a bound this tight may exceed its makespan by as
     * much, so it gives up LOWER_BOUND_ROUNDING of itself. */
    return lb * (1 - LOWER_BOUND_ROUNDING);
}

static int run_program(int p) {
    memset(g.bytes, 0, sizeof g.bytes);
    if (g.progs->built) { /* built beforehand: every GPU */
        g.rep_mode = 0;
        g.prog = g.progs->built[p];
        return run_current(p);
    }
    const usp_mix *x = &g.progs->mixes[p];
    g.rep_mode = g.symmetric && !g.full && x->dp * x->ulysses * x->tp > 1;
    double cutoff = g.progs->cutoff ? g.progs->cutoff[p] : 0;
    int after = g.progs->skip_if ? g.progs->skip_if[p] : -1;
    if (after >= 0 && after < p && g.results[after].cut) { /* needed only by mixes already beyond the best */
        memset(&g.results[p], 0, sizeof g.results[p]);
        g.results[p].cut = 1;
        return 0;
    }
    if (cutoff > 0 && g.rep_mode && g.net.known) {
        /* rank 0 alone first, built from its own schedule: its bound is a
         * bound of the program too, and far cheaper than every rank's */
        if (plan_build_rank0(g.progs->w, x, g.progs->dev, g.progs->layers[p], g.progs->accumulating[p], &g.built) !=
            USP_OK) {
            snprintf(g.error, sizeof g.error, "%s", usp_error());
            return -1;
        }
        g.prog = &g.built;
        double lower0 = lower_bound();
        plan_program_free(&g.built);
        if (lower0 > cutoff) {
            memset(&g.results[p], 0, sizeof g.results[p]);
            g.results[p].cut = 1;
            g.results[p].makespan_s = g.results[p].lower_s = lower0;
            return 0;
        }
    }
    if (plan_build_some(g.progs->w, x, g.progs->dev, g.progs->layers[p], g.progs->accumulating[p],
                        g.rep_mode ? rep_of : NULL, &g.built) != USP_OK) {
        snprintf(g.error, sizeof g.error, "%s", usp_error());
        return -1;
    }
    g.prog = &g.built;
    int rc = 0;
    double lower = g.rep_mode && g.net.known ? lower_bound() : 0;
    if (cutoff > 0 && lower > cutoff) { /* slower than the mixes it would have to beat */
        memset(&g.results[p], 0, sizeof g.results[p]);
        g.results[p].cut = 1;
        g.results[p].makespan_s = lower;
    } else {
        rc = run_current(p);
    }
    g.results[p].lower_s = lower;
    plan_program_free(&g.built);
    return rc;
}

static void controller(int argc, char **argv) {
    (void)argc; (void)argv;
    for (int p = 0; p < g.nprogs && !g.error[0]; p++) {
        if (run_program(p) != 0 && !g.error[0]) snprintf(g.error, sizeof g.error, "out of memory in the simulation");
        g.completed = p + 1;
    }
}

/* ------------------------------------------------------------ set-up */

static void init_simgrid(void) {
    /* The simulator's network settings (ARCHITECTURE.md, "Timing model"). */
    char *argv[] = {"usp", "--cfg=network/model:CM02", "--cfg=network/crosstraffic:0",
                    "--cfg=network/TCP-gamma:0", "--log=root.thres:warning", NULL};
    int argc = 5;
    simgrid_init(&argc, argv);
}

static int cmp_hosts(const void *a, const void *b) {
    return sim_natural_cmp(sg_host_get_name(*(const sg_host_t *)a), sg_host_get_name(*(const sg_host_t *)b));
}

static int place_ranks(void) {
    size_t n = sg_host_count();
    if (n < (size_t)g.world) {
        snprintf(g.error, sizeof g.error, "%zu hosts, fewer than the %d GPUs", n, g.world);
        g.status = USP_EINVAL;
        return -1;
    }
    g.hosts = sg_host_list();
    if (!g.hosts) return -1;
    qsort(g.hosts, n, sizeof *g.hosts, cmp_hosts);
    return 0;
}

/* *none = 1 when no link of the platform carries latency (a zero-byte
 * message then takes no time). Returns 0 out of memory. */
static int links_without_latency(int *none) {
    size_t n = sg_link_count();
    sg_link_t *links = sg_link_list();
    if (!links && n) return 0;
    *none = 1;
    for (size_t k = 0; k < n; k++)
        if (sg_link_get_latency(links[k]) > 0) *none = 0;
    free(links);
    return 1;
}

/* 1 when every GPU has links of its own, so that GPUs doing the same work
 * see the same traffic and one per ring position can stand for the others:
 * more than one node, a known topology without link latency, every GPU of a
 * node on the node's NVLink fabric, and a NIC of its own with GPUDirect RDMA
 * (h100-fattree, whose rails and spine never limit: machine.c). The PCIe and
 * host-memory paths are then unused. A single node is always simulated in
 * full: it is cheap, and the published one-node tables stay as they were. */
static int platform_symmetric(void) {
    if (!g.net.known || !g.zero_latency) return 0;
    int nodes = 1;
    for (int k = 0; k < g.world; k++)
        if (g.net.gpus[k].node + 1 > nodes) nodes = g.net.gpus[k].node + 1;
    if (nodes == 1) return 0; /* one node: every GPU is simulated (cheap; see plan_simulate) */
    for (int k = 0; k < g.world; k++) {
        const sim_gpu_topo *a = &g.net.gpus[k];
        if (!a->nvlink[0]) return 0;
        if (nodes > 1 && (a->nic < 0 || !a->gdr)) return 0;
        for (int j = k + 1; j < g.world && g.net.gpus[j].node == a->node; j++)
            if (strcmp(g.net.gpus[j].nvlink, a->nvlink) != 0 || (nodes > 1 && g.net.gpus[j].nic == a->nic)) return 0;
    }
    return 1;
}

/* Writes a status int, a 256-byte reason, then the results. */
static void child_main(int fd, const void *platform_file) {
    init_simgrid();
    simgrid_load_platform(platform_file);
    int loaded = 1; /* SimGrid exits on a platform it cannot load: the parent then reads nothing */
    if (usp_write_full(fd, &loaded, sizeof loaded) != 0) return;
    if (place_ranks() != 0) {
        if (!g.error[0]) snprintf(g.error, sizeof g.error, "out of memory placing the ranks");
    } else if (sim_net_load(&g.net, g.hosts, g.world) != USP_OK) {
        snprintf(g.error, sizeof g.error, "out of memory reading the platform's topology");
    } else if (!links_without_latency(&g.zero_latency)) {
        snprintf(g.error, sizeof g.error, "out of memory reading the platform's topology");
    } else {
        g.symmetric = platform_symmetric();
        /* identical nodes: every route the shape of a reference route, not one
         * shortest-path search over the platform per GPU that sends */
        g.shapes = g.symmetric && sim_shape_routes_init(g.hosts, g.world);
        if (g.shapes) g.net.route_prepare = sim_shape_routes_prepare;
        sg_actor_t c = sg_actor_init("controller", g.hosts[0]);
        if (c) { sg_actor_start(c, controller, 0, NULL); simgrid_run(); mailboxes_free(); }
        else snprintf(g.error, sizeof g.error, "cannot start the simulation");
        if (!g.error[0] && g.completed < g.nprogs) /* every actor blocked: SimGrid returns */
            snprintf(g.error, sizeof g.error, "program %d of %d deadlocked", g.completed + 1, g.nprogs);
    }
    int status = !g.error[0] ? USP_OK : g.status != USP_OK ? g.status : USP_EINTERNAL;
    if (usp_write_full(fd, &status, sizeof status) == 0 && usp_write_full(fd, g.error, sizeof g.error) == 0 &&
        status == USP_OK)
        usp_write_full(fd, g.results, (size_t)g.nprogs * sizeof *g.results);
}

/* ----------------------------------------------------------- the parent */

/* Reads the child's answer into job->results and ends the job. */
usp_status plan_sim_finish(plan_sim_job *job) {
    sim_child *c = &job->child;
    int loaded = 0, status = -1;
    char reason[256] = "";
    int ok = usp_read_full(c->fd, &loaded, sizeof loaded) == 0 && usp_read_full(c->fd, &status, sizeof status) == 0 &&
             usp_read_full(c->fd, reason, sizeof reason) == 0 &&
             (status != USP_OK || usp_read_full(c->fd, job->results, (size_t)job->n * sizeof *job->results) == 0);
    sim_child_wait(c);
    usp_status st = USP_OK;
    reason[sizeof reason - 1] = '\0';
    if (!ok) {
        char why[256];
        sim_child_reason(c->err, why, sizeof why, 1);
        if (!loaded) st = usp_fail(USP_EINVAL, "platform %s: %s", job->spec, why[0] ? why : "SimGrid could not load it");
        else st = usp_fail(USP_EINTERNAL, "the simulation ended without a result%s%s", why[0] ? ": " : "", why);
    } else if (status == USP_EINVAL) {
        st = usp_fail(USP_EINVAL, "platform %s: %s", job->spec, reason);
    } else if (status != USP_OK) {
        st = usp_fail(USP_EINTERNAL, "simulation: %s", reason);
    }
    fclose(c->err);
    if (job->temp) unlink(job->path);
    return st;
}

/* Starts the simulation of the programs in a child (the child holds its
 * copy of them: the caller may free its own); plan_sim_finish waits for it.
 * Several may run at once. On failure nothing is left running. */
usp_status plan_sim_start(const plan_programs *progs, int n, const char *platform, int gpus, int full,
                          plan_sim_result *results, plan_sim_job *job) {
    memset(job, 0, sizeof *job);
    for (int p = 0; p < n; p++) {
        int world = progs->built ? progs->built[p]->world : usp_mix_gpus(&progs->mixes[p]);
        if (world != gpus)
            return usp_fail(USP_EINTERNAL, "a program of %d ranks in a simulation of %d GPUs", world, gpus);
    }
    job->results = results;
    job->n = n;
    job->spec = platform ? platform : "h200x8";
    job->temp = usp_platform_is_preset(job->spec);
    if (job->temp) USP_TRY(sim_write_preset(job->spec, gpus, "usp-plan", job->path, sizeof job->path));
    else {
        FILE *f = fopen(job->spec, "r");
        if (!f) return usp_fail(USP_EINVAL, "platform %s: %s", job->spec, strerror(errno));
        fclose(f);
        snprintf(job->path, sizeof job->path, "%s", job->spec);
    }
    /* the child's state, inherited through fork */
    memset(&g, 0, sizeof g);
    g.full = full;
    g.progs = progs;
    g.nprogs = n;
    g.world = gpus;
    g.results = results;
    usp_status st = sim_child_start(&job->child, child_main, job->path);
    memset(&g, 0, sizeof g);
    if (st != USP_OK && job->temp) unlink(job->path);
    return st;
}

usp_status plan_simulate_mixes(const plan_programs *progs, int n, const char *platform, int gpus, int full,
                               plan_sim_result *results) {
    if (n == 0) return USP_OK;
    plan_sim_job job;
    USP_TRY(plan_sim_start(progs, n, platform, gpus, full, results, &job));
    return plan_sim_finish(&job);
}

usp_status plan_simulate(const plan_program *const *progs, int n, const char *platform, int gpus,
                         plan_sim_result *results) {
    plan_programs built = {.built = progs};
    return plan_simulate_mixes(&built, n, platform, gpus, 1, results);
}
