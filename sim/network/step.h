/* step.h: the engine's entry point into the network layer (step.c). */
#ifndef USP_SIM_NETWORK_STEP_H
#define USP_SIM_NETWORK_STEP_H

#include "nccl.h"
#include "usp/schedule.h"

/* The plan of `rank` for comm step `st` of n peers (the engine's peer_count):
 * bytes_to[i] the simulated bytes to peer i, in the engine's peer order.
 * Returns the delay to pay before the messages (seconds), -1 when out of
 * memory. */
double sim_step_plan(const sim_net *net, const usp_config *cfg, const usp_step *st, int rank, int n,
                     sim_coll_plan *plan, double *bytes_to);

#endif
