/* nccl.h: what NCCL would do with a communication, on a platform's topology.
 *
 * Three layers (sim/README.md, "The network and NCCL model"):
 *   the schedule's comm steps say what must move (bytes, peers);
 *   this layer decides what NCCL would do with them: the transport of every
 *   pair of GPUs (sim_net_transport), the algorithm (direct send/recv or a
 *   ring over channels), the protocol by size (LL, LL128, Simple), and the
 *   fixed costs (per call and per pipeline step);
 *   SimGrid moves the resulting flows over the platform's links and routes,
 *   sharing them max-min.
 *
 * The topology comes from SimGrid <prop>s on the platform's hosts and on its
 * outer zone (sim/network/machine.c writes them; `usp platform --from-topo`
 * makes them from `nvidia-smi topo -m` or an NCCL topology XML):
 *   host: node, socket, pcie_switch (0-based, unique within a node; -1: on the
 *         CPU's root port), nvlink (name of the NVLink fabric, "" none), nic
 *         (index within the node, -1 none), gdr (1: GPUDirect RDMA with its NIC)
 *   zone: nccl.call_us, nccl.a2a_eff, nccl.nvls_eff, nccl.lat_us.<transport>,
 *         nccl.channels, nccl.net_simple, nccl.net_lat_us, nccl.net_msg_us,
 *         nccl.ll128_eff, nccl.simple_step_us, nccl.cpu ("amd", else Intel), nccl.p2p_level ("pxb", the default:
 *         P2P only under a common PCIe switch; "sys": P2P through the CPU
 *         too), nccl.cpu_p2p_a2a_eff
 * A platform whose hosts carry no `node` prop (a user's own XML, the star and
 * h200x2 presets, a calibrated pair) keeps the old behaviour exactly: every
 * message takes the route as given, all-pairs, with no added cost
 * (SIM_XPORT_ROUTE); its link latencies are the whole latency.
 *
 * Sizes follow nccl-tests: `size` is the send buffer of alltoall, sendrecv
 * and allreduce, the receive buffer of allgather, the send buffer of
 * reducescatter (n x the receive count), in bytes per rank. */
#ifndef USP_SIM_NETWORK_NCCL_H
#define USP_SIM_NETWORK_NCCL_H

#include <stddef.h>
#include <simgrid/forward.h>

#include "usp/error.h"

/* -------------------------------------------------------- transports */

/* In order of NCCL's preference (the last is the slowest). */
typedef enum {
    SIM_XPORT_ROUTE,    /* no topology props: the platform's route, no added cost */
    SIM_XPORT_LOCAL,    /* a rank to itself */
    SIM_XPORT_NVLINK,   /* P2P over NVLink / NVSwitch */
    SIM_XPORT_PCIE,     /* P2P over PCIe, both GPUs under one PCIe switch */
    SIM_XPORT_PCIE_CPU, /* P2P over PCIe through the CPU (P2P level SYS: NCCL's
                           default on AMD hosts up to 2.22, or NCCL_P2P_LEVEL=SYS) */
    SIM_XPORT_SHM,      /* through pinned host memory: two DMA hops */
    SIM_XPORT_NET_GDR,  /* network, GPUDirect RDMA */
    SIM_XPORT_NET,      /* network, bounce through host memory */
    SIM_XPORT_COUNT
} sim_xport;

const char *sim_xport_name(sim_xport x);

typedef enum { SIM_PROTO_LL, SIM_PROTO_LL128, SIM_PROTO_SIMPLE, SIM_PROTO_COUNT } sim_proto;
const char *sim_proto_name(sim_proto p);

/* Where one GPU sits, from its host's props. */
typedef struct {
    int node, socket, pcie_switch, nic, gdr;
    char nvlink[32];
} sim_gpu_topo;

/* The fixed costs of the platform (zone props, else the defaults of
 * transport.c, each with its source there). */
typedef struct {
    double call_s;                      /* per collective call (launch, sync) */
    double hop_s[SIM_XPORT_COUNT];      /* per pipeline step, Simple protocol */
    double a2a_eff;                     /* all-to-all over NVSwitch: fraction of link peak */
    double nvls_eff;                    /* NVLink SHARP (NVSwitch reductions, H100 and
                                           later): fraction of the link a GPU's NVLS
                                           all-reduce traffic reaches; 0: no NVLS */
    int channels;                       /* rings NCCL builds (0: by transport); a tree's
                                           channels (0: 16) */
    int net_simple;                     /* 1: only Simple between nodes (nccl.net_simple:
                                           the network plugin sets NCCL_PROTO=simple where
                                           EFA cannot order 128-byte writes: LL and LL128,
                                           whose flags ride in the data, are off) */
    int p2p_sys;                        /* 1: P2P through the CPU between GPUs of one node
                                           that share no PCIe switch (nccl.p2p_level sys) */
    double cpu_p2p_a2a_eff;             /* all-to-all over P2P through the CPU: the fraction
                                           of the route's rate its flows reach */
    double ll128_eff;                   /* LL128's achieved share of the link in the
                                           simulation (nccl.ll128_eff; 0: NCCL's 0.92) */
    double simple_step_s;               /* per ring step with Simple beyond hwLat, in the
                                           simulation only (nccl.simple_step_us) */
    int cpu_amd;                        /* 1: AMD host CPUs (nccl.cpu "amd"): NCCL's LL cap
                                           between nodes and its network post overhead */
    double net_msg_s;                   /* per network message (a tree chunk crossing a
                                           node boundary), nccl.net_msg_us: the NIC's and
                                           the proxy's cost of one message */
    double net_lat_s;                   /* the network plugin's stated latency (NCCL's
                                           latencyInter, nccl.net_lat_us): NCCL's choice
                                           adds it per network step, the simulated time
                                           does not */
} sim_net_costs;

/* The GPUs of a communicator: rank i on hosts[i]. */
typedef struct {
    int n;
    int known;            /* 1: every host carries the topology props */
    sg_host_t *hosts;     /* [n], not owned */
    sim_gpu_topo *gpus;   /* [n] */
    sim_net_costs costs;
    /* Called before the route between ranks a and b is asked for (NULL:
     * nothing): the planner and the engine make it a bypass route (shape_routes.h). */
    int (*route_prepare)(int a, int b);
} sim_net;

/* Reads the props of hosts[0..n-1] (SimGrid loaded). known = 0 when any
 * host lacks them: the route-as-given fallback. */
usp_status sim_net_load(sim_net *net, sg_host_t *hosts, int n);
void sim_net_free(sim_net *net);

/* The transport NCCL picks between ranks a and b (NCCL's rules: NVLink when
 * both are on one fabric; PCIe P2P under a common PCIe switch, and through
 * the CPU when the platform's P2P level is sys; otherwise SHM inside a node;
 * between nodes the network, with GPUDirect RDMA when both GPUs have it). */
sim_xport sim_net_transport(const sim_net *net, int a, int b);

/* -------------------------------------------------------- collectives */

typedef enum {
    SIM_COLL_ALLTOALL, SIM_COLL_SENDRECV, SIM_COLL_ALLGATHER, SIM_COLL_REDUCESCATTER, SIM_COLL_ALLREDUCE,
    SIM_COLL_COUNT
} sim_coll;

typedef enum { SIM_ALGO_DIRECT, SIM_ALGO_RING, SIM_ALGO_TREE, SIM_ALGO_NVLS } sim_algo;
const char *sim_algo_name(sim_algo a);

/* One entry per comm kind (nccl-tests' struct testColl: name, byte count,
 * bandwidth). */
typedef struct {
    const char *name;       /* "alltoall", the --op word */
    const char *perf;       /* the nccl-tests binary: "alltoall_perf" */
    const char *redop;      /* "none" or "sum" */
    sim_algo algo;          /* how NCCL runs it */
    /* nccl-tests' bus bandwidth factor: busbw = algbw * bus_factor(n) */
    double (*bus_factor)(int n);
    /* the count column of nccl-tests for `size` bytes of `type_size` elements */
    size_t (*count)(double size, int n, int type_size);
    /* ring: bytes a rank sends to its ring successor, per size byte */
    double (*ring_factor)(int n);
    /* ring: pipeline steps of one call (NCCL's nsteps) */
    int (*ring_steps)(int n);
} sim_coll_ops;

extern const sim_coll_ops SIM_COLL_OPS[SIM_COLL_COUNT];
/* The op named `name` ("alltoall", ...), or -1. */
int sim_coll_by_name(const char *name);

/* What one rank does for one call: sleep delay_s (per-call and pipeline
 * latency, paid once), then send bytes_to[j] simulated bytes to member j
 * (0: a rendezvous only, which every member has with every other, so a
 * collective completes when all members have joined) and receive from
 * every member; the call ends when all are done. */
typedef struct {
    double delay_s;
    sim_algo algo;
    sim_proto proto;
    sim_xport xport;   /* the slowest transport used */
    int channels;
} sim_coll_plan;

/* The plan of member `me` of the communicator `members[0..n-1]` (ranks of
 * net) for a call of `size` bytes (nccl-tests' size). bytes_to has n
 * entries. SENDRECV: members[0] is this rank, members[1] the peer it sends
 * to (n = 2). On a net without props (known = 0): no delay, and the
 * all-pairs messages of the old model (ring collectives included). */
void sim_coll_plan_make(const sim_net *net, sim_coll op, const int *members, int n, int me, double size,
                        sim_coll_plan *plan, double *bytes_to);

/* Every member's plan of one call at once (the shape and NCCL's choice made
 * once): delay[j] (n entries) is member j's delay_s, and flow(ctx, j, k,
 * bytes) is called, member after member, for each k != j that member j
 * sends a non-zero bytes_to[k] (the same bytes as sim_coll_plan_make). */
usp_status sim_coll_plan_each(const sim_net *net, sim_coll op, const int *members, int n, double size,
                              double *delay, void (*flow)(void *ctx, int from, int to, double bytes), void *ctx);

#endif
