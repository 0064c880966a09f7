/* collectives.c: the collectives as NCCL runs them, one ops table entry per
 * comm kind, and the plan of one rank's call.
 *
 * - alltoall: grouped send/recv, every pair at once (NCCL has no all-to-all
 *   algorithm: ncclGroupStart, n ncclSend + n ncclRecv, ncclGroupEnd); over
 *   NVSwitch the grouped sends reach a2a_eff of the link's peak.
 * - sendrecv: one send to the next rank, one receive from the previous one.
 * - allgather, reducescatter, allreduce: rings over channels (NCCL_ALGO_RING).
 *   A ring's pipeline moves ring_factor(n) x size bytes from every rank to
 *   its successor; all links of the ring are busy at once, so the flows are
 *   posted together and SimGrid shares the links they cross. Channel k's ring
 *   visits the GPUs of each node starting from the k-th (NCCL rotates its
 *   rings so that every channel leaves a node through another NIC); inside a
 *   node the rotation keeps each GPU's successor, between nodes it spreads
 *   the traffic over the NICs. Flows of one rank to one successor are merged.
 * - protocol: NCCL's own choice, the least of latency + bytes / bandwidth
 *   over LL, LL128 and Simple, with NCCL's latencies and bandwidth factors
 *   (src/graph/tuning.cc, NCCL 2.8: baseLat, hwLat, LL at 1/3 of the bus
 *   bandwidth (1/4 for allreduce and between nodes), LL128 at 0.92 and only
 *   over NVLink); the chosen protocol's factor scales the simulated bytes
 *   (LL's 8-byte lines carry 4 bytes of data and a flag) and its latency the
 *   delay. Point-to-point (alltoall, sendrecv) uses LL up to 16 KiB per peer
 *   (NCCL_P2P_LL_THRESHOLD), Simple above.
 * - chunks: Simple moves a channel's data in chunks through NCCL_STEPS = 8
 *   slots; the pipeline's fill is NCCL's per-step latency (hwLat x nsteps),
 *   so chunks cost that latency and not a flow each.
 * - per call: the platform's call cost (nccl.call_us).
 * Trees (NCCL_ALGO_TREE, which NCCL picks for medium all-reduces between
 * nodes) are not modelled: all-reduce is always a ring. */
#include "nccl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <simgrid/host.h>

static const char *const PROTO_NAMES[SIM_PROTO_COUNT] = {"LL", "LL128", "Simple"};
const char *sim_proto_name(sim_proto p) { return p >= 0 && p < SIM_PROTO_COUNT ? PROTO_NAMES[p] : "?"; }

/* ------------------------------------------------------- the ops table */

static double bus_all_to_all(int n) { return n > 1 ? (double)(n - 1) / n : 0; }
static double bus_one(int n) { (void)n; return 1; }
static double bus_all_reduce(int n) { return n > 1 ? 2.0 * (n - 1) / n : 0; }

static size_t count_whole(double size, int n, int ts) { (void)n; return (size_t)(size / ts); }
static size_t count_per_rank(double size, int n, int ts) { return (size_t)(size / ts / n); }

static double ring_ag(int n) { return (double)(n - 1) / n; }
static double ring_ar(int n) { return 2.0 * (n - 1) / n; }
static int steps_ag(int n) { return n - 1; }
static int steps_ar(int n) { return 2 * (n - 1); }

const sim_coll_ops SIM_COLL_OPS[SIM_COLL_COUNT] = {
    [SIM_COLL_ALLTOALL] = {"alltoall", "alltoall_perf", "none", SIM_ALGO_DIRECT, bus_all_to_all, count_whole,
                           NULL, NULL},
    [SIM_COLL_SENDRECV] = {"sendrecv", "sendrecv_perf", "sum", SIM_ALGO_DIRECT, bus_one, count_whole, NULL, NULL},
    [SIM_COLL_ALLGATHER] = {"allgather", "all_gather_perf", "none", SIM_ALGO_RING, bus_all_to_all, count_per_rank,
                            ring_ag, steps_ag},
    [SIM_COLL_REDUCESCATTER] = {"reducescatter", "reduce_scatter_perf", "sum", SIM_ALGO_RING, bus_all_to_all,
                                count_per_rank, ring_ag, steps_ag},
    [SIM_COLL_ALLREDUCE] = {"allreduce", "all_reduce_perf", "sum", SIM_ALGO_RING, bus_all_reduce, count_whole,
                            ring_ar, steps_ar},
};

int sim_coll_by_name(const char *name) {
    for (int i = 0; i < SIM_COLL_COUNT; i++)
        if (strcmp(SIM_COLL_OPS[i].name, name) == 0) return i;
    return -1;
}

/* ------------------------------------------------ NCCL's latency model */

enum { HW_NVLINK, HW_PCI, HW_NET, HW_COUNT };

/* src/graph/tuning.cc (NCCL 2.8), microseconds: ring baseLat by protocol,
 * and hwLat (per pipeline step) by hardware and protocol. */
static const double BASE_LAT_US[SIM_PROTO_COUNT] = {3.6, 10.0, 8.4};
static const double HW_LAT_US[HW_COUNT][SIM_PROTO_COUNT] = {
    {0.47, 1.9, 3.4}, /* NVLink */
    {1.0, 2.5, 5.7},  /* PCI (P2P and SHM) */
    {2.7, 4.0, 9.6},  /* network */
};
/* NCCL_P2P_LL_THRESHOLD: point-to-point messages up to this use LL. */
static const double P2P_LL_THRESHOLD = 16384;
/* Bandwidth factors of the protocols (tuning.cc): LL128 at 120/128 less its
 * overhead. */
static const double LL128_FACTOR = 0.92;

static int hw_of(sim_xport x) {
    switch (x) {
    case SIM_XPORT_PCIE:
    case SIM_XPORT_SHM: return HW_PCI;
    case SIM_XPORT_NET:
    case SIM_XPORT_NET_GDR: return HW_NET;
    default: return HW_NVLINK;
    }
}

/* Slowness order of transports, to name the slowest one of a plan. */
static int rank_of(sim_xport x) {
    static const int r[SIM_XPORT_COUNT] = {0, 0, 1, 2, 3, 4, 5};
    return r[x];
}

static double proto_factor(sim_proto p, sim_coll op, int multi_node) {
    if (p == SIM_PROTO_LL) return multi_node || op == SIM_COLL_ALLREDUCE ? 0.25 : 1.0 / 3;
    if (p == SIM_PROTO_LL128) return LL128_FACTOR;
    return 1.0;
}

/* ------------------------------------------------------------ the plans */

/* The old model, for platforms without topology props: all pairs at once,
 * each pair's share of the bytes (allreduce: its reduce-scatter and
 * all-gather rounds). */
static void plan_route(sim_coll op, int n, int me, double size, double *bytes_to) {
    if (op == SIM_COLL_SENDRECV) {
        if (n > 1) bytes_to[1] = size;
        return;
    }
    double per = size / n * (op == SIM_COLL_ALLREDUCE ? 2 : 1);
    for (int j = 0; j < n; j++)
        if (j != me) bytes_to[j] = per;
}

static void plan_direct(const sim_net *net, sim_coll op, const int *members, int n, int me, double size,
                        sim_coll_plan *plan, double *bytes_to) {
    double per = op == SIM_COLL_SENDRECV ? size : size / n;
    sim_proto p = per <= P2P_LL_THRESHOLD ? SIM_PROTO_LL : SIM_PROTO_SIMPLE;
    double fac = p == SIM_PROTO_LL ? 0.5 : 1.0; /* LL: 4 bytes of data per 8-byte line */
    double lat = 0;
    sim_xport worst = SIM_XPORT_LOCAL;
    int first = op == SIM_COLL_SENDRECV ? 1 : 0, last = op == SIM_COLL_SENDRECV ? 2 : n;
    for (int j = first; j < last && j < n; j++) {
        if (j == me) continue;
        sim_xport x = sim_net_transport(net, members[me], members[j]);
        double eff = x == SIM_XPORT_NVLINK && op == SIM_COLL_ALLTOALL ? net->costs.a2a_eff : 1.0;
        bytes_to[j] = per / (fac * eff);
        double l = HW_LAT_US[hw_of(x)][p] * 1e-6 + net->costs.hop_s[x];
        if (l > lat) lat = l;
        if (rank_of(x) > rank_of(worst)) worst = x;
    }
    plan->proto = p;
    plan->xport = worst;
    plan->delay_s = net->costs.call_s + BASE_LAT_US[p] * 1e-6 + lat;
}

/* Members grouped by node, in order of first appearance: order[] lists
 * member indices node after node; start[k]..start[k+1] is node k's. */
static int group_by_node(const sim_net *net, const int *members, int n, int *order, int *start) {
    int nodes = 0, filled = 0;
    char *taken = calloc((size_t)n, 1);
    if (!taken) return 0;
    for (int i = 0; i < n; i++) {
        if (taken[i]) continue;
        int node = net->gpus[members[i]].node;
        start[nodes++] = filled;
        for (int j = i; j < n; j++)
            if (!taken[j] && net->gpus[members[j]].node == node) { taken[j] = 1; order[filled++] = j; }
    }
    start[nodes] = filled;
    free(taken);
    return nodes;
}

/* The successor of member `me` in channel k's ring. */
static int ring_successor(const int *order, const int *start, int nodes, int me, int k) {
    for (int g = 0; g < nodes; g++) {
        int m = start[g + 1] - start[g];
        for (int i = 0; i < m; i++) {
            if (order[start[g] + i] != me) continue;
            /* position of me in node g's rotated list: (i - k) mod m */
            int pos = ((i - k) % m + m) % m;
            if (pos + 1 < m) return order[start[g] + (i + 1) % m];
            int h = (g + 1) % nodes, mh = start[h + 1] - start[h];
            return order[start[h] + k % mh]; /* the first of the next node's rotated list */
        }
    }
    return me;
}

static void plan_ring(const sim_net *net, sim_coll op, const int *members, int n, int me, double size,
                      sim_coll_plan *plan, double *bytes_to) {
    const sim_coll_ops *ops = &SIM_COLL_OPS[op];
    int *order = malloc(2 * ((size_t)n + 1) * sizeof *order);
    if (!order) { plan_route(op, n, me, size, bytes_to); return; }
    int *start = order + n;
    int nodes = group_by_node(net, members, n, order, start);
    int max_local = 0;
    for (int g = 0; g < nodes; g++)
        if (start[g + 1] - start[g] > max_local) max_local = start[g + 1] - start[g];
    int channels = net->costs.channels > 0 ? net->costs.channels : nodes > 1 ? max_local : 1;

    /* The ring's transports (channel 0) and its slowest edge. */
    sim_xport worst = SIM_XPORT_LOCAL, worst_intra = SIM_XPORT_LOCAL;
    int wa = 0, wb = 0, all_nvlink = 1;
    for (int i = 0; i < n; i++) {
        int s = ring_successor(order, start, nodes, i, 0);
        sim_xport x = sim_net_transport(net, members[i], members[s]);
        if (x != SIM_XPORT_NVLINK) all_nvlink = 0;
        if (rank_of(x) > rank_of(worst)) { worst = x; wa = i; wb = s; }
        if (hw_of(x) != HW_NET && rank_of(x) > rank_of(worst_intra)) worst_intra = x;
    }
    double bw = sg_host_get_route_bandwidth(net->hosts[members[wa]], net->hosts[members[wb]]);
    if (!(bw > 0)) bw = 1e9;

    /* NCCL's choice of protocol: least latency + bytes / bandwidth. */
    int steps = ops->ring_steps(n), inter = nodes > 1 ? ops->ring_steps(nodes) : 0;
    double moved = ops->ring_factor(n) * size;
    double best = INFINITY, best_lat = 0;
    sim_proto bp = SIM_PROTO_SIMPLE;
    for (int p = 0; p < SIM_PROTO_COUNT; p++) {
        if (p == SIM_PROTO_LL128 && !all_nvlink) continue;
        double intra_lat = HW_LAT_US[hw_of(worst_intra)][p] * (nodes > 1 && p == SIM_PROTO_LL ? 1.8 : 1);
        double lat = (BASE_LAT_US[p] + (steps - inter) * intra_lat + inter * HW_LAT_US[HW_NET][p]) * 1e-6 +
                     (steps - inter) * net->costs.hop_s[worst_intra] + inter * net->costs.hop_s[worst];
        double t = lat + moved / (bw * proto_factor(p, op, nodes > 1));
        if (t < best) { best = t; bp = p; best_lat = lat; }
    }
    double fac = proto_factor(bp, op, nodes > 1);
    for (int k = 0; k < channels; k++) {
        int s = ring_successor(order, start, nodes, me, k);
        if (s != me) bytes_to[s] += moved / channels / fac;
    }
    plan->proto = bp;
    plan->xport = worst;
    plan->channels = channels;
    plan->delay_s = net->costs.call_s + best_lat;
    free(order);
}

void sim_coll_plan_make(const sim_net *net, sim_coll op, const int *members, int n, int me, double size,
                        sim_coll_plan *plan, double *bytes_to) {
    memset(plan, 0, sizeof *plan);
    plan->algo = SIM_COLL_OPS[op].algo;
    plan->proto = SIM_PROTO_SIMPLE;
    plan->xport = SIM_XPORT_ROUTE;
    plan->channels = 1;
    for (int j = 0; j < n; j++) bytes_to[j] = 0;
    if (n < 2 || size <= 0) return;
    if (!net->known) {
        plan->algo = SIM_ALGO_DIRECT;
        plan_route(op, n, me, size, bytes_to);
        return;
    }
    if (SIM_COLL_OPS[op].algo == SIM_ALGO_DIRECT) plan_direct(net, op, members, n, me, size, plan, bytes_to);
    else plan_ring(net, op, members, n, me, size, plan, bytes_to);
}
