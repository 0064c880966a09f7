/* fold.c: when one rank per ulysses group can be simulated for all of them.
 *
 * A timing-only run of ulysses U x ring R has U ranks per ring rank that run
 * one step list (usp/schedule.h: they share it; their peers are ring offsets
 * within their own ulysses rank). Where the platform treats them alike, the
 * U ranks of a ring rank do the same thing at the same times, and simulating
 * ulysses rank 0 of each ring rank (its "representative") gives every rank's
 * times: U times fewer actors and ring messages. The engine then folds
 * (engine.c): the representatives run the whole list; the other ranks
 * ("shadows") take part in the all-to-alls only, posting their messages when
 * their representative posts its own, so an all-to-all's flows share the
 * links as in the full simulation; their ring messages are not simulated.
 *
 * This file decides, before any actor starts, whether that is exact. It is
 * when all of the following hold (checked here; anything else: full run):
 *  - timing only, U > 1, and the comm steps are all-to-alls in the ulysses
 *    group and send/recvs in the ring (no all-gather / reduce-scatter);
 *  - every rank runs its representative's list (same index list, or equal);
 *  - the send/recv of every rank (r, u) to (r', u) uses the transport of its
 *    representative's (r, 0) to (r', 0) (so the network layer plans the same
 *    delay and bytes), and its route is the representative's under one
 *    bijection of links per u that keeps bandwidth, latency and sharing
 *    (so the ring traffic of ulysses rank u is an isomorphic copy of rank 0's);
 *  - no link of the ring traffic of a ulysses rank u > 0 (not simulated) is
 *    crossed by simulated traffic (rank 0's ring, any all-to-all), nor by the
 *    ring traffic of another u: max-min sharing then gives the simulated
 *    flows the rates they get in the full run (it decomposes over flows that
 *    share no link), and each u's ring traffic the rates of rank 0's.
 * What can still differ is inside an all-to-all (members on unlike paths):
 * the engine compares every shadow's start and end of each all-to-all with
 * its representative's and, on a difference, the run is repeated in full
 * (execute.c). So a folded run predicts the times of the full one.
 *
 * The route look-ups here cover every pair that talks (the all-to-all pairs
 * and each send/recv's direction), so a fold that passes is also the route
 * check of routes.c. Cost: world x (U - 1 + distinct send hops) look-ups,
 * and a hash of the links they cross. */
#include "internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <simgrid/host.h>
#include <simgrid/link.h>
#include <xbt/dynar.h>

#include "fold.h"
#include "routes.h"
#include "usp/layout.h"

enum { MAX_HOPS = 8 };

/* ------------------------------------------------------ a small hash map */

/* Key (link, u) -> value (link, u); open addressing, never shrinks. */
typedef struct {
    const void *key;
    int ku;
    const void *val;
    int vu;
} slot;

typedef struct {
    slot *slots;
    size_t cap, n;
} lmap;

static size_t hash_of(const void *k, int u) {
    uint64_t x = (uint64_t)(uintptr_t)k * 0x9E3779B97F4A7C15ull ^ (uint64_t)(unsigned)u * 0xC2B2AE3D27D4EB4Full;
    x ^= x >> 31;
    return (size_t)x;
}

static int lmap_init(lmap *m, size_t expect) {
    m->cap = 64;
    while (m->cap < 2 * expect) m->cap *= 2;
    m->n = 0;
    m->slots = calloc(m->cap, sizeof *m->slots);
    return m->slots ? 0 : -1;
}

static int lmap_grow(lmap *m);

/* The slot of (k, u): found, or empty where it goes; NULL when out of memory. */
static slot *lmap_at(lmap *m, const void *k, int u, int insert) {
    if (insert && 2 * (m->n + 1) > m->cap && lmap_grow(m) != 0) return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = hash_of(k, u) & mask;; i = (i + 1) & mask) {
        slot *s = &m->slots[i];
        if (s->key == k && s->ku == u) return s;
        if (!s->key) {
            if (!insert) return s;
            s->key = k;
            s->ku = u;
            m->n++;
            return s;
        }
    }
}

static int lmap_grow(lmap *m) {
    lmap bigger = {calloc(2 * m->cap, sizeof *m->slots), 2 * m->cap, 0};
    if (!bigger.slots) return -1;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key) *lmap_at(&bigger, m->slots[i].key, m->slots[i].ku, 1) = m->slots[i];
    free(m->slots);
    *m = bigger;
    return 0;
}

/* ------------------------------------------------------------ the checks */

static const char *refuse(char *why, size_t n, const char *fmt, int a, int b) {
    snprintf(why, n, fmt, a, b);
    return why;
}

int sim_fold_schedule_ok(const usp_schedule *s, int numerics, char *why, size_t n) {
    const usp_config *c = &s->cfg;
    if (numerics) return refuse(why, n, "numerics on", 0, 0), 0;
    if (c->ulysses < 2) return refuse(why, n, "ulysses degree 1", 0, 0), 0;
    for (int i = 0; i < s->npool; i++) {
        const usp_step *st = &s->pool[i];
        if (st->stream != USP_STREAM_COMM) continue;
        if (st->kind == USP_STEP_ALL_TO_ALL && st->group == USP_GROUP_ULYSSES) continue;
        if (st->kind == USP_STEP_SENDRECV) continue;
        return refuse(why, n, "ring collectives (all-gather, reduce-scatter)", 0, 0), 0;
    }
    for (int g = 0; g < s->world; g++) {
        int r, u;
        usp_coords_of(c, g, &r, &u);
        const usp_rank_schedule *a = &s->ranks[g], *b = &s->ranks[usp_rank_of(c, r, 0)];
        if (a->nsteps != b->nsteps || a->nfwd != b->nfwd || a->pool != b->pool ||
            (a->index != b->index && memcmp(a->index, b->index, (size_t)a->nsteps * sizeof *a->index)))
            return refuse(why, n, "rank %d does not run the list of its ring rank's ulysses rank 0", g, 0), 0;
    }
    return 1;
}

/* The distinct send hops of the schedule's send/recvs. */
static int send_hops(const usp_schedule *s, int *hops) {
    int nh = 0;
    for (int i = 0; i < s->npool; i++) {
        const usp_step *st = &s->pool[i];
        if (st->kind != USP_STEP_SENDRECV) continue;
        int seen = 0;
        for (int k = 0; k < nh; k++) seen |= hops[k] == st->send_hops;
        if (seen) continue;
        if (nh == MAX_HOPS) return -1;
        hops[nh++] = st->send_hops;
    }
    return nh;
}

enum { MARK_SIMULATED = 1, MARK_HIDDEN = 2 };

typedef struct {
    lmap image;   /* (rep link, u) -> u's link */
    lmap owner;   /* (u's link, 0) -> (rep link, u) */
    lmap mark;    /* (link, 0) -> flags in vu */
    xbt_dynar_t rep, cur;
} fold_maps;

static int mark(fold_maps *f, sg_link_t l, int flag) {
    slot *s = lmap_at(&f->mark, l, 0, 1);
    if (!s) return -1;
    s->vu |= flag;
    return 0;
}

static int same_link_kind(const_sg_link_t a, const_sg_link_t b) {
    return sg_link_get_bandwidth(a) == sg_link_get_bandwidth(b) && sg_link_get_latency(a) == sg_link_get_latency(b) &&
           sg_link_is_shared(a) == sg_link_is_shared(b);
}

/* Rank g = (r, u > 0) sends to p = (r', u) (a send hop); its representative
 * rep = (r, 0) to rep_p = (r', 0), whose links are in f->rep, g's in f->cur.
 * 1: a consistent copy, 0: refused (why), -1: out of memory. */
static int check_ring_route(fold_maps *f, const sim_net *net, int g, int p, int rep, int rep_p, int u, char *why,
                            size_t n) {
    if (sim_net_transport(net, g, p) != sim_net_transport(net, rep, rep_p))
        return refuse(why, n, "ranks %d and %d send over different transports", g, rep), 0;
    unsigned long len = xbt_dynar_length(f->cur);
    if (len != xbt_dynar_length(f->rep))
        return refuse(why, n, "the routes of ranks %d and %d differ in length", g, rep), 0;
    for (unsigned long i = 0; i < len; i++) {
        sg_link_t a = xbt_dynar_get_as(f->rep, i, sg_link_t), b = xbt_dynar_get_as(f->cur, i, sg_link_t);
        if (!same_link_kind(a, b))
            return refuse(why, n, "the routes of ranks %d and %d cross unlike links", g, rep), 0;
        slot *im = lmap_at(&f->image, a, u, 1), *ow = lmap_at(&f->owner, b, 0, 1);
        if (!im || !ow || mark(f, b, MARK_HIDDEN) != 0) return -1;
        if (im->val && im->val != b) return refuse(why, n, "rank %d's route is not a copy of rank %d's", g, rep), 0;
        if (ow->val && (ow->val != a || ow->vu != u))
            return refuse(why, n, "rank %d's ring traffic shares a link with another ulysses rank's (rank %d)", g,
                          rep), 0;
        im->val = b;
        ow->val = a;
        ow->vu = u;
    }
    return 1;
}

static int mark_all(fold_maps *f, xbt_dynar_t links) {
    for (unsigned long i = 0; i < xbt_dynar_length(links); i++)
        if (mark(f, xbt_dynar_get_as(links, i, sg_link_t), MARK_SIMULATED) != 0) return -1;
    return 0;
}

static usp_status walk_routes(const usp_schedule *s, const sim_net *net, const char *platform, fold_maps *f,
                              const int *hops, int nh, int *ok, char *why, size_t n) {
    const usp_config *c = &s->cfg;
    int U = c->ulysses, R = c->ring;
    for (int r = 0; r < R && *ok; r++) {
        sim_child_arm_failure("platform: route check", ROUTE_WATCHDOG_S); /* restarts the watchdog */
        for (int h = 0; h < nh && *ok; h++) {
            int rp = ((r + hops[h]) % R + R) % R, rep = usp_rank_of(c, r, 0), rep_p = usp_rank_of(c, rp, 0);
            USP_TRY(sim_route_links(net, rep, rep_p, f->rep, platform));
            if (mark_all(f, f->rep) != 0) return usp_fail(USP_EINTERNAL, "out of memory checking the fold");
            for (int u = 1; u < U && *ok; u++) {
                int g = usp_rank_of(c, r, u), p = usp_rank_of(c, rp, u);
                USP_TRY(sim_route_links(net, g, p, f->cur, platform));
                int res = check_ring_route(f, net, g, p, rep, rep_p, u, why, n);
                if (res < 0) return usp_fail(USP_EINTERNAL, "out of memory checking the fold");
                *ok = res;
            }
        }
        /* the all-to-all pairs of ring rank r: simulated in full */
        for (int u = 0; u < U && *ok; u++)
            for (int v = 0; v < U; v++) {
                int a = usp_rank_of(c, r, u), b = usp_rank_of(c, r, v);
                USP_TRY(sim_route_links(net, a, b, f->cur, platform));
                if (mark_all(f, f->cur) != 0) return usp_fail(USP_EINTERNAL, "out of memory checking the fold");
            }
    }
    return USP_OK;
}

usp_status sim_fold_check(const usp_schedule *s, const sim_net *net, const char *platform, int *ok, char *why,
                          size_t n) {
    *ok = 0;
    int hops[MAX_HOPS], nh = send_hops(s, hops);
    if (nh < 0) { refuse(why, n, "more than %d distinct ring hops", MAX_HOPS, 0); return USP_OK; }
    fold_maps f;
    memset(&f, 0, sizeof f);
    size_t links = sg_link_count();
    usp_status st = USP_OK;
    f.rep = xbt_dynar_new(sizeof(sg_link_t), NULL);
    f.cur = xbt_dynar_new(sizeof(sg_link_t), NULL);
    if (lmap_init(&f.image, links) || lmap_init(&f.owner, links) || lmap_init(&f.mark, links))
        st = usp_fail(USP_EINTERNAL, "out of memory checking the fold");
    *ok = 1;
    if (st == USP_OK) st = walk_routes(s, net, platform, &f, hops, nh, ok, why, n);
    for (size_t i = 0; st == USP_OK && *ok && i < f.mark.cap; i++)
        if (f.mark.slots[i].key && f.mark.slots[i].vu == (MARK_SIMULATED | MARK_HIDDEN)) {
            snprintf(why, n, "link %s carries simulated traffic and a ulysses rank's ring traffic",
                     sg_link_get_name(f.mark.slots[i].key));
            *ok = 0;
        }
    if (st != USP_OK) *ok = 0;
    sim_child_arm_failure(NULL, 0);
    xbt_dynar_free(&f.rep);
    xbt_dynar_free(&f.cur);
    free(f.image.slots);
    free(f.owner.slots);
    free(f.mark.slots);
    return st;
}
