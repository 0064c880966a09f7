/* engine.c: one simulation, run by SimGrid in the current process.
 *
 * Every rank is one actor on its GPU's host, with two in-order streams.
 * The comm stream is real SimGrid activity: a comm step posts its messages
 * and waits for them. The compute stream is a timeline the actor keeps
 * itself: a compute step starts when the stream is free and its `dep` (a
 * comm step) has ended, and lasts what the device profile says, so it needs
 * no simulated activity; a comm step whose dep is a compute step sleeps
 * until that step ends. Ring transfers thus overlap the attention blocks as
 * on a GPU, at the cost of one activity per message.
 *
 * Messages go through one mailbox per ordered pair of ranks; both sides
 * post a pair's messages in schedule order, and each carries its step's tag,
 * which the receiver checks. What NCCL would do with a comm step is the
 * network layer's call (sim/network/step.c): a delay paid first (per-call
 * and pipeline latency), then one message to every peer with the simulated
 * bytes it gives (an all-to-all's pairs; a ring's flows to the successors,
 * rendezvous-only messages to the others), all at once, sharing the links.
 * On a platform without topology props that is the old model: the pairwise
 * messages of rankmem.h, every peer at once, no delay.
 *
 * Numerics: a compute step runs the CPU kernels (usp_rank_compute) once its
 * dep has arrived, messages carry the packed bytes (copied when sent), and
 * a comm step's messages are unpacked in peer order once all have arrived,
 * as in the in-process executor, so the outputs are bit-identical to it.
 *
 * Fold (fold.c says when it is exact): only ulysses rank 0 of each ring rank
 * runs its list; the other ranks of its ulysses group are shadows that take
 * part in the all-to-alls alone, woken when their representative posts, and
 * take its times for everything else. A shadow whose all-to-all starts or
 * ends off its representative's breaks the fold: the run is then repeated
 * in full (execute.c). */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <simgrid/actor.h>
#include <simgrid/comm.h>
#include <simgrid/engine.h>
#include <simgrid/host.h>
#include <simgrid/mailbox.h>
#include <simgrid/semaphore.h>
#include <xbt/config.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "fold.h"
#include "network/shape_routes.h"
#include "routes.h"
#include "usp/layout.h"
#include "usp/rankmem.h"
#include "network/step.h"

/* ------------------------------------------------------ error checking */

static char g_error[512];   /* the first failure of this simulation */
static usp_status g_status = USP_OK;

static int call_failed(const char *call, int line) {
    if (g_status == USP_OK) {
        g_status = USP_EINTERNAL;
        snprintf(g_error, sizeof g_error, "SimGrid call failed (engine.c:%d): %s", line, call);
    }
    return -1;
}

static int rank_failed(usp_status st, const char *fmt, int rank, int step, const char *what) {
    if (g_status == USP_OK) {
        g_status = st;
        snprintf(g_error, sizeof g_error, fmt, rank, step, what);
    }
    return -1;
}

static inline int sg_failed_error(sg_error_t e) { return e != SG_OK; }
static inline int sg_failed_handle(const void *h) { return h == NULL; }
#define SG_FAILED(x) _Generic((x), sg_error_t: sg_failed_error, default: sg_failed_handle)(x)
/* Every SimGrid call that reports an outcome (an sg_error_t, or a handle
 * that is NULL on failure) goes through SG_CHECK: true when the call failed,
 * which is then recorded as the simulation's error. */
#define SG_CHECK(call) (SG_FAILED(call) ? call_failed(#call, __LINE__) : 0)

/* ------------------------------------------------------------ the ranks */

/* A shadow's all-to-all must start and end when its representative's does:
 * within a nanosecond, far below the microsecond `usp run` prints (the same
 * times summed in another order differ by rounding only). */
static const double FOLD_TOLERANCE_S = 1e-9;

/* The mailboxes a rank uses, by peer: looked up by name once. */
typedef struct {
    int *peer;
    sg_mailbox_t *to, *from;
    int count, cap;
} mailbox_cache;

typedef struct {
    int rank;
    const usp_rank_schedule *rs;
    sg_host_t host;
    char *done;              /* [nsteps]: its end time is known */
    double *start, *end;     /* [nsteps] */
    int next_compute;        /* the first compute step not yet timed */
    double compute_free;     /* when the compute stream is free */
    mailbox_cache mailboxes;
    usp_rank_mem mem;        /* numerics only */
    int have_mem;
    /* fold: a shadow's representative and the ends of its all-to-alls */
    int shadow, rep;
    double *a2a_end;
    int na2a;
} rank_sim;

typedef struct {
    const sim_job *job;
    const usp_config *cfg;
    rank_sim *ranks;
    int numerics;
    sg_host_t *hosts;        /* [world]: the ranks' hosts */
    sim_net net;             /* what NCCL would do on them */
    int fold_allowed;        /* the job and the schedule allow the fold */
    int fold;                /* 1: one rank per ulysses group runs its list (fold.c) */
    int fold_broken;         /* a shadow's all-to-all differed from its representative's */
    sg_sem_t *wake;          /* [world] fold: a shadow's next all-to-all may start */
    char *why;               /* [SIM_WHY_LEN]: why not folded (the timeline's) */
} sim_state;

static sim_state g_sim;

/* Header of a numerics message; the packed bytes follow. */
typedef struct {
    int tag, from;
    size_t bytes;
} msg_header;

static int next_on_stream(const usp_rank_schedule *rs, int i, usp_stream stream) {
    while (i < rs->nsteps && usp_rank_step(rs, i)->stream != stream) i++;
    return i;
}

/* ------------------------------------------------------ the compute stream */

static int is_timed_comm(const rank_sim *r, int j) {
    return usp_rank_step(r->rs, j)->stream == USP_STREAM_COMM && r->done[j];
}

/* When an attention step that would take `seconds` alone, starting at
 * `start`, ends, if it runs at (1 - slowdown) of its rate while a comm step
 * listed before it transfers. Those comm steps have ended (their times are
 * known) and, on one in-order stream, do not overlap each other and end in
 * list order: walking back from step k finds the first one still running
 * after `start`. Comm steps listed after k (not yet timed) are not counted. */
static double stretched_end(const rank_sim *r, int k, double start, double seconds, double slowdown) {
    int first = k;
    for (int j = k - 1; j >= 0; j--) {
        if (!is_timed_comm(r, j)) continue;
        if (r->end[j] <= start) break;
        first = j;
    }
    double t = start, work = seconds, rate = 1.0 - slowdown;
    for (int j = first; j < k; j++) {   /* earliest first */
        if (!is_timed_comm(r, j)) continue;
        double cs = fmax(r->start[j], t), ce = r->end[j];
        if (cs - t >= work) break;           /* done before this transfer starts */
        work -= cs - t;
        t = cs;
        if ((ce - t) * rate >= work) return t + work / rate;
        work -= (ce - t) * rate;
        t = ce;
    }
    return t + work;
}

/* Times the compute steps listed before `limit`, in stream order. Their
 * deps have ended: each is a comm step listed before them, and the comm
 * steps before `limit` are done. With numerics on, runs their kernels now,
 * so every buffer is read and written in list order, as the in-process
 * executor does. A step's time depends only on its dep's end and the stream,
 * not on when it is worked out. */
static void advance_compute(rank_sim *r, int limit) {
    const usp_rank_schedule *rs = r->rs;
    int k = r->next_compute;
    for (; k < limit; k = next_on_stream(rs, k + 1, USP_STREAM_COMPUTE)) {
        const usp_step *st = usp_rank_step(rs, k);
        if (st->dep >= 0 && !r->done[st->dep]) break;
        double start = r->compute_free;
        if (st->dep >= 0 && r->end[st->dep] > start) start = r->end[st->dep];
        if (g_sim.numerics) usp_rank_compute(&r->mem, st);
        r->start[k] = start;
        double sec = sim_step_seconds(g_sim.job->profile, g_sim.cfg, st), slow = g_sim.job->profile->comm_slowdown;
        int attn = st->kind == USP_STEP_ATTN_FWD || st->kind == USP_STEP_ATTN_BWD;
        r->end[k] = r->compute_free = attn && slow > 0 ? stretched_end(r, k, start, sec, slow) : start + sec;
        r->done[k] = 1;
    }
    r->next_compute = k;
}

/* --------------------------------------------------------- the comm stream */

static int peer_count(const usp_step *st) {
    return st->kind == USP_STEP_SENDRECV ? 1 : usp_group_size(g_sim.cfg, st->group);
}

static int send_peer(int rank, const usp_step *st, int i) {
    return st->kind == USP_STEP_SENDRECV ? usp_step_send_peer(g_sim.cfg, rank, st) : usp_group_member(g_sim.cfg, st->group, rank, i);
}

static int recv_peer(int rank, const usp_step *st, int j) {
    return st->kind == USP_STEP_SENDRECV ? usp_step_recv_peer(g_sim.cfg, rank, st) : usp_group_member(g_sim.cfg, st->group, rank, j);
}

static sg_mailbox_t mailbox_named(int from, int to) {
    char name[32];
    snprintf(name, sizeof name, "%d>%d", from, to);
    return sg_mailbox_by_name(name);
}

/* The mailbox of messages from rank `from` to rank `to`, one of which is r. */
static sg_mailbox_t mailbox(rank_sim *r, int from, int to) {
    mailbox_cache *mc = &r->mailboxes;
    int peer = from == r->rank ? to : from;
    for (int i = 0; i < mc->count; i++)
        if (mc->peer[i] == peer) return from == r->rank ? mc->to[i] : mc->from[i];
    if (mc->count == mc->cap) {
        int cap = mc->cap ? 2 * mc->cap : 8;
        int *p = realloc(mc->peer, cap * sizeof *p);
        if (p) mc->peer = p;
        sg_mailbox_t *t = realloc(mc->to, cap * sizeof *t);
        if (t) mc->to = t;
        sg_mailbox_t *f = realloc(mc->from, cap * sizeof *f);
        if (f) mc->from = f;
        if (!p || !t || !f) return NULL;
        mc->cap = cap;
    }
    mc->peer[mc->count] = peer;
    mc->to[mc->count] = mailbox_named(r->rank, peer);
    mc->from[mc->count] = mailbox_named(peer, r->rank);
    mc->count++;
    return from == r->rank ? mc->to[mc->count - 1] : mc->from[mc->count - 1];
}

/* Timing-only messages carry their tag in the payload pointer. */
static void *tag_token(int tag) { return (void *)(intptr_t)(tag + 1); }

static void *pack_message(rank_sim *r, const usp_step *st, int i) {
    size_t bytes = usp_rank_msg_bytes_to(&r->mem, st, i);
    msg_header *h = malloc(sizeof *h + bytes);
    if (!h) return NULL;
    *h = (msg_header){st->tag, r->rank, bytes};
    usp_rank_msg_pack(&r->mem, st, i, h + 1);
    return h;
}

typedef struct {
    sg_comm_t *comms;
    void **payloads;   /* [n]: what arrived from peer j (or was packed for self) */
    int ncomms;
    const double *bytes_to; /* [n]: simulated bytes to peer i (the network layer's plan) */
} comm_step_io;

static int post_sends(rank_sim *r, int step, const usp_step *st, int n, comm_step_io *io) {
    sg_mailbox_t mb;
    for (int i = 0; i < n; i++) {
        int to = send_peer(r->rank, st, i);
        long bytes = (long)(io->bytes_to[i] + 0.5);
        void *payload = g_sim.numerics ? pack_message(r, st, i) : tag_token(st->tag);
        if (!payload) return rank_failed(USP_EINTERNAL, "rank %d step %d (%s): out of memory", r->rank, step, st->name);
        if (to == r->rank) { io->payloads[i] = payload; continue; }
        if (SG_CHECK(mb = mailbox(r, r->rank, to)) ||
            SG_CHECK(io->comms[io->ncomms++] = sg_mailbox_put_async(mb, payload, bytes)))
            return -1;
    }
    return 0;
}

static int post_receives(rank_sim *r, const usp_step *st, int n, comm_step_io *io) {
    sg_mailbox_t mb;
    for (int j = 0; j < n; j++) {
        int from = recv_peer(r->rank, st, j);
        if (from == r->rank) continue;
        if (SG_CHECK(mb = mailbox(r, from, r->rank)) ||
            SG_CHECK(io->comms[io->ncomms++] = sg_mailbox_get_async(mb, &io->payloads[j])))
            return -1;
    }
    return 0;
}

static int tag_of(const void *payload) {
    return g_sim.numerics ? ((const msg_header *)payload)->tag : (int)((intptr_t)payload - 1);
}

/* Checks every message and, with numerics, unpacks them in peer order. */
static int apply_messages(rank_sim *r, int i, const usp_step *st, int n, comm_step_io *io) {
    for (int j = 0; j < n; j++) {
        if (!io->payloads[j] || tag_of(io->payloads[j]) != st->tag)
            return rank_failed(USP_EINTERNAL, "rank %d step %d (%s): a message arrived out of schedule order",
                               r->rank, i, st->name);
        if (!g_sim.numerics) continue;
        usp_rank_msg_unpack(&r->mem, st, j, (const msg_header *)io->payloads[j] + 1);
        free(io->payloads[j]);
        io->payloads[j] = NULL;
    }
    return 0;
}

/* A comm step that may start at `start` (its dep has ended, the stream is
 * free): the network layer's delay, then its messages. One sleep covers
 * both the wait for the dep and the delay (each sleep is a simulated
 * activity, the dearest part of a step). */
static int run_comm_step(rank_sim *r, int i, const usp_step *st, double start) {
    int n = peer_count(st);
    sg_comm_t comms[2 * n];
    void *payloads[n];
    double bytes_to[n + 1];
    memset(payloads, 0, sizeof payloads);
    comm_step_io io = {comms, payloads, 0, bytes_to};
    sim_coll_plan plan;
    double delay = sim_step_plan(&g_sim.net, g_sim.cfg, st, r->rank, n, &plan, bytes_to);
    if (delay < 0) return rank_failed(USP_EINTERNAL, "rank %d step %d (%s): out of memory", r->rank, i, st->name);
    if (r->shadow && fabs(start + delay - simgrid_get_clock()) > FOLD_TOLERANCE_S) g_sim.fold_broken = 1;
    if (start + delay > simgrid_get_clock()) sg_actor_sleep_until(start + delay);
    if (g_sim.fold && !r->shadow && st->kind == USP_STEP_ALL_TO_ALL)
        for (int j = 0; j < n; j++) {
            int m = usp_group_member(g_sim.cfg, st->group, r->rank, j);
            if (m != r->rank) sg_sem_release(g_sim.wake[m]);
        }
    if (post_sends(r, i, st, n, &io) != 0 || post_receives(r, st, n, &io) != 0) return -1;
    for (int k = 0; k < io.ncomms; k++)
        if (SG_CHECK(sg_comm_wait(comms[k]))) return -1;
    return apply_messages(r, i, st, n, &io);
}

/* A comm step starts when the comm stream is free (the previous one has
 * returned) and its dep, a compute step, has ended: *start. */
static int wait_for_dep(rank_sim *r, int i, const usp_step *st, double *start) {
    *start = simgrid_get_clock();
    if (st->dep < 0) return 0;
    if (!r->done[st->dep])
        return rank_failed(USP_EINTERNAL, "rank %d step %d (%s) waits for a compute step that cannot run",
                           r->rank, i, st->name);
    if (r->end[st->dep] > *start) *start = r->end[st->dep];
    return 0;
}

/* A fold's shadow: its all-to-alls only, each posted when its representative
 * posts its own (woken by it), at the representative's start. */
static void shadow_run(rank_sim *r) {
    const usp_rank_schedule *rs = r->rs;
    const rank_sim *rep = &g_sim.ranks[r->rep];
    for (int i = 0, k = 0; i < rs->nsteps && g_status == USP_OK; i++) {
        const usp_step *st = usp_rank_step(rs, i);
        if (st->stream != USP_STREAM_COMM || st->kind != USP_STEP_ALL_TO_ALL) continue;
        sg_sem_acquire(g_sim.wake[r->rank]);
        if (g_status != USP_OK || run_comm_step(r, i, st, rep->start[i]) != 0) return;
        r->a2a_end[k++] = simgrid_get_clock();
    }
}

/* The shadows of representative r, woken n times each (when r stops early,
 * so that they return rather than wait for ever). */
static void wake_shadows(const rank_sim *r, int n) {
    int ring_rank, u;
    usp_coords_of(g_sim.cfg, r->rank, &ring_rank, &u);
    for (int v = 1; v < g_sim.cfg->ulysses; v++)
        for (int k = 0; k < n; k++) sg_sem_release(g_sim.wake[usp_rank_of(g_sim.cfg, ring_rank, v)]);
}

static void rank_actor(int argc, char **argv) {
    (void)argc; (void)argv;
    rank_sim *r = sg_actor_self_get_data();
    const usp_rank_schedule *rs = r->rs;
    if (g_status != USP_OK) return; /* the route check failed */
    if (r->shadow) { shadow_run(r); return; }
    r->next_compute = next_on_stream(rs, 0, USP_STREAM_COMPUTE);
    for (int i = next_on_stream(rs, 0, USP_STREAM_COMM); i < rs->nsteps && g_status == USP_OK;
         i = next_on_stream(rs, i + 1, USP_STREAM_COMM)) {
        advance_compute(r, i);
        const usp_step *st = usp_rank_step(rs, i);
        double start;
        if (wait_for_dep(r, i, st, &start) != 0) return;
        r->start[i] = start;
        if (run_comm_step(r, i, st, start) != 0) break;
        r->end[i] = simgrid_get_clock();
        r->done[i] = 1;
    }
    if (g_status != USP_OK && g_sim.fold) wake_shadows(r, rs->nsteps);
    if (g_status != USP_OK) return;
    advance_compute(r, rs->nsteps);
}

/* ------------------------------------------------------------ set-up */

static void init_simgrid(const usp_sim_options *o) {
    static const char *const defaults[] = {
        "--cfg=network/model:CM02", "--cfg=network/crosstraffic:0", "--cfg=network/TCP-gamma:0",
        "--log=root.thres:warning",
    };
    enum { NDEF = sizeof defaults / sizeof defaults[0] };
    char *argv[1 + NDEF + USP_SIM_MAX_CFG + 1];
    char overrides[USP_SIM_MAX_CFG][256];
    int argc = 0;
    argv[argc++] = "usp";
    for (int i = 0; i < NDEF; i++) argv[argc++] = (char *)defaults[i];
    for (int i = 0; o && i < o->ncfg && i < USP_SIM_MAX_CFG; i++) {
        snprintf(overrides[i], sizeof overrides[i], "--cfg=%s", o->cfg_overrides[i]);
        argv[argc++] = overrides[i];
    }
    argv[argc] = NULL;
    simgrid_init(&argc, argv);
}

static int cmp_host_names(const void *a, const void *b) {
    return sim_natural_cmp(sg_host_get_name(*(const sg_host_t *)a), sg_host_get_name(*(const sg_host_t *)b));
}

/* Hosts of the ranks: the map's names, or the platform's hosts in natural name order. */
static usp_status place_ranks(const sim_job *job, rank_sim *ranks, int world) {
    size_t nhosts = sg_host_count();
    if (job->hosts) {
        for (int g = 0; g < world; g++)
            if (!(ranks[g].host = sg_host_by_name(job->hosts[g])))
                return usp_fail(USP_EINVAL, "host map: rank %d: no host '%s' in %s", g, job->hosts[g],
                                job->opts && job->opts->platform ? job->opts->platform : "the platform");
        return USP_OK;
    }
    if (nhosts < (size_t)world)
        return usp_fail(USP_EINVAL, "platform %s has %zu hosts, fewer than the %d ranks",
                        job->opts && job->opts->platform ? job->opts->platform : "h200x8", nhosts, world);
    sg_host_t *hosts;
    if (SG_CHECK(hosts = sg_host_list())) return usp_fail(g_status, "%s", g_error);
    qsort(hosts, nhosts, sizeof *hosts, cmp_host_names);
    for (int g = 0; g < world; g++) ranks[g].host = hosts[g];
    free(hosts);
    return USP_OK;
}

static usp_status alloc_rank(rank_sim *r, const usp_schedule *s, int g, const sim_job *job) {
    r->rank = g;
    r->rs = &s->ranks[g];
    int n = r->rs->nsteps;
    r->done = calloc((size_t)n + 1, 1);
    r->start = calloc((size_t)n + 1, sizeof *r->start);
    r->end = calloc((size_t)n + 1, sizeof *r->end);
    if (!r->done || !r->start || !r->end) return usp_fail(USP_EINTERNAL, "out of memory for rank %d", g);
    if (!job->inputs) return USP_OK;
    USP_TRY(usp_rank_mem_alloc(s, g, &r->mem));
    r->have_mem = 1;
    return usp_rank_mem_load(&r->mem, job->inputs);
}

/* A fold's shadow keeps the ends of its all-to-alls only. */
static usp_status alloc_shadow(rank_sim *r, const usp_schedule *s, int g) {
    int ring_rank, u;
    usp_coords_of(&s->cfg, g, &ring_rank, &u);
    r->rank = g;
    r->rs = &s->ranks[g];
    r->shadow = 1;
    r->rep = usp_rank_of(&s->cfg, ring_rank, 0);
    for (int i = 0; i < r->rs->nsteps; i++) r->na2a += usp_rank_step(r->rs, i)->kind == USP_STEP_ALL_TO_ALL;
    r->a2a_end = calloc((size_t)r->na2a + 1, sizeof *r->a2a_end);
    if (!(g_sim.wake[g] = sg_sem_init(0)) || !r->a2a_end)
        return usp_fail(USP_EINTERNAL, "out of memory for rank %d", g);
    return USP_OK;
}

static int is_representative(const usp_config *c, int g) {
    int ring_rank, u;
    usp_coords_of(c, g, &ring_rank, &u);
    return u == 0;
}

/* Stacks: the CPU kernels run on the actor's stack in numerics mode;
 * timing-only actors need little, which keeps thousands of ranks small. */
enum { TIMING_STACK_KIB = 128 };

static usp_status start_actor(rank_sim *r) {
    char name[32];
    sg_actor_t a;
    snprintf(name, sizeof name, "rank%d", r->rank);
    if (SG_CHECK(a = sg_actor_init(name, r->host))) return usp_fail(g_status, "%s", g_error);
    sg_actor_set_data(a, r);
    if (!g_sim.numerics) sg_actor_set_stacksize(a, TIMING_STACK_KIB); /* in KiB */
    sg_actor_start(a, rank_actor, 0, NULL);
    return USP_OK;
}

/* The ranks not allocated before the simulation (the fold's candidates for
 * shadows): shadows when folding, else whole ranks; then every actor. */
static usp_status start_ranks(void) {
    const usp_schedule *s = g_sim.job->sched;
    for (int g = 0; g < s->world; g++) {
        rank_sim *r = &g_sim.ranks[g];
        if (g_sim.fold_allowed && !is_representative(&s->cfg, g))
            USP_TRY(g_sim.fold ? alloc_shadow(r, s, g) : alloc_rank(r, s, g, g_sim.job));
        USP_TRY(start_actor(r));
    }
    return USP_OK;
}

/* The route check (routes.c) runs in an actor of its own, started before
 * any rank's: SimGrid seals the platform (builds its routing graphs) only
 * when the simulation starts. It decides the fold (fold.c, whose look-ups
 * are then the route check), and starts the ranks' actors once it passed. */
static void route_checker(int argc, char **argv) {
    (void)argc; (void)argv;
    const usp_schedule *s = g_sim.job->sched;
    const usp_sim_options *o = g_sim.job->opts;
    const char *platform = o && o->platform ? o->platform : "h200x8";
    int ok = 0;
    char why[256];
    /* identical nodes (the presets): each pair's route from its shape, not a
     * shortest-path search over the platform per rank (the check below and
     * every transfer look each pair up) */
    if (sim_shape_routes_init(g_sim.hosts, s->world)) g_sim.net.route_prepare = sim_shape_routes_prepare;
    usp_status st = g_sim.fold_allowed ? sim_fold_check(s, &g_sim.net, platform, &ok, why, sizeof why) : USP_OK;
    g_sim.fold = st == USP_OK && ok;
    if (g_sim.fold_allowed && !ok) sim_copy_str(g_sim.why, SIM_WHY_LEN, why);
    if (st == USP_OK && !ok) st = sim_check_routes(&s->cfg, &g_sim.net, platform);
    if (st == USP_OK) st = start_ranks();
    if (st != USP_OK && g_status == USP_OK) {
        g_status = st;
        snprintf(g_error, sizeof g_error, "%s", usp_error());
    }
}

static usp_status start_route_checker(const rank_sim *ranks) {
    sg_actor_t a;
    if (SG_CHECK(a = sg_actor_init("route-check", ranks[0].host))) return usp_fail(g_status, "%s", g_error);
    if (!g_sim.numerics) sg_actor_set_stacksize(a, 128); /* in KiB */
    sg_actor_start(a, route_checker, 0, NULL);
    return USP_OK;
}

/* ------------------------------------------------------------ results */

static double last_end(const rank_sim *r, int from, int to) {
    double t = 0;
    for (int i = from; i < to; i++)
        if (r->end[i] > t) t = r->end[i];
    return t;
}

/* The intervals of one stream of a rank, in list order (which is time order). */
static int stream_intervals(const rank_sim *r, usp_stream s, double *st, double *en) {
    int n = 0;
    for (int i = 0; i < r->rs->nsteps; i++)
        if (usp_rank_step(r->rs, i)->stream == s) { st[n] = r->start[i]; en[n] = r->end[i]; n++; }
    return n;
}

static usp_status rank_stats(const rank_sim *r, sim_timeline *tl) {
    int n = r->rs->nsteps;
    double *buf = malloc(4 * ((size_t)n + 1) * sizeof *buf);
    if (!buf) return usp_fail(USP_EINTERNAL, "out of memory");
    double *cs = buf, *ce = buf + n + 1, *ms = buf + 2 * (n + 1), *me = buf + 3 * (n + 1);
    int nc = stream_intervals(r, USP_STREAM_COMPUTE, cs, ce);
    int nm = stream_intervals(r, USP_STREAM_COMM, ms, me);
    double c = 0, m = 0;
    for (int i = 0; i < nc; i++) c += ce[i] - cs[i];
    for (int i = 0; i < nm; i++) m += me[i] - ms[i];
    tl->compute_s[r->rank] = c;
    tl->comm_s[r->rank] = m;
    tl->exposed_s[r->rank] = sim_exposed_time(cs, ce, nc, ms, me, nm);
    free(buf);
    return USP_OK;
}

/* Whether every shadow's all-to-alls ended when its representative's did
 * (their starts were compared as they posted: fold_broken). */
static int fold_exact(const usp_schedule *s, const rank_sim *ranks) {
    if (g_sim.fold_broken) return 0;
    for (int g = 0; g < s->world; g++) {
        const rank_sim *r = &ranks[g], *rep = &ranks[r->rep];
        if (!r->shadow) continue;
        for (int i = 0, k = 0; i < r->rs->nsteps; i++) {
            if (usp_rank_step(r->rs, i)->kind != USP_STEP_ALL_TO_ALL) continue;
            if (k >= r->na2a || fabs(r->a2a_end[k] - rep->end[i]) > FOLD_TOLERANCE_S) return 0;
            k++;
        }
    }
    return 1;
}

static usp_status collect(const usp_schedule *s, rank_sim *ranks, sim_timeline *tl, int keep_steps) {
    double fwd = 0, total = 0;
    for (int g = 0; g < s->world; g++) {
        rank_sim *r = &ranks[g];
        if (r->shadow) continue;
        for (int i = 0; i < r->rs->nsteps; i++)
            if (!r->done[i])
                return usp_fail(USP_EINTERNAL, "simulation stalled: rank %d never finished step %d (%s)",
                                g, i, usp_rank_step(r->rs, i)->name);
        double f = last_end(r, 0, r->rs->nfwd), t = last_end(r, 0, r->rs->nsteps);
        if (f > fwd) fwd = f;
        if (t > total) total = t;
        USP_TRY(rank_stats(r, tl));
        if (keep_steps) { tl->start[g] = r->start; tl->end[g] = r->end; r->start = r->end = NULL; }
    }
    for (int g = 0; g < s->world; g++) { /* a shadow: its representative's times */
        const rank_sim *r = &ranks[g];
        if (!r->shadow) continue;
        tl->compute_s[g] = tl->compute_s[r->rep];
        tl->comm_s[g] = tl->comm_s[r->rep];
        tl->exposed_s[g] = tl->exposed_s[r->rep];
        if (keep_steps) { tl->start[g] = tl->start[r->rep]; tl->end[g] = tl->end[r->rep]; }
    }
    tl->time_fwd_s = fwd;
    tl->time_bwd_s = s->backward ? total - fwd : 0;
    return USP_OK;
}

static usp_status store_outputs(const sim_job *job, rank_sim *ranks, int world) {
    for (int g = 0; g < world && job->inputs; g++) USP_TRY(usp_rank_mem_store(&ranks[g].mem, job->outputs));
    return USP_OK;
}

static usp_status timeline_alloc(sim_timeline *tl, int world, int keep_steps) {
    memset(tl, 0, sizeof *tl);
    tl->compute_s = calloc((size_t)world, sizeof(double));
    tl->comm_s = calloc((size_t)world, sizeof(double));
    tl->exposed_s = calloc((size_t)world, sizeof(double));
    if (keep_steps) {
        tl->start = calloc((size_t)world, sizeof(double *));
        tl->end = calloc((size_t)world, sizeof(double *));
    }
    if (!tl->compute_s || !tl->comm_s || !tl->exposed_s || (keep_steps && (!tl->start || !tl->end)))
        return usp_fail(USP_EINTERNAL, "out of memory");
    return USP_OK;
}

static usp_status simulate(const sim_job *job, rank_sim *ranks, sim_timeline *tl,
                           void (*phase)(int, void *), void *ctx) {
    const usp_schedule *s = job->sched;
    init_simgrid(job->opts);
    if (phase) phase(0, ctx);
    simgrid_load_platform(job->platform_file);
    if (phase) phase(1, ctx);
    USP_TRY(place_ranks(job, ranks, s->world));
    /* a fold's candidate shadows are set up once the fold is decided (start_ranks) */
    for (int g = 0; g < s->world; g++)
        if (!g_sim.fold_allowed || is_representative(&s->cfg, g)) USP_TRY(alloc_rank(&ranks[g], s, g, job));
    if (g_sim.fold_allowed && !(g_sim.wake = calloc((size_t)s->world, sizeof *g_sim.wake)))
        return usp_fail(USP_EINTERNAL, "out of memory");
    if (!(g_sim.hosts = malloc((size_t)s->world * sizeof *g_sim.hosts)))
        return usp_fail(USP_EINTERNAL, "out of memory");
    for (int g = 0; g < s->world; g++) g_sim.hosts[g] = ranks[g].host;
    USP_TRY(sim_net_load(&g_sim.net, g_sim.hosts, s->world));
    USP_TRY(start_route_checker(ranks)); /* it starts the ranks */
    simgrid_run();
    if (g_status != USP_OK) return usp_fail(g_status, "%s", g_error);
    tl->mode = g_sim.fold ? SIM_MODE_FOLDED : SIM_MODE_FULL;
    if (g_sim.fold && !fold_exact(s, ranks)) {
        tl->mode = SIM_MODE_FOLD_BROKEN;
        return USP_OK; /* execute.c runs it again in full */
    }
    USP_TRY(collect(s, ranks, tl, job->keep_steps));
    return store_outputs(job, ranks, s->world);
}

usp_status sim_engine_run(const sim_job *job, sim_timeline *tl, void (*phase)(int, void *), void *ctx) {
    const usp_schedule *s = job->sched;
#ifdef _OPENMP
    /* This process was forked: GNU OpenMP's thread pool did not survive the
     * fork and would hang the first parallel region. The kernels give the
     * same bits on any number of threads. */
    omp_set_num_threads(1);
#endif
    memset(&g_sim, 0, sizeof g_sim);
    g_sim.job = job;
    g_sim.cfg = &s->cfg;
    g_sim.numerics = job->inputs != NULL;
    USP_TRY(timeline_alloc(tl, s->world, job->keep_steps));
    g_sim.why = tl->why;
    g_sim.fold_allowed = !job->no_fold && sim_fold_schedule_ok(s, g_sim.numerics, tl->why, sizeof tl->why);
    if (job->no_fold) sim_copy_str(tl->why, sizeof tl->why, job->no_fold_why);
    g_sim.ranks = calloc((size_t)s->world, sizeof *g_sim.ranks);
    if (!g_sim.ranks) return usp_fail(USP_EINTERNAL, "out of memory");
    return simulate(job, g_sim.ranks, tl, phase, ctx);
    /* The child exits right after reporting: SimGrid's objects and the
     * rank buffers go with the process. */
}

/* ------------------------------------------------------------- helpers */

double sim_exposed_time(const double *cs, const double *ce, int nc, const double *ms, const double *me, int nm) {
    double exposed = 0;
    int k = 0;
    for (int i = 0; i < nm; i++) {
        double covered = 0;
        while (k < nc && ce[k] <= ms[i]) k++;
        for (int j = k; j < nc && cs[j] < me[i]; j++) {
            double lo = cs[j] > ms[i] ? cs[j] : ms[i], hi = ce[j] < me[i] ? ce[j] : me[i];
            if (hi > lo) covered += hi - lo;
        }
        exposed += (me[i] - ms[i]) - covered;
    }
    return exposed;
}

int sim_natural_cmp(const char *a, const char *b) {
    while (*a && *b) {
        if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
            char *ea, *eb;
            unsigned long long x = strtoull(a, &ea, 10), y = strtoull(b, &eb, 10);
            if (x != y) return x < y ? -1 : 1;
            a = ea;
            b = eb;
            continue;
        }
        if (*a != *b) return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
        a++;
        b++;
    }
    return (unsigned char)*a - (unsigned char)*b;
}
