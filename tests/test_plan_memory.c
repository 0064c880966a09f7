/* test_plan_memory.c: GPU memory capacity and gradient accumulation in the
 * planner (usp/plan.h) and usp run's memory estimate (usp/sim.h).
 *
 * - a profile's capacity is exact: "memory_mib" (nvidia-smi's total) is
 *   MiB x 2^20 bytes, the built-in 80 GB cards hold 80 GiB (81920 MiB) or
 *   81559 MiB (H100); both keys, or neither, are refused;
 * - a mix is out of memory exactly when its bytes exceed
 *   USP_MEMORY_USABLE_FRACTION of the card, in the planner and in usp run;
 * - with --micro-batch, a step is n micro-batches of the same time plus one
 *   synchronization: step(n) = n x micro + sync, for n = 1, 2, 3; the
 *   simulation moves the closed form's bytes (activations n times, ZeRO-0/1
 *   gradients and parameters once, ZeRO-2 gradients n times); activations
 *   are those of one micro-batch; a micro-batch that does not divide the
 *   global batch is refused with the reason;
 * - usp plan --json and --help carry the new fields. */
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
#include "usp/plan.h"
#include "usp/sim.h"
#include "plan_internal.h"
#include "test_util.h"
#include "test_plan_model.h"

/* Byte counts and capacities are whole numbers far below 2^53: exact. */
#define EXACT 0.0
/* The boundary is probed this far (relative) on either side of the usable
 * bytes: far above the rounding of memory_gb x 1e9 x 0.95 (1e-16) and of
 * printing it with %.17g, far below any real margin. */
#define BOUNDARY_REL 1e-9
/* Step times are sums of simulated durations (SimGrid's doubles, each
 * simulation deterministic): step(n) - n x micro - sync is rounding only. */
#define STEP_SUM_REL 1e-9


static usp_mix mix(int dp, int tp, int u, int r, int zero) {
    usp_mix x = {dp, tp, u, r, zero, 0, 1, 0};
    return x;
}

static usp_plan_options options(const char *platform, const char *profile, int gpus) {
    usp_plan_options o;
    usp_plan_options_init(&o);
    o.platform = platform;
    o.profile = profile;
    o.gpus = gpus;
    return o;
}

/* A profile file with bf16 rates for head dim 64 and the given memory line. */
static char *profile_with(const char *memory) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/usp-test-memory-XXXXXX.json");
    int fd = mkstemps(path, 5);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fprintf(f,
            "{\"name\": \"boundary\", \"attention_tflops\": {\"bf16\": {\"64\": {\"fwd\": 200, \"bwd\": 150}}},\n"
            " \"masked_block_efficiency\": {\"fwd\": 1, \"bwd\": 1}, \"hbm_gbps\": 2000,\n"
            " \"launch_overhead_us\": 5, %s, \"peak_dense_tflops\": {\"bf16\": 312}}\n",
            memory);
    fclose(f);
    return path;
}

/* ---------------------------------------------------------------- capacity */

static void test_capacity_exact(void **state) {
    (void)state;
    static const struct { const char *profile; double mib; } cards[] = {
        {"a100", 81920}, {"a800", 81920}, {"h100", 81559}, {"l20", 46068}};
    usp_workload w = usp_workload_default();
    for (size_t i = 0; i < sizeof cards / sizeof *cards; i++) {
        plan_device dev;
        assert_int_equal(plan_device_load(cards[i].profile, &w, 0, &dev), USP_OK);
        assert_true(fabs(dev.prof.capacity_bytes - cards[i].mib * 1048576.0) <= EXACT);
        assert_true(fabs(dev.prof.usable_bytes - USP_MEMORY_USABLE_FRACTION * cards[i].mib * 1048576.0) <= EXACT);
    }
    /* an 80 GB card holds 80 GiB, not 80 x 10^9 bytes */
    plan_device a800;
    assert_int_equal(plan_device_load("a800", &w, 0, &a800), USP_OK);
    assert_true(a800.prof.capacity_bytes == 80.0 * 1024 * 1024 * 1024);

    w = small_workload(4096, 1);
    plan_device dev;
    char *both = profile_with("\"memory_mib\": 81920, \"memory_gb\": 80");
    assert_int_equal(plan_device_load(both, &w, 0, &dev), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "give 'memory_mib' or 'memory_gb', not both"));
    unlink(both);
    char *neither = profile_with("\"memory_gbps\": {}");
    assert_int_equal(plan_device_load(neither, &w, 0, &dev), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "missing 'memory_mib' (or 'memory_gb')"));
    unlink(neither);
    char *bytes = profile_with("\"memory_mib\": 85899345920");
    assert_int_equal(plan_device_load(bytes, &w, 0, &dev), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "'memory_mib' is 8.58993e+10, outside the physical range"));
    unlink(bytes);
}

/* One mix, planned on a card of `gb` x 10^9 bytes: its point. */
static usp_plan_point plan_on_card(const usp_workload *w, usp_mix x, double gb, double *usable) {
    char line[64];
    snprintf(line, sizeof line, "\"memory_gb\": %.17g", gb);
    char *path = profile_with(line);
    usp_plan_options o = options("h200x8", path, usp_mix_gpus(&x));
    usp_plan p;
    usp_status st = usp_plan_one(w, &o, &x, &p);
    unlink(path);
    if (st != USP_OK) fail_msg("%s", usp_error());
    usp_plan_point pt = p.points[0];
    *usable = p.usable_bytes;
    usp_plan_free(&p);
    return pt;
}

/* The planner flags a mix exactly when its bytes exceed the usable share. */
static void test_planner_boundary(void **state) {
    (void)state;
    usp_workload w = small_workload(8192, 2);
    usp_mix x = mix(1, 2, 2, 2, 1);
    usp_memory m;
    usp_memory_closed_form(&w, &x, &m);
    double at = m.total / USP_MEMORY_USABLE_FRACTION / 1e9, usable;
    usp_plan_point fits = plan_on_card(&w, x, at * (1 + BOUNDARY_REL), &usable);
    assert_int_equal(fits.status, USP_OK);
    assert_true(fits.mem.total == m.total && fits.mem.total < usable);
    assert_int_equal(fits.oom, 0);
    usp_plan_point over = plan_on_card(&w, x, at * (1 - BOUNDARY_REL), &usable);
    assert_true(over.mem.total > usable);
    assert_int_equal(over.oom, 1);
    /* tensors only: no fixed reserve is added to the total any more */
    assert_true(m.total == m.params + m.grads + m.optimizer + m.activations + m.working);
}

/* usp run's estimate: the busiest rank's live buffers against the same share. */
static void test_run_report_boundary(void **state) {
    (void)state;
    usp_schedule s;
    memset(&s, 0, sizeof s);
    s.cfg = usp_config_default();
    s.cfg.dtype = USP_BF16;
    usp_rank_stats stats;
    memset(&stats, 0, sizeof stats);
    usp_result r;
    memset(&r, 0, sizeof r);
    r.world = 1;
    r.ranks = &stats;
    char *path = profile_with("\"memory_mib\": 1024");
    usp_sim_options o = {.platform = "h200x8", .profile = path};
    double usable = USP_MEMORY_USABLE_FRACTION * 1024 * 1048576.0;
    for (int side = -1; side <= 1; side += 2) {
        stats.peak_bytes = usable * (1 + side * BOUNDARY_REL);
        usp_sim_report rep;
        assert_int_equal(usp_sim_report_make(&s, &r, &o, &rep), USP_OK);
        assert_true(rep.capacity_bytes == 1024 * 1048576.0 && rep.usable_bytes == usable);
        assert_int_equal(rep.oom, side > 0);
    }
    unlink(path);
}

/* ------------------------------------------------------------ accumulation */

static usp_plan_point plan_point(const usp_workload *w, usp_mix x, const char *platform) {
    usp_plan_options o = options(platform, NULL, usp_mix_gpus(&x));
    usp_plan p;
    usp_status st = usp_plan_one(w, &o, &x, &p);
    if (st != USP_OK) fail_msg("%s", usp_error());
    usp_plan_point pt = p.points[0];
    usp_plan_free(&p);
    if (pt.status != USP_OK) fail_msg("refused: %s", pt.why);
    return pt;
}

/* The simulation moves the closed form's bytes, the accumulating
 * micro-batches' included. */
static void expect_bytes(const usp_workload *w, usp_mix x, const usp_plan_point *pt) {
    usp_comm_bytes cf;
    usp_comm_closed_form(w, &x, &cf);
    for (int t = 0; t < USP_TERM_COUNT; t++)
        if (fabs(pt->simulated.step[t] - cf.step[t]) > EXACT || fabs(pt->simulated.accum[t] - cf.accum[t]) > EXACT)
            fail_msg("zero %d, %s: simulated %.0f per step (%.0f accumulating), closed form %.0f (%.0f)", x.zero,
                     usp_comm_term_name((usp_comm_term)t), pt->simulated.step[t], pt->simulated.accum[t], cf.step[t],
                     cf.accum[t]);
}

/* step(n) = n x micro + sync: the global batch grows by one micro-batch per
 * DP rank at a time, nothing else changes. */
static void step_is_micro_times_n_plus_sync(int zero, int grad_step) {
    usp_workload w = small_workload(4096, 2);
    w.micro_batch = 1;
    w.grad_sync_step = grad_step;
    w.grad_fp32 = grad_step;
    usp_mix x = mix(2, 1, 2, 2, zero);
    usp_plan_point pt[4];
    for (int n = 1; n <= 3; n++) {
        w.global_batch = 2 * n;
        pt[n] = plan_point(&w, x, "a800-2n");
        assert_int_equal(pt[n].accumulation_steps, n);
        assert_int_equal(pt[n].micro_batch, 1);
        expect_bytes(&w, x, &pt[n]);
    }
    double micro = pt[2].step_s - pt[1].step_s, sync = pt[1].step_s - micro;
    assert_true(micro > 0 && sync > 0);
    for (int n = 1; n <= 3; n++)
        if (fabs(pt[n].step_s - (n * micro + sync)) > STEP_SUM_REL * pt[n].step_s)
            fail_msg("zero %d, n %d: step %.9g s, n x %.9g + %.9g s", zero, n, pt[n].step_s, micro, sync);
    /* the micro-batches' activations and attention, n times; gradients and
     * parameters: ZeRO-0/1 once per step, ZeRO-2 reduces every micro-batch */
    for (int t = USP_TERM_TP; t <= USP_TERM_RING; t++)
        assert_true(pt[3].simulated.step[t] == 3 * pt[1].simulated.step[t]);
    if (zero <= 1)
        for (int t = USP_TERM_ZERO_PARAM; t <= USP_TERM_GRAD_AR; t++)
            assert_true(pt[3].simulated.step[t] == pt[1].simulated.step[t]);
    else assert_true(pt[3].simulated.step[USP_TERM_GRAD_RS] == 3 * pt[1].simulated.step[USP_TERM_GRAD_RS]);
    /* one micro-batch's activations in memory, whatever n */
    assert_true(pt[3].mem.activations == pt[1].mem.activations && pt[3].mem.total == pt[1].mem.total);
    /* the step's FLOPs grow with n, its time a little less (one sync) */
    assert_true(pt[3].tflops_per_gpu > pt[1].tflops_per_gpu);
}

static void test_accumulation(void **state) {
    (void)state;
    step_is_micro_times_n_plus_sync(1, 1); /* Megatron-LM's default: one sync after the last backward */
    step_is_micro_times_n_plus_sync(0, 0);
    step_is_micro_times_n_plus_sync(1, 0);
    step_is_micro_times_n_plus_sync(2, 1);
    step_is_micro_times_n_plus_sync(3, 0);
}

/* Without --micro-batch nothing accumulates: one micro-batch of global / dp. */
static void test_no_accumulation_by_default(void **state) {
    (void)state;
    usp_workload w = small_workload(4096, 4);
    usp_mix x = mix(2, 1, 2, 2, 1);
    assert_int_equal(usp_micro_batch(&w, &x), 2);
    assert_int_equal(usp_accumulation_steps(&w, &x), 1);
    usp_memory one, two;
    usp_memory_closed_form(&w, &x, &two);
    w.micro_batch = 1;
    assert_int_equal(usp_accumulation_steps(&w, &x), 2);
    usp_memory_closed_form(&w, &x, &one);
    assert_true(one.activations * 2 == two.activations);
    usp_comm_bytes cf;
    usp_comm_closed_form(&w, &x, &cf);
    w.micro_batch = 0;
    usp_comm_bytes none;
    usp_comm_closed_form(&w, &x, &none);
    for (int t = 0; t < USP_TERM_COUNT; t++) assert_true(none.accum[t] == 0);
    assert_true(cf.accum[USP_TERM_ULYSSES] > 0);
}

static void test_micro_batch_refusals(void **state) {
    (void)state;
    usp_workload w = small_workload(4096, 6);
    w.micro_batch = 2;
    usp_mix x = mix(2, 1, 2, 2, 1);
    assert_int_equal(usp_mix_check(&w, &x, 8), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "global batch 6 is not divisible by dp x micro-batch = 2 x 2 = 4"));
    w.micro_batch = 7;
    usp_plan_options o = options("h200x8", NULL, 8);
    usp_plan p;
    assert_int_equal(usp_plan_one(&w, &o, &x, &p), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "micro-batch 7 is not in 1..global batch 6"));
}

/* ------------------------------------------------------------------- CLI */

static char *run_usp(const char *args) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", USP_BIN, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    static char out[1 << 16];
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    pclose(p);
    return out;
}

static void test_cli(void **state) {
    (void)state;
    const char *help = run_usp("plan --help");
    assert_non_null(strstr(help, "--micro-batch M"));
    assert_non_null(strstr(help, "usable share of the card's memory"));
    const char *json = run_usp("plan --model llama2-7b --seq 8K --gpus 8 --platform a800x8 --tp 2 --ulysses 4 "
                               "--ring 1 --zero 1 --recompute no --global-batch 4 --micro-batch 1 --json");
    assert_non_null(strstr(json, "\"micro_batch\": 1, \"grad_sync\""));
    assert_non_null(strstr(json, "\"capacity_bytes\": 85899345920"));
    assert_non_null(strstr(json, "\"usable_bytes\": "));
    assert_non_null(strstr(json, "\"micro_batch\": 1, \"accumulation_steps\": 4"));
    const char *bad = run_usp("plan --model llama2-7b --seq 8K --gpus 8 --platform a800x8 --tp 2 --ulysses 4 "
                              "--ring 1 --global-batch 4 --micro-batch 0");
    assert_non_null(strstr(bad, "usp: plan: --micro-batch"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_capacity_exact),     cmocka_unit_test(test_planner_boundary),
        cmocka_unit_test(test_run_report_boundary), cmocka_unit_test(test_accumulation),
        cmocka_unit_test(test_no_accumulation_by_default), cmocka_unit_test(test_micro_batch_refusals),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
