/* from_topo.c: a machine (machine.h) from a real server's topology, as
 * `nvidia-smi topo -m` prints it or as NCCL dumps it (NCCL_TOPO_DUMP_FILE,
 * an XML file read with libxml2).
 *
 * nvidia-smi topo -m: a matrix of GPU (and NIC) pairs, each entry the path
 * between them: X (self), NV# (# bonded NVLinks), PIX (at most one PCIe
 * bridge), PXB (several bridges, no host bridge), PHB (through a PCIe host
 * bridge, the CPU), NODE (between host bridges of one NUMA node), SYS
 * (across the CPU-to-CPU link); then CPU affinity and NUMA affinity. From it:
 *   - socket of a GPU: its NUMA affinity (0 when N/A);
 *   - PCIe switch groups: GPUs joined by PIX or PXB (NCCL's P2P level is
 *     PXB: those pairs use PCIe P2P); a GPU with no such peer sits on a
 *     CPU root port;
 *   - NVLink fabric: GPUs joined by NV# (all pairs: an NVSwitch; else each
 *     connected set, e.g. bridged pairs); per-GPU bandwidth # x 25 GB/s x
 *     NVLINK_EFF;
 *   - NICs (NIC# or mlx5_# columns): a NIC at PIX/PXB of a GPU is under its
 *     switch (GPUDirect RDMA); otherwise on the socket of the nearest GPU.
 * NCCL XML: <cpu numaid> holds <pci> bridges and devices; a GPU directly under
 * the CPU is on a root port, else its top-level bridge is its PCIe switch;
 * <nvlink target count> gives the NVLink fabric (a target that is not a GPU
 * is an NVSwitch); <nic><net speed> the NICs (Mb/s); link_speed the PCIe Gen.
 *
 * What neither says: PCIe generation (topo -m: --gen, Gen4 by default), the
 * host memory and CPU-to-CPU figures (the PCIe presets' defaults). */
#define _POSIX_C_SOURCE 200809L
#include "machine.h"
#include "usp/sim.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#ifdef USP_HAVE_LIBXML2
#include <libxml/parser.h>
#include <libxml/tree.h>
#endif

/* Achieved fraction of NVLink's data rate under NCCL (370 of 450 GB/s on
 * NVLink 4, sim/SOURCES.md); 25 GB/s per link per direction (NVLink 3 and 4). */
static const double NVLINK_EFF = 0.82, NVLINK_LINK_GBPS = 25.0;
/* PCIe x16 as GPU DMA reaches it, by generation (as the PCIe presets). */
static double pcie_gbps(int gen) { return gen <= 3 ? 12.0 : gen == 4 ? 24.0 : 48.0; }

enum { MAXDEV = SIM_MACHINE_MAX_GPUS + SIM_MACHINE_MAX_NICS };

/* --------------------------------------------------------- union-find */

static int find(int *p, int x) { while (p[x] != x) x = p[x] = p[p[x]]; return x; }
static void unite(int *p, int a, int b) { p[find(p, a)] = find(p, b); }

/* Numbers the groups of GPUs 0..n-1 (sets of p) of more than one member
 * 0, 1, ...; single GPUs get -1. */
static int number_groups(int *p, int n, int *out) {
    int id[MAXDEV], size[MAXDEV] = {0}, next = 0;
    for (int g = 0; g < n; g++) size[find(p, g)]++;
    for (int g = 0; g < n; g++) id[g] = -1;
    for (int g = 0; g < n; g++) {
        int r = find(p, g);
        if (size[r] < 2) { out[g] = -1; continue; }
        if (id[r] < 0) id[r] = next++;
        out[g] = id[r];
    }
    return next;
}

/* ---------------------------------------------------- nvidia-smi topo -m */

typedef struct {
    int ndev, ngpu;
    char names[MAXDEV][24];
    int is_gpu[MAXDEV];
    char rel[MAXDEV][MAXDEV][8];   /* rel[gpu row][device column] */
    int numa[MAXDEV];
    int have_row[MAXDEV];
} smi_matrix;

static int is_device_name(const char *t) {
    if (!strncmp(t, "GPU", 3) && isdigit((unsigned char)t[3])) return 1;
    if (!strncmp(t, "NIC", 3) && isdigit((unsigned char)t[3])) return 2;
    if (!strncmp(t, "mlx5_", 5) || !strncmp(t, "ib", 2) || !strncmp(t, "efa", 3)) return 2;
    return 0;
}

static int split(char *line, char **tok, int max) {
    int n = 0;
    for (char *s = strtok(line, " \t\r\n"); s && n < max; s = strtok(NULL, " \t\r\n")) tok[n++] = s;
    return n;
}

/* 0 .. max, or -1 (usp_parse_long_in's contract, for the XML attributes). */
static int usp_parse_long_in(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* A NUMA node number: 0 .. MAX_NUMA - 1, or -1 (found by fuzzing: "NUMA
 * 7777777777" overflowed atoi and the platform writer looped over that many
 * sockets). Servers have 1 to 8 NUMA nodes, 32 with sub-NUMA clustering. */
enum { MAX_NUMA = 64 };
static int numa_id(const char *s) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    return errno || end == s || *end || v < 0 || v >= MAX_NUMA ? -1 : (int)v;
}

static usp_status parse_smi(FILE *f, const char *path, smi_matrix *m) {
    char line[4096];
    char *tok[256];
    int lineno = 0, header = 0;
    memset(m, 0, sizeof *m);
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (strstr(line, "Legend")) break;
        int n = split(line, tok, 256);
        if (n == 0) continue;
        if (!header) {
            if (is_device_name(tok[0]) != 1) continue; /* a prompt or a title */
            for (int i = 0; i < n && is_device_name(tok[i]); i++) {
                if (m->ndev == MAXDEV)
                    return usp_fail(USP_EINVAL, "%s: line %d: more than %d devices", path, lineno, MAXDEV);
                snprintf(m->names[m->ndev], sizeof m->names[0], "%s", tok[i]);
                m->is_gpu[m->ndev] = is_device_name(tok[i]) == 1;
                m->ngpu += m->is_gpu[m->ndev];
                m->ndev++;
            }
            header = 1;
            continue;
        }
        int row = -1;
        for (int d = 0; d < m->ndev; d++)
            if (!strcmp(tok[0], m->names[d])) row = d;
        if (row < 0 || !m->is_gpu[row]) continue; /* NIC rows, notes */
        if (n < 1 + m->ndev)
            return usp_fail(USP_EINVAL, "%s: line %d: %s has %d entries, the header names %d devices", path, lineno,
                            tok[0], n - 1, m->ndev);
        for (int d = 0; d < m->ndev; d++) {
            const char *r = tok[1 + d];
            int ok = !strcmp(r, "X") || !strcmp(r, "PIX") || !strcmp(r, "PXB") || !strcmp(r, "PHB") ||
                     !strcmp(r, "NODE") || !strcmp(r, "SYS") || !strcmp(r, "SOC") ||
                     (r[0] == 'N' && r[1] == 'V' && isdigit((unsigned char)r[2]));
            if (!ok)
                return usp_fail(USP_EINVAL, "%s: line %d: '%s' is not a topology entry (X, NV#, PIX, PXB, PHB, "
                                "NODE, SYS)", path, lineno, r);
            snprintf(m->rel[row][d], sizeof m->rel[0][0], "%s", r);
        }
        /* after the matrix: CPU affinity, then NUMA affinity ("N/A", or "NUMA 0") */
        m->numa[row] = 0;
        for (int i = 1 + m->ndev; i < n; i++) {
            const char *id = !strcmp(tok[i], "NUMA") && i + 1 < n && isdigit((unsigned char)tok[i + 1][0])
                                 ? tok[i + 1]
                             : i > 1 + m->ndev && isdigit((unsigned char)tok[i][0]) && !strpbrk(tok[i], ",-")
                                 ? tok[i]
                                 : NULL;
            if (!id) continue;
            if ((m->numa[row] = numa_id(id)) < 0)
                return usp_fail(USP_EINVAL, "%s: line %d: NUMA node '%s' is not in 0..%d", path, lineno, id,
                                MAX_NUMA - 1);
            break;
        }
        m->have_row[row] = 1;
    }
    if (!header || m->ngpu == 0) return usp_fail(USP_EINVAL, "%s: no 'GPU0 GPU1 ...' header: not nvidia-smi topo -m", path);
    for (int d = 0; d < m->ndev; d++)
        if (m->is_gpu[d] && !m->have_row[d]) return usp_fail(USP_EINVAL, "%s: no row for %s", path, m->names[d]);
    return USP_OK;
}

static int pxb_or_closer(const char *r) { return !strcmp(r, "PIX") || !strcmp(r, "PXB"); }

static usp_status machine_from_smi(const smi_matrix *x, int gen, sim_machine *m) {
    int gpu[MAXDEV], nic[MAXDEV], ng = 0, nn = 0;
    for (int d = 0; d < x->ndev; d++) {
        if (x->is_gpu[d]) gpu[ng++] = d;
        else nic[nn++] = d;
    }
    if (ng > SIM_MACHINE_MAX_GPUS || nn > SIM_MACHINE_MAX_NICS)
        return usp_fail(USP_EINVAL, "%d GPUs and %d NICs: at most %d and %d", ng, nn, SIM_MACHINE_MAX_GPUS,
                        SIM_MACHINE_MAX_NICS);
    m->gpus = ng;
    m->nics = nn;
    /* PCIe switch groups over GPUs and NICs (NIC k is device ng + k) */
    int pswitch[MAXDEV], pnv[MAXDEV], grp[MAXDEV], minlinks = 0, all_nv = 1;
    for (int i = 0; i < ng + nn; i++) pswitch[i] = pnv[i] = i;
    int maxsock = 0;
    for (int i = 0; i < ng; i++) {
        m->gpu_socket[i] = x->numa[gpu[i]];
        if (m->gpu_socket[i] > maxsock) maxsock = m->gpu_socket[i];
        for (int j = 0; j < ng; j++) {
            if (i == j) continue;
            const char *r = x->rel[gpu[i]][gpu[j]];
            if (pxb_or_closer(r)) unite(pswitch, i, j);
            if (r[0] == 'N' && r[1] == 'V') {
                unite(pnv, i, j);
                int links = numa_id(r + 2); /* NV1 .. NV18: a small count like a NUMA id */
                if (links < 0) return usp_fail(USP_EINVAL, "'%s' is not an NVLink count", r);
                if (!minlinks || links < minlinks) minlinks = links;
            } else all_nv = 0;
        }
        for (int k = 0; k < nn; k++)
            if (pxb_or_closer(x->rel[gpu[i]][nic[k]])) unite(pswitch, i, ng + k);
    }
    m->sockets = maxsock + 1;
    m->switches = number_groups(pswitch, ng + nn, grp);
    for (int i = 0; i < ng; i++) m->gpu_switch[i] = grp[i];
    number_groups(pnv, ng, m->gpu_fabric);
    for (int i = 0; i < ng; i++)
        if (m->gpu_switch[i] >= 0) m->switch_socket[m->gpu_switch[i]] = m->gpu_socket[i];
    for (int i = 0; i < ng; i++) m->gpu_nic[i] = -1;
    for (int k = 0; k < nn; k++) {
        m->nic_switch[k] = grp[ng + k];
        m->nic_socket[k] = 0;
        for (int i = 0; i < ng; i++) {
            const char *r = x->rel[gpu[i]][nic[k]];
            if (pxb_or_closer(r) || !strcmp(r, "NODE") || !strcmp(r, "PHB")) m->nic_socket[k] = m->gpu_socket[i];
            if (pxb_or_closer(r) && m->gpu_nic[i] < 0) m->gpu_nic[i] = k;
        }
        if (m->nic_switch[k] >= 0) m->switch_socket[m->nic_switch[k]] = m->nic_socket[k];
    }
    m->nvlink_gbps = minlinks * NVLINK_LINK_GBPS * NVLINK_EFF;
    m->pcie_gbps = pcie_gbps(gen);
    snprintf(m->about, sizeof m->about, "%d GPUs from nvidia-smi topo -m: %d PCIe switch group%s (PIX/PXB), "
             "%s, %d socket%s, %d NIC%s; PCIe Gen%d assumed", ng, m->switches, m->switches == 1 ? "" : "s",
             minlinks ? (all_nv ? "NVLink between every pair (NVSwitch)" : "NVLink between some pairs") : "no NVLink",
             m->sockets, m->sockets == 1 ? "" : "s", nn, nn == 1 ? "" : "s", gen);
    if (minlinks)
        snprintf(m->about + strlen(m->about), sizeof m->about - strlen(m->about),
                 ", NVLink %d x %g GB/s x %.2f achieved = %g GB/s", minlinks, NVLINK_LINK_GBPS, NVLINK_EFF,
                 m->nvlink_gbps);
    return USP_OK;
}

/* ------------------------------------------------ NCCL topology XML */

#ifdef USP_HAVE_LIBXML2
typedef struct {
    sim_machine *m;
    char busid[SIM_MACHINE_MAX_GPUS][32];
    int gen;
    int nv_target_switch[SIM_MACHINE_MAX_GPUS]; /* an NVLink to a non-GPU (NVSwitch) */
    char nv_target[SIM_MACHINE_MAX_GPUS][8][32];
    int nv_count[SIM_MACHINE_MAX_GPUS][8], nnv[SIM_MACHINE_MAX_GPUS];
    double nic_mbps;
    int error;
    char why[160];
} xml_ctx;

static const char *attr(xmlNode *n, const char *name, char *buf, size_t len) {
    xmlChar *v = xmlGetProp(n, (const xmlChar *)name);
    if (!v) return NULL;
    snprintf(buf, len, "%s", (const char *)v);
    xmlFree(v);
    return buf;
}

static int is(xmlNode *n, const char *name) {
    return n->type == XML_ELEMENT_NODE && !xmlStrcmp(n->name, (const xmlChar *)name);
}

static void add_gpu(xml_ctx *c, int socket, int sw, const char *busid, const char *speed) {
    sim_machine *m = c->m;
    if (m->gpus == SIM_MACHINE_MAX_GPUS) {
        c->error = 1;
        snprintf(c->why, sizeof c->why, "more than %d GPUs", SIM_MACHINE_MAX_GPUS);
        return;
    }
    int g = m->gpus++;
    m->gpu_socket[g] = socket;
    m->gpu_switch[g] = sw;
    m->gpu_nic[g] = -1;
    snprintf(c->busid[g], sizeof c->busid[0], "%s", busid);
    int gen = speed && strstr(speed, "32") ? 5 : speed && strstr(speed, "16") ? 4 : speed && strstr(speed, "8") ? 3 : 0;
    if (gen > c->gen) c->gen = gen;
}

static void add_nic(xml_ctx *c, int socket, int sw) {
    sim_machine *m = c->m;
    if (m->nics == SIM_MACHINE_MAX_NICS) return;
    int i = m->nics++;
    m->nic_switch[i] = sw;
    m->nic_socket[i] = socket;
}

/* Walks the subtree of a CPU: `sw` is the PCIe switch of this subtree (-1
 * directly under the CPU), `busid` the enclosing pci element's. A leaf <pci>
 * without <gpu> or <nic> inside is classified by its PCI class, as in the
 * topology files given to NCCL_TOPO_FILE: 0x03.... a GPU, 0x02.... a NIC. */
static void walk(xml_ctx *c, xmlNode *n, int socket, int sw, const char *busid, const char *speed, int *next_sw) {
    char buf[64], bus[32] = "", spd[32] = "", cls[32] = "";
    for (xmlNode *k = n->children; k && !c->error; k = k->next) {
        if (is(k, "pci")) {
            attr(k, "busid", bus, sizeof bus);
            attr(k, "link_speed", spd, sizeof spd);
            if (!attr(k, "class", cls, sizeof cls)) cls[0] = '\0';
            int has_pci = 0, has_dev = 0;
            for (xmlNode *q = k->children; q; q = q->next) {
                has_pci |= is(q, "pci");
                has_dev |= is(q, "gpu") || is(q, "nic");
            }
            if (!has_pci && !has_dev) {
                if (!strncmp(cls, "0x03", 4)) add_gpu(c, socket, sw, bus, spd);
                else if (!strncmp(cls, "0x02", 4)) add_nic(c, socket, sw);
                continue;
            }
            int child_sw = sw;
            if (sw < 0 && has_pci) child_sw = (*next_sw)++;  /* a bridge under the CPU: a switch */
            walk(c, k, socket, child_sw, bus, spd, next_sw);
        } else if (is(k, "gpu")) {
            add_gpu(c, socket, sw, busid, speed);
            if (c->error) return;
            int g = c->m->gpus - 1;
            for (xmlNode *l = k->children; l; l = l->next) {
                if (!is(l, "nvlink") || c->nnv[g] == 8) continue;
                int t = c->nnv[g]++;
                attr(l, "target", c->nv_target[g][t], sizeof c->nv_target[0][0]);
                long count = 1;
                if (attr(l, "count", buf, sizeof buf) && (usp_parse_long_in(buf, 0, 64, &count) != 0)) {
                    c->error = 1;
                    snprintf(c->why, sizeof c->why, "<nvlink count=\"%s\">: not a link count in 0..64", buf);
                    return;
                }
                c->nv_count[g][t] = (int)count;
            }
        } else if (is(k, "nic")) {
            for (xmlNode *q = k->children; q; q = q->next) {
                if (!is(q, "net")) continue;
                add_nic(c, socket, sw);
                if (attr(q, "speed", buf, sizeof buf)) {
                    char *end;
                    c->nic_mbps = strtod(buf, &end);
                    /* 1 Mb/s to 10 Tb/s: a NIC */
                    if (end == buf || *end || !(c->nic_mbps >= 1 && c->nic_mbps <= 1e7)) {
                        c->error = 1;
                        snprintf(c->why, sizeof c->why, "<net speed=\"%s\">: not a NIC speed in Mb/s", buf);
                        return;
                    }
                }
                break; /* a NIC's ports count once */
            }
        } else if (k->type == XML_ELEMENT_NODE) {
            walk(c, k, socket, sw, busid, speed, next_sw);
        }
    }
}

static usp_status machine_from_xml(const char *path, int gen, sim_machine *m) {
    (void)gen;
    xmlDoc *doc = xmlReadFile(path, NULL, XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    if (!doc) {
        const xmlError *e = xmlGetLastError();
        char why[256] = "";
        if (e && e->message) snprintf(why, sizeof why, ": %s", e->message);
        why[strcspn(why, "\n")] = '\0'; /* libxml2 ends its messages with a newline */
        return usp_fail(USP_EINVAL, "%s: not well-formed XML%s", path, why);
    }
    xmlNode *root = xmlDocGetRootElement(doc);
    if (!root || !is(root, "system")) {
        xmlFreeDoc(doc);
        return usp_fail(USP_EINVAL, "%s: the root element is not <system> (an NCCL topology dump)", path);
    }
    xml_ctx *c = calloc(1, sizeof *c);
    if (!c) { xmlFreeDoc(doc); return usp_fail(USP_EINTERNAL, "out of memory"); }
    c->m = m;
    int next_sw = 0, sockets = 0, amd = 0;
    char buf[32];
    for (xmlNode *k = root->children; k && !c->error; k = k->next) {
        if (!is(k, "cpu")) continue;
        if (attr(k, "vendor", buf, sizeof buf) && !strcmp(buf, "AuthenticAMD")) amd = 1;
        int socket = attr(k, "numaid", buf, sizeof buf) ? numa_id(buf) : sockets;
        if (socket < 0 || socket >= MAX_NUMA) {
            xmlFreeDoc(doc);
            free(c);
            return usp_fail(USP_EINVAL, "%s: <cpu numaid=\"%s\">: not a NUMA node in 0..%d", path, buf, MAX_NUMA - 1);
        }
        walk(c, k, socket, -1, "", NULL, &next_sw);
        if (socket + 1 > sockets) sockets = socket + 1;
    }
    xmlFreeDoc(doc);
    usp_status st = USP_OK;
    if (c->error) st = usp_fail(USP_EINVAL, "%s: %s", path, c->why);
    else if (m->gpus == 0) st = usp_fail(USP_EINVAL, "%s: no <gpu> under any <cpu>", path);
    if (st != USP_OK) { free(c); return st; }
    m->sockets = sockets > 0 ? sockets : 1;
    m->switches = next_sw;
    for (int g = 0; g < m->gpus; g++)
        if (m->gpu_switch[g] >= 0) m->switch_socket[m->gpu_switch[g]] = m->gpu_socket[g];
    for (int i = 0; i < m->nics; i++)
        if (m->nic_switch[i] >= 0) m->switch_socket[m->nic_switch[i]] = m->nic_socket[i];
    /* NVLink: targets that are GPUs join pairs; others are NVSwitches */
    int p[SIM_MACHINE_MAX_GPUS], links = 0, to_switch = 0;
    for (int g = 0; g < m->gpus; g++) p[g] = g;
    for (int g = 0; g < m->gpus; g++)
        for (int t = 0; t < c->nnv[g]; t++) {
            int peer = -1;
            for (int h = 0; h < m->gpus; h++)
                if (!strcmp(c->busid[h], c->nv_target[g][t])) peer = h;
            if (peer >= 0) unite(p, g, peer);
            else to_switch = 1;
            links += c->nv_count[g][t];
        }
    if (to_switch) for (int g = 1; g < m->gpus; g++) if (c->nnv[g] && c->nnv[0]) unite(p, g, 0);
    number_groups(p, m->gpus, m->gpu_fabric);
    int nvgpus = 0;
    for (int g = 0; g < m->gpus; g++) nvgpus += c->nnv[g] > 0;
    m->nvlink_gbps = nvgpus ? (double)links / nvgpus * NVLINK_LINK_GBPS * NVLINK_EFF : 0;
    int g_gen = c->gen ? c->gen : gen;
    m->pcie_gbps = pcie_gbps(g_gen);
    if (c->nic_mbps > 0) m->nic_gbps = c->nic_mbps / 8000.0 * 0.96; /* line rate less headers */
    for (int g = 0; g < m->gpus; g++) m->gpu_nic[g] = -1;
    snprintf(m->about, sizeof m->about, "%d GPUs from an NCCL topology dump: %d PCIe switch%s, %d socket%s, "
             "%d NIC%s, %s; PCIe Gen%d", m->gpus, m->switches, m->switches == 1 ? "" : "es", m->sockets,
             m->sockets == 1 ? "" : "s", m->nics, m->nics == 1 ? "" : "s",
             m->nvlink_gbps > 0 ? "NVLink" : "no NVLink", g_gen);
    if (amd) { /* NCCL's P2P level on AMD hosts depends on its release (transport.c) */
        size_t len = strlen(m->about);
        snprintf(m->about + len, sizeof m->about - len, "; AMD host: NCCL before 2.23.4 uses P2P through the "
                 "CPU where this file has SHM (--p2p sys)");
    }
    free(c);
    return USP_OK;
}
#endif

/* ------------------------------------------------------------- entry */

usp_status usp_platform_from_topo(const char *path, const usp_topo_options *o, FILE *out) {
    FILE *f = fopen(path, "r");
    if (!f) return usp_fail(USP_EINVAL, "cannot read %s", path);
    char head[512];
    size_t n = fread(head, 1, sizeof head - 1, f);
    head[n] = '\0';
    rewind(f);
    sim_machine *m = calloc(1, sizeof *m);
    if (!m) { fclose(f); return usp_fail(USP_EINTERNAL, "out of memory"); }
    int gen = o && o->pcie_gen ? o->pcie_gen : 4;
    usp_status st;
    const char *lt = head;
    while (*lt && isspace((unsigned char)*lt)) lt++;
    if (*lt == '<') {
        fclose(f);
#ifdef USP_HAVE_LIBXML2
        st = machine_from_xml(path, gen, m);
#else
        st = usp_fail(USP_EINVAL, "%s: NCCL topology XML needs libxml2 (install libxml2-dev and rebuild)", path);
#endif
    } else {
        smi_matrix *x = calloc(1, sizeof *x);
        st = x ? parse_smi(f, path, x) : usp_fail(USP_EINTERNAL, "out of memory");
        fclose(f);
        if (st == USP_OK) st = machine_from_smi(x, gen, m);
        free(x);
    }
    if (st == USP_OK && o && o->nvswitch_gbps > 0) {
        /* the user says the GPUs share an NVSwitch (topology files for
         * NCCL_TOPO_FILE leave NVLink out: NCCL finds it itself) */
        for (int g = 0; g < m->gpus; g++) m->gpu_fabric[g] = 0;
        m->nvlink_gbps = o->nvswitch_gbps;
        size_t len = strlen(m->about);
        snprintf(m->about + len, sizeof m->about - len, "; all GPUs on one NVSwitch at %g GB/s (--nvswitch)",
                 o->nvswitch_gbps);
    }
    if (st == USP_OK && o && o->p2p_sys) {
        m->p2p_sys = 1;
        size_t len = strlen(m->about);
        snprintf(m->about + len, sizeof m->about - len, "; P2P through the CPU between GPUs of different PCIe "
                 "switches (--p2p sys: NCCL's P2P level SYS)");
    }
    if (st == USP_OK) {
        const char *base = strrchr(path, '/');
        snprintf(m->name, sizeof m->name, "from-topo-%.40s", base ? base + 1 : path);
        for (char *c = m->name; *c; c++)
            if (!isalnum((unsigned char)*c) && *c != '-' && *c != '_') *c = '-';
        m->nodes = o && o->nodes > 0 ? o->nodes : 1;
        m->call_us = 10;
        size_t len = strlen(m->about);
        snprintf(m->about + len, sizeof m->about - len, " (read from %.200s%s)", path,
                 m->nodes > 1 ? ", repeated on every node, NIC i of each node on rail i" : "");
        sim_machine_complete(m);
        st = sim_machine_write(m, out);
    }
    free(m);
    return st;
}
