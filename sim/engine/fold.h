/* fold.h: whether one rank per ulysses group can be simulated (fold.c). */
#ifndef USP_SIM_FOLD_H
#define USP_SIM_FOLD_H

#include <stddef.h>
#include <simgrid/host.h>
#include "network/nccl.h"
#include "usp/schedule.h"

/* 1 when the schedule allows the fold (timing only, ulysses > 1, all-to-alls
 * and send/recvs only, every rank on its representative's list), else 0 with
 * the reason in why[n]. No SimGrid needed. */
int sim_fold_schedule_ok(const usp_schedule *s, int numerics, char *why, size_t n);

/* With the platform loaded and the ranks placed (net->hosts[g]): *ok = 1 when
 * the platform treats every ulysses rank's ring traffic as an isomorphic copy
 * of rank 0's on links of its own (fold.c), else 0 with the reason in why[n].
 * Its route look-ups cover every pair that talks: USP_EINVAL as routes.c for
 * a pair without a route. Call from the simulation child. */
usp_status sim_fold_check(const usp_schedule *s, const sim_net *net, const char *platform, int *ok, char *why,
                          size_t n);

#endif
