/* plan_sendto.h: a transfer between two hosts without a receiving actor
 * (plan_sendto.cpp: SimGrid's C++ Comm::sendto_async). */
#ifndef USP_PLAN_SENDTO_H
#define USP_PLAN_SENDTO_H

#include <simgrid/forward.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Starts `bytes` from `from` to `to`; sg_comm_wait waits for the transfer and
 * releases it. */
sg_comm_t plan_sendto_async(sg_host_t from, sg_host_t to, double bytes);

#ifdef __cplusplus
}
#endif

#endif
