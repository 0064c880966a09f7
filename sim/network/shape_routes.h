/* shape_routes.h: routes of a platform of identical nodes without a shortest-
 * path search per source GPU (shape_routes.cpp).
 *
 * SimGrid routes a flat DijkstraCache zone by one shortest-path search over
 * the whole platform per source host, cached per source: at 16384 GPUs
 * (2048 nodes, about 30000 vertices) some 20 ms each, for each GPU that ever
 * sends. On a platform written by sim/network/machine.c (hosts
 * "node<k>-gpu<i>", node links "node<k>-<name>", every node alike, one flat
 * zone) the route between GPU i of node a and GPU j of node b is that
 * search's route between GPU i and GPU j of two reference nodes with the
 * same relation (the same node, a < b or a > b), each of its node links
 * renamed to nodes a and b: sim_shape_routes_prepare asks SimGrid for the
 * reference route once per shape (GPU i, GPU j, relation) and gives SimGrid
 * the renamed route as a bypass route of the pair (SimGrid's <bypassRoute>,
 * looked up before the zone's own routing). Why it is the same route, and
 * where that is checked: shape_routes.cpp.
 *
 * Call from the simulation child only (SimGrid loaded). */
#ifndef USP_SIM_SHAPE_ROUTES_H
#define USP_SIM_SHAPE_ROUTES_H

#include <simgrid/forward.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when the platform has the shape above (two nodes or more; the routes
 * from two sampled nodes' GPUs to every rank are the shapes') and
 * routes of ranks on hosts[0..world-1] go through sim_shape_routes_prepare;
 * 0 otherwise (SimGrid's own routing, untouched). Seals the platform. */
int sim_shape_routes_init(sg_host_t *hosts, int world);

/* Makes the route from rank a's host to rank b's a bypass route (once per
 * pair) and returns 1; 0 and nothing for one host, or where a node lacks a
 * link of the shape (SimGrid's search then routes the pair). */
int sim_shape_routes_prepare(int a, int b);

/* The check: for every source rank 0, stride, 2 stride, ... and every
 * destination on another host, SimGrid's own route (asked first, before any
 * bypass of the pair) against the route sim_shape_routes_prepare gives it, link
 * by link. Returns the pairs compared; *bypassed of them went through a
 * bypass route, *bad differ (why names the first). Call after
 * sim_shape_routes_init, before any sim_shape_routes_prepare. */
long sim_shape_routes_verify(int stride, long *bypassed, long *bad, char *why, int n);

#ifdef __cplusplus
}
#endif

#endif
