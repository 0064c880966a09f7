/* platform.c: the built-in platforms, written as SimGrid XML.
 *
 * Machine presets (h200x8, h100x8, a100x8, a800x8, l20x8, rtx4090x4,
 * a800-2n, h100-fattree) are servers redrawn from real machines' topologies
 * (sim/network/machine.c): GPUs, PCIe switches, sockets, NVSwitch, NICs and
 * rails, with the topology props from which the network layer (nccl.h)
 * decides NCCL's transport per pair; their links carry achieved bandwidth and
 * no latency (NCCL's latencies are the layer's). The other presets are plain
 * graphs without props, for which the layer keeps the route as given:
 * h200x2 (the fit of the measured NCCL send/recv between two H200,
 * sim/SOURCES.md: 105 us + bytes / 329 GB/s within 15% from 1 MiB to 1 GiB),
 * star (the closed forms of the tests), and SimGrid's torus and dragonfly
 * clusters. */
#define _POSIX_C_SOURCE 200809L /* open_memstream */
#include "usp/sim.h"
#include "machine.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------- the figures */

/* Fitted to sim/SOURCES.md "GPU-to-GPU links": 2x H200 over 18 NVLinks. */
static const double H200_PAIR_LAT_US = 105.0, H200_PAIR_GBPS = 329.0;
/* Generic torus/dragonfly/star links unless the spec says otherwise. */
static const double GENERIC_GBPS = 48.0, GENERIC_LAT_US = 1.0;

/* -------------------------------------------------------- XML building */

/* Resources and routes go to two streams: SimGrid wants every host, router
 * and link of a zone declared before its first route. */
typedef struct {
    FILE *res, *routes;
    char *res_buf, *routes_buf;
    size_t res_len, routes_len;
} xml_out;

static usp_status xml_open(xml_out *x) {
    memset(x, 0, sizeof *x);
    x->res = open_memstream(&x->res_buf, &x->res_len);
    x->routes = open_memstream(&x->routes_buf, &x->routes_len);
    if (!x->res || !x->routes) return usp_fail(USP_EINTERNAL, "out of memory writing a platform");
    return USP_OK;
}

static void xml_close(xml_out *x, FILE *f) {
    if (x->res) fclose(x->res);
    if (x->routes) fclose(x->routes);
    if (f) {
        if (x->res_buf) fputs(x->res_buf, f);
        if (x->routes_buf) fputs(x->routes_buf, f);
    }
    free(x->res_buf);
    free(x->routes_buf);
}

static void xml_host(xml_out *x, const char *id) {
    fprintf(x->res, "    <host id=\"%s\" speed=\"1Gf\"/>\n", id);
}

static void xml_router(xml_out *x, const char *id) {
    fprintf(x->res, "    <router id=\"%s\"/>\n", id);
}

static void xml_link(xml_out *x, const char *id, double gbps, double lat_us) {
    fprintf(x->res, "    <link id=\"%s\" bandwidth=\"%.6gGBps\" latency=\"%.6gus\" "
            "sharing_policy=\"SPLITDUPLEX\"/>\n", id, gbps, lat_us);
}

/* A route between neighbours through 1 to 3 links (NULL ends the list),
 * used both ways (the way back takes each split-duplex link in its other
 * direction). */
static void xml_route(xml_out *x, const char *src, const char *dst, const char *l1, const char *l2,
                      const char *l3) {
    const char *links[3] = {l1, l2, l3};
    fprintf(x->routes, "    <route src=\"%s\" dst=\"%s\" symmetrical=\"YES\">", src, dst);
    for (int i = 0; i < 3 && links[i]; i++) fprintf(x->routes, "<link_ctn id=\"%s\" direction=\"UP\"/>", links[i]);
    fprintf(x->routes, "</route>\n");
}

/* ------------------------------------------------------------- presets */

typedef struct preset preset;
typedef usp_status (*emit_fn)(const preset *ps, const usp_platform_params *p, xml_out *x);

struct preset {
    const char *name, *gpu, *about;
    int gpus_per_node;   /* 0: not node-based (torus, dragonfly, star) */
    int default_nodes;   /* 0: sized for the world */
    int fixed_size;      /* 1: --nodes does not apply */
    emit_fn emit;
    /* machine presets (sim/network/machine.c): the server, redrawn from a real
     * machine's topology, with NCCL's transports as props */
    void (*machine)(sim_machine *m, const usp_platform_params *p, int nodes);
};

/* Two H200 joined directly: one link with the fitted latency and bandwidth. */
static usp_status emit_h200x2(const preset *ps, const usp_platform_params *p, xml_out *x) {
    (void)ps; (void)p;
    xml_host(x, "gpu0");
    xml_host(x, "gpu1");
    xml_link(x, "nvlink", H200_PAIR_GBPS, H200_PAIR_LAT_US);
    xml_route(x, "gpu0", "gpu1", "nvlink", NULL, NULL);
    return USP_OK;
}

/* N hosts, each with one link to a central router: the closed forms of the
 * tests (a route is two links: 2 x lat + bytes / bw). */
static usp_status emit_star(const preset *ps, const usp_platform_params *p, xml_out *x) {
    (void)ps;
    double gbps = p->bw_gbps > 0 ? p->bw_gbps : GENERIC_GBPS;
    double lat = p->lat_us >= 0 ? p->lat_us : GENERIC_LAT_US;
    char host[32], link[48];
    xml_router(x, "center");
    for (int h = 0; h < p->nodes; h++) {
        snprintf(host, sizeof host, "host%d", h);
        snprintf(link, sizeof link, "host%d-link", h);
        xml_host(x, host);
        xml_link(x, link, gbps, lat);
        xml_route(x, host, "center", link, NULL, NULL);
    }
    return USP_OK;
}

/* SimGrid's TORUS cluster: one GPU per vertex, a link per neighbour pair. */
static usp_status emit_torus(const preset *ps, const usp_platform_params *p, xml_out *x) {
    (void)ps;
    int n = p->dims[0] * p->dims[1] * p->dims[2];
    fprintf(x->res, "  <cluster id=\"torus\" topology=\"TORUS\" topo_parameters=\"%d,%d,%d\" "
            "prefix=\"gpu\" radical=\"0-%d\" suffix=\"\" speed=\"1Gf\" bw=\"%.6gGBps\" lat=\"%.6gus\" "
            "sharing_policy=\"SPLITDUPLEX\"/>\n", p->dims[0], p->dims[1], p->dims[2], n - 1,
            p->bw_gbps > 0 ? p->bw_gbps : GENERIC_GBPS, p->lat_us >= 0 ? p->lat_us : GENERIC_LAT_US);
    return USP_OK;
}

/* SimGrid's DRAGONFLY cluster: groups of chassis of routers of hosts, one
 * link between each pair of groups, chassis and routers. */
static usp_status emit_dragonfly(const preset *ps, const usp_platform_params *p, xml_out *x) {
    (void)ps;
    int n = p->groups * p->chassis * p->routers * p->hosts_per_router;
    fprintf(x->res, "  <cluster id=\"dragonfly\" topology=\"DRAGONFLY\" "
            "topo_parameters=\"%d,1;%d,1;%d,1;%d\" prefix=\"gpu\" radical=\"0-%d\" suffix=\"\" "
            "speed=\"1Gf\" bw=\"%.6gGBps\" lat=\"%.6gus\" sharing_policy=\"SPLITDUPLEX\"/>\n",
            p->groups, p->chassis, p->routers, p->hosts_per_router, n - 1,
            p->bw_gbps > 0 ? p->bw_gbps : GENERIC_GBPS, p->lat_us >= 0 ? p->lat_us : GENERIC_LAT_US);
    return USP_OK;
}


/* ------------------------------------------------ machines (machine.c) */

/* Achieved bandwidths, per direction per GPU, GB/s. NVSwitch nodes: what
 * NCCL's ring collectives reach as bus bandwidth (the link's share after
 * protocol overhead): NVLink 4 (H100, H200) 370 of 450 ("NCCL can get an
 * effective NVLink bandwidth of 370GB/s", NVIDIA/nccl-tests issue 212); A100
 * 235 of 300 (NCCL's own cap for sm80 in src/graph/tuning.cc); A800 (8 of
 * A100's 12 NVLinks) 235 x 8/12. */
static const double NVL4_ACHIEVED_GBPS = 370.0, A100_ACHIEVED_GBPS = 235.0, A800_ACHIEVED_GBPS = 156.7;
/* PCIe Gen4 x16 as GPU DMA reaches it (24 of 31.5 GB/s: nvbandwidth and
 * p2pBandwidthLatencyTest on Gen4 servers report 24-26 GB/s); Gen5 x16 48. */
static const double PCIE3_ACHIEVED_GBPS = 12.0, PCIE4_ACHIEVED_GBPS = 24.0, PCIE5_ACHIEVED_GBPS = 48.0;
/* NVLink SHARP all-reduce on NVLink 4 NVSwitch nodes: busbw = 2 x link x eff;
 * fitted to the 480 GB/s peak of the ND H200 v5 table (sim/SOURCES.md, "NCCL
 * on NVSwitch nodes"): 480 / (2 x 370). */
static const double NVLS_EFF = 0.649;
/* NCCL's all-reduce on 8 A100 over NVSwitch, as the Azure ND A100 v4 table
 * (NCCL 2.18.5) shows it: 2-16 MB (LL128, NCCL's choice there) run at about
 * 0.8 of the link where NCCL's estimate says 0.92, and from 32 MB (Simple)
 * every row lies 150-200 us above the link rate, about 8 us per ring step
 * beyond NCCL's 3.4 us hwLat. Both fitted to that table (sim/SOURCES.md);
 * NCCL's choice still weighs its own figures. */
static const double A100_LL128_EFF = 0.8, A100_SIMPLE_STEP_US = 8.0;
/* Host memory and the CPU-to-CPU link under SHM traffic: machine.c's
 * defaults (fitted to NVIDIA/nccl issues 1603 and 1817). */
/* A PCIe Gen4 switch's x16 uplink to its CPU under SHM traffic (2 GPUs
 * behind it): fitted, with the CPU-to-CPU link, to the SHM all-to-all of
 * 8 x L20 (NVIDIA/nccl issue 1817); the spec's bw= overrides it. */
static const double L20_UPLINK_GBPS = 27.0;
/* Per collective call beyond NCCL's latency model, fitted to the smallest
 * sizes of each published table (sim/SOURCES.md): bare-metal PCIe servers. */
static const double PCIE_CALL_US = 10.0;
/* Where EFA cannot deliver 128-byte aligned writes in order, the network
 * plugin (aws-ofi-nccl, src/platform-aws.cpp) sets NCCL_PROTO=simple: LL and
 * LL128, whose flags ride in the data, would read torn lines. The aws-p4de
 * preset keeps Simple only between nodes (nccl.net_simple: its 8-byte row,
 * 164 us, is a Simple tree's time); p5's EFA (the plugin's RDMA write
 * protocol) keeps LL and LL128 (its 8-byte row, 69 us, is an LL tree's). */
/* One EFA device (100 Gb/s, 12.5 GB/s at line rate) as NCCL reaches it:
 * fitted to the 2 GB row of 2 x p4de all_reduce_perf (sim/SOURCES.md, "NCCL
 * between nodes"): 12.5 x 78.3 / 92.4. (A 400 Gb/s NIC: machine.c's default,
 * 48 GB/s.) */
static const double EFA_GBPS = 10.6;
/* The latency the EFA network plugin states to NCCL (aws-ofi-nccl,
 * src/platform-aws.cpp: 75 us for p4d, p4de and p5), which NCCL's choice adds
 * to every network step (twice with Simple). */
static const double EFA_PLUGIN_LAT_US = 75.0;
/* One EFA message (a tree chunk between nodes) costs this beyond its bytes:
 * fitted to the mid sizes (2-64 MB) of 2 x p5 all_reduce_perf, where NCCL's
 * tree chunks are 32-128 KB (sim/SOURCES.md, "NCCL between nodes"). */
static const double EFA_MSG_US = 2.0;

static void nvswitch_node(sim_machine *m, const char *name, int nodes, double nvl, double pcie, int nics) {
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", name);
    m->nodes = nodes;
    m->gpus = 8;
    m->sockets = 2;
    m->switches = 4;              /* HGX boards: 4 PCIe switches, 2 GPUs (and their NICs) on each */
    for (int k = 0; k < 4; k++) m->switch_socket[k] = k / 2;
    for (int g = 0; g < 8; g++) {
        m->gpu_switch[g] = g / 2;
        m->gpu_fabric[g] = 0;
        m->gpu_nic[g] = nics ? g * nics / 8 : -1;
    }
    m->nics = nics;
    for (int i = 0; i < nics; i++) m->nic_switch[i] = i * 4 / nics;
    m->nvlink_gbps = nvl;
    m->pcie_gbps = pcie;
    m->cpu_link_gbps = 40;
}

static void machine_h200x8(sim_machine *m, const usp_platform_params *p, int nodes) {
    (void)p;
    nvswitch_node(m, "h200x8", nodes, NVL4_ACHIEVED_GBPS, PCIE5_ACHIEVED_GBPS, 0);
    m->nvls_eff = NVLS_EFF;
    snprintf(m->about, sizeof m->about, "HGX H200: 8 GPUs on NVSwitch (NVLink 4, 450 GB/s per direction, %g "
             "achieved by NCCL), 4 PCIe Gen5 switches, 2 sockets", NVL4_ACHIEVED_GBPS);
}

static void machine_h100x8(sim_machine *m, const usp_platform_params *p, int nodes) {
    (void)p;
    nvswitch_node(m, "h100x8", nodes, NVL4_ACHIEVED_GBPS, PCIE5_ACHIEVED_GBPS, 0);
    m->nvls_eff = NVLS_EFF;
    snprintf(m->about, sizeof m->about, "DGX/HGX H100: 8 GPUs on NVSwitch (NVLink 4, 450 GB/s per direction, "
             "%g achieved by NCCL), 4 PCIe Gen5 switches, 2 sockets", NVL4_ACHIEVED_GBPS);
}

static void machine_a100x8(sim_machine *m, const usp_platform_params *p, int nodes) {
    (void)p;
    nvswitch_node(m, "a100x8", nodes, A100_ACHIEVED_GBPS, PCIE4_ACHIEVED_GBPS, 0);
    m->ll128_eff = A100_LL128_EFF;
    m->simple_step_us = A100_SIMPLE_STEP_US;
    snprintf(m->about, sizeof m->about, "DGX A100: 8 A100 SXM on NVSwitch (NVLink 3, 300 GB/s per direction, "
             "%g achieved by NCCL), 4 PCIe Gen4 switches, 2 sockets", A100_ACHIEVED_GBPS);
}

static void machine_a800x8(sim_machine *m, const usp_platform_params *p, int nodes) {
    (void)p;
    nvswitch_node(m, "a800x8", nodes, A800_ACHIEVED_GBPS, PCIE4_ACHIEVED_GBPS, 0);
    snprintf(m->about, sizeof m->about, "8 A800 SXM on NVSwitch (8 NVLink 3 links, 200 GB/s per direction, "
             "%.4g achieved), 4 PCIe Gen4 switches, 2 sockets", A800_ACHIEVED_GBPS);
}

/* Two nodes of 8 A800, 4 x 400 Gb/s RDMA NICs per node, NIC i on rail i,
 * shared by the two GPUs of its PCIe switch (GPUDirect RDMA). */
static void machine_a800_2n(sim_machine *m, const usp_platform_params *p, int nodes) {
    (void)p;
    nvswitch_node(m, "a800-2n", nodes, A800_ACHIEVED_GBPS, PCIE4_ACHIEVED_GBPS, 4);
    snprintf(m->about, sizeof m->about, "%d nodes of 8 A800 on NVSwitch (%.4g GB/s achieved per direction), "
             "4 x 400 Gb/s RDMA NICs per node (48 GB/s each), NIC i on rail i, GPUDirect RDMA", nodes,
             A800_ACHIEVED_GBPS);
}

/* Nodes of 8 H100, one 400 Gb/s NIC per GPU under its PCIe switch, NIC g of
 * every node on rail g, rails joined by a non-blocking spine. */
static void machine_h100_fattree(sim_machine *m, const usp_platform_params *p, int nodes) {
    (void)p;
    nvswitch_node(m, "h100-fattree", nodes, NVL4_ACHIEVED_GBPS, PCIE5_ACHIEVED_GBPS, 8);
    m->nvls_eff = NVLS_EFF;
    snprintf(m->about, sizeof m->about, "%d nodes of 8 H100 on NVSwitch (%g GB/s achieved per direction), "
             "one 400 Gb/s NIC per GPU (48 GB/s), rail-optimized, non-blocking spine", nodes, NVL4_ACHIEVED_GBPS);
}

/* 8 L20 (or L40S) without NVLink, as in NVIDIA/nccl issue 1817's server (bus
 * ids 12/13, 47/48 on socket 0, 91/92, c4/c5 on socket 1): 2 GPUs per PCIe
 * Gen4 switch, 2 switches per socket, 2 sockets. P2P under a switch, SHM
 * everywhere else: NCCL's choice on an Intel host, not the GPU's limit. The
 * L20, a data-center AD102 part unlike the GeForce Ada cards, does P2P over
 * PCIe: the same issue's NCCL_P2P_LEVEL=SYS run logs "0[0] -> 4[4] via
 * P2P/direct pointer" across the sockets (and was slower than SHM). With
 * p2p=sys (NCCL up to 2.22 on an AMD host, or NCCL_P2P_LEVEL=SYS) every pair
 * not under one switch is P2P through the CPU instead (transport.c). The USP
 * tables' L20 machine: "like a 2x4 grid (PCIe-switch+QPI)" in its author's
 * words (feifeibear/long-context-attention issue 73), QPI being Intel's link:
 * the Intel default, kept (sim/SOURCES.md, NCCL on PCIe servers). */
static void machine_l20x8(sim_machine *m, const usp_platform_params *p, int nodes) {
    (void)p;
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "l20x8");
    m->nodes = nodes;
    m->gpus = 8;
    m->sockets = 2;
    m->switches = 4;
    for (int k = 0; k < 4; k++) m->switch_socket[k] = k / 2;
    for (int g = 0; g < 8; g++) { m->gpu_switch[g] = g / 2; m->gpu_fabric[g] = -1; m->gpu_nic[g] = -1; }
    m->pcie_gbps = PCIE4_ACHIEVED_GBPS;
    m->uplink_gbps = p->bw_gbps > 0 ? p->bw_gbps : L20_UPLINK_GBPS;

    m->call_us = PCIE_CALL_US;
    snprintf(m->about, sizeof m->about, "8 L20 on PCIe Gen4 x16 (%g GB/s achieved), 2 per PCIe switch, 2 "
             "switches per socket, 2 sockets (NVIDIA/nccl issue 1817); no NVLink", PCIE4_ACHIEVED_GBPS);
}

/* 4 RTX 4090 on one socket's root ports, no PCIe switch (NVIDIA/nccl issue
 * 1603): every pair through the CPU, so SHM. */
static void machine_rtx4090x4(sim_machine *m, const usp_platform_params *p, int nodes) {
    (void)p;
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "rtx4090x4");
    m->nodes = nodes;
    m->gpus = 4;
    m->sockets = 1;
    for (int g = 0; g < 4; g++) { m->gpu_switch[g] = -1; m->gpu_fabric[g] = -1; m->gpu_nic[g] = -1; }
    m->pcie_gbps = PCIE4_ACHIEVED_GBPS;

    m->call_us = PCIE_CALL_US;
    snprintf(m->about, sizeof m->about, "4 RTX 4090 on PCIe Gen4 x16 root ports of one socket (%g GB/s "
             "achieved), no PCIe switch, no NVLink (NVIDIA/nccl issue 1603)", PCIE4_ACHIEVED_GBPS);
}

/* A PCIe server of the user's shape: gpus (8), per-switch GPUs per PCIe
 * switch (2; -1: every GPU on a CPU root port), sockets (2), gen (4). */
static void machine_pcie(sim_machine *m, const usp_platform_params *p, int nodes) {
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "pcie");
    m->nodes = nodes;
    m->gpus = p->gpus > 0 ? p->gpus : 8;
    m->sockets = p->sockets > 0 ? p->sockets : 2;
    int per = p->per_switch ? p->per_switch : 2, gen = p->pcie_gen ? p->pcie_gen : 4;
    m->switches = per > 0 ? (m->gpus + per - 1) / per : 0;
    for (int k = 0; k < m->switches; k++) m->switch_socket[k] = k * m->sockets / m->switches;
    for (int g = 0; g < m->gpus; g++) {
        m->gpu_switch[g] = per > 0 ? g / per : -1;
        m->gpu_socket[g] = g * m->sockets / m->gpus;
        m->gpu_fabric[g] = -1;
        m->gpu_nic[g] = -1;
    }
    m->pcie_gbps = gen == 3 ? PCIE3_ACHIEVED_GBPS : gen == 5 ? PCIE5_ACHIEVED_GBPS : PCIE4_ACHIEVED_GBPS;
    m->uplink_gbps = m->pcie_gbps;

    m->call_us = PCIE_CALL_US;
    snprintf(m->about, sizeof m->about, "%d GPUs on PCIe Gen%d (%g GB/s achieved), %s, %d socket%s; no NVLink",
             m->gpus, gen, m->pcie_gbps, per > 0 ? "GPUs under PCIe switches" : "GPUs on CPU root ports",
             m->sockets, m->sockets > 1 ? "s" : "");
    if (per > 0) snprintf(m->about + strlen(m->about), sizeof m->about - strlen(m->about), " (%d per switch)", per);
}

/* AWS p4de.24xlarge: 8 A100 80GB on NVSwitch, 4 x 100 Gb/s EFA per node, EFA
 * i under the PCIe switch of GPUs 2i and 2i+1 (GPUDirect RDMA). */
static void machine_aws_p4de(sim_machine *m, const usp_platform_params *p, int nodes) {
    (void)p;
    nvswitch_node(m, "aws-p4de", nodes, A100_ACHIEVED_GBPS, PCIE4_ACHIEVED_GBPS, 4);
    m->nic_gbps = EFA_GBPS;
    m->net_simple = 1;
    m->net_lat_us = EFA_PLUGIN_LAT_US;
    m->net_msg_us = EFA_MSG_US;
    m->call_us = 72;
    snprintf(m->about, sizeof m->about, "%d x AWS p4de.24xlarge: 8 A100 80GB on NVSwitch (%g GB/s achieved), "
             "4 x 100 Gb/s EFA per node (%g GB/s each), GPUDirect RDMA", nodes, A100_ACHIEVED_GBPS, EFA_GBPS);
}

/* AWS p5.48xlarge: 8 H100 on NVSwitch, 32 x 100 Gb/s EFA per node, 4 per GPU
 * (drawn as one 50 GB/s NIC per GPU). */
static void machine_aws_p5(sim_machine *m, const usp_platform_params *p, int nodes) {
    (void)p;
    nvswitch_node(m, "aws-p5", nodes, NVL4_ACHIEVED_GBPS, PCIE5_ACHIEVED_GBPS, 8);
    m->nic_gbps = 4 * EFA_GBPS;
    m->nvls_eff = NVLS_EFF;
    m->net_lat_us = EFA_PLUGIN_LAT_US;
    m->net_msg_us = EFA_MSG_US;
    m->cpu_amd = 1; /* p5.48xlarge: AMD EPYC (AWS's instance page) */
    m->call_us = 28;
    snprintf(m->about, sizeof m->about, "%d x AWS p5.48xlarge: 8 H100 on NVSwitch (%g GB/s achieved, NVLS), "
             "32 x 100 Gb/s EFA per node, 4 per GPU (%g GB/s per GPU), GPUDirect RDMA", nodes, NVL4_ACHIEVED_GBPS,
             4 * EFA_GBPS);
}

static const preset PRESETS[] = {
    {"h200x8", "h200", "1 node, 8 H200 on NVSwitch (NVLink 4: 450 GB/s per direction, 370 achieved by NCCL), "
     "4 PCIe Gen5 switches, 2 sockets", 8, 1, 1, NULL, machine_h200x8},
    {"h200x2", "h200", "2 H200 joined by 18 NVLinks, fitted to the measured NCCL send/recv "
     "(105 us + bytes / 329 GB/s)", 2, 1, 1, emit_h200x2, NULL},
    {"h100x8", "h100", "1 node, 8 H100 on NVSwitch (NVLink 4: 450 GB/s per direction, 370 achieved by NCCL), "
     "4 PCIe Gen5 switches, 2 sockets", 8, 1, 1, NULL, machine_h100x8},
    {"a100x8", "a100", "1 node, 8 A100 SXM on NVSwitch (NVLink 3: 300 GB/s per direction, 235 achieved by NCCL)",
     8, 1, 1, NULL, machine_a100x8},
    {"a800x8", "a800", "1 node, 8 A800 SXM on NVSwitch (200 GB/s per direction, 157 achieved)", 8, 1, 1, NULL,
     machine_a800x8},
    {"l20x8", "l20", "1 node, 8 L20 on PCIe Gen4, 2 per PCIe switch, 2 switches per socket, 2 sockets, "
     "no NVLink (P2P under a switch, SHM elsewhere)", 8, 1, 1, NULL, machine_l20x8},
    {"rtx4090x4", "l20", "1 node, 4 RTX 4090 on one socket's PCIe Gen4 root ports (SHM between all pairs)",
     4, 1, 1, NULL, machine_rtx4090x4},
    {"a800-2n", "a800", "2 nodes of 8 A800 on NVSwitch (157 GB/s achieved), 4 x 400 Gb/s RDMA NICs per node "
     "on 4 rails", 8, 2, 0, NULL, machine_a800_2n},
    {"h100-fattree", "h100", "N nodes of 8 H100 on NVSwitch, one 400 Gb/s NIC per GPU, "
     "rail-optimized, non-blocking spine", 8, 0, 0, NULL, machine_h100_fattree},
    {"pcie", "l20", "1 node of PCIe GPUs of your shape (gpus, per-switch (-1: root ports), sockets, gen, mem, "
     "upi): P2P under a switch, SHM elsewhere", 8, 1, 1, NULL, machine_pcie},
    {"aws-p4de", "a100", "N x AWS p4de.24xlarge: 8 A100 on NVSwitch, 4 x 100 Gb/s EFA per node", 8, 2, 0, NULL,
     machine_aws_p4de},
    {"aws-p5", "h100", "N x AWS p5.48xlarge: 8 H100 on NVSwitch (NVLS), 32 x 100 Gb/s EFA per node", 8, 2, 0, NULL,
     machine_aws_p5},
    {"torus", "h100", "3-D torus, one GPU per vertex (dims=AxBxC, bw, lat)", 0, 0, 0, emit_torus, NULL},
    {"dragonfly", "h100", "dragonfly (groups, chassis, routers, hosts per router, bw, lat)",
     0, 0, 0, emit_dragonfly, NULL},
    {"star", "h200", "N hosts on one router, one link each (nodes, bw, lat): for closed forms",
     0, 0, 0, emit_star, NULL},
};
enum { NPRESETS = sizeof PRESETS / sizeof PRESETS[0] };

static const preset *find_preset(const char *name) {
    for (int i = 0; i < NPRESETS; i++)
        if (strcmp(PRESETS[i].name, name) == 0) return &PRESETS[i];
    return NULL;
}

const char *const *usp_platform_presets(void) {
    static const char *names[NPRESETS + 1];
    for (int i = 0; i < NPRESETS; i++) names[i] = PRESETS[i].name;
    names[NPRESETS] = NULL;
    return names;
}

const char *usp_platform_describe(const char *name) {
    const preset *ps = find_preset(name);
    return ps ? ps->about : NULL;
}

const char *usp_platform_gpu(const char *name) {
    const preset *ps = find_preset(name);
    return ps ? ps->gpu : NULL;
}

/* ---------------------------------------------------------------- sizing */

/* Splits n into three factors as equal as possible (largest first). */
static void near_cube(int n, int dims[3]) {
    dims[0] = dims[1] = dims[2] = 1;
    int rest = n;
    for (int k = 0; k < 3; k++) {
        int want = (int)llround(pow(rest, 1.0 / (3 - k)));
        int best = 1;
        for (int d = 1; d <= rest; d++)
            if (rest % d == 0 && abs(d - want) < abs(best - want)) best = d;
        dims[k] = best;
        rest /= best;
    }
}

/* Dragonfly sized up from 4 hosts per router, 4 routers per chassis,
 * 4 chassis per group, then as many groups as needed. */
static void size_dragonfly(int world, usp_platform_params *p) {
    if (!p->hosts_per_router) p->hosts_per_router = world < 4 ? world : 4;
    int per_router = p->hosts_per_router;
    if (!p->routers) { int r = (world + per_router - 1) / per_router; p->routers = r < 4 ? r : 4; }
    int per_chassis = per_router * p->routers;
    if (!p->chassis) { int c = (world + per_chassis - 1) / per_chassis; p->chassis = c < 4 ? c : 4; }
    int per_group = per_chassis * p->chassis;
    if (!p->groups) p->groups = (world + per_group - 1) / per_group;
}

static int hosts_of(const preset *ps, const usp_platform_params *p) {
    if (ps->emit == emit_torus) return p->dims[0] * p->dims[1] * p->dims[2];
    if (ps->emit == emit_dragonfly) return p->groups * p->chassis * p->routers * p->hosts_per_router;
    if (ps->emit == emit_star) return p->nodes;
    if (ps->machine == machine_pcie && p->gpus) return p->gpus;
    return ps->gpus_per_node * (p->nodes ? p->nodes : ps->default_nodes);
}

/* Fills the sizes the spec left open from the world; refuses what cannot hold it. */
static usp_status size_for_world(const preset *ps, usp_platform_params *p, int world) {
    int need = world > 0 ? world : 8;
    if (ps->emit == emit_torus && !p->dims[0]) near_cube(need, p->dims);
    if (ps->emit == emit_dragonfly) size_dragonfly(need, p);
    if (ps->emit == emit_star && !p->nodes) p->nodes = need;
    if (ps->gpus_per_node && !ps->fixed_size && !p->nodes && !ps->default_nodes)
        p->nodes = (need + ps->gpus_per_node - 1) / ps->gpus_per_node;
    if (ps->fixed_size && p->nodes && p->nodes != ps->default_nodes)
        return usp_fail(USP_EINVAL, "preset %s has a fixed size (nodes=%d does not apply)", ps->name, p->nodes);
    int hosts = hosts_of(ps, p);
    if (hosts < 1) return usp_fail(USP_EINVAL, "preset %s: sizes give no hosts", ps->name);
    if (world > 0 && hosts < world)
        return usp_fail(USP_EINVAL, "platform %s has %d GPUs, fewer than the %d ranks", ps->name, hosts, world);
    return USP_OK;
}

/* --------------------------------------------------------------- caveats */

/* Where published end-to-end runs put the model of a machine far off. The
 * all-to-all through host memory: on the 8 x L20 of the USP report (Table 4,
 * and the authors' README table of the same machine) the rows of ulysses 8 took
 * 1.4-7x the time simulated, ulysses 4 up to 3x, while ulysses 2 (one PCIe switch)
 * and the rings took 0.65-1.17x; nccl-tests' all-to-all of such a server, which
 * the model is fitted to, does not show it (traces/README.md, "The 8 x L20
 * table"). tests/test_published.c holds these figures to the tables. */
static const char SHM_A2A_CAVEAT[] =
    "its all-to-alls go through host memory (NCCL's SHM transport between GPUs under different PCIe "
    "switches or sockets): in the only published end-to-end runs of such a machine (USP on 8 x L20) "
    "they took 1.4-7x the time simulated at ulysses 8 and up to 3x at ulysses 4, more at shorter "
    "sequences, so splits with a large ulysses degree rank too high here (traces/README.md, "
    "'The 8 x L20 table')";

/* A send/recv ring across more than two nodes: on the one published cluster of
 * such rings (10 nodes of 8 H100, nccl-tests' sendrecv_perf) it ran at 24.8-26.2
 * GB/s a GPU with 1-4 GPUs a node and 15.2 with 8, against the 48 simulated; pairs
 * of nodes at 40-46, within 20% of the model (traces/README.md, "Published
 * nccl-tests results"). tests/test_nccl.c holds the figures to the file. */
static const char RING_NODES_CAVEAT[] =
    "its ring crosses more than two nodes: on the one published cluster of such rings (nccl-tests on "
    "10 nodes of 8 H100) a send/recv ring across the nodes ran at 0.3-0.6 of the rate simulated here, "
    "while pairs of nodes ran within 20% of it, so the ring's hops between nodes may take up to 3x "
    "the simulated time (traces/README.md, 'Published nccl-tests results')";

/* 1 if GPUs a and b (numbered across nodes) talk through host memory: the
 * rule of sim_net_transport (transport.c) on the machine's drawing. */
static int pair_shm(const sim_machine *m, int a, int b) {
    const int ga = a % m->gpus, gb = b % m->gpus;
    if (a / m->gpus != b / m->gpus || m->p2p_sys) return 0;   /* the network; P2P through the CPU */
    if (m->gpu_fabric[ga] >= 0 && m->gpu_fabric[ga] == m->gpu_fabric[gb]) return 0;
    return !(m->gpu_switch[ga] >= 0 && m->gpu_switch[ga] == m->gpu_switch[gb] &&
             m->gpu_socket[ga] == m->gpu_socket[gb]);
}

/* The groups of `size` ranks g + k * stride (k < size) from each rank whose
 * (g / stride) % size is 0: 1 when one holds a pair on SHM (shm), or spans more
 * than two nodes (!shm). */
static int groups_hit(const sim_machine *m, int world, const usp_platform_group *grp, int shm) {
    if (grp->size < 2 || grp->stride < 1) return 0;
    for (int g = 0; g < world; g++) {
        if ((g / grp->stride) % grp->size != 0) continue;
        int nodes[3], nn = 0;
        for (int a = 0; a < grp->size && g + a * grp->stride < world; a++) {
            const int ra = g + a * grp->stride;
            if (shm) {
                for (int b = a + 1; b < grp->size; b++)
                    if (g + b * grp->stride < world && pair_shm(m, ra, g + b * grp->stride)) return 1;
                continue;
            }
            int node = ra / m->gpus, seen = 0;
            for (int k = 0; k < nn; k++) seen |= nodes[k] == node;
            if (!seen) {
                if (nn == 2) return 1;
                nodes[nn++] = node;
            }
        }
    }
    return 0;
}

const char *usp_platform_caveat_groups(const char *spec, int world, const usp_platform_group *a2a,
                                       const usp_platform_group *ring) {
    char name[64];
    usp_platform_params p;
    if (!spec || !usp_platform_is_preset(spec) || usp_platform_parse_spec(spec, name, sizeof name, &p) != USP_OK)
        return NULL;
    const preset *ps = find_preset(name);
    if (!ps->machine || size_for_world(ps, &p, world) != USP_OK) return NULL;
    sim_machine m;
    ps->machine(&m, &p, p.nodes ? p.nodes : ps->default_nodes);
    if (p.p2p_level) m.p2p_sys = p.p2p_level == 2;
    if (a2a && groups_hit(&m, world, a2a, 1)) return SHM_A2A_CAVEAT;
    if (ring && groups_hit(&m, world, ring, 0)) return RING_NODES_CAVEAT;
    return NULL;
}

const char *usp_platform_caveat(const char *spec, const usp_config *c) {
    const int inner = c->layout == USP_LAYOUT_ULYSSES_INNER;
    const usp_platform_group a2a = {c->ulysses, inner ? 1 : c->ring}, ring = {c->ring, inner ? c->ulysses : 1};
    return usp_platform_caveat_groups(spec, c->ulysses * c->ring, &a2a, &ring);
}

/* ---------------------------------------------------------------- specs */

static usp_status parse_dims(const char *v, int dims[3]) {
    int n = sscanf(v, "%dx%dx%d", &dims[0], &dims[1], &dims[2]);
    if (n == 2) dims[2] = 1;
    if (n < 2 || dims[0] < 1 || dims[1] < 1 || dims[2] < 1)
        return usp_fail(USP_EINVAL, "dims '%s' is not AxB or AxBxC with positive sizes", v);
    return USP_OK;
}

static usp_status parse_positive_int(const char *key, const char *v, int *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (end == v || *end || x < 1 || x > 1000000)
        return usp_fail(USP_EINVAL, "%s '%s' is not an integer in 1..1000000", key, v);
    *out = (int)x;
    return USP_OK;
}

static usp_status parse_positive_double(const char *key, const char *v, int allow_zero, double *out) {
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end || !isfinite(x) || x < 0 || (!allow_zero && x == 0))
        return usp_fail(USP_EINVAL, "%s '%s' is not a %s number", key, v, allow_zero ? "non-negative" : "positive");
    *out = x;
    return USP_OK;
}

static usp_status apply_key(const char *key, const char *v, usp_platform_params *p) {
    if (!strcmp(key, "nodes") || !strcmp(key, "hosts")) return parse_positive_int(key, v, &p->nodes);
    if (!strcmp(key, "dims")) return parse_dims(v, p->dims);
    if (!strcmp(key, "groups")) return parse_positive_int(key, v, &p->groups);
    if (!strcmp(key, "chassis")) return parse_positive_int(key, v, &p->chassis);
    if (!strcmp(key, "routers")) return parse_positive_int(key, v, &p->routers);
    if (!strcmp(key, "hosts-per-router")) return parse_positive_int(key, v, &p->hosts_per_router);
    if (!strcmp(key, "bw")) return parse_positive_double(key, v, 0, &p->bw_gbps);
    if (!strcmp(key, "lat")) return parse_positive_double(key, v, 1, &p->lat_us);
    if (!strcmp(key, "gpus")) return parse_positive_int(key, v, &p->gpus);
    if (!strcmp(key, "per-switch")) {
        if (!strcmp(v, "-1") || !strcmp(v, "0")) { p->per_switch = -1; return USP_OK; }
        return parse_positive_int(key, v, &p->per_switch);
    }
    if (!strcmp(key, "sockets")) return parse_positive_int(key, v, &p->sockets);
    if (!strcmp(key, "gen")) {
        USP_TRY(parse_positive_int(key, v, &p->pcie_gen));
        if (p->pcie_gen < 3 || p->pcie_gen > 5) return usp_fail(USP_EINVAL, "gen '%s' is not 3, 4 or 5", v);
        return USP_OK;
    }
    if (!strcmp(key, "mem")) return parse_positive_double(key, v, 0, &p->mem_gbps);
    if (!strcmp(key, "upi")) return parse_positive_double(key, v, 0, &p->cpu_link_gbps);
    if (!strcmp(key, "call-us")) return parse_positive_double(key, v, 1, &p->call_us);
    if (!strcmp(key, "nvls")) { /* 0 turns NVLS off: kept as 2, which the writer reads as off */
        USP_TRY(parse_positive_double(key, v, 1, &p->nvls_eff));
        if (p->nvls_eff == 0 || p->nvls_eff > 1) p->nvls_eff = 2;
        return USP_OK;
    }
    if (!strcmp(key, "a2a")) return parse_positive_double(key, v, 0, &p->a2a_eff);
    if (!strcmp(key, "channels")) return parse_positive_int(key, v, &p->channels);
    if (!strcmp(key, "p2p")) {
        if (!strcmp(v, "pxb")) p->p2p_level = 1;
        else if (!strcmp(v, "sys")) p->p2p_level = 2;
        else return usp_fail(USP_EINVAL, "p2p '%s' is not pxb or sys", v);
        return USP_OK;
    }
    return usp_fail(USP_EINVAL, "unknown platform parameter '%s' (nodes, dims, groups, chassis, "
                    "routers, hosts-per-router, bw, lat; machine presets: gpus, per-switch, sockets, gen, mem, "
                    "upi, call-us, nvls, a2a, channels, p2p)", key);
}

static void params_clear(usp_platform_params *p) {
    memset(p, 0, sizeof *p);
    p->lat_us = -1; /* 0 is a valid latency */
}

int usp_platform_is_preset(const char *spec) {
    char name[64];
    size_t n = strcspn(spec, ":");
    if (n >= sizeof name) return 0;
    memcpy(name, spec, n);
    name[n] = '\0';
    return find_preset(name) != NULL;
}

static usp_status unknown_preset(const char *name) {
    char list[256] = "";
    for (int i = 0; i < NPRESETS; i++) {
        strncat(list, PRESETS[i].name, sizeof list - strlen(list) - 1);
        if (i + 1 < NPRESETS) strncat(list, ", ", sizeof list - strlen(list) - 1);
    }
    return usp_fail(USP_EINVAL, "unknown platform preset '%s' (presets: %s; or a SimGrid .xml file)", name, list);
}

usp_status usp_platform_parse_spec(const char *spec, char *name, size_t n, usp_platform_params *p) {
    params_clear(p);
    size_t len = strcspn(spec, ":");
    if (len >= n) return unknown_preset(spec);
    memcpy(name, spec, len);
    name[len] = '\0';
    if (!find_preset(name)) return unknown_preset(name);
    if (!spec[len]) return USP_OK;
    char *rest = strdup(spec + len + 1), *save = NULL;
    if (!rest) return usp_fail(USP_EINTERNAL, "out of memory");
    usp_status st = USP_OK;
    for (char *kv = strtok_r(rest, ",", &save); kv && st == USP_OK; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq) { st = usp_fail(USP_EINVAL, "platform parameter '%s' is not key=value", kv); break; }
        *eq = '\0';
        st = apply_key(kv, eq + 1, p);
    }
    free(rest);
    if (st != USP_OK) usp_error_prefix("platform %s: ", spec);
    return st;
}

/* --------------------------------------------------------------- writing */

/* Torus and dragonfly are SimGrid clusters, a zone of their own. */
static int is_cluster(const preset *ps) { return ps->emit == emit_torus || ps->emit == emit_dragonfly; }

static void write_header(FILE *f, const preset *ps, const usp_platform_params *p) {
    fprintf(f, "<?xml version='1.0'?>\n"
            "<!DOCTYPE platform SYSTEM \"https://simgrid.org/simgrid.dtd\">\n"
            "<!-- usp preset %s: %s.\n", ps->name, ps->about);
    if (ps->gpus_per_node && !ps->fixed_size) fprintf(f, "     nodes=%d\n", p->nodes ? p->nodes : ps->default_nodes);
    if (ps->emit == emit_h200x2)
        fprintf(f, "     The link is the fit of the measured NCCL send/recv between two H200 (sim/SOURCES.md);\n"
                "     no topology props: every message takes this route, no NCCL costs added.\n");
    fprintf(f, "-->\n<platform version=\"4.1\">\n");
    if (!is_cluster(ps)) fprintf(f, "  <zone id=\"%s\" routing=\"DijkstraCache\">\n", ps->name);
}

usp_status usp_platform_write(const char *name, const usp_platform_params *params, int world, FILE *f) {
    const preset *ps = find_preset(name);
    if (!ps) return unknown_preset(name);
    usp_platform_params p;
    if (params) p = *params;
    else params_clear(&p);
    USP_TRY(size_for_world(ps, &p, world));
    xml_out x;
    if (ps->machine) {
        sim_machine m;
        ps->machine(&m, &p, p.nodes ? p.nodes : ps->default_nodes);
        /* the spec's overrides of the preset's figures */
        if (p.mem_gbps > 0) m.host_mem_gbps = p.mem_gbps;
        if (p.cpu_link_gbps > 0) m.cpu_link_gbps = p.cpu_link_gbps;
        if (p.call_us > 0) m.call_us = p.call_us;
        if (p.nvls_eff > 0) m.nvls_eff = p.nvls_eff > 1 ? 0 : p.nvls_eff;
        if (p.a2a_eff > 0) m.a2a_eff = p.a2a_eff;
        if (p.channels > 0) m.channels = p.channels;
        if (p.p2p_level) m.p2p_sys = p.p2p_level == 2;
        sim_machine_complete(&m);
        return sim_machine_write(&m, f);
    }
    usp_status st = xml_open(&x);
    if (st == USP_OK) st = ps->emit(ps, &p, &x);
    if (st == USP_OK) write_header(f, ps, &p);
    xml_close(&x, st == USP_OK ? f : NULL);
    if (st != USP_OK) return st;
    fprintf(f, "%s</platform>\n", is_cluster(ps) ? "" : "  </zone>\n");
    if (ferror(f)) return usp_fail(USP_EINTERNAL, "cannot write the platform");
    return USP_OK;
}
