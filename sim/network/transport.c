/* transport.c: the transport NCCL picks for each pair of GPUs, and the fixed
 * costs of a platform.
 *
 * Input: the SimGrid hosts of a communicator's ranks, with the topology props
 * of nccl.h (node, socket, pcie_switch, nvlink, nic, gdr) and the zone props
 * nccl.* of the platform's outer zone. Output: sim_net, which the collectives
 * (collectives.c) read.
 *
 * NCCL's rules (src/graph/paths.cc, src/transport/p2p.cc and shm.cc; the
 * sim/SOURCES.md notes on PCIe servers):
 *   - P2P over NVLink when both GPUs are on one NVLink fabric (NVSwitch);
 *   - P2P over PCIe when the path between the GPUs stays under a common
 *     PCIe switch (P2P level PATH_PXB): "CPUs make very poor PCI switches"
 *     (NVIDIA/nccl issue 1603), so a path through the CPU uses SHM instead.
 *     That is NCCL's default on Intel, ARM and Zhaoxin hosts, and on every
 *     host with more than 2 GPUs since NCCL 2.23; before NCCL 2.23.4
 *     (September 2024) the default elsewhere, AMD hosts among them, was
 *     PATH_SYS: P2P through the CPU between every pair (paths.cc,
 *     ncclTopoCheckP2p). A platform with zone prop nccl.p2p_level = "sys"
 *     (platform key p2p=sys; NCCL_P2P_LEVEL=SYS does the same) gets that;
 *   - SHM otherwise inside a node: the sender's GPU writes into pinned host
 *     memory, the receiver's GPU reads it (two DMA hops);
 *   - between nodes the network, GPUDirect RDMA when the GPU and its NIC
 *     share a PCIe switch (NCCL's default GDR level), else through host memory. */
#include "nccl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <simgrid/host.h>
#include <simgrid/zone.h>

#include "usp/error.h"

static const char *const XPORT_NAMES[SIM_XPORT_COUNT] = {
    "route", "local", "nvlink", "pcie", "pcie-cpu", "shm", "net-gdr", "net",
};

const char *sim_xport_name(sim_xport x) { return x >= 0 && x < SIM_XPORT_COUNT ? XPORT_NAMES[x] : "?"; }

/* ------------------------------------------------------- the defaults */

/* Per collective call: what nccl-tests measures at 8 bytes beyond NCCL's own
 * latency model (kernel launch and the first handshake). 10 us is the small-
 * size time of all_reduce_perf on one NVSwitch node less NCCL's ring LL
 * latency; platforms state their own (zone prop nccl.call_us). */
static const double DEFAULT_CALL_US = 10.0;
/* Per pipeline step on top of NCCL's hwLat, by transport: SHM adds the host
 * memory round trip (a flag write and a poll through PCIe, about 2 us each
 * way); the network without GPUDirect adds the host bounce (about 2 us). */
static const double DEFAULT_EXTRA_HOP_US[SIM_XPORT_COUNT] = {0, 0, 0, 0, 0, 4.0, 0, 2.0};
/* All-to-all over NVSwitch: the fraction of the per-GPU link bandwidth (as
 * the ring collectives reach it) that the grouped send/recv reaches: 4 x H100
 * on NVSwitch, alltoall_perf at 500 MiB, busbw 334.9 GB/s = 0.905 x 370
 * (NVIDIA/nccl issue 2169; sim/SOURCES.md). nccl.a2a_eff overrides it. */
static const double DEFAULT_A2A_EFF = 0.9;
/* All-to-all over P2P through the CPU: the fraction of the pair's route (the
 * path an SHM flow takes) that its flows reach. 4 x RTX 4090 on one socket,
 * no PCIe switch, alltoall_perf peak busbw 18 GB/s over SHM and 2 GB/s with
 * NCCL_P2P_LEVEL=SYS (NVIDIA/nccl issue 1603; sim/SOURCES.md): 2 / 18. Many
 * interleaved flows through the root complex collapse ("P2P would cause a
 * significant performance degradation when using many GPUs, and therefore
 * many interleaved data flows": NCCL 2.23.4's release notes); one flow per
 * GPU does not (the same machine's all-reduce ring: 22 GB/s over P2P, 18 over
 * SHM), so ring collectives and send/recv keep the route's rate.
 * nccl.cpu_p2p_a2a_eff overrides it. */
static const double DEFAULT_CPU_P2P_A2A_EFF = 2.0 / 18.0;

/* ------------------------------------------------------- reading props */

static int int_prop(sg_host_t h, const char *name, int dflt, int *found) {
    const char *v = sg_host_get_property_value(h, name);
    if (!v) return dflt;
    if (found) *found = 1;
    char *end;
    long x = strtol(v, &end, 10);
    return end == v ? dflt : (int)x;
}

static const char *zone_string(const char *name) {
    sg_netzone_t z = sg_zone_get_root();
    return z ? sg_zone_get_property_value(z, name) : NULL;
}

static double zone_double(const char *name, double dflt) {
    sg_netzone_t z = sg_zone_get_root();
    const char *v = z ? sg_zone_get_property_value(z, name) : NULL;
    if (!v) return dflt;
    char *end;
    double x = strtod(v, &end);
    return end == v || x < 0 ? dflt : x;
}

static void load_costs(sim_net_costs *c) {
    c->call_s = zone_double("nccl.call_us", DEFAULT_CALL_US) * 1e-6;
    for (int x = 0; x < SIM_XPORT_COUNT; x++) {
        char name[64];
        snprintf(name, sizeof name, "nccl.lat_us.%s", XPORT_NAMES[x]);
        c->hop_s[x] = zone_double(name, DEFAULT_EXTRA_HOP_US[x]) * 1e-6;
    }
    c->a2a_eff = zone_double("nccl.a2a_eff", DEFAULT_A2A_EFF);
    if (c->a2a_eff <= 0 || c->a2a_eff > 1) c->a2a_eff = DEFAULT_A2A_EFF;
    c->nvls_eff = zone_double("nccl.nvls_eff", 0);
    if (c->nvls_eff > 1) c->nvls_eff = 0;
    c->channels = (int)zone_double("nccl.channels", 0);
    c->net_simple = zone_double("nccl.net_simple", 0) > 0;
    const char *level = zone_string("nccl.p2p_level");
    c->p2p_sys = level && strcmp(level, "sys") == 0;
    c->net_lat_s = zone_double("nccl.net_lat_us", 0) * 1e-6;
    c->net_msg_s = zone_double("nccl.net_msg_us", 0) * 1e-6;
    const char *cpu = zone_string("nccl.cpu");
    c->cpu_amd = cpu && strcmp(cpu, "amd") == 0;
    c->ll128_eff = zone_double("nccl.ll128_eff", 0);
    if (c->ll128_eff > 1) c->ll128_eff = 0;
    c->simple_step_s = zone_double("nccl.simple_step_us", 0) * 1e-6;
    c->cpu_p2p_a2a_eff = zone_double("nccl.cpu_p2p_a2a_eff", DEFAULT_CPU_P2P_A2A_EFF);
    if (c->cpu_p2p_a2a_eff <= 0 || c->cpu_p2p_a2a_eff > 1) c->cpu_p2p_a2a_eff = DEFAULT_CPU_P2P_A2A_EFF;
}

usp_status sim_net_load(sim_net *net, sg_host_t *hosts, int n) {
    memset(net, 0, sizeof *net);
    net->n = n;
    net->hosts = hosts;
    net->gpus = calloc((size_t)(n > 0 ? n : 1), sizeof *net->gpus);
    if (!net->gpus) return usp_fail(USP_EINTERNAL, "out of memory");
    net->known = n > 0;
    for (int i = 0; i < n; i++) {
        sim_gpu_topo *g = &net->gpus[i];
        int found = 0;
        g->node = int_prop(hosts[i], "node", 0, &found);
        if (!found) net->known = 0;
        g->socket = int_prop(hosts[i], "socket", 0, NULL);
        g->pcie_switch = int_prop(hosts[i], "pcie_switch", -1, NULL);
        g->nic = int_prop(hosts[i], "nic", -1, NULL);
        g->gdr = int_prop(hosts[i], "gdr", 0, NULL);
        const char *nv = sg_host_get_property_value(hosts[i], "nvlink");
        snprintf(g->nvlink, sizeof g->nvlink, "%s", nv ? nv : "");
    }
    load_costs(&net->costs);
    return USP_OK;
}

void sim_net_free(sim_net *net) {
    free(net->gpus);
    net->gpus = NULL;
}

/* ------------------------------------------------------- the transport */

sim_xport sim_net_transport(const sim_net *net, int a, int b) {
    if (a == b) return SIM_XPORT_LOCAL;
    if (!net->known) return SIM_XPORT_ROUTE;
    const sim_gpu_topo *x = &net->gpus[a], *y = &net->gpus[b];
    if (x->node != y->node) return x->gdr && y->gdr ? SIM_XPORT_NET_GDR : SIM_XPORT_NET;
    if (x->nvlink[0] && strcmp(x->nvlink, y->nvlink) == 0) return SIM_XPORT_NVLINK;
    if (x->pcie_switch >= 0 && x->pcie_switch == y->pcie_switch && x->socket == y->socket) return SIM_XPORT_PCIE;
    return net->costs.p2p_sys ? SIM_XPORT_PCIE_CPU : SIM_XPORT_SHM;
}
