/* routes.h: the route check of routes.c; include after <simgrid/host.h>. */
#ifndef USP_SIM_ROUTES_H
#define USP_SIM_ROUTES_H

#include <simgrid/host.h>
#include "network/nccl.h"
#include "usp/config.h"
#include "usp/error.h"
#include <xbt/dynar.h>

/* Seconds the routes from one rank may take before the check calls it a
 * hang: one Dijkstra over a platform of 16384 GPUs takes well under one. */
enum { ROUTE_WATCHDOG_S = 10 };

/* The links of the route from rank a's host to rank b's (net->hosts) into
 * `links` (reset first; empty for a == b or one host), after
 * net->route_prepare(a, b) where there is one; USP_EINVAL naming both ranks
 * when the platform has no route. Call from the simulation child. */
usp_status sim_route_links(const sim_net *net, int a, int b, xbt_dynar_t links, const char *platform);

/* Refuses (USP_EINVAL) the first pair of ranks that talk in a schedule of
 * `c` but have no route between their hosts (net->hosts[g]: rank g's host on
 * the loaded platform). Call from the simulation child. */
usp_status sim_check_routes(const usp_config *c, const sim_net *net, const char *platform);

#endif
