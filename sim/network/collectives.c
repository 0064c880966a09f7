/* collectives.c: the collectives as NCCL runs them, one ops table entry per
 * comm kind, and the plan of one rank's call.
 *
 * - alltoall: grouped send/recv, every pair at once (NCCL has no all-to-all
 *   algorithm: ncclGroupStart, n ncclSend + n ncclRecv, ncclGroupEnd); over
 *   NVSwitch the grouped sends reach a2a_eff of the link's peak, over P2P
 *   through the CPU cpu_p2p_a2a_eff of their route's rate.
 * - sendrecv: one send to the next rank, one receive from the previous one.
 * - allgather, reducescatter, allreduce: rings over channels (NCCL_ALGO_RING).
 *   A ring's pipeline moves ring_factor(n) x size bytes from every rank to
 *   its successor; all links of the ring are busy at once, so the flows are
 *   posted together and SimGrid shares the links they cross. Channel k's ring
 *   visits the GPUs of each node starting from the k-th (NCCL rotates its
 *   rings so that every channel leaves a node through another NIC); inside a
 *   node the rotation keeps each GPU's successor, between nodes it spreads
 *   the traffic over the NICs. Flows of one rank to one successor are merged.
 * - choice: NCCL's own, the least of latency + bytes / bandwidth over the
 *   algorithms and LL, LL128 and Simple, by NCCL's estimate (src/graph/
 *   tuning.cc of NCCL 2.20: baseLat, hwLat, the network plugin's stated
 *   latency per network step (nccl.net_lat_us), LL at 1/3 of the bus
 *   bandwidth (1/4 for allreduce and between nodes), LL128 at 0.92 and only
 *   over NVLink, trees with treeCorrectionFactor).
 * - cost: the chosen one then runs with what it costs, which is not always
 *   the estimate: its latency without the plugin's steering latency is paid
 *   once as the delay, and its factor scales the simulated bytes (LL at 0.5:
 *   its 8-byte lines carry 4 bytes of data and a flag; LL128 at 0.92, or the
 *   platform's nccl.ll128_eff; Simple ring steps may cost the platform's
 *   nccl.simple_step_us more). Point-to-point (alltoall, sendrecv) uses LL up
 *   to 16 KiB per peer (NCCL_P2P_LL_THRESHOLD), Simple above.
 * - chunks: a ring moves a channel's data in chunks through NCCL_STEPS = 8
 *   slots; every link is busy at every step, so the chunks cost NCCL's
 *   per-step latency (hwLat x nsteps) and not a flow each. A tree pays its
 *   pipeline (tree_pipe): NCCL's channels by size, a chunk's fill through
 *   every hop, a network message per chunk (nccl.net_msg_us).
 * - per call: the platform's call cost (nccl.call_us).
 * - all-reduce, besides the ring: between nodes the tree (NCCL_ALGO_TREE: a
 *   double binary tree of nodes, a chain inside each; each GPU moves the
 *   buffer once each way inside its node, each node once each way over its
 *   NICs between two nodes and twice beyond: tree_net_passes), and on one
 *   NVSwitch node with NVLink SHARP (nccl.nvls_eff > 0, H100 and later) NVLS, the switch reducing (each GPU's traffic (n-1)/n of
 *   the buffer each way, at nvls_eff of the link); between NVLS nodes the tree
 *   runs NVLS inside each node (NVLSTree). Where the network plugin forces
 *   Simple (nccl.net_simple: EFA without ordered 128-byte writes) only Simple
 *   crosses nodes.
 * Not modelled: CollNet (SHARP in the network), PAT, user overrides
 * (NCCL_ALGO, NCCL_PROTO; a platform states NCCL_P2P_LEVEL with
 * nccl.p2p_level and forced channels with nccl.channels), the LL bandwidth
 * caps of tuning.cc (llMaxBws). */
#include "nccl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <simgrid/host.h>

static const char *const PROTO_NAMES[SIM_PROTO_COUNT] = {"LL", "LL128", "Simple"};
const char *sim_proto_name(sim_proto p) { return p >= 0 && p < SIM_PROTO_COUNT ? PROTO_NAMES[p] : "?"; }
const char *sim_algo_name(sim_algo a) {
    static const char *const names[] = {"direct", "ring", "tree", "nvls"};
    return a >= 0 && a <= SIM_ALGO_NVLS ? names[a] : "?";
}

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

/* src/graph/tuning.cc of NCCL 2.20 (2.18 to 2.22 share the ring figures;
 * the published tables ran 2.18.5, 2.20.3 and 2.20.5), microseconds: ring
 * baseLat by protocol, and hwLat (per pipeline step) by hardware and
 * protocol. */
static const double BASE_LAT_US[SIM_PROTO_COUNT] = {6.6, 14.0, 8.4};
static const double HW_LAT_US[HW_COUNT][SIM_PROTO_COUNT] = {
    {0.6, 1.9, 3.4},  /* NVLink */
    {1.0, 2.5, 5.7},  /* PCI (P2P and SHM) */
    {2.7, 4.0, 14.0}, /* network */
};
/* NVLS (the NVSwitch reducing): hwLat[NVLINK][NVLS][Simple], the whole
 * single-node latency (baseLat 0); NVLSTree adds 2 log2(nodes) network
 * steps of hwLat[NET][NVLSTree][Simple]. */
static const double NVLS_LAT_US = 23.0, NVLS_TREE_NET_LAT_US = 14.0;
/* getNetOverhead(): a network step costs at least the proxy's post, 1 us
 * (Intel and other hosts; 2 on AMD: nccl.cpu), 3 x that with Simple. */
static const double NET_OVERHEAD_US = 1.0;
/* ncclTopoGetAlgoTime(): "Plateau effect of ring": the estimate of a ring
 * Simple all-reduce over several nodes multiplies its latency by 1.4
 * (sm80 and later). NCCL's choice only. */
static const double RING_PLATEAU = 1.4;
/* NCCL_P2P_LL_THRESHOLD: point-to-point messages up to this use LL. */
static const double P2P_LL_THRESHOLD = 16384;
/* Bandwidth factors of the protocols (tuning.cc): LL128 at 120/128 less its
 * overhead. */
static const double LL128_FACTOR = 0.92;

static int hw_of(sim_xport x) {
    switch (x) {
    case SIM_XPORT_PCIE:
    case SIM_XPORT_PCIE_CPU:
    case SIM_XPORT_SHM: return HW_PCI;
    case SIM_XPORT_NET:
    case SIM_XPORT_NET_GDR: return HW_NET;
    default: return HW_NVLINK;
    }
}

/* Slowness order of transports, to name the slowest one of a plan. */
static int rank_of(sim_xport x) {
    static const int r[SIM_XPORT_COUNT] = {0, 0, 1, 2, 3, 4, 5, 6};
    return r[x];
}

/* LL as the simulation moves it: half the bus, its 8-byte lines carrying 4
 * bytes of data and a flag (NCCL 2.23 took its own ring LL estimate to 0.5
 * of the bus as well; 2.20's 1/4 and 1/3 below steer the choice). */
static const double LL_RUN_FACTOR = 0.5;

/* The bandwidth factor of a ring protocol (tuning.cc): LL at 1/3 of the
 * bus, 1/4 for all-reduce or between nodes; LL128 at 0.92. */
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
        double eff = op != SIM_COLL_ALLTOALL ? 1.0
                   : x == SIM_XPORT_NVLINK ? net->costs.a2a_eff
                   : x == SIM_XPORT_PCIE_CPU ? net->costs.cpu_p2p_a2a_eff : 1.0;
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
 * member indices node after node; start[k]..start[k+1] is node k's;
 * group[i] and local[i] say where member i landed (node k, position in it).
 * Linear in n (nodes are indexed by their id, which is below the GPU count
 * of the platform). */
static int group_by_node(const sim_net *net, const int *members, int n, int *order, int *start, int *group,
                         int *local) {
    int top = 0;
    for (int i = 0; i < n; i++)
        if (net->gpus[members[i]].node > top) top = net->gpus[members[i]].node;
    int *slot = malloc(((size_t)top + 1) * sizeof *slot);
    if (!slot) return 0;
    for (int v = 0; v <= top; v++) slot[v] = -1;
    int nodes = 0;
    for (int i = 0; i < n; i++) {
        int node = net->gpus[members[i]].node;
        if (node < 0) node = 0;
        if (slot[node] < 0) { slot[node] = nodes; start[nodes++] = 0; }
        group[i] = slot[node];
        local[i] = start[group[i]]++;
    }
    int filled = 0;
    for (int g = 0; g < nodes; g++) { int m = start[g]; start[g] = filled; filled += m; }
    start[nodes] = filled;
    for (int i = 0; i < n; i++) order[start[group[i]] + local[i]] = i;
    free(slot);
    return nodes;
}

/* The shape of a ring or tree call: members by node, the slowest edge of
 * channel 0's ring, the bandwidths the protocol choice weighs. */
typedef struct {
    int n, nodes, max_local;
    int *order, *start;           /* group_by_node */
    int *group, *local;           /* member -> its node's index, its position there */
    sim_xport worst, worst_intra; /* the slowest transport of the ring, inside a node */
    int all_nvlink;               /* every ring edge on NVLink (LL128, NVLS) */
    double ring_bw;               /* route bandwidth of the slowest ring edge */
    double intra_bw;              /* route bandwidth between two GPUs of one node */
    double net_bw;                /* a node's network bandwidth: its NICs, each counted once */
} shape;

/* The successor of member `me` in channel k's ring. */
static int ring_successor(const shape *sh, int me, int k) {
    int g = sh->group[me], i = sh->local[me], m = sh->start[g + 1] - sh->start[g];
    /* position of me in node g's rotated list: (i - k) mod m */
    int pos = ((i - k) % m + m) % m;
    if (pos + 1 < m) return sh->order[sh->start[g] + (i + 1) % m];
    int h = (g + 1) % sh->nodes, mh = sh->start[h + 1] - sh->start[h];
    return sh->order[sh->start[h] + k % mh]; /* the first of the next node's rotated list */
}

static double route_bw(const sim_net *net, int a, int b) {
    if (net->route_prepare) net->route_prepare(a, b);
    double bw = sg_host_get_route_bandwidth(net->hosts[a], net->hosts[b]);
    return bw > 0 ? bw : 1e9;
}

static int make_shape(const sim_net *net, const int *members, int n, shape *sh) {
    memset(sh, 0, sizeof *sh);
    sh->n = n;
    sh->order = malloc(4 * ((size_t)n + 1) * sizeof *sh->order);
    if (!sh->order) return -1;
    sh->start = sh->order + n;
    sh->group = sh->start + n + 1;
    sh->local = sh->group + n + 1;
    sh->nodes = group_by_node(net, members, n, sh->order, sh->start, sh->group, sh->local);
    if (sh->nodes == 0) { free(sh->order); return -1; }
    int wa = 0, wb = 0, big = -1;
    for (int g = 0; g < sh->nodes; g++) {
        int m = sh->start[g + 1] - sh->start[g];
        if (m > sh->max_local) { sh->max_local = m; big = g; }
    }
    sh->worst = sh->worst_intra = SIM_XPORT_LOCAL;
    sh->all_nvlink = 1;
    for (int i = 0; i < n; i++) {
        int s = ring_successor(sh, i, 0);
        sim_xport x = sim_net_transport(net, members[i], members[s]);
        if (x != SIM_XPORT_NVLINK && hw_of(x) != HW_NET) sh->all_nvlink = 0;
        if (rank_of(x) > rank_of(sh->worst)) { sh->worst = x; wa = i; wb = s; }
        if (hw_of(x) != HW_NET && rank_of(x) > rank_of(sh->worst_intra)) sh->worst_intra = x;
    }
    sh->ring_bw = route_bw(net, members[wa], members[wb]);
    sh->intra_bw = sh->max_local > 1 ? route_bw(net, members[sh->order[sh->start[big]]],
                                                members[sh->order[sh->start[big] + 1]]) : sh->ring_bw;
    if (sh->nodes > 1) {
        /* GPU k of the first node to GPU k of the second: one NIC's share */
        int m0 = sh->start[1] - sh->start[0], m1 = sh->start[2] - sh->start[1];
        double nic = route_bw(net, members[sh->order[0]], members[sh->order[sh->start[1]]]);
        int nics = 0;
        for (int i = 0; i < m0 && i < m1; i++) {
            int dup = 0, nic_i = net->gpus[members[sh->order[i]]].nic;
            for (int j = 0; j < i; j++) dup |= net->gpus[members[sh->order[j]]].nic == nic_i;
            nics += !dup;
        }
        sh->net_bw = nic * (nics > 0 ? nics : 1);
    }
    return 0;
}

/* Tree latencies (tuning.cc, NCCL 2.20): baseLat and hwLat of
 * NCCL_ALGO_TREE, which NCCL's choice weighs. Its Simple hwLat, 28 us per
 * hop, is not a hop's latency but a chunk's transfer ("Tree/Simple is the
 * latency a 256kB chunk", the comment above the table up to 2.22); the
 * simulated tree moves its chunks as flows and pays, per hop, the figures
 * NCCL 2.23 put there instead (baseLat 8.4, hwLat 4 over NVLink and PCI, 14
 * over the network): TREE_RUN_*. */
static const double TREE_BASE_LAT_US[SIM_PROTO_COUNT] = {6.8, 14.0, 0};
static const double TREE_HW_LAT_US[HW_COUNT][SIM_PROTO_COUNT] = {
    {0.6, 1.25, 28}, {1.0, 1.9, 28}, {5.0, 8.5, 28},
};
static const double TREE_RUN_BASE_LAT_US[SIM_PROTO_COUNT] = {6.8, 14.0, 8.4};
static const double TREE_RUN_HW_LAT_US[HW_COUNT][SIM_PROTO_COUNT] = {
    {0.6, 1.25, 4.0}, {1.0, 1.9, 4.0}, {5.0, 8.5, 14.0},
};
/* Tree bandwidth factors (tuning.cc): 0.92 of the bus, LL 1/3.8, LL128
 * 120/128 between nodes. */
static const double TREE_BW_FACTOR = 0.92, TREE_LL_FACTOR = 1.0 / 3.8, TREE_LL128_FACTOR = 120.0 / 128;
/* NCCL's treeCorrectionFactor (tuning.cc, 2.20): "Trees are not perfectly
 * sticking to the model for medium sizes": the tree's bandwidth at 64 B << k,
 * by protocol, k = log2(bytes / 64) from 0 to 22 (1.0 beyond). NCCL's
 * choice only: the simulated tree pays its pipeline instead (tree_pipe). */
static const double TREE_CORRECTION[SIM_PROTO_COUNT][23] = {
    {1.0, 1.0, 1.0, 1.0, .9, .8, .7, .7, .7, .7, .6, .5, .4, .4, .5, .6, .7, .8, .9, 1.0, 1.0, 1.0, 1.0},
    {1.0, 1.0, 1.0, 1.0, 1.0, .9, .8, .8, .8, .7, .6, .6, .6, .6, .6, .6, .8, .9, .9, .9, .9, 1.0, 1.0},
    {.9, .9, .9, .9, .9, .9, .9, .8, .7, .6, .6, .5, .5, .5, .5, .6, .7, .8, .7, .7, .8, .9, .9},
};

static double tree_correction(int p, double size) {
    double units = size / 64;
    int k = units >= 1 ? (int)floor(log2(units)) : 0;
    return k < 23 ? TREE_CORRECTION[p][k] : 1.0;
}

typedef struct {
    sim_algo algo;
    sim_proto proto;
    double lat_s, fac;   /* the simulated latency; bandwidth factor of the protocol */
    double time_s;       /* the estimate NCCL's choice compares */
} choice;

/* NCCL's latency of a ring call (tuning.cc, 2.20): baseLat, then hwLat per
 * step inside a node (at least the network post overhead when the ring
 * leaves the node), and per network step (all-reduce: 2 x nodes of them)
 * hwLat[NET] plus the network plugin's stated latency (twice with Simple:
 * the flush). `plugin` = 0 leaves the plugin's latency out: it steers NCCL's
 * choice (aws-ofi-nccl states 75 us for EFA), while a network step of the
 * simulation takes what hwLat[NET] says. The transport's extra cost per step
 * (SHM's host round trip, the host bounce without GPUDirect) is added to
 * both. */
static double ring_lat(const sim_net *net, sim_coll op, const shape *sh, int p, int plugin) {
    int steps = SIM_COLL_OPS[op].ring_steps(sh->n);
    int inter = sh->nodes == 1 ? 0 : op == SIM_COLL_ALLREDUCE ? 2 * sh->nodes : sh->nodes - 1;
    if (inter > steps) inter = steps;
    double intra_lat = HW_LAT_US[hw_of(sh->worst_intra)][p];
    if (sh->nodes > 1)
        intra_lat = fmax(intra_lat, NET_OVERHEAD_US * (net->costs.cpu_amd ? 2 : 1) * (p == SIM_PROTO_SIMPLE ? 3 : 1));
    double inter_lat = HW_LAT_US[HW_NET][p] + (plugin ? net->costs.net_lat_s * 1e6 * (p == SIM_PROTO_SIMPLE ? 2 : 1) : 0);
    return (BASE_LAT_US[p] + (steps - inter) * intra_lat + inter * inter_lat) * 1e-6 +
           (steps - inter) * net->costs.hop_s[sh->worst_intra] + inter * net->costs.hop_s[sh->worst];
}

/* NCCL's latency of a tree all-reduce: up and down the chain of each node
 * and log2(nodes) network steps each way; `plugin` as for rings, and then
 * NCCL's own tables (choice), else the simulated hop costs (TREE_RUN_*). */
static double tree_lat(const sim_net *net, const shape *sh, int p, int plugin) {
    int ihw = hw_of(sh->worst_intra);
    const double *base = plugin ? TREE_BASE_LAT_US : TREE_RUN_BASE_LAT_US;
    const double (*hw)[SIM_PROTO_COUNT] = plugin ? TREE_HW_LAT_US : TREE_RUN_HW_LAT_US;
    double inter_lat = hw[HW_NET][p] + (plugin ? net->costs.net_lat_s * 1e6 * (p == SIM_PROTO_SIMPLE ? 2 : 1) : 0);
    return (base[p] + 2 * ((sh->max_local - 1) * hw[ihw][p] + log2(sh->nodes) * inter_lat)) * 1e-6 +
           2 * ((sh->max_local - 1) * net->costs.hop_s[sh->worst_intra] + log2(sh->nodes) * net->costs.hop_s[sh->worst]);
}

/* NVLS on one node, NVLSTree between nodes (NVLS inside each node, a tree of
 * nodes): Simple only. */
static double nvls_lat(const sim_net *net, const shape *sh, int plugin) {
    if (sh->nodes == 1) return NVLS_LAT_US * 1e-6;
    double inter_lat = NVLS_TREE_NET_LAT_US + (plugin ? 2 * net->costs.net_lat_s * 1e6 : 0);
    return (NVLS_LAT_US + 2 * log2(sh->nodes) * inter_lat) * 1e-6 + 2 * log2(sh->nodes) * net->costs.hop_s[sh->worst];
}

/* A tree's channels and chunks (enqueue.cc, 2.20), which NCCL's latency +
 * bandwidth estimate leaves out (its treeCorrectionFactor stands in for
 * them):
 * - channels: NCCL drops channels while the call has fewer than 64 bytes
 *   (Simple; 8 with LL and LL128) per thread of every channel, 512 threads
 *   (640 with LL128): nc = bytes / (threads x that), from 1 to the tree's
 *   channels. A channel carries 1/channels of the bandwidth, so a call on
 *   nc of them moves at nc/channels of it: *frac.
 * - chunks: a tree moves each channel's share in chunks of at most one
 *   buffer slot (NCCL_BUFFSIZE / NCCL_STEPS: 512 KiB with Simple; LL 32 KiB
 *   of data, LL128 576000 bytes), less for small LL128 and NVLSTree calls
 *   (computeCollChunkInfo's rules), and a chunk crosses every hop of the
 *   tree before the pipeline runs at its slowest hop's rate: up and down the
 *   chain of each node (2 (m-1) hops over the GPU's link, 2 over the switch
 *   with NVLS), up and down the tree of nodes (2 log2(nodes) hops over the
 *   node's network share). That fill, one chunk through all hops but the
 *   slowest, is *fill_s; the flows carry the rest at the slowest hop's rate. */
enum { TREE_CHANNELS = 16 };
/* The times a node's NICs carry the buffer each way in a tree all-reduce:
 * between two nodes the two trees of NCCL's double binary tree are one chain,
 * run both ways, and carry it once; beyond two nodes every node is inside one
 * of the trees, where it takes its two children's halves and hands its
 * parent's half down to both: twice (NCCL's estimate, tuning.cc: NVLSTree's
 * network bandwidth is doubled for two nodes only). */
static double tree_net_passes(const shape *sh) { return sh->nodes > 2 ? 2 : 1; }
/* The tree's network rate per node and direction: both trees' halves of the
 * NICs, over the passes. */
static double tree_net_bw(const shape *sh) { return 2 * sh->net_bw / tree_net_passes(sh); }

static void tree_pipe(const sim_net *net, const shape *sh, int p, double size, double intra_bw, int nvls,
                      double fac, double *fill_s, double *frac) {
    int ncmax = net->costs.channels > 0 ? net->costs.channels : TREE_CHANNELS;
    double per_thread = p == SIM_PROTO_SIMPLE ? 64 : 8, threads = p == SIM_PROTO_LL128 ? 640 : 512;
    double nc = floor(size / (threads * per_thread));
    nc = nc < 1 ? 1 : nc > ncmax ? ncmax : nc;
    int m = sh->max_local;
    double slot = p == SIM_PROTO_SIMPLE ? 524288 : p == SIM_PROTO_LL ? 32768 : 576000;
    if (p == SIM_PROTO_LL128) { /* computeCollChunkInfo: LL128 trees halve the chunk for small calls */
        double steps = 1 + log2(sh->nodes) + 0.1 * m;
        while (size / (nc * slot) < steps * 64 / m && slot > 131072) slot /= 2;
        while (size / (nc * slot) < steps * 16 / m && slot > 32768) slot /= 2;
    } else if (nvls) { /* NVLSTree: by the operations in flight, channels x heads */
        double ops = nc * m;
        if (size < 32 * ops * slot && slot > 262144) slot = 262144;
        if (size < 16 * ops * slot && slot > 131072) slot = 131072;
        if (size < 4 * ops * slot && slot > 65536) slot = 65536;
        if (size < ops * slot && slot > 32768) slot = 32768;
    }
    double share = size / nc, chunks = ceil(share / slot), chunk = share / (chunks > 0 ? chunks : 1);
    double intra_hops = nvls ? 2 : 2.0 * (m - 1), net_hops = 2 * log2(sh->nodes);
    /* inside a node every channel follows the same chain, so a hop's link is
     * shared by all of them; between nodes the two trees of NCCL's double
     * binary tree run opposite ways, half the channels each way */
    const double net_rate = tree_net_bw(sh);
    double through = (sh->max_local > 1 ? intra_hops / intra_bw : 0) + net_hops / net_rate;
    double slowest_hop = sh->max_local > 1 && intra_bw < net_rate ? 1 / intra_bw : 1 / net_rate;
    *fill_s = chunk * ncmax * (through - slowest_hop) / fac;
    *frac = nc / ncmax;
    /* a network message per chunk and hop: a channel's network rate is
     * chunk / (message cost + chunk / its share of the network) */
    double tau = net->costs.net_msg_s;
    if (tau > 0) *frac *= chunk / (chunk + tau * net_rate / ncmax);
}

/* NCCL's cap on LL's bus bandwidth in its estimate (tuning.cc llMaxBws,
 * 2.20, GB/s): one node 87.7 (Ampere and Hopper); between nodes by the CPU,
 * Intel 39.0 on 2 nodes and 20.4 on more, AMD 22.5 and 19.0. */
static double ll_max_bw(const sim_net *net, const shape *sh) {
    if (sh->nodes == 1) return 87.7e9;
    if (net->costs.cpu_amd) return sh->nodes <= 2 ? 22.5e9 : 19.0e9;
    return sh->nodes <= 2 ? 39.0e9 : 20.4e9;
}

static void consider(choice *best, sim_algo a, int p, double lat_est, double lat_run, double fac_est,
                     double fac_run, double bytes, double bw) {
    double t = lat_est + bytes / (bw * fac_est);
    if (t < best->time_s) *best = (choice){a, (sim_proto)p, lat_run, fac_run, t};
}

/* NCCL's choice: the least latency + bytes / bandwidth over the algorithms
 * and protocols that apply, by NCCL's estimate; the chosen one's simulated
 * latency and bandwidth factor. */
static choice choose(const sim_net *net, sim_coll op, const shape *sh, double size) {
    const sim_coll_ops *ops = &SIM_COLL_OPS[op];
    int multi = sh->nodes > 1;
    choice best = {SIM_ALGO_RING, SIM_PROTO_SIMPLE, 0, 1, INFINITY};
    double ring_bus = multi ? fmin(sh->intra_bw, sh->net_bw) : sh->ring_bw;
    int simple_only = multi && net->costs.net_simple;
    for (int p = 0; p < SIM_PROTO_COUNT; p++) {
        if (p == SIM_PROTO_LL128 && !sh->all_nvlink) continue;
        if (simple_only && p != SIM_PROTO_SIMPLE) continue;
        double est = ring_lat(net, op, sh, p, 1), fac = proto_factor(p, op, multi);
        if (multi && p == SIM_PROTO_SIMPLE && op == SIM_COLL_ALLREDUCE) est *= RING_PLATEAU;
        double run = ring_lat(net, op, sh, p, 0), run_fac = fac;
        if (p == SIM_PROTO_LL) run_fac = LL_RUN_FACTOR;
        if (p == SIM_PROTO_LL128 && net->costs.ll128_eff > 0) run_fac = net->costs.ll128_eff;
        if (p == SIM_PROTO_SIMPLE) run += ops->ring_steps(sh->n) * net->costs.simple_step_s;
        double fac_est = p == SIM_PROTO_LL ? fmin(fac, ll_max_bw(net, sh) / ring_bus) : fac;
        consider(&best, SIM_ALGO_RING, p, est, run, fac_est, run_fac, ops->ring_factor(sh->n) * size, ring_bus);
    }
    if (op != SIM_COLL_ALLREDUCE) return best;
    double nvls = net->costs.nvls_eff;
    if (!multi && nvls > 0 && sh->all_nvlink)
        /* NVLS: each GPU's traffic is (n-1)/n of the buffer each way */
        consider(&best, SIM_ALGO_NVLS, SIM_PROTO_SIMPLE, nvls_lat(net, sh, 1), nvls_lat(net, sh, 0), 1, 1,
                 size * (sh->n - 1) / sh->n, sh->ring_bw * nvls);
    if (multi) {
        int nvls_tree = nvls > 0 && sh->all_nvlink;
        double intra = nvls_tree ? sh->intra_bw * nvls * sh->max_local / fmax(sh->max_local - 1, 1) : sh->intra_bw;
        double bus = fmin(intra, tree_net_bw(sh) / 2) * TREE_BW_FACTOR;
        for (int p = 0; p < SIM_PROTO_COUNT; p++) {
            if (p == SIM_PROTO_LL128 && !sh->all_nvlink) continue;
            if (simple_only && p != SIM_PROTO_SIMPLE) continue;
            double fac = p == SIM_PROTO_LL ? TREE_LL_FACTOR : p == SIM_PROTO_LL128 ? TREE_LL128_FACTOR : 1;
            int as_nvls = nvls_tree && p == SIM_PROTO_SIMPLE;
            double fill, frac;
            tree_pipe(net, sh, p, size, as_nvls ? intra : sh->intra_bw, as_nvls, fac, &fill, &frac);
            double est = as_nvls ? nvls_lat(net, sh, 1) : tree_lat(net, sh, p, 1);
            double run = (as_nvls ? nvls_lat(net, sh, 0) : tree_lat(net, sh, p, 0)) + fill;
            double fac_est = p == SIM_PROTO_LL ? fmin(fac, ll_max_bw(net, sh) / bus) : fac;
            consider(&best, SIM_ALGO_TREE, p, est, run, fac_est * tree_correction(p, size), fac * frac, size, bus);
        }
    }
    return best;
}

/* Where the flows of one member go: bytes added per member index; with
 * `mark`, the members touched are listed once each in touched[]. */
typedef struct {
    double *bytes;
    char *mark;
    int *touched, nt;
} sink;

static void sink_add(sink *o, int j, double b) {
    if (o->mark && !o->mark[j]) { o->mark[j] = 1; o->touched[o->nt++] = j; }
    o->bytes[j] += b;
}

/* Index of the member at local position k (mod its size) of node g. */
static int local_member(const shape *sh, int g, int k) {
    int m = sh->start[g + 1] - sh->start[g];
    return sh->order[sh->start[g] + k % m];
}

static void flows_ring(const sim_net *net, const sim_coll_ops *ops, const shape *sh, int me, double size,
                       double fac, int *channels, sink *o) {
    int c = net->costs.channels > 0 ? net->costs.channels : sh->nodes > 1 ? sh->max_local : 1;
    double moved = ops->ring_factor(sh->n) * size;
    for (int k = 0; k < c; k++) {
        int s = ring_successor(sh, me, k);
        if (s != me) sink_add(o, s, moved / c / fac);
    }
    *channels = c;
}

/* Where member `me` sits: its node g and local position k. */
static void locate(const shape *sh, int me, int *g, int *k) {
    *g = sh->group[me];
    *k = sh->local[me];
}

/* NVLS inside a node: the switch reduces; every GPU's traffic is (n-1)/n of
 * the buffer each way, spread over its peers of the node. */
static void flows_nvls(const shape *sh, int g, int me, double size, double eff, sink *o) {
    int m = sh->start[g + 1] - sh->start[g];
    for (int i = 0; i < m; i++) {
        int j = sh->order[sh->start[g] + i];
        if (j != me) sink_add(o, j, size / m / eff);
    }
}

/* Tree (NCCL's double binary tree between nodes, a chain inside each): each
 * GPU moves the buffer once each way inside its node (half along each of the
 * two trees' chains, or NVLS where the switch reduces) and a node moves it
 * over its NICs once each way between two nodes, twice beyond (tree_net_passes),
 * GPU k to GPU k of the neighbouring nodes. */
static void flows_tree(const sim_net *net, const shape *sh, int me, double size, double fac, sink *o) {
    int g, k;
    locate(sh, me, &g, &k);
    int m = sh->start[g + 1] - sh->start[g];
    if (m > 1) {
        if (net->costs.nvls_eff > 0 && sh->all_nvlink) flows_nvls(sh, g, me, size / fac, net->costs.nvls_eff, o);
        else {
            sink_add(o, local_member(sh, g, k + 1), size / 2 / fac);
            sink_add(o, local_member(sh, g, k + m - 1), size / 2 / fac);
        }
    }
    const double over_net = tree_net_passes(sh) * size / m / fac;
    int next = (g + 1) % sh->nodes, prev = (g + sh->nodes - 1) % sh->nodes;
    sink_add(o, local_member(sh, next, k), over_net / 2);
    sink_add(o, local_member(sh, prev, k), over_net / 2);
}

/* Member me's flows of a ring, tree or NVLS call (the shape and choice made). */
static void flows_of(const sim_net *net, sim_coll op, const shape *sh, const choice *c, int me, double size,
                     int *channels, sink *o) {
    *channels = 1;
    if (c->algo == SIM_ALGO_RING) flows_ring(net, &SIM_COLL_OPS[op], sh, me, size, c->fac, channels, o);
    else if (c->algo == SIM_ALGO_TREE) flows_tree(net, sh, me, size, c->fac, o);
    else flows_nvls(sh, 0, me, size, net->costs.nvls_eff, o);
}

static void plan_collective(const sim_net *net, sim_coll op, const int *members, int n, int me, double size,
                            sim_coll_plan *plan, double *bytes_to) {
    shape sh;
    if (make_shape(net, members, n, &sh) != 0) { plan_route(op, n, me, size, bytes_to); return; }
    choice c = choose(net, op, &sh, size);
    int channels = 1;
    sink o = {bytes_to, NULL, NULL, 0};
    flows_of(net, op, &sh, &c, me, size, &channels, &o);
    plan->algo = c.algo;
    plan->proto = c.proto;
    plan->xport = sh.worst;
    plan->channels = channels;
    plan->delay_s = net->costs.call_s + c.lat_s;
    free(sh.order);
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
    else plan_collective(net, op, members, n, me, size, plan, bytes_to);
}

/* Every member's plan at once: the shape and NCCL's choice are made once,
 * so a call costs O(n) plus its flows (O(n^2) for an all-to-all). delay[j]
 * is member j's delay_s; flow(ctx, j, k, bytes) is called for each member
 * j, in order, once per member k it sends a non-zero byte count to (k != j),
 * with the bytes sim_coll_plan_make gives bytes_to[k] for me = j. */
usp_status sim_coll_plan_each(const sim_net *net, sim_coll op, const int *members, int n, double size,
                              double *delay, void (*flow)(void *ctx, int from, int to, double bytes), void *ctx) {
    for (int j = 0; j < n; j++) delay[j] = 0;
    if (n < 2 || size <= 0) return USP_OK;
    double *bytes = calloc((size_t)n, sizeof *bytes);
    char *mark = calloc((size_t)n, 1);
    int *touched = malloc((size_t)n * sizeof *touched);
    shape sh;
    int have_shape = 0;
    choice c = {0};
    usp_status st = bytes && mark && touched ? USP_OK : usp_fail(USP_EINTERNAL, "out of memory planning a collective");
    int direct = !net->known || SIM_COLL_OPS[op].algo == SIM_ALGO_DIRECT;
    if (st == USP_OK && !direct) {
        if (make_shape(net, members, n, &sh) != 0) st = usp_fail(USP_EINTERNAL, "out of memory planning a collective");
        else { have_shape = 1; c = choose(net, op, &sh, size); }
    }
    for (int j = 0; st == USP_OK && j < n; j++) {
        if (direct) {
            sim_coll_plan plan;
            sim_coll_plan_make(net, op, members, n, j, size, &plan, bytes);
            delay[j] = plan.delay_s;
            for (int k = 0; k < n; k++)
                if (k != j && bytes[k] > 0) flow(ctx, j, k, bytes[k]);
            continue;
        }
        sink o = {bytes, mark, touched, 0};
        int channels;
        flows_of(net, op, &sh, &c, j, size, &channels, &o);
        delay[j] = net->costs.call_s + c.lat_s;
        for (int t = 0; t < o.nt; t++) {
            int k = touched[t];
            if (k != j && bytes[k] > 0) flow(ctx, j, k, bytes[k]);
            bytes[k] = 0;
            mark[k] = 0;
        }
    }
    if (have_shape) free(sh.order);
    free(bytes);
    free(mark);
    free(touched);
    return st;
}
