/* routes.h: the route check of routes.c; include after <simgrid/host.h>. */
#ifndef USP_SIM_ROUTES_H
#define USP_SIM_ROUTES_H

#include <simgrid/host.h>
#include "usp/config.h"
#include "usp/error.h"

/* Refuses (USP_EINVAL) the first pair of ranks that talk in a schedule of
 * `c` but have no route between their hosts; host_of[g] is rank g's host on
 * the loaded platform. Call from the simulation child. */
usp_status sim_check_routes(const usp_config *c, const sg_host_t *host_of, const char *platform);

#endif
