/* nccl_watchdog.h: a thread that ends NCCL calls which block too long
 * (inside usp_gpu).
 *
 * The data communicators are blocking (a non-blocking one may launch its
 * kernels after the call has returned, past the CUDA event the executor
 * records after the step). A blocking call can wait for a peer forever, so
 * every such call is armed here: when it outlives the timeout, or a peer's
 * TCP link speaks or closes while it waits, the thread aborts every
 * communicator and the call returns with an error. */
#ifndef USP_GPU_NCCL_WATCHDOG_H
#define USP_GPU_NCCL_WATCHDOG_H

#include <nccl.h>
#include "bootstrap.h"

typedef struct usp_nccl_watchdog usp_nccl_watchdog;

usp_status usp_watchdog_start(usp_nccl_watchdog **out, const usp_links *links, double timeout_s);
/* Stops and joins the thread (NULL is fine). */
void usp_watchdog_stop(usp_nccl_watchdog *w);

/* The communicators it aborts when it fires; ncomms <= 4. */
void usp_watchdog_set_comms(usp_nccl_watchdog *w, const ncclComm_t *comms, int ncomms);

/* Before a call that may block: `what` names it; with watch_links, a peer's
 * link that speaks or closes after the first second fires it too. */
void usp_watchdog_arm(usp_nccl_watchdog *w, const char *what, int watch_links);
/* After the call: USP_EINTERNAL with the reason if the watchdog fired (every
 * communicator is then aborted and must not be used again). */
usp_status usp_watchdog_disarm(usp_nccl_watchdog *w);

#endif
