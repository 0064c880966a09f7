/* routes.c: every pair of ranks that the schedule makes talk has a route.
 *
 * A SimGrid platform may leave two hosts unconnected (a "Full" zone with a
 * route missing, zones without a link between them). SimGrid finds out only
 * when the first message is sent, and aborts the process. This check runs in
 * the simulation child once the platform is loaded and the ranks are placed,
 * before any actor starts: it asks SimGrid for the route of every pair that
 * communicates and refuses the first one without a path, naming both ranks
 * and hosts.
 *
 * Which pairs talk (usp/schedule.h): every ordered pair of an ulysses group
 * (all-to-all), each ring rank with its two neighbours (send/recv), and every
 * pair of a ring group with allgather (all-gather, reduce-scatter: pairwise
 * messages). For an allgather ring longer than ROUTE_CHECK_ALL_PAIRS only
 * the neighbours are asked; a pair missed there still ends the simulation
 * with SimGrid's "no connecting path" reason, which the parent reports as bad
 * input (execute.c). SimGrid's Dijkstra routing crashes or spins on an
 * unconnected pair instead of answering: the child then reports the pair it
 * was asking about (sim_child_arm_failure). Cost: world x (ulysses + 1) route lookups, or
 * world x (ulysses + ring) with allgather. */
#include "internal.h"

#include <stdio.h>

#include <simgrid/host.h>
#include <xbt/dynar.h>

#include "routes.h"
#include "usp/layout.h"

enum { ROUTE_CHECK_ALL_PAIRS = 64 };

usp_status sim_route_links(const sim_net *net, int a, int b, xbt_dynar_t links, const char *platform) {
    const sg_host_t *host_of = net->hosts;
    xbt_dynar_reset(links);
    if (a == b || host_of[a] == host_of[b]) return USP_OK;
    char why[400];
    snprintf(why, sizeof why, "platform %s: no route from host '%s' (rank %d) to host '%s' (rank %d)", platform,
             sg_host_get_name(host_of[a]), a, sg_host_get_name(host_of[b]), b);
    /* SimGrid's Dijkstra routing aborts, faults or spins where it finds no path */
    sim_child_arm_failure(why, 0);
    if (net->route_prepare) net->route_prepare(a, b); /* before SimGrid's first look-up of the pair */
    sg_host_get_route(host_of[a], host_of[b], links);
    /* each look-up walks the route again: the latency only for a route without links */
    int connected = !xbt_dynar_is_empty(links) || sg_host_get_route_latency(host_of[a], host_of[b]) > 0;
    return connected ? USP_OK : usp_fail(USP_EINVAL, "%s", why);
}

usp_status sim_check_routes(const usp_config *c, const sim_net *net, const char *platform) {
    int U = c->ulysses, R = c->ring, world = usp_world(c);
    int all_ring_pairs = c->ring_impl == USP_RING_ALLGATHER && R <= ROUTE_CHECK_ALL_PAIRS;
    xbt_dynar_t links = xbt_dynar_new(sizeof(sg_link_t), NULL);
    usp_status st = USP_OK;
    for (int g = 0; g < world && st == USP_OK; g++) {
        int r, u;
        usp_coords_of(c, g, &r, &u);
        sim_child_arm_failure("platform: route check", ROUTE_WATCHDOG_S); /* restarts the watchdog */
        for (int u2 = 0; u2 < U && st == USP_OK; u2++) st = sim_route_links(net, g, usp_rank_of(c, r, u2), links, platform);
        if (all_ring_pairs)
            for (int r2 = 0; r2 < R && st == USP_OK; r2++)
                st = sim_route_links(net, g, usp_rank_of(c, r2, u), links, platform);
        else if (st == USP_OK && R > 1) {
            st = sim_route_links(net, g, usp_rank_of(c, (r + 1) % R, u), links, platform);
            if (st == USP_OK) st = sim_route_links(net, g, usp_rank_of(c, (r + R - 1) % R, u), links, platform);
        }
    }
    sim_child_arm_failure(NULL, 0);
    xbt_dynar_free(&links);
    return st;
}
