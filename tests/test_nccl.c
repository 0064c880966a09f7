/* test_nccl.c: the network layer (sim/network/): NCCL's transport per pair
 * on real topologies, its latency model in closed form, the engine going
 * through it, `usp platform --from-topo` on published nvidia-smi outputs, and
 * the published nccl-tests results (traces/published/nccl/) within the bar
 * per topology class. USP_BIN is the usp binary, USP_SOURCE_DIR the tree. */
#define _GNU_SOURCE /* mkstemps */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "usp/executor.h"
#include "usp/nccl.h"
#include "usp/sim.h"

/* SimGrid accumulates time in doubles over a few events. */
static const double REL_TOL = 1e-9;
/* The constants the closed forms use, as sim/README.md states them:
 * NCCL's ring baseLat (Simple) and hwLat (Simple) by hardware, tuning.cc. */
static const double BASE_SIMPLE_US = 8.4, HW_PCI_SIMPLE_US = 5.7, HW_NVLINK_SIMPLE_US = 3.4;
/* Platform figures (sim/network/platform.c, transport.c): PCIe Gen4 achieved,
 * NVLink 4 achieved, the PCIe presets' and the default call cost, the default
 * all-to-all share of NVSwitch. */
static const double PCIE4_GBPS = 24.0, NVL4_GBPS = 370.0, PCIE_CALL_US = 10.0, DEFAULT_CALL_US = 10.0,
                    A2A_EFF = 0.9;

static usp_nccl_table simulate(const char *platform, const char *op, int ranks, double size) {
    usp_nccl_options o = {.platform = platform, .op = op, .ranks = ranks, .min_bytes = size, .max_bytes = size,
                          .factor = 2};
    usp_nccl_table t;
    if (usp_nccl_simulate(&o, &t) != USP_OK) fail_msg("%s", usp_error());
    assert_int_equal(t.nrows, 1);
    return t;
}

static void expect_transport(const char *platform, const char *op, int ranks, const char *xport) {
    usp_nccl_table t = simulate(platform, op, ranks, 1 << 20);
    if (strcmp(t.rows[0].xport, xport))
        fail_msg("%s on %d ranks of %s: transport %s, NCCL would use %s", op, ranks, platform, t.rows[0].xport, xport);
    usp_nccl_table_free(&t);
}

static void assert_close(double got, double want) {
    if (fabs(got - want) > REL_TOL * fabs(want)) fail_msg("got %.12g, closed form %.12g", got, want);
}

/* ------------------------------------------------------- transports */

/* NCCL's rules on the redrawn presets: P2P only under a common PCIe switch,
 * SHM elsewhere inside a node, NVLink on NVSwitch, the network between nodes. */
static void transports_on_presets(void **state) {
    (void)state;
    expect_transport("l20x8", "sendrecv", 2, "pcie");      /* gpu0 -> gpu1: one switch */
    expect_transport("l20x8", "sendrecv", 4, "shm");       /* gpu1 -> gpu2: two switches */
    expect_transport("l20x8", "alltoall", 8, "shm");
    expect_transport("rtx4090x4", "alltoall", 4, "shm");   /* root ports: through the CPU */
    expect_transport("h200x8", "alltoall", 8, "nvlink");
    expect_transport("a800-2n", "sendrecv", 16, "net-gdr");
    expect_transport("pcie:gpus=8,per-switch=8,sockets=1", "allreduce", 8, "pcie");
    /* P2P level SYS (NCCL up to 2.22 on AMD hosts, NCCL_P2P_LEVEL=SYS): P2P
     * through the CPU instead of SHM; under a switch it stays plain PCIe P2P */
    expect_transport("l20x8:p2p=sys", "sendrecv", 2, "pcie");
    expect_transport("l20x8:p2p=sys", "sendrecv", 4, "pcie-cpu");
    expect_transport("l20x8:p2p=sys", "alltoall", 8, "pcie-cpu");
    expect_transport("rtx4090x4:p2p=sys", "alltoall", 4, "pcie-cpu");
    expect_transport("rtx4090x4:p2p=pxb", "alltoall", 4, "shm");
}

/* All-to-all over P2P through the CPU reaches cpu_p2p_a2a_eff = 2/18 of what
 * its route carries, the ratio of its source (4 x RTX 4090 on one socket,
 * alltoall_perf peak busbw 2 GB/s with NCCL_P2P_LEVEL=SYS, 18 over SHM:
 * NVIDIA/nccl issue 1603), so that machine's forced-P2P row comes back;
 * ring collectives keep the route's rate (that machine's all-reduce: 22 GB/s
 * over P2P, 18 over SHM: no collapse with one flow per GPU). On 8 x L20 the
 * forced-P2P sweep is slower than SHM, as NVIDIA/nccl issue 1817 reports. */
static void p2p_through_the_cpu(void **state) {
    (void)state;
    const double S = 1 << 30, SHM_A2A_GBPS = 18, P2P_A2A_GBPS = 2, PEAK_REL = 0.01;
    usp_nccl_table shm = simulate("rtx4090x4", "alltoall", 4, S), p2p = simulate("rtx4090x4:p2p=sys", "alltoall", 4, S);
    assert_true(fabs(shm.rows[0].busbw - SHM_A2A_GBPS) < PEAK_REL * SHM_A2A_GBPS);
    assert_true(fabs(p2p.rows[0].busbw - P2P_A2A_GBPS) < PEAK_REL * P2P_A2A_GBPS);
    usp_nccl_table_free(&shm);
    usp_nccl_table_free(&p2p);
    usp_nccl_table ar_shm = simulate("rtx4090x4", "allreduce", 4, S), ar_p2p = simulate("rtx4090x4:p2p=sys", "allreduce", 4, S);
    /* the same route; P2P has no SHM flag round trip per step, so a hair faster */
    assert_true(ar_p2p.rows[0].busbw >= ar_shm.rows[0].busbw &&
                ar_p2p.rows[0].busbw < (1 + PEAK_REL) * ar_shm.rows[0].busbw);
    usp_nccl_table_free(&ar_shm);
    usp_nccl_table_free(&ar_p2p);
    usp_nccl_options o = {.platform = "l20x8", .op = "alltoall", .ranks = 8, .min_bytes = 8, .max_bytes = 1 << 29,
                          .factor = 2};
    usp_nccl_table a, b;
    assert_int_equal(usp_nccl_simulate(&o, &a), USP_OK);
    o.platform = "l20x8:p2p=sys";
    assert_int_equal(usp_nccl_simulate(&o, &b), USP_OK);
    double avg_shm = 0, avg_p2p = 0;
    assert_int_equal(a.nrows, b.nrows);
    for (int i = 0; i < a.nrows; i++) {
        avg_shm += a.rows[i].busbw / a.nrows;
        avg_p2p += b.rows[i].busbw / b.nrows;
    }
    assert_true(avg_p2p < avg_shm);
    usp_nccl_table_free(&a);
    usp_nccl_table_free(&b);
}

/* A platform without topology props keeps the route as given: the star's
 * all-to-all is 2 x lat + (n-1) x piece / bw, as the engine's closed form. */
static void route_fallback(void **state) {
    (void)state;
    const double piece = 8e6, bw = 10e9, lat = 5e-6;
    usp_nccl_table t = simulate("star:bw=10,lat=5", "alltoall", 4, 4 * piece);
    assert_string_equal(t.rows[0].xport, "route");
    assert_close(t.rows[0].time_us * 1e-6, 2 * lat + 3 * piece / bw);
    usp_nccl_table_free(&t);
}

/* ------------------------------------------------------ closed forms */

/* Two GPUs under one PCIe switch send to each other: call + NCCL's Simple
 * latency (base + one PCI step) + bytes at the PCIe rate, both ways at once
 * on split-duplex links. */
static void sendrecv_pcie_closed_form(void **state) {
    (void)state;
    const double S = 1 << 30;
    usp_nccl_table t = simulate("l20x8", "sendrecv", 2, S);
    double lat = (PCIE_CALL_US + BASE_SIMPLE_US + HW_PCI_SIMPLE_US) * 1e-6;
    assert_close(t.rows[0].time_us * 1e-6, lat + S / (PCIE4_GBPS * 1e9));
    assert_close(t.rows[0].busbw, t.rows[0].algbw); /* sendrecv: bus factor 1 */
    usp_nccl_table_free(&t);
}

/* All-to-all over NVSwitch: every GPU's link carries its 7 pieces of S/8 at
 * a2a_eff of the link: call + latency + 7/8 S / (eff x link); busbw is
 * algbw x 7/8 (nccl-tests). */
static void alltoall_nvswitch_closed_form(void **state) {
    (void)state;
    const double S = 1 << 30;
    usp_nccl_table t = simulate("h200x8", "alltoall", 8, S);
    double lat = (DEFAULT_CALL_US + BASE_SIMPLE_US + HW_NVLINK_SIMPLE_US) * 1e-6;
    assert_close(t.rows[0].time_us * 1e-6, lat + 7.0 / 8 * S / (A2A_EFF * NVL4_GBPS * 1e9));
    assert_close(t.rows[0].busbw, t.rows[0].algbw * 7 / 8);
    assert_string_equal(t.rows[0].algo, "direct");
    usp_nccl_table_free(&t);
}

/* The protocol follows the size: LL for small calls, Simple for large ones;
 * all-reduce on one NVLS node runs NVLS at large sizes, a ring at small ones. */
static void protocol_and_algorithm_by_size(void **state) {
    (void)state;
    usp_nccl_table small = simulate("a100x8", "allgather", 8, 8192), big = simulate("a100x8", "allgather", 8, 1 << 30);
    assert_string_equal(small.rows[0].proto, "LL");
    assert_string_equal(big.rows[0].proto, "Simple");
    assert_string_equal(big.rows[0].algo, "ring");
    usp_nccl_table_free(&small);
    usp_nccl_table_free(&big);
    usp_nccl_table ar = simulate("h200x8", "allreduce", 8, 1 << 30), ar2 = simulate("aws-p4de", "allreduce", 16, 1 << 30);
    assert_string_equal(ar.rows[0].algo, "nvls");
    assert_string_equal(ar2.rows[0].algo, "tree");
    usp_nccl_table_free(&ar);
    usp_nccl_table_free(&ar2);
}

typedef struct { const char *platform; int ranks; double size; const char *algo, *proto; } expect_choice;

/* NCCL's choice where the published curves change slope (sim/SOURCES.md):
 * on 8 A100 LL up to 1 MiB, LL128 from 2 MiB, Simple from 32 MiB (NCCL
 * 2.20's estimate: 1.2 and 22.6 MiB); between 2 p5 nodes the tree, LL,
 * then LL128 from 256 KiB (LL capped at AMD's 22.5 GB/s in the estimate),
 * NVLSTree (Simple) for the largest; between 2 p4de nodes Simple only. */
static void choice_by_size(void **state) {
    (void)state;
    static const expect_choice want[] = {
        {"a100x8", 8, 1 << 20, "ring", "LL"},
        {"a100x8", 8, 4 << 20, "ring", "LL128"},
        {"a100x8", 8, 64 << 20, "ring", "Simple"},
        {"aws-p5", 16, 8, "tree", "LL"},
        {"aws-p5", 16, 1 << 20, "tree", "LL128"},
        {"aws-p5", 16, 4294967296.0, "tree", "Simple"},
        {"aws-p4de", 16, 8, "tree", "Simple"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        usp_nccl_table t = simulate(want[i].platform, "allreduce", want[i].ranks, want[i].size);
        if (strcmp(t.rows[0].algo, want[i].algo) || strcmp(t.rows[0].proto, want[i].proto))
            fail_msg("%s, %.0f B: %s %s, expected %s %s", want[i].platform, want[i].size, t.rows[0].algo,
                     t.rows[0].proto, want[i].algo, want[i].proto);
        usp_nccl_table_free(&t);
    }
}

/* The network plugin's stated latency (aws-ofi-nccl: 75 us for EFA) steers
 * NCCL's choice and is no cost: 2 p5 nodes' 8-byte all-reduce takes the
 * call cost, the tree's LL latency and its messages, far below the 175 us
 * NCCL's estimate gives it. A tree's small calls run on fewer channels: on
 * 2 p4de nodes (Simple, a channel per 32 KiB) the time grows from 8 KiB to
 * 32 KiB and holds until the 16 channels are all in use. */
static void plugin_latency_and_tree_channels(void **state) {
    (void)state;
    usp_nccl_table t = simulate("aws-p5", "allreduce", 16, 8);
    assert_true(t.rows[0].time_us < 100);
    usp_nccl_table_free(&t);
    usp_nccl_options o = {.platform = "aws-p4de", .op = "allreduce", .ranks = 16, .min_bytes = 8192,
                          .max_bytes = 1 << 20, .factor = 2};
    if (usp_nccl_simulate(&o, &t) != USP_OK) fail_msg("%s", usp_error());
    assert_int_equal(t.nrows, 8); /* 8K .. 1M */
    assert_true(t.rows[2].time_us > t.rows[0].time_us * 1.1);          /* 32K vs 8K: one channel */
    assert_true(fabs(t.rows[5].time_us / t.rows[2].time_us - 1) < 0.01); /* 256K as 32K: 8 channels, 32K each */
    assert_true(t.rows[7].time_us > t.rows[6].time_us * 1.1);          /* 1M: 16 channels, growing again */
    usp_nccl_table_free(&t);
}

/* ------------------------------------------------------ the engine */

/* The engine's ALL_TO_ALL step goes through the layer: one step of
 * bytes_sent = 7/8 S on h200x8 takes what usp nccl predicts for S. */
static void engine_uses_the_layer(void **state) {
    (void)state;
    const double S = 64.0 * 1024 * 1024;
    usp_schedule s;
    usp_config c = usp_config_default();
    c.ulysses = 8;
    c.ring = 1;
    assert_int_equal(usp_schedule_init_empty(&c, 8, &s), USP_OK);
    usp_step st = {.kind = USP_STEP_ALL_TO_ALL, .stream = USP_STREAM_COMM, .group = USP_GROUP_ULYSSES, .dep = -1,
                   .ring_step = -1, .bytes_sent = S * 7 / 8};
    for (int i = 0; i < 2; i++) st.src[i] = st.dst[i] = USP_BUF_NONE;
    snprintf(st.name, sizeof st.name, "a2a");
    for (int g = 0; g < 8; g++) assert_int_equal(usp_schedule_set_steps(&s, g, &st, 1, 1), USP_OK);
    usp_result r;
    assert_int_equal(usp_result_init(&r, &s, 0), USP_OK);
    usp_sim_options o = {.platform = "h200x8"};
    if (usp_sim_execute(&s, NULL, &o, &r, NULL) != USP_OK) fail_msg("%s", usp_error());
    usp_nccl_table t = simulate("h200x8", "alltoall", 8, S);
    if (fabs(r.time_fwd_s - t.rows[0].time_us * 1e-6) > 1e-6 * r.time_fwd_s)
        fail_msg("engine %.9g s, usp nccl %.9g s", r.time_fwd_s, t.rows[0].time_us * 1e-6);
    usp_nccl_table_free(&t);
    usp_result_free(&r);
    usp_schedule_free(&s);
}

/* ------------------------------------------------------- from-topo */

static char *platform_from_opts(const char *topo, const usp_topo_options *o) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/usp-test-topo-XXXXXX.xml");
    int fd = mkstemps(path, 4);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    char in[512];
    snprintf(in, sizeof in, "%s/tests/data/topo/%s", USP_SOURCE_DIR, topo);
    if (usp_platform_from_topo(in, o, f) != USP_OK) fail_msg("%s", usp_error());
    fclose(f);
    return path;
}

static char *platform_from_nv(const char *topo, int nodes, int gen, double nvswitch) {
    usp_topo_options o = {.nodes = nodes, .pcie_gen = gen, .nvswitch_gbps = nvswitch};
    return platform_from_opts(topo, &o);
}

static char *platform_from(const char *topo, int nodes, int gen) { return platform_from_nv(topo, nodes, gen, 0); }

/* Published nvidia-smi topo -m outputs (tests/data/topo/SOURCES.md): PIX
 * pairs use P2P, NODE and PHB pairs SHM, NV# pairs NVLink; an NCCL topology
 * dump with an NVSwitch and NICs repeated on two nodes uses the network. */
static void from_topo_transports(void **state) {
    (void)state;
    char *p = platform_from("rtx6kpro-esc8000a.txt", 1, 5);
    expect_transport(p, "sendrecv", 2, "pcie");   /* GPU0-GPU1: PIX */
    expect_transport(p, "sendrecv", 3, "shm");    /* GPU1-GPU2: NODE */
    expect_transport(p, "alltoall", 8, "shm");    /* GPU0-GPU4: SYS */
    unlink(p);
    p = platform_from("a100-nvlink-pairs.txt", 1, 4);
    expect_transport(p, "sendrecv", 2, "nvlink"); /* GPU0-GPU1: NV12 */
    expect_transport(p, "sendrecv", 4, "shm");    /* GPU1-GPU2: NODE */
    unlink(p);
    p = platform_from("rtx5090x2-phb.txt", 1, 5);
    expect_transport(p, "sendrecv", 2, "shm");    /* PHB: through the CPU */
    unlink(p);
    p = platform_from("azure-ndv4-topo.xml", 1, 0);  /* PCI classes, no NVLink in the file */
    expect_transport(p, "sendrecv", 2, "pcie");   /* two GPUs under one switch */
    expect_transport(p, "alltoall", 8, "shm");
    unlink(p);
    /* an AMD host (the file's <cpu vendor>), as NCCL before 2.23.4 ran it */
    usp_topo_options sys = {.nodes = 1, .p2p_sys = 1};
    p = platform_from_opts("azure-ndv4-topo.xml", &sys);
    expect_transport(p, "sendrecv", 2, "pcie");
    expect_transport(p, "alltoall", 8, "pcie-cpu");
    unlink(p);
    p = platform_from_nv("azure-ndv4-topo.xml", 2, 0, 235);
    expect_transport(p, "alltoall", 8, "nvlink");
    expect_transport(p, "allreduce", 16, "net-gdr"); /* each GPU's NIC under its switch */
    unlink(p);
    p = platform_from("nccl-topo-nvswitch.xml", 2, 0);
    expect_transport(p, "alltoall", 4, "nvlink");
    expect_transport(p, "allreduce", 8, "net-gdr");
    unlink(p);
}

/* ------------------------------------------- published nccl-tests data */

typedef struct { const char *cls; double sum; int rows; } class_sum;

/* Published rows the model misses by more than the bar, each with why; any
 * other row beyond it fails the test. 2 x p5 at 32, 64 and 256 KiB: the
 * measured (out-of-place) time rises from 81 us at 8 KiB to 135 us at 64 KiB,
 * falls back to 109 at 128 KiB and reads 128 at 256 KiB; the same run's
 * in-place column reads 90, 104, 97 and 105 us there, and the model (82, 82,
 * 93, 93 us: NCCL's tree, LL up to 128 KiB and LL128 from 256 KiB by its
 * estimate) is within 26% of those. */
/* Today's errors of the held-out files, rounded up (published_held_out). */
#define HELD_OUT_309_MEAN 0.33
#define HELD_OUT_309_MAX 6.52
#define HELD_OUT_XXM_MEAN 0.33
#define HELD_OUT_XXM_MAX 2.16
#define HELD_OUT_XXS_MEAN 0.19
#define HELD_OUT_XXS_MAX 3.04

typedef struct { const char *file; double size; } known_miss;
static const known_miss KNOWN_MISSES[] = {
    {"aws-p5-2node-allreduce.json", 32768},
    {"aws-p5-2node-allreduce.json", 65536},
    {"aws-p5-2node-allreduce.json", 262144},
};

static int is_known_miss(const char *file, double size) {
    for (size_t i = 0; i < sizeof KNOWN_MISSES / sizeof KNOWN_MISSES[0]; i++)
        if (!strcmp(file, KNOWN_MISSES[i].file) && size == KNOWN_MISSES[i].size) return 1;
    return 0;
}

/* Every file of traces/published/nccl the model is fitted to, every counted
 * row re-predicted: each within the bar (but the known misses above), and per
 * topology class the mean |error| within it. */
static void published_within_bar(void **state) {
    (void)state;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/traces/published/nccl", USP_SOURCE_DIR);
    DIR *d = opendir(dir);
    assert_non_null(d);
    class_sum classes[8] = {{"pcie-shm", 0, 0}, {"pcie-p2p", 0, 0}, {"nvswitch", 0, 0}, {"multi-node", 0, 0}};
    int nfiles = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 5, ".json")) continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        usp_nccl_comparison c;
        if (usp_nccl_compare(path, &c) != USP_OK) fail_msg("%s", usp_error());
        if (c.held_out) {   /* never fitted: bounded by published_held_out, not held to the bar */
            usp_nccl_comparison_free(&c);
            continue;
        }
        for (int r = 0; r < c.nrows; r++) {
            if (!c.rows[r].counted) continue;
            int k = 0;
            while (k < 4 && strcmp(classes[k].cls, c.rows[r].cls)) k++;
            if (k == 4)
                fail_msg("%s: class '%s' is not pcie-shm, pcie-p2p, nvswitch or multi-node", path, c.rows[r].cls);
            classes[k].sum += fabs(c.rows[r].error);
            classes[k].rows++;
            if (fabs(c.rows[r].error) > USP_NCCL_BAR && !is_known_miss(e->d_name, c.rows[r].size))
                fail_msg("%s: %s %d ranks, %.0f B: error %+.1f%%, bar %.0f%%", e->d_name, c.rows[r].op, c.rows[r].ranks,
                         c.rows[r].size, 100 * c.rows[r].error, 100 * USP_NCCL_BAR);
        }
        usp_nccl_comparison_free(&c);
        nfiles++;
    }
    closedir(d);
    assert_true(nfiles >= 4);
    for (int k = 0; k < 4; k++) {
        if (!classes[k].rows) fail_msg("class %s has no counted row", classes[k].cls);
        double mean = classes[k].sum / classes[k].rows;
        if (mean > USP_NCCL_BAR) fail_msg("%s: mean |error| %.1f%% over %d rows, bar %.0f%%", classes[k].cls,
                                          100 * mean, classes[k].rows, 100 * USP_NCCL_BAR);
    }
}

/* The held-out files ("held_out": true: no figure of the model was fitted to
 * them): today's mean and largest |error| of each, rounded up, as bounds. They
 * record what the model reaches on machines it never saw, not targets: a
 * change that makes a prediction worse fails here (traces/README.md, "Published
 * nccl-tests results"). */
static void published_held_out(void **state) {
    (void)state;
    static const struct { const char *file; double mean, max; } BOUND[] = {
        {"nccl-tests-309-h100-ib-allreduce.json", HELD_OUT_309_MEAN, HELD_OUT_309_MAX},
        {"xxrjun-h100-multi-node.json", HELD_OUT_XXM_MEAN, HELD_OUT_XXM_MAX},
        {"xxrjun-h100-single-node.json", HELD_OUT_XXS_MEAN, HELD_OUT_XXS_MAX},
    };
    for (size_t i = 0; i < sizeof BOUND / sizeof BOUND[0]; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/traces/published/nccl/%s", USP_SOURCE_DIR, BOUND[i].file);
        usp_nccl_comparison c;
        if (usp_nccl_compare(path, &c) != USP_OK) fail_msg("%s", usp_error());
        assert_true(c.held_out);
        print_message("%-40s %3d rows  mean |error| %5.1f%%  max %6.1f%%\n", BOUND[i].file, c.counted,
                      100 * c.mean_abs_error, 100 * c.max_abs_error);
        if (c.mean_abs_error > BOUND[i].mean || c.max_abs_error > BOUND[i].max)
            fail_msg("%s: mean |error| %.1f%%, max %.1f%%: over the recorded %.0f%%, %.0f%%", BOUND[i].file,
                     100 * c.mean_abs_error, 100 * c.max_abs_error, 100 * BOUND[i].mean, 100 * BOUND[i].max);
        usp_nccl_comparison_free(&c);
    }
}

/* What usp run, sweep and plan print of a ring across more than two nodes
 * (usp_platform_caveat, sim/network/platform.c) is read off the held-out
 * cluster's send/recv rows: across 10 nodes the published rate is 0.3-0.6 of
 * the simulated one, across a pair of nodes the model within 20%. */
static void ring_caveat_figures(void **state) {
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/traces/published/nccl/xxrjun-h100-multi-node.json", USP_SOURCE_DIR);
    usp_nccl_comparison c;
    if (usp_nccl_compare(path, &c) != USP_OK) fail_msg("%s", usp_error());
    double lo = INFINITY, hi = 0, pair = 0;
    int rings = 0, pairs = 0;
    for (int r = 0; r < c.nrows; r++) {
        const usp_nccl_compare_row *x = &c.rows[r];
        if (strcmp(x->op, "sendrecv") || !x->counted) continue;
        assert_true(x->per_node > 0);
        if (x->ranks / x->per_node > 2) {
            const double rate = 1 / (1 + x->error);   /* published over simulated rate */
            lo = fmin(lo, rate), hi = fmax(hi, rate);
            rings++;
        } else {
            pair = fmax(pair, fabs(x->error));
            pairs++;
        }
    }
    print_message("send/recv ring across 10 nodes: %.2f-%.2f of the simulated rate (%d rows); pairs within "
                  "%.1f%% (%d rows)\n", lo, hi, rings, 100 * pair, pairs);
    assert_true(rings >= 30 && pairs >= 10);
    assert_true(lo >= 0.3 && hi <= 0.6 && pair <= 0.20);
    usp_nccl_comparison_free(&c);
    usp_config cfg = usp_config_default();
    cfg.ulysses = 8;
    cfg.ring = 10;
    assert_non_null(usp_platform_caveat("h100-fattree", &cfg));
}

/* -------------------------------------------------------------- CLI */

static int run(const char *args, char *err, size_t n) {
    char cmd[1024], path[] = "/tmp/usp-test-nccl-err-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    snprintf(cmd, sizeof cmd, "%s %s >/dev/null 2>%s", USP_BIN, args, path);
    int rc = system(cmd);
    FILE *f = fopen(path, "r");
    size_t got = f ? fread(err, 1, n - 1, f) : 0;
    err[got] = '\0';
    if (f) fclose(f);
    unlink(path);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void expect_refusal(const char *args, const char *why) {
    char err[2048];
    int rc = run(args, err, sizeof err);
    if (rc != 2 || strncmp(err, "usp: ", 5) || !strstr(err, why))
        fail_msg("usp %s: exit %d, stderr '%s' (want 2 and '%s')", args, rc, err, why);
}

static void cli(void **state) {
    (void)state;
    char err[2048];
    assert_int_equal(run("nccl --help", err, sizeof err), 0);
    assert_int_equal(run("nccl --platform l20x8 --op alltoall -b 1M -e 4M --json", err, sizeof err), 0);
    expect_refusal("nccl --op bogus", "unknown op");
    expect_refusal("nccl --platform nope --op alltoall", "neither a preset");
    expect_refusal("nccl --op alltoall -b 0", "--minbytes");
    expect_refusal("nccl --op alltoall --ranks 1", "--ranks");
    expect_refusal("nccl --op alltoall --ranks 64", "fewer than the 64 ranks");
    expect_refusal("nccl --op alltoall -b 1G -e 1M", "--maxbytes");
    expect_refusal("nccl --op alltoall --per-node 2", "--per-node 2: a positive count, with --ranks");
    expect_refusal("nccl --platform h100x8 --op alltoall --ranks 4 --per-node 2", "fewer than the 4 ranks");
    assert_int_equal(run("nccl --platform h100-fattree:nodes=4 --op sendrecv --ranks 4 --per-node 1 -b 1M -e 2M",
                         err, sizeof err), 0);
    expect_refusal("nccl", "--op is required");
    expect_refusal("nccl --compare /nonexistent.json", "nonexistent");
    static const struct { const char *rows, *why; } bad[] = {
        {"[[-5, 1]]", "a row's size must be 1 to 2^50 bytes"},
        {"[[1e30, 1]]", "a row's size must be 1 to 2^50 bytes"},
        {"[[1048576, -1]]", "its busbw not negative"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char path[] = "/tmp/usp-test-nccl-bad-XXXXXX", args[128];
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        FILE *f = fdopen(fd, "w");
        fprintf(f, "{\"source\": \"s\", \"hardware\": \"h\", \"software\": \"w\", \"class\": \"multi-node\", "
                   "\"platform\": \"h100-fattree:nodes=2\", \"tables\": [{\"op\": \"alltoall\", \"ranks\": 16, "
                   "\"kind\": \"sweep\", \"columns\": [\"size\", \"busbw\"], \"rows\": %s}]}\n", bad[i].rows);
        fclose(f);
        snprintf(args, sizeof args, "nccl --compare %s", path);
        expect_refusal(args, bad[i].why);
        unlink(path);
    }
    expect_refusal("platform --from-topo /nonexistent", "cannot read");
    expect_refusal("platform --from-topo " USP_SOURCE_DIR "/tests/data/topo/SOURCES.md", "not nvidia-smi topo -m");
    expect_refusal("platform --preset pcie:gen=7", "gen");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(transports_on_presets),
        cmocka_unit_test(p2p_through_the_cpu),
        cmocka_unit_test(route_fallback),
        cmocka_unit_test(sendrecv_pcie_closed_form),
        cmocka_unit_test(alltoall_nvswitch_closed_form),
        cmocka_unit_test(protocol_and_algorithm_by_size),
        cmocka_unit_test(choice_by_size),
        cmocka_unit_test(plugin_latency_and_tree_channels),
        cmocka_unit_test(engine_uses_the_layer),
        cmocka_unit_test(from_topo_transports),
        cmocka_unit_test(published_within_bar),
        cmocka_unit_test(published_held_out),
        cmocka_unit_test(ring_caveat_figures),
        cmocka_unit_test(cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
