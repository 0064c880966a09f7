/* test_sim_scale.c: the simulator's cheaper paths predict what the full one did.
 *
 * GOLDEN holds the predicted times of small timing-only runs (seq 64K, 32
 * heads, D 128, bf16, fwd + bwd), first recorded before the fold
 * (sim/engine/fold.c) and the cheaper route check existed, with the engine
 * that gave every rank an actor; re-recorded with --no-fold (every rank an
 * actor) whenever the NCCL model's costs change (last: its latency tables
 * of NCCL 2.20 and the trees' pipeline, sim/network/collectives.c). Each case runs
 * again here, folded where fold.c allows it and with --no-fold, and must
 * give the same times. `usp run` prints microseconds (0.001 ms); the
 * tolerance is far below that: the times are those of the same events,
 * summed in another order at most. Which cases fold is asserted too:
 * ulysses 8 on the 8-GPU nodes of h100-fattree and aws-p5 (each ulysses
 * rank's ring on its own rail) and ring-inner ulysses 4 on h100-fattree
 * (each ulysses rank's ring on its own GPUs' links); the others share a link between a ulysses rank's ring and
 * simulated traffic, or use ring collectives, and run in full. */
#define _GNU_SOURCE /* mkstemps */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "usp/executor.h"
#include "usp/layout.h"
#include "usp/sim.h"

/* Relative: 1e-9 of a few milliseconds is picoseconds, six orders below
 * the printed microsecond. */
static const double REL_TOL = 1e-9;

typedef struct {
    const char *platform;
    int ulysses, ring;
    const char *layout, *ring_impl;
    int causal;
    double fwd_s, bwd_s, exposed_max_s, compute_max_s;
} golden;

static const golden GOLDEN[] = {
    {"h100-fattree", 2, 4, "ulysses-inner", "zigzag", 1, 0.01409888148036516, 0.037800599704753031, 0.0017514033701204234, 0.050222716001930845},
    {"h100-fattree", 4, 4, "ulysses-inner", "zigzag", 1, 0.0072651984293717669, 0.021573615978502634, 0.0036281755003755192, 0.025247958000965423},
    {"h100-fattree", 8, 4, "ulysses-inner", "zigzag", 1, 0.0037724886336048032, 0.010945799005467537, 0.0019763681853228994, 0.012760579000482712},
    {"h100-fattree", 8, 8, "ulysses-inner", "zigzag", 1, 0.0031957119986194475, 0.0088590487469648992, 0.0050873350538136125, 0.0069891951629595488},
    {"h100-fattree", 8, 16, "ulysses-inner", "zigzag", 1, 0.0034074752443079212, 0.0094488283734824527, 0.0084999827904214658, 0.0043796452607855023},
    {"h100-fattree", 4, 8, "ulysses-inner", "zigzag", 1, 0.0059725458350767327, 0.017079706553389227, 0.0095638010049245055, 0.013531990325919089},
    {"h100-fattree", 2, 16, "ulysses-inner", "zigzag", 1, 0.011587844015069525, 0.034324940520956818, 0.030865901226550658, 0.015140181043142013},
    {"h100-fattree", 4, 8, "ring-inner", "zigzag", 1, 0.0049203644892294477, 0.011185293404108093, 0.002617206509796082, 0.013531990325919091},
    {"h100-fattree", 8, 4, "ring-inner", "zigzag", 1, 0.0047011347011723719, 0.010633111866728797, 0.002592327114151726, 0.012760579000482712},
    {"h100-fattree", 8, 8, "ulysses-inner", "basic", 0, 0.0036059968483422192, 0.01030561547358559, 0.0010863986530785996, 0.012825213668849209},
    {"h100-fattree", 8, 4, "ulysses-inner", "stripe", 1, 0.004015022840091532, 0.010946195605467536, 0.0019588087695635026, 0.013003509806969439},
    {"h100-fattree", 8, 4, "ulysses-inner", "allgather", 1, 0.0059133797453289408, 0.01353173278385833, 0.0069414619637136986, 0.012522310112206843},
    {"h100-fattree", 4, 4, "ulysses-inner", "allgather", 1, 0.0093732286528200488, 0.022531979535284252, 0.0071411070571571434, 0.024801420224413701},
    {"h200x8", 2, 4, "ulysses-inner", "zigzag", 1, 0.014417992865831855, 0.03908012179307728, 0.0017006754321469185, 0.051799861415820318},
    {"h200x8", 4, 2, "ulysses-inner", "zigzag", 1, 0.014639673418929073, 0.038560711153098962, 0.0021029040961982673, 0.051098287872182464},
    {"a800-2n", 2, 8, "ulysses-inner", "zigzag", 1, 0.041755894194855925, 0.13048725379388459, 0.12800016905827652, 0.044372896008642596},
    {"a800-2n", 4, 4, "ulysses-inner", "zigzag", 1, 0.020722659884556967, 0.06335711390364851, 0.041711011078803373, 0.042424441457192943},
    {"a800-2n", 8, 2, "ulysses-inner", "zigzag", 1, 0.012075780295356055, 0.037292668517903457, 0.0074467339702199578, 0.041940274425636498},
    {"l20x8", 2, 4, "ulysses-inner", "zigzag", 1, 0.062645283403075347, 0.18236191652834313, 0.031295632940072565, 0.21394487153556657},
    {"aws-p5:nodes=4", 8, 4, "ulysses-inner", "zigzag", 1, 0.0038644715579570299, 0.011428340639827114, 0.0025508927440347062, 0.012760579000482712},
    {"aws-p5:nodes=4", 4, 8, "ulysses-inner", "zigzag", 1, 0.0068348379608628969, 0.019545237823829498, 0.012891624401150941, 0.013531990325919086},
};
enum { NGOLDEN = sizeof GOLDEN / sizeof GOLDEN[0] };

static int folds(const golden *g) {
    int rails = !strcmp(g->platform, "h100-fattree") || !strncmp(g->platform, "aws-p5", 6);
    return strcmp(g->ring_impl, "allgather") &&
           ((rails && g->ulysses == 8 && !strcmp(g->layout, "ulysses-inner")) ||
            (!strcmp(g->platform, "h100-fattree") && g->ulysses == 4 && !strcmp(g->layout, "ring-inner")));
}

static void assert_close(const char *what, const golden *g, double got, double want) {
    if (fabs(got - want) > REL_TOL * fabs(want))
        fail_msg("%s U%d x R%d %s %s: %s %.12g s, recorded %.12g s", g->platform, g->ulysses, g->ring, g->layout,
                 g->ring_impl, what, got, want);
}

static usp_config config_of(const golden *g) {
    usp_config c = usp_config_default();
    c.seq = 65536;
    c.heads = c.kv_heads = 32;
    c.head_dim = 128;
    c.dtype = USP_BF16;
    c.causal = g->causal;
    c.ulysses = g->ulysses;
    c.ring = g->ring;
    assert_int_equal(usp_parse_ring_impl(g->ring_impl, &c.ring_impl), USP_OK);
    assert_int_equal(usp_parse_layout(g->layout, &c.layout), USP_OK);
    return c;
}

/* One timing-only run; its ranks simulated, times in *r (caller frees). */
static void run(const golden *g, int no_fold, const char *trace_path, usp_schedule *s, usp_result *r) {
    usp_config c = config_of(g);
    assert_int_equal(usp_schedule_build(&c, 1, s), USP_OK);
    assert_int_equal(usp_result_init(r, s, 0), USP_OK);
    usp_sim_options o = {0};
    o.platform = g->platform;
    o.no_fold = no_fold;
    usp_trace t;
    usp_trace_init(&t, "sim", &c);
    if (usp_sim_execute(s, NULL, &o, r, trace_path ? &t : NULL) != USP_OK) fail_msg("%s", usp_error());
    if (trace_path) assert_int_equal(usp_trace_write(&t, trace_path), USP_OK);
    usp_trace_free(&t);
}

static void check_times(const golden *g, const usp_result *r) {
    double exposed = 0, compute = 0;
    for (int k = 0; k < r->world; k++) {
        if (r->ranks[k].exposed_comm_s > exposed) exposed = r->ranks[k].exposed_comm_s;
        if (r->ranks[k].compute_s > compute) compute = r->ranks[k].compute_s;
    }
    assert_close("forward", g, r->time_fwd_s, g->fwd_s);
    assert_close("backward", g, r->time_bwd_s, g->bwd_s);
    assert_close("exposed comm", g, exposed, g->exposed_max_s);
    assert_close("compute", g, compute, g->compute_max_s);
}

static void test_recorded_times_folded_or_not(void **state) {
    (void)state;
    for (int i = 0; i < NGOLDEN; i++) {
        const golden *g = &GOLDEN[i];
        usp_schedule s;
        usp_result r;
        run(g, 0, NULL, &s, &r);
        check_times(g, &r);
        int world = g->ulysses * g->ring;
        if (r.sim_ranks_simulated != (folds(g) ? world / g->ulysses : world))
            fail_msg("%s U%d x R%d %s %s: %d of %d ranks simulated (%s)", g->platform, g->ulysses, g->ring,
                     g->layout, g->ring_impl, r.sim_ranks_simulated, world, r.sim_mode);
        if (!folds(g) && !r.sim_mode[0]) fail_msg("a run in full says why it did not fold");
        usp_result_free(&r);
        usp_schedule_free(&s);
    }
}

/* --no-fold: every rank an actor, the same times. */
static void test_no_fold_same_times(void **state) {
    (void)state;
    for (int i = 0; i < NGOLDEN; i++) {
        const golden *g = &GOLDEN[i];
        if (!folds(g)) continue;
        usp_schedule s;
        usp_result r;
        run(g, 1, NULL, &s, &r);
        check_times(g, &r);
        assert_int_equal(r.sim_ranks_simulated, g->ulysses * g->ring);
        usp_result_free(&r);
        usp_schedule_free(&s);
    }
}

static char *slurp(const char *path, long *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = ftell(f);
    rewind(f);
    char *b = malloc((size_t)*n + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)*n, f), (size_t)*n);
    fclose(f);
    return b;
}

/* A folded run's trace has every rank's every step, as the full run's:
 * the same bytes. */
static void test_folded_trace_is_the_full_trace(void **state) {
    (void)state;
    const golden *g = NULL;
    for (int i = 0; i < NGOLDEN && !g; i++)
        if (folds(&GOLDEN[i]) && GOLDEN[i].ring == 4) g = &GOLDEN[i];
    assert_non_null(g);
    char a[] = "/tmp/usp-fold-XXXXXX.json", b[] = "/tmp/usp-full-XXXXXX.json";
    int fa = mkstemps(a, 5), fb = mkstemps(b, 5);
    assert_true(fa >= 0 && fb >= 0);
    close(fa);
    close(fb);
    usp_schedule s;
    usp_result r;
    run(g, 0, a, &s, &r);
    assert_int_equal(r.sim_ranks_simulated, g->ring);
    usp_result_free(&r);
    usp_schedule_free(&s);
    run(g, 1, b, &s, &r);
    usp_result_free(&r);
    usp_schedule_free(&s);
    long na, nb;
    char *ta = slurp(a, &na), *tb = slurp(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(ta, tb, (size_t)na);
    free(ta);
    free(tb);
    unlink(a);
    unlink(b);
}

/* Four hosts where the route from host 0 to host 1 alone crosses a slow
 * link: ulysses 4 x ring 1 passes the fold's check (no ring traffic), but in
 * each all-to-all ranks 2 and 3 end before rank 0, their representative:
 * the fold is caught and the run repeated in full, with --no-fold's times. */
static const char UNLIKE_XML[] =
    "<?xml version='1.0'?>\n<!DOCTYPE platform SYSTEM \"https://simgrid.org/simgrid.dtd\">\n"
    "<platform version=\"4.1\"><zone id=\"z\" routing=\"Full\">\n"
    "<host id=\"h0\" speed=\"1Gf\"/><host id=\"h1\" speed=\"1Gf\"/>"
    "<host id=\"h2\" speed=\"1Gf\"/><host id=\"h3\" speed=\"1Gf\"/>\n"
    "<link id=\"l0\" bandwidth=\"100GBps\" latency=\"1us\"/><link id=\"l1\" bandwidth=\"100GBps\" latency=\"1us\"/>"
    "<link id=\"l2\" bandwidth=\"100GBps\" latency=\"1us\"/><link id=\"l3\" bandwidth=\"100GBps\" latency=\"1us\"/>"
    "<link id=\"slow\" bandwidth=\"5GBps\" latency=\"1us\"/>\n"
    "<route src=\"h0\" dst=\"h1\" symmetrical=\"NO\"><link_ctn id=\"l0\"/><link_ctn id=\"slow\"/><link_ctn id=\"l1\"/></route>\n"
    "<route src=\"h1\" dst=\"h0\" symmetrical=\"NO\"><link_ctn id=\"l1\"/><link_ctn id=\"l0\"/></route>\n"
    "<route src=\"h0\" dst=\"h2\"><link_ctn id=\"l0\"/><link_ctn id=\"l2\"/></route>\n"
    "<route src=\"h0\" dst=\"h3\"><link_ctn id=\"l0\"/><link_ctn id=\"l3\"/></route>\n"
    "<route src=\"h1\" dst=\"h2\"><link_ctn id=\"l1\"/><link_ctn id=\"l2\"/></route>\n"
    "<route src=\"h1\" dst=\"h3\"><link_ctn id=\"l1\"/><link_ctn id=\"l3\"/></route>\n"
    "<route src=\"h2\" dst=\"h3\"><link_ctn id=\"l2\"/><link_ctn id=\"l3\"/></route>\n"
    "</zone></platform>\n";

static void test_unlike_all_to_all_runs_in_full(void **state) {
    (void)state;
    char path[] = "/tmp/usp-unlike-XXXXXX.xml";
    int fd = mkstemps(path, 4);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, UNLIKE_XML, sizeof UNLIKE_XML - 1), (ssize_t)(sizeof UNLIKE_XML - 1));
    close(fd);
    golden g = {path, 4, 1, "ulysses-inner", "basic", 1, 0, 0, 0, 0};
    usp_schedule s;
    usp_result folded, full;
    run(&g, 0, NULL, &s, &folded);
    usp_schedule_free(&s);
    run(&g, 1, NULL, &s, &full);
    usp_schedule_free(&s);
    unlink(path);
    if (folded.sim_ranks_simulated != 4 || !strstr(folded.sim_mode, "in full"))
        fail_msg("%d ranks simulated (%s)", folded.sim_ranks_simulated, folded.sim_mode);
    g.fwd_s = full.time_fwd_s;
    g.bwd_s = full.time_bwd_s;
    assert_close("forward", &g, folded.time_fwd_s, g.fwd_s);
    assert_close("backward", &g, folded.time_bwd_s, g.bwd_s);
    usp_result_free(&folded);
    usp_result_free(&full);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_recorded_times_folded_or_not),
        cmocka_unit_test(test_no_fold_same_times),
        cmocka_unit_test(test_folded_trace_is_the_full_trace),
        cmocka_unit_test(test_unlike_all_to_all_runs_in_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
