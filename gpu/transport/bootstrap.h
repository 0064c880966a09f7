/* bootstrap.h: the TCP links between the rank processes (inside usp_gpu).
 *
 * A star: every rank keeps one connection to rank 0, which relays. The links
 * carry the NCCL unique id at start, then only small fixed-size messages:
 * barriers, failure reports, the goodbye of a rank that finished, and small
 * tagged notes from one rank to another (rank 0 relays those between two
 * other ranks; the IPC transport's handshakes). A link
 * that closes without a goodbye means its process died: that is reported as
 * a failure of that rank, so no rank waits for a peer that is gone. */
#ifndef USP_GPU_BOOTSTRAP_H
#define USP_GPU_BOOTSTRAP_H

#include <stddef.h>
#include "usp/gpu_exec.h"

#define USP_LINK_MSG_BYTES 512
#define USP_LINK_NOTE_BYTES 480   /* the most a note carries */

/* A note that arrived and was not yet taken (usp_links_recv). */
typedef struct usp_link_note {
    int from;
    unsigned tag;
    size_t n;
    unsigned char body[USP_LINK_NOTE_BYTES];
    struct usp_link_note *next;
} usp_link_note;

typedef struct {
    int fd;                     /* -1 when closed */
    int peer;                   /* the rank at the other end */
    unsigned char in[USP_LINK_MSG_BYTES];
    size_t have;                /* bytes of a message received so far */
    int barriers;               /* barrier messages received and not yet used */
    int said_bye;
} usp_link;

typedef struct {
    int rank, world;
    usp_link *peers;            /* rank 0: one per other rank; others: rank 0 only */
    int npeers;
    double timeout_s;
    int peer_failed;            /* a failure came from (or about) another rank */
    char failure[USP_LINK_MSG_BYTES];
    usp_link_note *notes, **notes_end;   /* arrived, in order */
} usp_links;

/* Connects the ranks and hands rank 0's `payload` (n <= 256 bytes) to all. */
usp_status usp_links_open(usp_links *l, const usp_gpu_env *env, double timeout_s, void *payload,
                          size_t n);
/* Reads what has arrived, waiting up to wait_ms for something. Returns
 * USP_EINTERNAL with the failure as usp_error() once a peer has failed. */
usp_status usp_links_check(usp_links *l, int wait_ms);
usp_status usp_links_barrier(usp_links *l);
/* Sends rank `to` a note of n <= USP_LINK_NOTE_BYTES bytes with `tag`. */
usp_status usp_links_send(usp_links *l, int to, unsigned tag, const void *body, size_t n);
/* Waits (timeout_s at most, failing on a peer's failure) for the first note
 * from rank `from` with `tag` and copies its first n bytes to body; `what`
 * names the wait in the message. */
usp_status usp_links_recv(usp_links *l, int from, unsigned tag, void *body, size_t n, const char *what);

/* Reports this rank's failure (`why`) to the others. */
void usp_links_fail(usp_links *l, const char *why);
/* Says goodbye (when `finished`) and closes. */
void usp_links_close(usp_links *l, int finished);

/* A TCP port on 127.0.0.1 that nobody listens on right now (0 if none). */
int usp_free_port(void);

/* Monotonic seconds. */
double usp_now_s(void);

#endif
