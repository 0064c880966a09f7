/* machine.h: a GPU server (or N of them) described as NCCL sees it, and its
 * SimGrid platform with the topology props of nccl.h.
 *
 * Per node: sockets (CPUs, with their host memory), PCIe switches under
 * them, GPUs under a switch or on a CPU root port, an optional NVLink fabric
 * per GPU (NVSwitch: every GPU on the same fabric), NICs under a switch or a
 * CPU. Between nodes: NIC i of every node on rail i (one switch per rail).
 * Bandwidths are achieved figures, per direction, in GB/s (each preset says
 * where its figures come from). */
#ifndef USP_SIM_NETWORK_MACHINE_H
#define USP_SIM_NETWORK_MACHINE_H

#include <stdio.h>
#include "usp/error.h"

enum { SIM_MACHINE_MAX_GPUS = 64, SIM_MACHINE_MAX_NICS = 16, SIM_MACHINE_MAX_SWITCHES = 32 };

typedef struct {
    char name[64];
    char about[512];          /* the XML comment: what it is, where each figure comes from */
    int nodes;                /* >= 1; host names gain "node<k>-" when > 1 */
    int gpus;                 /* per node */
    int sockets;              /* per node, >= 1 */
    int switches;             /* PCIe switches per node */
    int switch_socket[SIM_MACHINE_MAX_SWITCHES];
    int gpu_socket[SIM_MACHINE_MAX_GPUS];
    int gpu_switch[SIM_MACHINE_MAX_GPUS];    /* -1: on a CPU root port */
    int gpu_fabric[SIM_MACHINE_MAX_GPUS];    /* NVLink fabric id, -1: none */
    int nics;                 /* per node */
    int nic_switch[SIM_MACHINE_MAX_NICS];    /* -1: on a CPU root port */
    int nic_socket[SIM_MACHINE_MAX_NICS];
    int gpu_nic[SIM_MACHINE_MAX_GPUS];       /* the NIC a GPU uses, -1: none */
    double nvlink_gbps;       /* GPU to its fabric */
    double pcie_gbps;         /* GPU (or NIC) to its switch or root port */
    double uplink_gbps;       /* PCIe switch to its CPU */
    double host_mem_gbps;     /* a socket's host memory, as DMA reaches it (shared both ways) */
    double cpu_link_gbps;     /* between two sockets (shared both ways: it collapses under two-way load) */
    double nic_gbps;          /* one NIC */
    /* NCCL costs (zone props; <= 0: the defaults of transport.c) */
    double call_us, a2a_eff, nvls_eff, shm_lat_us;
    double net_lat_us;        /* the network plugin's stated latency (NCCL's choice only) */
    double ll128_eff;         /* LL128's achieved share of the link (0: NCCL's 0.92) */
    double simple_step_us;    /* per ring step with Simple beyond NCCL's hwLat */
    double net_msg_us;        /* per network message (tree chunks between nodes) */
    int cpu_amd;              /* AMD host CPUs (NCCL's LL cap between nodes, its post overhead) */
    int channels;
    int net_simple;           /* only Simple between nodes (EFA) */
    int p2p_sys;              /* NCCL's P2P level SYS: P2P through the CPU (transport.c) */
} sim_machine;

/* Fills the derived fields a description may leave out (gpu_nic from the
 * NIC under the same switch, else socket; zero bandwidths from defaults). */
void sim_machine_complete(sim_machine *m);

/* Writes the SimGrid XML (DijkstraCache routing, split-duplex links except
 * host memory and the CPU-to-CPU link, which are shared). */
usp_status sim_machine_write(const sim_machine *m, FILE *f);

#endif
