/* platform.c: the built-in platforms, written as SimGrid XML.
 *
 * Most presets are a graph of hosts (GPUs), routers (NVSwitch, PCIe
 * switches, network switches) and split-duplex links (each direction has the
 * full bandwidth, as NVLink, PCIe and InfiniBand do), routed by SimGrid's
 * DijkstraCache zone: the route between two GPUs is the path with the fewest
 * links, computed once per source. Torus and dragonfly use SimGrid's own
 * cluster topologies.
 *
 * Latency. The measured NCCL send/recv between two H200 (sim/SOURCES.md, 1 MiB
 * to 1 GiB) fits lat + bytes/bw with lat = 105 us and bw = 329 GB/s within
 * 15% at every size. That latency is mostly per-call software cost, paid by
 * every GPU-to-GPU transfer whatever the wire, so each GPU's own access links
 * carry half of it (a route has two ends); switch-to-switch links add their
 * wire latency only. */
#define _POSIX_C_SOURCE 200809L /* open_memstream */
#include "usp/sim.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------- the figures */

/* Fitted to sim/SOURCES.md "GPU-to-GPU links": 2x H200 over 18 NVLinks. */
static const double H200_PAIR_LAT_US = 105.0, H200_PAIR_GBPS = 329.0;
/* Half of the per-call latency on each GPU's access link. */
static const double ACCESS_LAT_US = 105.0 / 2;
/* NVLink per direction per GPU (NVIDIA data sheets): NVLink 4 (H100, H200)
 * 18 links x 25 GB/s; NVLink 3 (A100) 12 x 25 GB/s; A800 8 x 25 GB/s. */
static const double NVLINK4_GBPS = 450.0, NVLINK3_GBPS = 300.0, A800_NVLINK_GBPS = 200.0;
/* PCIe per direction, x16: Gen4 16 GT/s, Gen5 32 GT/s, 128b/130b coding. */
static const double PCIE4_GBPS = 31.5, PCIE5_GBPS = 63.0;
/* Intel UPI between the two sockets of a PCIe server: 3 links x 20.8 GB/s. */
static const double UPI_GBPS = 62.4;
/* One 400 Gb/s NIC (ConnectX-7 NDR): 46-49 GB/s published (sim/SOURCES.md). */
static const double NIC400_GBPS = 48.0;
/* A switch hop: cut-through latency of an InfiniBand/PCIe switch. */
static const double SWITCH_LAT_US = 0.5;
/* Rail leaves of a two-level fat tree: 64-port switches, half the ports
 * down to nodes, half up to spines. */
static const int LEAF_NODES = 32;
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

/* Host name of GPU g of node n: "gpu3" on one node, "node12-gpu3" on many,
 * so that natural name order is rank order. */
static void gpu_name(char *buf, size_t n, int node, int gpu, int multi) {
    if (multi) snprintf(buf, n, "node%d-gpu%d", node, gpu);
    else snprintf(buf, n, "gpu%d", gpu);
}

/* One node: `gpus` GPUs on a non-blocking switch (NVSwitch) with `gbps` per
 * direction per GPU: the GPU's NVLink ports, then its switch ports.
 *
 * Routing counts links, so the link counts steer the paths: a GPU reaches
 * its switch through 2 links and its rail (NIC) through 3, so a peer in the
 * node is 4 links away over NVLink and 6 or more over the network, and a
 * GPU of another node on another rail is reached through the spine (8)
 * rather than through a GPU of its own node (10). */
static void emit_switched_node(xml_out *x, int node, int gpus, double gbps, int multi) {
    char sw[48], host[48], link[64], port[64];
    snprintf(sw, sizeof sw, multi ? "node%d-nvswitch" : "nvswitch", node);
    xml_router(x, sw);
    for (int g = 0; g < gpus; g++) {
        gpu_name(host, sizeof host, node, g, multi);
        snprintf(link, sizeof link, "%s-nvlink", host);
        snprintf(port, sizeof port, "%s-nvswitch-port", host);
        xml_host(x, host);
        xml_link(x, link, gbps, ACCESS_LAT_US);
        xml_link(x, port, gbps, 0);
        xml_route(x, host, sw, link, port, NULL);
    }
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
};

static usp_status emit_h200x8(const preset *ps, const usp_platform_params *p, xml_out *x) {
    (void)ps; (void)p;
    emit_switched_node(x, 0, 8, NVLINK4_GBPS, 0);
    return USP_OK;
}

static usp_status emit_a100x8(const preset *ps, const usp_platform_params *p, xml_out *x) {
    (void)ps; (void)p;
    emit_switched_node(x, 0, 8, NVLINK3_GBPS, 0);
    return USP_OK;
}

/* Two H200 joined directly: one link with the fitted latency and bandwidth. */
static usp_status emit_h200x2(const preset *ps, const usp_platform_params *p, xml_out *x) {
    (void)ps; (void)p;
    xml_host(x, "gpu0");
    xml_host(x, "gpu1");
    xml_link(x, "nvlink", H200_PAIR_GBPS, H200_PAIR_LAT_US);
    xml_route(x, "gpu0", "gpu1", "nvlink", NULL, NULL);
    return USP_OK;
}

/* 8 L20 without NVLink: 4 GPUs per PCIe Gen4 switch, one switch per socket,
 * sockets joined by UPI. Peer traffic between sockets crosses both switch
 * uplinks and UPI. */
static usp_status emit_l20x8(const preset *ps, const usp_platform_params *p, xml_out *x) {
    (void)ps; (void)p;
    char host[32], link[48], sw[32], cpu[32];
    for (int s = 0; s < 2; s++) {
        snprintf(sw, sizeof sw, "pcie-switch%d", s);
        snprintf(cpu, sizeof cpu, "cpu%d", s);
        snprintf(link, sizeof link, "pcie-uplink%d", s);
        xml_router(x, sw);
        xml_router(x, cpu);
        xml_link(x, link, PCIE4_GBPS, SWITCH_LAT_US);
        xml_route(x, sw, cpu, link, NULL, NULL);
    }
    xml_link(x, "upi", UPI_GBPS, SWITCH_LAT_US);
    xml_route(x, "cpu0", "cpu1", "upi", NULL, NULL);
    for (int g = 0; g < 8; g++) {
        gpu_name(host, sizeof host, 0, g, 0);
        snprintf(link, sizeof link, "%s-pcie", host);
        snprintf(sw, sizeof sw, "pcie-switch%d", g / 4);
        xml_host(x, host);
        xml_link(x, link, PCIE4_GBPS, ACCESS_LAT_US);
        xml_route(x, host, sw, link, NULL, NULL);
    }
    return USP_OK;
}

/* Nodes of 8 A800 on NVSwitch; 4 NICs per node, NIC i shared by GPUs 2i and
 * 2i+1 through their PCIe links; NIC i of every node on rail switch i. */
static usp_status emit_a800(const preset *ps, const usp_platform_params *p, xml_out *x) {
    int nodes = p->nodes ? p->nodes : ps->default_nodes;
    char host[48], pcie[64], nic[48], port[48], rail[32];
    for (int r = 0; r < 4; r++) {
        snprintf(rail, sizeof rail, "rail%d", r);
        xml_router(x, rail);
    }
    for (int n = 0; n < nodes; n++) {
        emit_switched_node(x, n, 8, A800_NVLINK_GBPS, 1);
        for (int r = 0; r < 4; r++) {
            snprintf(nic, sizeof nic, "node%d-nic%d", n, r);
            snprintf(port, sizeof port, "node%d-nic%d-port", n, r);
            xml_link(x, nic, NIC400_GBPS, SWITCH_LAT_US);
            xml_link(x, port, NIC400_GBPS, 0);
        }
        for (int g = 0; g < 8; g++) {
            gpu_name(host, sizeof host, n, g, 1);
            snprintf(pcie, sizeof pcie, "%s-pcie", host);
            snprintf(nic, sizeof nic, "node%d-nic%d", n, g / 2);
            snprintf(port, sizeof port, "node%d-nic%d-port", n, g / 2);
            snprintf(rail, sizeof rail, "rail%d", g / 2);
            xml_link(x, pcie, PCIE4_GBPS, ACCESS_LAT_US);
            xml_route(x, host, rail, pcie, nic, port);
        }
    }
    return USP_OK;
}

/* Nodes of 8 H100 on NVSwitch; GPU g of every node has its own 400 Gb/s NIC
 * on rail g (rail-optimized). A rail has one leaf per LEAF_NODES nodes; the
 * spine layer is one router whose links to the leaves carry the sum of the
 * leaf's down-links (a non-blocking two-level fat tree). */
static usp_status emit_h100_fattree(const preset *ps, const usp_platform_params *p, xml_out *x) {
    int nodes = p->nodes ? p->nodes : ps->default_nodes;
    int leaves = (nodes + LEAF_NODES - 1) / LEAF_NODES;
    int per_leaf = nodes < LEAF_NODES ? nodes : LEAF_NODES;
    char host[48], pcie[64], nic[64], port[64], leaf[48], up[64];
    xml_router(x, "spine");
    for (int r = 0; r < 8; r++)
        for (int l = 0; l < leaves; l++) {
            snprintf(leaf, sizeof leaf, "rail%d-leaf%d", r, l);
            snprintf(up, sizeof up, "rail%d-leaf%d-up", r, l);
            xml_router(x, leaf);
            xml_link(x, up, per_leaf * NIC400_GBPS, SWITCH_LAT_US);
            xml_route(x, leaf, "spine", up, NULL, NULL);
        }
    for (int n = 0; n < nodes; n++) {
        emit_switched_node(x, n, 8, NVLINK4_GBPS, 1);
        for (int g = 0; g < 8; g++) {
            gpu_name(host, sizeof host, n, g, 1);
            snprintf(pcie, sizeof pcie, "%s-pcie", host);
            snprintf(nic, sizeof nic, "%s-nic", host);
            snprintf(port, sizeof port, "%s-leaf-port", host);
            snprintf(leaf, sizeof leaf, "rail%d-leaf%d", g, n / LEAF_NODES);
            xml_link(x, pcie, PCIE5_GBPS, ACCESS_LAT_US);
            xml_link(x, nic, NIC400_GBPS, SWITCH_LAT_US);
            xml_link(x, port, NIC400_GBPS, 0);
            xml_route(x, host, leaf, pcie, nic, port);
        }
    }
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

static const preset PRESETS[] = {
    {"h200x8", "h200", "1 node, 8 H200 on NVSwitch, NVLink 4 at 450 GB/s per direction per GPU",
     8, 1, 1, emit_h200x8},
    {"h200x2", "h200", "2 H200 joined by 18 NVLinks, fitted to the measured NCCL send/recv "
     "(105 us + bytes / 329 GB/s)", 2, 1, 1, emit_h200x2},
    {"a100x8", "a100", "1 node, 8 A100 SXM on NVSwitch, NVLink 3 at 300 GB/s per direction per GPU",
     8, 1, 1, emit_a100x8},
    {"l20x8", "l20", "1 node, 8 L20 on PCIe Gen4 x16 (31.5 GB/s), 4 per switch, sockets joined "
     "by UPI (62.4 GB/s), no NVLink", 8, 1, 1, emit_l20x8},
    {"a800-2n", "a800", "2 nodes of 8 A800 on NVSwitch (400 GB/s NVLink, 200 per direction), "
     "4 x 400 Gb/s RDMA NICs per node on 4 rails", 8, 2, 0, emit_a800},
    {"h100-fattree", "h100", "N nodes of 8 H100 on NVSwitch, one 400 Gb/s NIC per GPU, "
     "rail-optimized two-level fat tree (32 nodes per leaf)", 8, 0, 0, emit_h100_fattree},
    {"torus", "h100", "3-D torus, one GPU per vertex (dims=AxBxC, bw, lat)", 0, 0, 0, emit_torus},
    {"dragonfly", "h100", "dragonfly (groups, chassis, routers, hosts per router, bw, lat)",
     0, 0, 0, emit_dragonfly},
    {"star", "h200", "N hosts on one router, one link each (nodes, bw, lat): for closed forms",
     0, 0, 0, emit_star},
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
    return usp_fail(USP_EINVAL, "unknown platform parameter '%s' (nodes, dims, groups, chassis, "
                    "routers, hosts-per-router, bw, lat)", key);
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
    if (ps->gpus_per_node)
        fprintf(f, "     GPU access links carry %.3g us each: half the per-call latency fitted to the\n"
                "     measured NCCL send/recv between two H200 (sim/SOURCES.md).\n", ACCESS_LAT_US);
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
    usp_status st = xml_open(&x);
    if (st == USP_OK) st = ps->emit(ps, &p, &x);
    if (st == USP_OK) write_header(f, ps, &p);
    xml_close(&x, st == USP_OK ? f : NULL);
    if (st != USP_OK) return st;
    fprintf(f, "%s</platform>\n", is_cluster(ps) ? "" : "  </zone>\n");
    if (ferror(f)) return usp_fail(USP_EINTERNAL, "cannot write the platform");
    return USP_OK;
}
