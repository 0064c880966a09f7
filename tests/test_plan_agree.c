/* test_plan_agree.c: the planner and the simulator time the same attention
 * alike.
 *
 * `usp plan` simulates one transformer layer per mix; its attention is the
 * USP schedule of heads / tp (plan_program.c splices it into the layer), run
 * by the planner's own SimGrid program (plan_sim.c). `usp run --no-numerics`
 * runs the same schedule through the simulator's engine (sim/engine/). Both
 * cost every comm step through the network layer (sim/network/nccl.h): an
 * all-to-all in the ulysses group, a ring send/recv (or the allgather ring's
 * all-gather and reduce-scatter) becomes one NCCL call of the same size over
 * the same GPUs, hence the same delay and the same flows. So for the
 * attention alone (plan_build_attention: the layer's attention without the
 * layer around it, which would add TP and ZeRO traffic on the same links),
 * both must give:
 *   - the same forward and backward times;
 *   - the same communication time: the comm steps' durations, summed over
 *     every rank, separately for the ulysses all-to-alls and the ring's
 *     transfers (each step's duration, start to end, includes the wait for
 *     its peers, so equal sums need equal flows and equal start times).
 * Cases: h100x8 (NVSwitch), a800-2n (two nodes: NVLink inside, RDMA NICs
 * across), l20x8 (PCIe, SHM between the sockets), h100-fattree at 16, 32 and
 * 64 GPUs; zigzag, stripe, allgather and basic rings; packed documents
 * (balanced dispatch); TP 2; a head count the ulysses degree does not
 * divide; a profile that slows attention under a transfer (the calibrated
 * H200's comm_overlap_slowdown, which the planner ignored before). One case also runs the `usp run --no-numerics`
 * command itself.
 *
 * What this found: with an uneven head split the planner spread each
 * all-to-all's bytes evenly over the peers, where the engine gives each peer
 * its piece (12 heads over ulysses 8 on h100x8: forward 0.724 ms against
 * 0.747 ms); both now weigh the pieces alike (sim_a2a_uneven_pieces).
 *
 * Where they may differ, and why none of it is in these cases:
 *   - tp > 1: the planner's USP rank g is global GPU g x tp (TP innermost),
 *     and every TP rank runs its own copy of the attention; compared here
 *     with usp run placed on those GPUs by a host map: equal where the copies
 *     share no link, the planner slower where they share NICs (checked as
 *     such); dp > 1 alike (not compared);
 * USP_BIN is the path of the usp binary. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "usp/mask.h"
#include "usp/plan.h"
#include "usp/sim.h"
#include "usp/trace.h"
#include "plan_internal.h"
#include "test_util.h"

/* Both executors run the same activities on the same platform, but as
 * different SimGrid actors (the engine one per rank with a self-timed
 * compute stream, the planner three per rank), and add up the durations in
 * another order. Measured: at most 2.2e-15 relative (the last bits of a
 * double's sum) where the attention runs alone; with TP 2, where two copies
 * of it run at once, a step may end 1 ns apart, SimGrid's time resolution
 * (surf/precision, 1e-9 s by default: it rounds dates to it), 4 ns over the
 * 36 all-to-alls of four ranks. So a figure may differ by 1e-9 relative plus
 * 1 ns per comm step it adds up (the sums: every rank's; the times: one
 * rank's): far below any modelling difference (one NCCL call's latency is
 * microseconds; the uneven split this test found moved the forward by 3%). */
#define AGREE_RTOL 1e-9
#define AGREE_STEP_S 1e-9

typedef struct {
    const char *platform;
    int tp;              /* 0: 1 */
    int ulysses, ring;
    usp_ring_impl impl;
    int heads, kv_heads; /* 0: llama3-8b's 32 and 8 */
    int seq;
} agree_case;

typedef struct {
    double fwd_s, bwd_s;
    double comm_s[USP_TERM_COUNT];
    int rank_steps, all_steps; /* comm steps of rank 0, of every rank (engine) */
} timing;

/* The mask of the documents case (NULL: one causal document). */
static usp_mask *case_mask;
/* The profile of the slowdown case (NULL: the preset's GPU). */
static const char *case_profile;

static usp_workload workload(const agree_case *c) {
    usp_workload w = usp_workload_default();
    usp_model m = {"llama3-8b-attention", 1, 4096, 32, 8, 128, 14336, 128256, 1, 0};
    if (c->heads) { m.heads = c->heads; m.kv_heads = c->kv_heads; m.hidden = c->heads * m.head_dim; }
    w.model = m;
    w.seq = c->seq;
    w.global_batch = 1;
    w.ring_impl = c->impl;
    w.mask = case_mask;
    return w;
}

static usp_mix mix_of(const agree_case *c) {
    usp_mix x = {.dp = 1, .tp = c->tp ? c->tp : 1, .ulysses = c->ulysses, .ring = c->ring, .zero = 1,
                 .recompute = 0, .tp_sp = 1};
    return x;
}

/* The preset's GPU, as usp plan and usp run pick it. */
static const char *profile_of(const char *platform) {
    usp_sim_options o = {.platform = platform};
    return sim_profile_for(&o);
}

static timing planner_timing(const agree_case *c) {
    usp_workload w = workload(c);
    usp_mix x = mix_of(c);
    plan_device dev;
    if (plan_device_load(case_profile ? case_profile : profile_of(c->platform), &w, 0, &dev) != USP_OK) fail_msg("%s", usp_error());
    plan_program prog;
    if (plan_build_attention(&w, &x, &dev, &prog) != USP_OK) fail_msg("%s", usp_error());
    const plan_program *progs[1] = {&prog};
    plan_sim_result res;
    if (plan_simulate(progs, 1, c->platform, usp_mix_gpus(&x), &res) != USP_OK) fail_msg("%s", usp_error());
    plan_program_free(&prog);
    timing t = {res.fwd_s, res.makespan_s - res.fwd_s, {0}, 0, 0};
    for (int k = 0; k < USP_TERM_COUNT; k++) t.comm_s[k] = res.comm_s[k] / x.tp; /* one attention of tp alike */
    return t;
}

static timing engine_timing(const agree_case *c) {
    usp_workload w = workload(c);
    usp_mix x = mix_of(c);
    usp_config cfg = plan_attention_config(&w, &x);
    usp_schedule s;
    if (usp_schedule_build(&cfg, 1, &s) != USP_OK) fail_msg("%s", usp_error());
    usp_result r;
    assert_int_equal(usp_result_init(&r, &s, 0), USP_OK);
    usp_trace tr;
    usp_trace_init(&tr, "sim", &cfg);
    usp_sim_options o = {.platform = c->platform, .profile = case_profile ? case_profile : profile_of(c->platform)};
    char hostmap[64] = "";
    if (x.tp > 1) { /* USP rank r*U+u on the planner's GPU of TP rank 0 (hosts gpuN, a800-2n's nodeM-gpuN) */
        snprintf(hostmap, sizeof hostmap, "/tmp/usp-test-plan-agree-%ld.hosts", (long)getpid());
        FILE *f = fopen(hostmap, "w");
        assert_non_null(f);
        for (int r = 0; r < x.ring; r++)
            for (int u = 0; u < x.ulysses; u++) {
                int gpu = plan_rank_of(&x, 0, r, u, 0);
                if (strncmp(c->platform, "a800-2n", 7) == 0) fprintf(f, "node%d-gpu%d\n", gpu / 8, gpu % 8);
                else fprintf(f, "gpu%d\n", gpu);
            }
        fclose(f);
        o.hostmap = hostmap;
    }
    if (usp_sim_execute(&s, NULL, &o, &r, &tr) != USP_OK) fail_msg("%s", usp_error());
    if (hostmap[0]) remove(hostmap);
    timing t = {r.time_fwd_s, r.time_bwd_s, {0}, 0, 0};
    for (long e = 0; e < tr.count; e++) {
        const usp_trace_event *ev = &tr.events[e];
        if (ev->stream != USP_STREAM_COMM) continue;
        t.all_steps++;
        t.rank_steps += ev->rank == 0;
        const usp_step *st = usp_rank_step(&s.ranks[ev->rank], ev->step);
        t.comm_s[st->group == USP_GROUP_ULYSSES ? USP_TERM_ULYSSES : USP_TERM_RING] += ev->dur_us * 1e-6;
    }
    usp_trace_free(&tr);
    usp_result_free(&r);
    usp_schedule_free(&s);
    return t;
}

static int close_enough(double a, double b, int steps) {
    return fabs(a - b) <= AGREE_RTOL * fmax(fabs(a), fabs(b)) + AGREE_STEP_S * steps;
}

static void expect_same(const char *what, const agree_case *c, double planner, double engine, int steps) {
    print_message("%-13s u%-2d r%-2d %-9s %-10s planner %.9g s, engine %.9g s, difference %.2g\n", c->platform,
                  c->ulysses, c->ring, usp_ring_impl_name(c->impl), what, planner, engine,
                  fabs(planner - engine) / fmax(fmax(fabs(planner), fabs(engine)), 1e-300));
    if (!close_enough(planner, engine, steps))
        fail_msg("%s, ulysses %d x ring %d (%s): %s: planner %.9g s, usp run %.9g s", c->platform, c->ulysses,
                 c->ring, usp_ring_impl_name(c->impl), what, planner, engine);
}

static void agree(const agree_case *c) {
    timing p = planner_timing(c), e = engine_timing(c);
    expect_same("forward", c, p.fwd_s, e.fwd_s, e.rank_steps);
    expect_same("backward", c, p.bwd_s, e.bwd_s, e.rank_steps);
    expect_same("all-to-all", c, p.comm_s[USP_TERM_ULYSSES], e.comm_s[USP_TERM_ULYSSES], e.all_steps);
    expect_same("ring", c, p.comm_s[USP_TERM_RING], e.comm_s[USP_TERM_RING], e.all_steps);
    /* nothing compared is empty where the mix has that group */
    if (c->ulysses > 1) assert_true(e.comm_s[USP_TERM_ULYSSES] > 0);
    if (c->ring > 1) assert_true(e.comm_s[USP_TERM_RING] > 0);
}

static void one_node(void **state) {
    (void)state;
    static const agree_case cases[] = {
        {"h100x8", 0, 8, 1, USP_RING_ZIGZAG, 0, 0, 32768},
        {"h100x8", 0, 4, 2, USP_RING_ZIGZAG, 0, 0, 32768},
        {"h100x8", 0, 2, 4, USP_RING_ALLGATHER, 0, 0, 32768},
        {"l20x8", 0, 4, 2, USP_RING_ZIGZAG, 0, 0, 16384},
        {"l20x8", 0, 1, 8, USP_RING_BASIC, 0, 0, 16384},
        {"h100x8", 0, 2, 4, USP_RING_STRIPE, 0, 0, 32768},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) agree(&cases[i]);
}

static void across_nodes(void **state) {
    (void)state;
    static const agree_case cases[] = {
        {"a800-2n", 0, 8, 2, USP_RING_ZIGZAG, 0, 0, 65536},
        {"a800-2n", 0, 4, 4, USP_RING_ZIGZAG, 0, 0, 65536},
        {"a800-2n", 0, 2, 8, USP_RING_ALLGATHER, 0, 0, 65536},
        {"h100-fattree", 0, 8, 2, USP_RING_ZIGZAG, 0, 0, 65536},
        {"h100-fattree", 0, 8, 4, USP_RING_ZIGZAG, 0, 0, 65536},
        {"h100-fattree", 0, 8, 8, USP_RING_ZIGZAG, 0, 0, 131072},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) agree(&cases[i]);
}

/* TP 2: every TP rank runs the attention of half the heads, on its own GPUs;
 * the planner runs both copies at once, usp run one, placed by a host map
 * on the GPUs of TP rank 0. On NVSwitch (each GPU has links of its own)
 * and on a800-2n with ulysses 4 x ring 2 the times agree: the other copy
 * does not slow this one down. */
static void tensor_parallel(void **state) {
    (void)state;
    static const agree_case cases[] = {
        {"h100x8", 2, 4, 1, USP_RING_ZIGZAG, 0, 0, 32768},
        {"h100x8", 2, 2, 2, USP_RING_ZIGZAG, 0, 0, 32768},
        {"a800-2n", 2, 4, 2, USP_RING_ZIGZAG, 0, 0, 65536},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) agree(&cases[i]);
}

/* A difference that is expected: on a800-2n with tp 2 x ulysses 2 x ring 4
 * both TP copies' ring transfers cross between the nodes at once, and the
 * two GPUs of a TP pair (2k, 2k+1) share NIC k: the planner simulates both
 * copies, one usp run of the attention only one. The forwards agree; the
 * planner's backward (K/V with dK/dV in fp32) is the slower (measured
 * 33.45 ms against 32.05 ms, +4.4%). Why ulysses 4 x ring 2 (above) is not
 * slowed as well was not traced further. */
static void tensor_parallel_shared_nics(void **state) {
    (void)state;
    const agree_case c = {"a800-2n", 2, 2, 4, USP_RING_ZIGZAG, 0, 0, 65536};
    timing p = planner_timing(&c), e = engine_timing(&c);
    expect_same("forward", &c, p.fwd_s, e.fwd_s, e.rank_steps);
    print_message("a800-2n tp2 u2 r4: backward planner %.9g s, usp run %.9g s (+%.1f%%)\n", p.bwd_s, e.bwd_s,
                  100 * (p.bwd_s / e.bwd_s - 1));
    assert_true(p.bwd_s > e.bwd_s * 1.01);
}

/* 12 heads (4 K/V) over ulysses 8: 2 heads on four ranks, 1 on the others,
 * so every all-to-all's pieces differ by peer (usp/a2a.h). */
static void uneven_heads(void **state) {
    (void)state;
    static const agree_case cases[] = {
        {"h100x8", 0, 8, 1, USP_RING_ZIGZAG, 12, 4, 16384},
        {"a800-2n", 0, 8, 2, USP_RING_ZIGZAG, 12, 4, 32768},
        {"star:nodes=8", 0, 8, 1, USP_RING_ZIGZAG, 12, 4, 16384}, /* no topology props: the old model */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) agree(&cases[i]);
}

/* Packed documents (3000, 100, 1092, 4000 tokens, causal), dispatched in
 * chunks that balance the visible work (ring-impl balanced). */
static void packed_documents(void **state) {
    (void)state;
    usp_mask_spec docs = {.seqlens = "3000,100,1092,4000", .causal = 1};
    assert_int_equal(usp_mask_build(&docs, 8192, 1, &case_mask), USP_OK);
    static const agree_case cases[] = {
        {"h100x8", 0, 2, 4, USP_RING_BALANCED, 0, 0, 8192},
        {"a800-2n", 0, 4, 4, USP_RING_BALANCED, 0, 0, 8192},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) agree(&cases[i]);
    usp_mask_free(case_mask);
    case_mask = NULL;
}

/* The command itself: `usp run --no-numerics --json` prints the engine's
 * times, which the planner's attention matches. */
static void usp_run_command(void **state) {
    (void)state;
    const agree_case c = {"a800-2n", 0, 4, 4, USP_RING_ZIGZAG, 0, 0, 65536};
    timing p = planner_timing(&c);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "%s run --no-numerics --json --platform a800-2n --ulysses 4 --ring 4 --ring-impl zigzag --seq 65536 "
             "--heads 32 --kv-heads 8 --head-dim 128 --dtype bf16 --causal 2>&1",
             USP_BIN);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    static char out[1 << 16];
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    if (pclose(f) != 0) fail_msg("%s: %s", cmd, out);
    const char *sim = strstr(out, "\"sim\"");
    assert_non_null(sim);
    const char *fwd = strstr(sim, "\"time_fwd_s\":"), *bwd = strstr(sim, "\"time_bwd_s\":");
    assert_non_null(fwd);
    assert_non_null(bwd);
    expect_same("forward", &c, p.fwd_s, strtod(fwd + strlen("\"time_fwd_s\":"), NULL), 0);
    expect_same("backward", &c, p.bwd_s, strtod(bwd + strlen("\"time_bwd_s\":"), NULL), 0);
}

/* The calibrated H200 profile slows an attention block by
 * comm_overlap_slowdown (0.129) while a transfer listed before it runs: the
 * engine stretches the block (stretched_end), the planner re-rates it as the
 * transfer starts and ends (compute_slowed). Both must give the same times,
 * and the slowdown must show (else the case tests nothing). */
static void comm_overlap_slowdown(void **state) {
    (void)state;
    static const agree_case cases[] = {
        {"h200x8", 0, 1, 8, USP_RING_ZIGZAG, 0, 0, 32768},
        {"h200x8", 0, 2, 4, USP_RING_BASIC, 0, 0, 32768},
        {"a800-2n", 0, 4, 4, USP_RING_ZIGZAG, 0, 0, 65536},
    };
    case_profile = "h200-calibrated";
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) agree(&cases[i]);
    timing slowed = planner_timing(&cases[0]);
    /* the same profile without the slowdown, from its embedded text */
    const char *text = NULL;
    for (int i = 0; i < SIM_NEMBEDDED_PROFILES; i++)
        if (strcmp(SIM_EMBEDDED_PROFILES[i].name, "h200-calibrated") == 0) text = SIM_EMBEDDED_PROFILES[i].json;
    assert_non_null(text);
    const char *key = strstr(text, "\"comm_overlap_slowdown\"");
    assert_non_null(key);
    char path[64];
    snprintf(path, sizeof path, "/tmp/usp-test-plan-agree-%ld.json", (long)getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "%.*s\"comm_overlap_slowdown\": 0%s", (int)(key - text), text, strchr(key, ','));
    fclose(f);
    case_profile = path;
    timing alone = planner_timing(&cases[0]);
    case_profile = NULL;
    remove(path);
    print_message("h200x8 u1 r8: planner forward %.9g s with the calibrated profile, %.9g s without its slowdown\n",
                  slowed.fwd_s, alone.fwd_s);
    assert_true(slowed.fwd_s > alone.fwd_s * 1.001);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_node),
        cmocka_unit_test(across_nodes),
        cmocka_unit_test(tensor_parallel),
        cmocka_unit_test(tensor_parallel_shared_nics),
        cmocka_unit_test(uneven_heads),
        cmocka_unit_test(packed_documents),
        cmocka_unit_test(usp_run_command),
        cmocka_unit_test(comm_overlap_slowdown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
