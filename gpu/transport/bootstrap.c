/* bootstrap.c: who this rank is (the launcher's variables) and the TCP
 * links between the ranks (see bootstrap.h). Plain POSIX sockets: every
 * wait goes through poll() with a deadline, so a peer that never comes
 * gives a message, not a hang. */
#define _POSIX_C_SOURCE 200809L
#include "bootstrap.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { MSG_HELLO = 1, MSG_ID, MSG_BARRIER, MSG_FAIL, MSG_BYE, MSG_NOTE };

/* A note's body: destination rank and tag (network order), then the bytes. */
enum { NOTE_HEAD = 8 };

/* One message: type and rank in network order, then text or payload. */
typedef struct {
    uint32_t type, rank, len;
    char body[USP_LINK_MSG_BYTES - 12];
} link_msg;

double usp_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------ environment */

static int read_int(const char *name, int *out, int *present) {
    const char *s = getenv(name);
    *present = s && *s;
    if (!*present) return 0;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < 0 || v > 1 << 24) return -1;
    *out = (int)v;
    return 0;
}

typedef struct { const char *rank, *size, *local; } env_names;

static const env_names launchers[] = {
    {"RANK", "WORLD_SIZE", "LOCAL_RANK"},
    {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
    {"PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"},
    {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"},
};

static usp_status read_launcher(const env_names *n, usp_gpu_env *env, int *found) {
    int has_rank, has_size, has_local;
    if (read_int(n->rank, &env->rank, &has_rank))
        return usp_fail(USP_EINVAL, "%s='%s' is not a rank", n->rank, getenv(n->rank));
    if (!has_rank) return USP_OK;
    if (read_int(n->size, &env->world, &has_size) || !has_size || env->world < 1)
        return usp_fail(USP_EINVAL, "%s is set but %s is not a positive integer", n->rank, n->size);
    if (env->rank >= env->world)
        return usp_fail(USP_EINVAL, "%s=%d but %s=%d", n->rank, env->rank, n->size, env->world);
    if (read_int(n->local, &env->local_rank, &has_local))
        return usp_fail(USP_EINVAL, "%s='%s' is not a rank", n->local, getenv(n->local));
    if (!has_local) env->local_rank = -1; /* unknown: the global rank picks the GPU */
    env->source = n->rank;
    *found = 1;
    return USP_OK;
}

/* torchrun's agent keeps its own store on MASTER_PORT when it says so. */
static int torchrun_holds_master_port(void) {
    const char *s = getenv("TORCHELASTIC_USE_AGENT_STORE");
    return s && (!strcmp(s, "True") || !strcmp(s, "true") || !strcmp(s, "1"));
}

static usp_status read_address(usp_gpu_env *env) {
    const char *addr = getenv("MASTER_ADDR");
    snprintf(env->master_addr, sizeof env->master_addr, "%s", addr && *addr ? addr : "127.0.0.1");
    int port = 29500, present;
    if (read_int("MASTER_PORT", &port, &present) || port < 1 || port > 65535)
        return usp_fail(USP_EINVAL, "MASTER_PORT='%s' is not a TCP port", getenv("MASTER_PORT"));
    if (present && torchrun_holds_master_port()) port++;
    if (read_int("USP_BOOTSTRAP_PORT", &port, &present) || port < 1 || port > 65535)
        return usp_fail(USP_EINVAL, "USP_BOOTSTRAP_PORT='%s' is not a TCP port",
                        getenv("USP_BOOTSTRAP_PORT"));
    env->port = port;
    return USP_OK;
}

usp_status usp_gpu_env_read(usp_gpu_env *env, int *found) {
    memset(env, 0, sizeof *env);
    env->world = 1;
    env->local_rank = -1;
    env->source = "";
    *found = 0;
    for (size_t i = 0; i < sizeof launchers / sizeof launchers[0] && !*found; i++)
        USP_TRY(read_launcher(&launchers[i], env, found));
    return read_address(env);
}

/* ------------------------------------------------------------ sockets */

int usp_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = 0;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static void tune(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int wait_fd(int fd, short events, double deadline) {
    struct pollfd p = {.fd = fd, .events = events};
    double left = deadline - usp_now_s();
    if (left < 0) left = 0;
    int r;
    do r = poll(&p, 1, (int)(left * 1000)); while (r < 0 && errno == EINTR);
    return r > 0;
}

/* Sends a whole message (the peer may be gone: no SIGPIPE, just an error). */
static int send_msg(int fd, uint32_t type, int rank, const void *body, size_t n) {
    link_msg m;
    memset(&m, 0, sizeof m);
    m.type = htonl(type);
    m.rank = htonl((uint32_t)rank);
    if (n > sizeof m.body) n = sizeof m.body;
    m.len = htonl((uint32_t)n);
    if (body) memcpy(m.body, body, n);
    const char *p = (const char *)&m;
    size_t left = sizeof m;
    while (left) {
        ssize_t w = send(fd, p, left, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        left -= (size_t)w;
    }
    return 0;
}

/* Reads one whole message, waiting until deadline. */
static int recv_msg(int fd, link_msg *m, double deadline) {
    char *p = (char *)m;
    size_t have = 0;
    while (have < sizeof *m) {
        if (!wait_fd(fd, POLLIN, deadline)) return -1;
        ssize_t r = recv(fd, p + have, sizeof *m - have, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        have += (size_t)r;
    }
    m->type = ntohl(m->type);
    m->rank = ntohl(m->rank);
    m->len = ntohl(m->len);
    return 0;
}

static int listen_on(int port, char *why, size_t n) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (fd < 0) { snprintf(why, n, "socket: %s", strerror(errno)); return -1; }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 128) < 0) {
        snprintf(why, n, "cannot listen on port %d: %s (set MASTER_PORT or USP_BOOTSTRAP_PORT)", port,
                 strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* One non-blocking connect attempt, bounded by deadline. */
static int connect_once(const struct addrinfo *ai, double deadline, int *err) {
    int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) { *err = errno; return -1; }
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    int r = connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (r < 0 && errno == EINPROGRESS) {
        if (!wait_fd(fd, POLLOUT, deadline)) { *err = ETIMEDOUT; close(fd); return -1; }
        socklen_t len = sizeof *err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, err, &len);
        r = *err ? -1 : 0;
    } else if (r < 0) {
        *err = errno;
    }
    if (r < 0) { close(fd); return -1; }
    fcntl(fd, F_SETFL, flags);
    return fd;
}

/* Keeps trying until rank 0 listens or the deadline passes. */
static int connect_to(const usp_gpu_env *env, double deadline, char *why, size_t n) {
    char port[16];
    snprintf(port, sizeof port, "%d", env->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int err = 0;
    do {
        int g = getaddrinfo(env->master_addr, port, &hints, &res);
        if (g == 0) {
            for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
                int fd = connect_once(ai, deadline, &err);
                if (fd >= 0) { freeaddrinfo(res); return fd; }
            }
            freeaddrinfo(res);
            res = NULL;
        }
        nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
    } while (usp_now_s() < deadline);
    snprintf(why, n, "cannot reach rank 0 at %s:%d%s%s (is MASTER_ADDR right? did rank 0 start?)",
             env->master_addr, env->port, err ? ": " : "", err ? strerror(err) : "");
    return -1;
}

/* ------------------------------------------------------------ opening */

static usp_status accept_ranks(usp_links *l, int lfd, double deadline, char *why, size_t n) {
    int joined = 0;
    while (joined < l->world - 1) {
        if (!wait_fd(lfd, POLLIN, deadline)) {
            snprintf(why, n, "only %d of %d ranks connected within %.0f s", joined + 1, l->world, l->timeout_s);
            return USP_EINTERNAL;
        }
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) continue;
        link_msg m;
        if (recv_msg(fd, &m, deadline) || m.type != MSG_HELLO || m.rank < 1 || (int)m.rank >= l->world ||
            l->peers[m.rank - 1].fd >= 0) {
            close(fd); /* not one of ours, or a duplicate rank */
            continue;
        }
        tune(fd);
        l->peers[m.rank - 1].fd = fd;
        joined++;
    }
    return USP_OK;
}

static usp_status open_root(usp_links *l, const usp_gpu_env *env, double deadline, void *payload,
                            size_t n) {
    char why[400];
    int lfd = listen_on(env->port, why, sizeof why);
    if (lfd < 0) return usp_fail(USP_EINTERNAL, "rank 0: bootstrap: %s", why);
    usp_status st = accept_ranks(l, lfd, deadline, why, sizeof why);
    close(lfd);
    if (st != USP_OK) return usp_fail(st, "rank 0: bootstrap on port %d: %s", env->port, why);
    for (int i = 0; i < l->npeers; i++)
        if (send_msg(l->peers[i].fd, MSG_ID, 0, payload, n))
            return usp_fail(USP_EINTERNAL, "rank 0: bootstrap: rank %d went away", l->peers[i].peer);
    return USP_OK;
}

static usp_status open_member(usp_links *l, const usp_gpu_env *env, double deadline, void *payload,
                              size_t n) {
    char why[400];
    int fd = connect_to(env, deadline, why, sizeof why);
    if (fd < 0) return usp_fail(USP_EINTERNAL, "rank %d: bootstrap: %s", l->rank, why);
    tune(fd);
    l->peers[0].fd = fd;
    link_msg m;
    if (send_msg(fd, MSG_HELLO, l->rank, NULL, 0) || recv_msg(fd, &m, deadline) || m.type != MSG_ID)
        return usp_fail(USP_EINTERNAL, "rank %d: bootstrap: rank 0 at %s:%d did not answer within %.0f s",
                        l->rank, env->master_addr, env->port, l->timeout_s);
    memcpy(payload, m.body, n);
    return USP_OK;
}

usp_status usp_links_open(usp_links *l, const usp_gpu_env *env, double timeout_s, void *payload,
                          size_t n) {
    memset(l, 0, sizeof *l);
    l->rank = env->rank;
    l->world = env->world;
    l->timeout_s = timeout_s;
    if (env->world == 1) return USP_OK;
    l->npeers = env->rank == 0 ? env->world - 1 : 1;
    l->peers = usp_calloc((size_t)l->npeers, sizeof *l->peers);
    if (!l->peers) return USP_EINTERNAL;
    for (int i = 0; i < l->npeers; i++) {
        l->peers[i].fd = -1;
        l->peers[i].peer = env->rank == 0 ? i + 1 : 0;
    }
    double deadline = usp_now_s() + timeout_s;
    usp_status st = env->rank == 0 ? open_root(l, env, deadline, payload, n)
                                   : open_member(l, env, deadline, payload, n);
    if (st != USP_OK) usp_links_close(l, 0);
    return st;
}

/* ------------------------------------------------------------ messages */

static void note_failure(usp_links *l, const char *text) {
    if (l->peer_failed) return;
    l->peer_failed = 1;
    snprintf(l->failure, sizeof l->failure, "%s", text);
}

/* Rank 0 passes a failure on to everyone but its origin. */
static void relay_failure(usp_links *l, int origin) {
    if (l->rank != 0) return;
    for (int i = 0; i < l->npeers; i++)
        if (l->peers[i].fd >= 0 && l->peers[i].peer != origin)
            send_msg(l->peers[i].fd, MSG_FAIL, origin, l->failure, strlen(l->failure) + 1);
}

/* The link that leads to rank `to`: its own on rank 0, rank 0's elsewhere. */
static usp_link *link_to(usp_links *l, int to) {
    if (l->rank != 0) return l->npeers > 0 ? &l->peers[0] : NULL;
    return to >= 1 && to - 1 < l->npeers ? &l->peers[to - 1] : NULL;
}

static int send_note(usp_links *l, int origin, int to, unsigned tag, const void *body, size_t n) {
    usp_link *k = link_to(l, to);
    if (!k || k->fd < 0) return -1;
    unsigned char buf[NOTE_HEAD + USP_LINK_NOTE_BYTES];
    uint32_t head[2] = {htonl((uint32_t)to), htonl((uint32_t)tag)};
    memcpy(buf, head, sizeof head);
    if (n) memcpy(buf + NOTE_HEAD, body, n);
    return send_msg(k->fd, MSG_NOTE, origin, buf, NOTE_HEAD + n);
}

/* A note for this rank is queued; rank 0 passes one for another rank on. */
static void take_note(usp_links *l, link_msg *m) {
    uint32_t head[2];
    if (m->len < NOTE_HEAD || m->len > NOTE_HEAD + USP_LINK_NOTE_BYTES) return;
    memcpy(head, m->body, sizeof head);
    int to = (int)ntohl(head[0]);
    unsigned tag = ntohl(head[1]);
    size_t n = m->len - NOTE_HEAD;
    if (to != l->rank) {
        /* a note rank 0 cannot pass on goes to a rank whose link broke: its
         * failure report or its closed link says why, not this */
        if (l->rank == 0) (void)send_note(l, (int)m->rank, to, tag, m->body + NOTE_HEAD, n);
        return;
    }
    usp_link_note *note = usp_calloc(1, sizeof *note);
    if (!note) { note_failure(l, "out of host memory for a note"); return; }
    note->from = (int)m->rank;
    note->tag = tag;
    note->n = n;
    memcpy(note->body, m->body + NOTE_HEAD, n);
    if (!l->notes_end) l->notes_end = &l->notes;
    *l->notes_end = note;
    l->notes_end = &note->next;
}

static void handle(usp_links *l, usp_link *k, link_msg *m) {
    switch (m->type) {
    case MSG_NOTE: take_note(l, m); break;
    case MSG_BARRIER: k->barriers++; break;
    case MSG_BYE: k->said_bye = 1; break;
    case MSG_FAIL:
        m->body[sizeof m->body - 1] = '\0';
        note_failure(l, m->body);
        relay_failure(l, (int)m->rank);
        break;
    default: break;
    }
}

/* Reads what one link has; a close without goodbye is a failure of that rank. */
static void drain(usp_links *l, usp_link *k) {
    for (;;) {
        ssize_t r = recv(k->fd, k->in + k->have, sizeof k->in - k->have, MSG_DONTWAIT);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return; /* nothing more for now */
        if (r == 0) {
            close(k->fd);
            k->fd = -1;
            if (!k->said_bye) {
                char text[200];
                snprintf(text, sizeof text, "rank %d: its process ended before finishing (its link closed)", k->peer);
                note_failure(l, text);
                relay_failure(l, k->peer);
            }
            return;
        }
        k->have += (size_t)r;
        if (k->have == sizeof k->in) {
            link_msg m;
            memcpy(&m, k->in, sizeof m);
            m.type = ntohl(m.type);
            m.rank = ntohl(m.rank);
            m.len = ntohl(m.len);
            k->have = 0;
            handle(l, k, &m);
        }
    }
}

usp_status usp_links_check(usp_links *l, int wait_ms) {
    struct pollfd p[256];
    int np = 0;
    for (int i = 0; i < l->npeers && np < 256; i++)
        if (l->peers[i].fd >= 0) p[np++] = (struct pollfd){.fd = l->peers[i].fd, .events = POLLIN};
    if (np > 0 && poll(p, (nfds_t)np, wait_ms) > 0) {
        for (int i = 0; i < l->npeers; i++)
            if (l->peers[i].fd >= 0) drain(l, &l->peers[i]);
    } else if (np == 0 && wait_ms > 0) {
        nanosleep(&(struct timespec){0, (long)wait_ms * 1000 * 1000}, NULL);
    }
    if (l->peer_failed) return usp_fail(USP_EINTERNAL, "rank %d stopped: %s", l->rank, l->failure);
    return USP_OK;
}

static int all_arrived(const usp_links *l) {
    for (int i = 0; i < l->npeers; i++)
        if (l->peers[i].barriers < 1) return 0;
    return 1;
}

usp_status usp_links_barrier(usp_links *l) {
    if (l->world == 1) return USP_OK;
    if (l->rank != 0 && send_msg(l->peers[0].fd, MSG_BARRIER, l->rank, NULL, 0))
        return usp_fail(USP_EINTERNAL, "rank %d: barrier: the link to rank 0 broke", l->rank);
    double deadline = usp_now_s() + l->timeout_s;
    while (!all_arrived(l)) {
        USP_TRY(usp_links_check(l, 10));
        if (usp_now_s() > deadline)
            return usp_fail(USP_EINTERNAL, "rank %d: barrier: peers did not arrive within %.0f s", l->rank,
                            l->timeout_s);
    }
    for (int i = 0; i < l->npeers; i++) l->peers[i].barriers--;
    if (l->rank == 0)
        for (int i = 0; i < l->npeers; i++)
            if (send_msg(l->peers[i].fd, MSG_BARRIER, 0, NULL, 0))
                return usp_fail(USP_EINTERNAL, "rank 0: barrier: the link to rank %d broke", l->peers[i].peer);
    return USP_OK;
}

usp_status usp_links_send(usp_links *l, int to, unsigned tag, const void *body, size_t n) {
    if (n > USP_LINK_NOTE_BYTES)
        return usp_fail(USP_EINTERNAL, "rank %d: a note of %zu bytes (at most %d)", l->rank, n, USP_LINK_NOTE_BYTES);
    if (to == l->rank || to < 0 || to >= l->world)
        return usp_fail(USP_EINTERNAL, "rank %d: a note to rank %d", l->rank, to);
    if (send_note(l, l->rank, to, tag, body, n))
        return usp_fail(USP_EINTERNAL, "rank %d: a note to rank %d: the link broke", l->rank, to);
    return USP_OK;
}

/* Removes and returns the first note from `from` with `tag`, or NULL. */
static usp_link_note *find_note(usp_links *l, int from, unsigned tag) {
    for (usp_link_note **p = &l->notes; *p; p = &(*p)->next) {
        usp_link_note *note = *p;
        if (note->from != from || note->tag != tag) continue;
        *p = note->next;
        if (!*p) l->notes_end = p;
        return note;
    }
    return NULL;
}

usp_status usp_links_recv(usp_links *l, int from, unsigned tag, void *body, size_t n, const char *what) {
    double deadline = usp_now_s() + l->timeout_s;
    for (;;) {
        usp_link_note *note = find_note(l, from, tag);
        if (note) {
            memcpy(body, note->body, n < note->n ? n : note->n);
            free(note);
            return USP_OK;
        }
        USP_TRY(usp_links_check(l, 1));
        if (usp_now_s() > deadline)
            return usp_fail(USP_EINTERNAL, "rank %d, %s: rank %d did not answer within %.0f s", l->rank, what, from,
                            l->timeout_s);
    }
}

void usp_links_fail(usp_links *l, const char *why) {
    if (l->peer_failed) return; /* the failure came from a peer: they know */
    for (int i = 0; i < l->npeers; i++)
        if (l->peers[i].fd >= 0) send_msg(l->peers[i].fd, MSG_FAIL, l->rank, why, strlen(why) + 1);
}

void usp_links_close(usp_links *l, int finished) {
    for (int i = 0; i < l->npeers; i++) {
        if (l->peers[i].fd < 0) continue;
        if (finished) send_msg(l->peers[i].fd, MSG_BYE, l->rank, NULL, 0);
        close(l->peers[i].fd);
    }
    free(l->peers);
    l->peers = NULL;
    l->npeers = 0;
    while (l->notes) {
        usp_link_note *next = l->notes->next;
        free(l->notes);
        l->notes = next;
    }
    l->notes_end = NULL;
}
