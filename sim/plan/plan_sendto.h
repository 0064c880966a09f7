/* plan_sendto.h: transfers between a running rank's host and a host no
 * actor of the program runs on (plan_sendto.cpp).
 *
 * plan_sendto_async: SimGrid's host-to-host transfer (Comm::sendto_async).
 * SimGrid 3.32 keeps every such transfer in one list, which it searches
 * from end to end each time one ends: with n of them in flight, n^2.
 *
 * plan_peer_flows: the same transfers as mailbox messages with a helper
 * actor on the other host taking the other end, so that SimGrid keeps them
 * with the actors that wait for them (a few each). The helpers of a host are
 * pooled: one serves one request (a flow each way at most) at a time, then
 * waits for the next. A transfer starts at the instant it is asked for and
 * crosses the same route (from the sender's host to the receiver's), so its
 * timing is the host-to-host transfer's.
 *
 * Call from an actor of the simulation only (SimGrid loaded). */
#ifndef USP_PLAN_SENDTO_H
#define USP_PLAN_SENDTO_H

#include <simgrid/forward.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Starts `bytes` from `from` to `to`; sg_comm_wait waits for the transfer and
 * releases it. */
sg_comm_t plan_sendto_async(sg_host_t from, sg_host_t to, double bytes);

/* Starts, from the calling actor's host, out_bytes to `peer` (none when
 * out_bytes < 0) and in_bytes from `peer` to it (none when in_bytes < 0),
 * through a helper actor on peer. Writes the comms to wait for (sg_comm_wait
 * waits and releases each) to comms[] and returns how many (0..2); -1 when
 * no helper may be started (PLAN_PEER_HELPERS_MAX of them run already): use
 * plan_sendto_async then. */
int plan_peer_flows(sg_host_t peer, long out_bytes, long in_bytes, sg_comm_t *comms);

/* Helpers started at most: each is an actor with a small stack, two memory
 * mappings of the process (the stack and its guard page). */
enum { PLAN_PEER_HELPERS_MAX = 24000 };

#ifdef __cplusplus
}
#endif

#endif
