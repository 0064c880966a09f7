/* executor.c: the in-process executor.
 *
 * Every rank's step list runs in this one process. Ranks take turns: a rank
 * runs its steps in list order until a communication step waits for a
 * message that has not been sent yet, then the next rank goes. Sends are
 * buffered (the payload is copied into the receiver's mailbox), so the turn
 * order cannot deadlock a valid schedule; if no rank can move, the schedule
 * is broken and the run stops with the rank and step that wait. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "usp/executor.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "usp/rankmem.h"

typedef struct message {
    int from, tag;
    void *data;
    struct message *next;
} message;

typedef struct {
    usp_rank_mem mem;
    int pc;            /* next step to run */
    int sent;          /* the step at pc has posted its sends */
    message *inbox;
} rank_state;

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static usp_status deliver(rank_state *to, int from, int tag, void *data) {
    message *msg = usp_malloc(sizeof *msg);
    if (!msg) return USP_EINTERNAL;
    *msg = (message){from, tag, data, to->inbox};
    to->inbox = msg;
    return USP_OK;
}

/* Removes and returns the message from `from` with `tag`, or NULL. */
static message *take(rank_state *rs, int from, int tag) {
    for (message **p = &rs->inbox; *p; p = &(*p)->next)
        if ((*p)->from == from && (*p)->tag == tag) {
            message *m = *p;
            *p = m->next;
            return m;
        }
    return NULL;
}

static int send_peer(const usp_schedule *s, int g, const usp_step *st, int i) {
    return st->kind == USP_STEP_SENDRECV ? usp_step_send_peer(&s->cfg, g, st) : usp_group_member(&s->cfg, st->group, g, i);
}

static int recv_peer(const usp_schedule *s, int g, const usp_step *st, int j) {
    return st->kind == USP_STEP_SENDRECV ? usp_step_recv_peer(&s->cfg, g, st) : usp_group_member(&s->cfg, st->group, g, j);
}

static usp_status post_sends(const usp_schedule *s, rank_state *ranks, int g, const usp_step *st) {
    rank_state *me = &ranks[g];
    int n = usp_rank_msg_count(&me->mem, st);
    for (int i = 0; i < n; i++) {
        size_t bytes = usp_rank_msg_bytes_to(&me->mem, st, i);
        void *data = usp_malloc(bytes ? bytes : 1);
        if (!data) return USP_EINTERNAL;
        usp_rank_msg_pack(&me->mem, st, i, data);
        USP_TRY(deliver(&ranks[send_peer(s, g, st, i)], g, st->tag, data));
    }
    return USP_OK;
}

/* All messages of the step arrived? Then apply them in peer order. */
static int try_receive(const usp_schedule *s, rank_state *me, int g, const usp_step *st) {
    int n = usp_rank_msg_count(&me->mem, st);
    for (int j = 0; j < n; j++) {
        int from = recv_peer(s, g, st, j);
        int found = 0;
        for (message *m = me->inbox; m; m = m->next)
            if (m->from == from && m->tag == st->tag) { found = 1; break; }
        if (!found) return 0;
    }
    for (int j = 0; j < n; j++) {
        message *m = take(me, recv_peer(s, g, st, j), st->tag);
        usp_rank_msg_unpack(&me->mem, st, j, m->data);
        free(m->data);
        free(m);
    }
    return 1;
}

/* Runs rank g until it blocks or ends; *moved says whether it ran anything. */
static usp_status run_rank(const usp_schedule *s, rank_state *ranks, int g, usp_result *out,
                           usp_trace *trace, double t0, int *moved) {
    rank_state *me = &ranks[g];
    const usp_rank_schedule *rs = &s->ranks[g];
    while (me->pc < rs->nsteps) {
        const usp_step *st = usp_rank_step(rs, me->pc);
        double start = now_us();
        if (st->stream == USP_STREAM_COMPUTE) {
            usp_rank_compute(&me->mem, st);
        } else {
            if (!me->sent) { USP_TRY(post_sends(s, ranks, g, st)); me->sent = 1; }
            if (!try_receive(s, me, g, st)) return USP_OK;
            me->sent = 0;
        }
        double dur = now_us() - start;
        if (st->stream == USP_STREAM_COMPUTE) out->ranks[g].compute_s += dur / 1e6;
        else out->ranks[g].comm_s += dur / 1e6;
        if (trace) USP_TRY(usp_trace_add(trace, g, me->pc, st, start - t0, dur));
        me->pc++;
        *moved = 1;
    }
    return USP_OK;
}

static usp_status run_all(const usp_schedule *s, rank_state *ranks, usp_result *out, usp_trace *trace) {
    double t0 = now_us();
    for (;;) {
        int moved = 0, done = 1;
        for (int g = 0; g < s->world; g++) {
            USP_TRY(run_rank(s, ranks, g, out, trace, t0, &moved));
            if (ranks[g].pc < s->ranks[g].nsteps) done = 0;
        }
        if (done) return USP_OK;
        if (!moved) {
            for (int g = 0; g < s->world; g++)
                if (ranks[g].pc < s->ranks[g].nsteps)
                    return usp_fail(USP_EINTERNAL, "schedule deadlock: rank %d waits at step %d (%s)",
                                    g, ranks[g].pc, usp_rank_step(&s->ranks[g], ranks[g].pc)->name);
        }
    }
}

static void free_ranks(rank_state *ranks, int world) {
    if (!ranks) return;
    for (int g = 0; g < world; g++) {
        while (ranks[g].inbox) {
            message *m = ranks[g].inbox;
            ranks[g].inbox = m->next;
            free(m->data);
            free(m);
        }
        usp_rank_mem_free(&ranks[g].mem);
    }
    free(ranks);
}

usp_status usp_ref_execute(const usp_schedule *s, const usp_inputs *in, usp_result *out,
                           usp_trace *trace) {
    rank_state *ranks = usp_calloc((size_t)s->world, sizeof *ranks);
    if (!ranks) return USP_EINTERNAL;
    usp_status st = USP_OK;
    for (int g = 0; g < s->world && st == USP_OK; g++) {
        st = usp_rank_mem_alloc(s, g, &ranks[g].mem);
        if (st == USP_OK) st = usp_rank_mem_load(&ranks[g].mem, in);
    }
    if (st == USP_OK) st = run_all(s, ranks, out, trace);
    for (int g = 0; g < s->world && st == USP_OK; g++) st = usp_rank_mem_store(&ranks[g].mem, out);
    if (st == USP_OK) usp_result_count_schedule(out, s);
    free_ranks(ranks, s->world);
    return st;
}
