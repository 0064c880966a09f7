/* machine.c: a sim_machine as SimGrid XML with the topology props of nccl.h.
 *
 * The graph, per node (names gain "node<k>-" on several nodes):
 *   gpu<g> --nvlink--> nvswitch<f>                     (its NVLink fabric)
 *   gpu<g> --pcie, pcie-port--> pcie-switch<k>         (or its CPU, through the
 *                                                       socket's host memory)
 *   pcie-switch<k> --up, cpu<s>-mem--> cpu<s>           (host memory on the way:
 *                                                       SHM crosses it twice)
 *   cpu<a> --cpu-link--> cpu<b>                         (shared both ways)
 *   gpu<g> --pcie, nic<i>, nic<i>-port--> rail<i>         (i: the GPU's NIC)
 *   rail<i> --rail<i>-up--> spine                       (non-blocking)
 * SimGrid's DijkstraCache routes by the fewest links: NVLink peers are 2 links
 * apart, PCIe peers under one switch 4, so NVLink wins where both exist.
 * Links carry no latency: NCCL's latencies are the network layer's
 * (collectives.c), per call and per pipeline step. */
#define _POSIX_C_SOURCE 200809L /* open_memstream */
#include "machine.h"

#include <stdlib.h>
#include <string.h>

/* Defaults for figures a description leaves at 0 (sim/SOURCES.md, "NCCL on
 * PCIe servers"):
 * - PCIe Gen4 x16 as GPU DMA reaches it, 24 of 31.5 GB/s;
 * - a socket's host memory as SHM reaches it, both ways together (an SHM
 *   flow crosses it twice: the sender's write, the receiver's read): fitted
 *   to 4 x RTX 4090 on one socket, all-to-all and all-reduce both 18 GB/s
 *   busbw over SHM (NVIDIA/nccl issue 1603): 12 flows x 2 x 6 GB/s;
 * - the CPU-to-CPU link under GPU DMA traffic, shared by both directions:
 *   fitted to the SHM all-to-all of 8 x L20 (NVIDIA/nccl issue 1817);
 * - one 400 Gb/s NIC: 48 GB/s (46-49 GB/s published). */
static const double DEF_PCIE_GBPS = 24.0, DEF_HOST_MEM_GBPS = 144.0, DEF_CPU_LINK_GBPS = 80.0,
                    DEF_NIC_GBPS = 48.0;

void sim_machine_complete(sim_machine *m) {
    if (m->nodes < 1) m->nodes = 1;
    if (m->sockets < 1) m->sockets = 1;
    if (m->pcie_gbps <= 0) m->pcie_gbps = DEF_PCIE_GBPS;
    if (m->uplink_gbps <= 0) m->uplink_gbps = m->pcie_gbps;
    if (m->host_mem_gbps <= 0) m->host_mem_gbps = DEF_HOST_MEM_GBPS;
    if (m->cpu_link_gbps <= 0) m->cpu_link_gbps = DEF_CPU_LINK_GBPS;
    if (m->nic_gbps <= 0) m->nic_gbps = DEF_NIC_GBPS;
    for (int g = 0; g < m->gpus; g++) {
        if (m->gpu_switch[g] >= 0) m->gpu_socket[g] = m->switch_socket[m->gpu_switch[g]];
        if (m->gpu_nic[g] >= 0 || m->nics == 0) continue;
        int best = -1; /* a NIC under the same switch, else on the same socket, else NIC 0 */
        for (int i = 0; i < m->nics && best < 0; i++)
            if (m->gpu_switch[g] >= 0 && m->nic_switch[i] == m->gpu_switch[g]) best = i;
        for (int i = 0; i < m->nics && best < 0; i++)
            if (m->nic_socket[i] == m->gpu_socket[g]) best = i;
        m->gpu_nic[g] = best >= 0 ? best : 0;
    }
    for (int i = 0; i < m->nics; i++)
        if (m->nic_switch[i] >= 0) m->nic_socket[i] = m->switch_socket[m->nic_switch[i]];
}

typedef struct {
    FILE *res, *routes;
    char *res_buf, *routes_buf;
    size_t res_len, routes_len;
    const char *prefix;
} out;

static void link(out *o, const char *id, double gbps, int shared) {
    fprintf(o->res, "    <link id=\"%s%s\" bandwidth=\"%.6gGBps\" latency=\"0us\" sharing_policy=\"%s\"/>\n",
            o->prefix, id, gbps, shared ? "SHARED" : "SPLITDUPLEX");
}

/* A route between neighbours through up to 3 links of this node (NULL ends;
 * a name starting with '/' is global: written without the node prefix). */
static void route(out *o, const char *src, int src_global, const char *dst, int dst_global, const char *l1,
                  const char *l2, const char *l3) {
    const char *links[3] = {l1, l2, l3};
    fprintf(o->routes, "    <route src=\"%s%s\" dst=\"%s%s\" symmetrical=\"YES\">", src_global ? "" : o->prefix,
            src, dst_global ? "" : o->prefix, dst);
    for (int i = 0; i < 3 && links[i]; i++) {
        int global = links[i][0] == '/';
        /* shared links (host memory, CPU-to-CPU) have no direction */
        int shared = strstr(links[i], "-mem") || strncmp(links[i], "cpu-link", 8) == 0;
        fprintf(o->routes, "<link_ctn id=\"%s%s\"%s/>", global ? "" : o->prefix, links[i] + global,
                shared ? "" : " direction=\"UP\"");
    }
    fprintf(o->routes, "</route>\n");
}

static void emit_node(const sim_machine *m, int node, out *o) {
    char a[64], b[64], c[64], d[64];
    int gdr;
    for (int s = 0; s < m->sockets; s++) {
        fprintf(o->res, "    <router id=\"%scpu%d\"/>\n", o->prefix, s);
        snprintf(a, sizeof a, "cpu%d-mem", s);
        link(o, a, m->host_mem_gbps, 1);
        for (int t = s + 1; t < m->sockets; t++) {
            snprintf(a, sizeof a, "cpu-link%d-%d", s, t);
            link(o, a, m->cpu_link_gbps, 1);
            snprintf(b, sizeof b, "cpu%d", s);
            snprintf(c, sizeof c, "cpu%d", t);
            route(o, b, 0, c, 0, a, NULL, NULL);
        }
    }
    for (int k = 0; k < m->switches; k++) {
        fprintf(o->res, "    <router id=\"%spcie-switch%d\"/>\n", o->prefix, k);
        snprintf(a, sizeof a, "pcie-switch%d-up", k);
        link(o, a, m->uplink_gbps, 0);
        snprintf(b, sizeof b, "pcie-switch%d", k);
        snprintf(c, sizeof c, "cpu%d", m->switch_socket[k]);
        snprintf(d, sizeof d, "cpu%d-mem", m->switch_socket[k]);
        route(o, b, 0, c, 0, a, d, NULL);
    }
    int fabrics[SIM_MACHINE_MAX_GPUS] = {0};
    for (int g = 0; g < m->gpus; g++) {
        int f = m->gpu_fabric[g];
        if (f >= 0 && f < SIM_MACHINE_MAX_GPUS && !fabrics[f]) {
            fabrics[f] = 1;
            fprintf(o->res, "    <router id=\"%snvswitch%d\"/>\n", o->prefix, f);
        }
        int nic = m->gpu_nic[g];
        gdr = nic >= 0 && m->gpu_switch[g] >= 0 && m->nic_switch[nic] == m->gpu_switch[g];
        fprintf(o->res, "    <host id=\"%sgpu%d\" speed=\"1Gf\">\n"
                        "      <prop id=\"node\" value=\"%d\"/><prop id=\"socket\" value=\"%d\"/>"
                        "<prop id=\"pcie_switch\" value=\"%d\"/>\n"
                        "      <prop id=\"nvlink\" value=\"%s%s\"/><prop id=\"nic\" value=\"%d\"/>"
                        "<prop id=\"gdr\" value=\"%d\"/>\n    </host>\n",
                o->prefix, g, node, m->gpu_socket[g], m->gpu_switch[g], f >= 0 ? "nvswitch" : "",
                f >= 0 ? (snprintf(d, sizeof d, "%d", f), d) : "", nic, gdr);
        snprintf(b, sizeof b, "gpu%d", g);
        if (f >= 0) {
            snprintf(a, sizeof a, "gpu%d-nvlink", g);
            link(o, a, m->nvlink_gbps, 0);
            snprintf(c, sizeof c, "nvswitch%d", f);
            route(o, b, 0, c, 0, a, NULL, NULL);
        }
        snprintf(a, sizeof a, "gpu%d-pcie", g);
        snprintf(d, sizeof d, "gpu%d-pcie-port", g);
        link(o, a, m->pcie_gbps, 0);
        link(o, d, m->pcie_gbps, 0);
        if (m->gpu_switch[g] >= 0) {
            snprintf(c, sizeof c, "pcie-switch%d", m->gpu_switch[g]);
            route(o, b, 0, c, 0, a, d, NULL);
        } else {
            char mem[32];
            snprintf(c, sizeof c, "cpu%d", m->gpu_socket[g]);
            snprintf(mem, sizeof mem, "cpu%d-mem", m->gpu_socket[g]);
            route(o, b, 0, c, 0, a, d, mem);
        }
    }
    for (int i = 0; i < m->nics; i++) {
        snprintf(a, sizeof a, "nic%d", i);
        snprintf(d, sizeof d, "nic%d-port", i);
        link(o, a, m->nic_gbps, 0);
        link(o, d, m->nic_gbps, 0);
    }
    /* Each GPU reaches the network through its own NIC (the one NCCL pairs
     * with it): its PCIe link, then the NIC, to the NIC's rail. */
    for (int g = 0; g < m->gpus && m->nodes > 1; g++) {
        int i = m->gpu_nic[g];
        if (i < 0) continue;
        snprintf(b, sizeof b, "gpu%d", g);
        snprintf(a, sizeof a, "gpu%d-pcie", g);
        snprintf(c, sizeof c, "rail%d", i);
        char nic[32], port[32];
        snprintf(nic, sizeof nic, "nic%d", i);
        snprintf(port, sizeof port, "nic%d-port", i);
        route(o, b, 0, c, 1, a, nic, port);
    }
}

usp_status sim_machine_write(const sim_machine *m, FILE *f) {
    if (m->gpus < 1 || m->gpus > SIM_MACHINE_MAX_GPUS || m->nics > SIM_MACHINE_MAX_NICS ||
        m->switches > SIM_MACHINE_MAX_SWITCHES)
        return usp_fail(USP_EINVAL, "machine %s: %d GPUs, %d NICs, %d PCIe switches per node (at most %d, %d, %d)",
                        m->name, m->gpus, m->nics, m->switches, SIM_MACHINE_MAX_GPUS, SIM_MACHINE_MAX_NICS,
                        SIM_MACHINE_MAX_SWITCHES);
    out o = {0};
    o.res = open_memstream(&o.res_buf, &o.res_len);
    o.routes = open_memstream(&o.routes_buf, &o.routes_len);
    if (!o.res || !o.routes) return usp_fail(USP_EINTERNAL, "out of memory writing a platform");
    char prefix[32];
    if (m->nodes > 1) {
        fprintf(o.res, "    <router id=\"spine\"/>\n");
        for (int i = 0; i < m->nics; i++) {
            fprintf(o.res, "    <router id=\"rail%d\"/>\n", i);
            fprintf(o.res, "    <link id=\"rail%d-up\" bandwidth=\"%.6gGBps\" latency=\"0us\" "
                           "sharing_policy=\"SPLITDUPLEX\"/>\n", i, m->nodes * m->nic_gbps);
            fprintf(o.routes, "    <route src=\"rail%d\" dst=\"spine\" symmetrical=\"YES\">"
                              "<link_ctn id=\"rail%d-up\" direction=\"UP\"/></route>\n", i, i);
        }
    }
    for (int n = 0; n < m->nodes; n++) {
        if (m->nodes > 1) snprintf(prefix, sizeof prefix, "node%d-", n);
        else prefix[0] = '\0';
        o.prefix = prefix;
        emit_node(m, n, &o);
    }
    fclose(o.res);
    fclose(o.routes);
    fprintf(f, "<?xml version='1.0'?>\n<!DOCTYPE platform SYSTEM \"https://simgrid.org/simgrid.dtd\">\n"
               "<!-- usp platform %s: %s\n     Topology props (node, socket, pcie_switch, nvlink, nic, gdr) tell "
               "the network layer which transport NCCL would use;\n     links carry no latency (NCCL's latencies "
               "are the layer's, sim/README.md). -->\n<platform version=\"4.1\">\n"
               "  <zone id=\"%s\" routing=\"DijkstraCache\">\n", m->name, m->about, m->name);
    if (m->call_us > 0) fprintf(f, "    <prop id=\"nccl.call_us\" value=\"%.6g\"/>\n", m->call_us);
    if (m->a2a_eff > 0) fprintf(f, "    <prop id=\"nccl.a2a_eff\" value=\"%.6g\"/>\n", m->a2a_eff);
    if (m->nvls_eff > 0) fprintf(f, "    <prop id=\"nccl.nvls_eff\" value=\"%.6g\"/>\n", m->nvls_eff);
    if (m->shm_lat_us > 0) fprintf(f, "    <prop id=\"nccl.lat_us.shm\" value=\"%.6g\"/>\n", m->shm_lat_us);
    if (m->ll128_eff > 0) fprintf(f, "    <prop id=\"nccl.ll128_eff\" value=\"%.6g\"/>\n", m->ll128_eff);
    if (m->simple_step_us > 0) fprintf(f, "    <prop id=\"nccl.simple_step_us\" value=\"%.6g\"/>\n", m->simple_step_us);
    if (m->cpu_amd) fprintf(f, "    <prop id=\"nccl.cpu\" value=\"amd\"/>\n");
    if (m->net_msg_us > 0) fprintf(f, "    <prop id=\"nccl.net_msg_us\" value=\"%.6g\"/>\n", m->net_msg_us);
    if (m->net_lat_us > 0) fprintf(f, "    <prop id=\"nccl.net_lat_us\" value=\"%.6g\"/>\n", m->net_lat_us);
    if (m->channels > 0) fprintf(f, "    <prop id=\"nccl.channels\" value=\"%d\"/>\n", m->channels);
    if (m->net_simple) fprintf(f, "    <prop id=\"nccl.net_simple\" value=\"1\"/>\n");
    if (m->p2p_sys) fprintf(f, "    <prop id=\"nccl.p2p_level\" value=\"sys\"/>\n");
    fputs(o.res_buf, f);
    fputs(o.routes_buf, f);
    fprintf(f, "  </zone>\n</platform>\n");
    free(o.res_buf);
    free(o.routes_buf);
    return ferror(f) ? usp_fail(USP_EINTERNAL, "cannot write the platform") : USP_OK;
}
