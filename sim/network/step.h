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

/* An uneven head split (usp/layout.h): sim_coll_plan_make spread an
 * all-to-all's bytes evenly over the peers; each peer's share becomes its
 * piece's share instead (peer i of the ulysses group is ulysses rank i, me
 * this rank's). Used by the engine (sim_step_plan) and the planner. */
void sim_a2a_uneven_pieces(const usp_config *cfg, usp_a2a a2a, int me, int n, double *bytes_to);

#endif
