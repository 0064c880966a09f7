/* nccl_watchdog.c: the thread that ends blocked NCCL calls (nccl_watchdog.h). */
#define _POSIX_C_SOURCE 200809L
#include "nccl_watchdog.h"

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAX_COMMS = 4, MAX_FDS = 256 };

struct usp_nccl_watchdog {
    pthread_t thread;
    pthread_mutex_t mu;
    int stop, armed, watch_links, fired;
    double since, timeout_s;
    char what[64], why[256];
    ncclComm_t comms[MAX_COMMS];
    int ncomms;
    struct pollfd fds[MAX_FDS];
    int nfds;
};

/* Something arrived on (or closed) a peer's link: poll() only looks. */
static int peer_spoke(usp_nccl_watchdog *w) {
    for (int i = 0; i < w->nfds; i++) w->fds[i].revents = 0;
    return w->nfds > 0 && poll(w->fds, (nfds_t)w->nfds, 0) > 0;
}

/* Called with mu held. */
static void fire(usp_nccl_watchdog *w, const char *why) {
    snprintf(w->why, sizeof w->why, "%s: %s", w->what, why);
    w->fired = 1;
    for (int i = 0; i < w->ncomms; i++) ncclCommAbort(w->comms[i]);
    w->ncomms = 0;
}

static void check(usp_nccl_watchdog *w) {
    if (!w->armed || w->fired) return;
    double blocked = usp_now_s() - w->since;
    char why[128];
    if (blocked > w->timeout_s) {
        snprintf(why, sizeof why, "NCCL did not return within %.0f s (a peer never came?)", w->timeout_s);
        fire(w, why);
    } else if (w->watch_links && blocked > 1.0 && peer_spoke(w)) {
        fire(w, "a peer failed or ended while NCCL waited for it");
    }
}

static void *watch(void *arg) {
    usp_nccl_watchdog *w = arg;
    for (;;) {
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
        pthread_mutex_lock(&w->mu);
        int stop = w->stop;
        if (!stop) check(w);
        pthread_mutex_unlock(&w->mu);
        if (stop) return NULL;
    }
}

usp_status usp_watchdog_start(usp_nccl_watchdog **out, const usp_links *links, double timeout_s) {
    usp_nccl_watchdog *w = usp_calloc(1, sizeof *w);
    if (!w) return USP_EINTERNAL;
    w->timeout_s = timeout_s;
    for (int i = 0; i < links->npeers && w->nfds < MAX_FDS; i++)
        if (links->peers[i].fd >= 0) w->fds[w->nfds++] = (struct pollfd){.fd = links->peers[i].fd, .events = POLLIN};
    pthread_mutex_init(&w->mu, NULL);
    if (pthread_create(&w->thread, NULL, watch, w) != 0) {
        pthread_mutex_destroy(&w->mu);
        free(w);
        return usp_fail(USP_EINTERNAL, "cannot start the NCCL watchdog thread");
    }
    *out = w;
    return USP_OK;
}

void usp_watchdog_stop(usp_nccl_watchdog *w) {
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

void usp_watchdog_set_comms(usp_nccl_watchdog *w, const ncclComm_t *comms, int ncomms) {
    pthread_mutex_lock(&w->mu);
    w->ncomms = 0;
    for (int i = 0; i < ncomms && w->ncomms < MAX_COMMS; i++)
        if (comms[i]) w->comms[w->ncomms++] = comms[i];
    pthread_mutex_unlock(&w->mu);
}

void usp_watchdog_arm(usp_nccl_watchdog *w, const char *what, int watch_links) {
    pthread_mutex_lock(&w->mu);
    snprintf(w->what, sizeof w->what, "%s", what);
    w->since = usp_now_s();
    w->watch_links = watch_links;
    w->armed = 1;
    pthread_mutex_unlock(&w->mu);
}

usp_status usp_watchdog_disarm(usp_nccl_watchdog *w) {
    pthread_mutex_lock(&w->mu);
    w->armed = 0;
    int fired = w->fired;
    char why[256];
    snprintf(why, sizeof why, "%s", w->why);
    pthread_mutex_unlock(&w->mu);
    return fired ? usp_fail(USP_EINTERNAL, "%s", why) : USP_OK;
}
