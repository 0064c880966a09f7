/* routes.h: the route check of routes.c; include after <simgrid/host.h>. */
#ifndef USP_SIM_ROUTES_H
#define USP_SIM_ROUTES_H

#include <simgrid/host.h>
#include "usp/config.h"
#include "usp/error.h"
#include <xbt/dynar.h>

/* Seconds the routes from one rank may take before the check calls it a
 * hang: one Dijkstra over a platform of 16384 GPUs takes well under one. */
enum { ROUTE_WATCHDOG_S = 10 };

/* From now on each pair's route is made a bypass route of its shape before
 * it is looked up (network/shape_routes.h; after sim_shape_routes_init
 * accepted the platform). */
void sim_routes_by_shape(int on);

/* The links of the route from rank a's host to rank b's into `links` (reset
 * first; empty for a == b or one host); USP_EINVAL naming both ranks when
 * the platform has no route. Call from the simulation child. */
usp_status sim_route_links(const sg_host_t *host_of, int a, int b, xbt_dynar_t links, const char *platform);

/* Refuses (USP_EINVAL) the first pair of ranks that talk in a schedule of
 * `c` but have no route between their hosts; host_of[g] is rank g's host on
 * the loaded platform. Call from the simulation child. */
usp_status sim_check_routes(const usp_config *c, const sg_host_t *host_of, const char *platform);

#endif
