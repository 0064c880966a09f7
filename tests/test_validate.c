/* test_validate.c: the simulator against recorded GPU runs (usp/validate.h).
 *
 * The recorded cases of traces/ are re-simulated and each must stay within
 * the bound recorded beside it, and the held-out ones within the acceptance
 * bars: a change to the simulator that breaks agreement with the hardware
 * fails here, on a machine without a GPU. The pieces (fits, phases,
 * sidecars, profiles) are checked on synthetic data first. */
#define _XOPEN_SOURCE 700
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "usp/executor.h"
#include "usp/sim.h"
#include "usp/trace_read.h"
#include "usp/validate.h"
#include "test_util.h"

/* The acceptance bars of the held-out cases (traces/README.md). */
#define HELD_OUT_MEAN_BOUND_PCT 5.0
#define HELD_OUT_MAX_BOUND_PCT 10.0
/* Exact data through a least-squares fit: rounding only. */
#define FIT_TOLERANCE_REL 1e-9
/* A trace written with "%.3f" us and read back: phases agree to well under this. */
#define SELF_ERROR_PCT 1e-3

static int make_tmp_dir(void **state) {
    (void)state;
    return tmp_dir_make("usp_test_validate");
}

/* ------------------------------------------------------------ fits */

static void test_fit_affine_exact(void **state) {
    (void)state;
    double x[6], t[6];
    for (int i = 0; i < 6; i++) {
        x[i] = 1e6 * (1 << (2 * i));
        t[i] = 20e-6 + x[i] / 300e9;
    }
    usp_affine_fit f;
    assert_int_equal(usp_fit_affine(x, t, 6, &f), USP_OK);
    assert_true(fabs(f.intercept - 20e-6) < FIT_TOLERANCE_REL * 20e-6 * 1e3);
    assert_true(fabs(f.slope * 300e9 - 1) < FIT_TOLERANCE_REL * 1e3);
    assert_true(f.rms_pct < 1e-6);
    assert_int_equal(f.points, 6);
}

static void test_fit_affine_no_negative_latency(void **state) {
    (void)state;
    /* a line through (0, -5 us): the fit falls back to a pure rate */
    double x[3] = {1e6, 1e7, 1e8}, t[3];
    for (int i = 0; i < 3; i++) t[i] = -5e-6 + x[i] / 100e9;
    usp_affine_fit f;
    assert_int_equal(usp_fit_affine(x, t, 3, &f), USP_OK);
    assert_true(f.intercept == 0);
    assert_true(f.slope > 0);
    assert_true(f.rms_pct > 0);
    double bad[1] = {0};
    assert_int_equal(usp_fit_affine(bad, t, 1, &f), USP_EINVAL);
}

/* Synthetic measurements with known rates come back out of the fit. */
static void test_calib_fit(void **state) {
    (void)state;
    usp_calib *m = calloc(1, sizeof *m);
    assert_non_null(m);
    snprintf(m->device, sizeof m->device, "test GPU");
    m->gpus = 2;
    m->memory_gb = 80;
    m->launch_us = 3;
    for (int bwd = 0; bwd < 2; bwd++)
        for (int causal = 0; causal < 2; causal++)
            for (int l = 1; l <= 4; l++) {
                double flops = 1e12 * l, rate = (bwd ? 200e12 : 400e12) * (causal ? 0.8 : 1);
                m->attn[m->nattn++] = (usp_calib_attn){.dtype = USP_BF16, .head_dim = 128, .seq = 4096 * l,
                                                       .heads = 16, .backward = bwd, .causal = causal,
                                                       .flops = flops, .seconds = 10e-6 + flops / rate};
            }
    m->mem[m->nmem++] = (usp_calib_mem){"pack", 1e9, 1e-3};
    m->mem[m->nmem++] = (usp_calib_mem){"merge", 3e9, 1e-3};
    for (double b = 1 << 20; b <= (1 << 30); b *= 4) m->comm[m->ncomm++] = (usp_calib_comm){"sendrecv", b, 15e-6 + b / 250e9};
    usp_calib_fit fit;
    assert_int_equal(usp_calib_fit_run(m, NULL, 1 << 20, 0, NULL, &fit), USP_OK);
    usp_profile_rate *r = usp_profile_rate_of(&fit.profile, USP_BF16, 128);
    assert_true(fabs(r->fwd_tflops - 400) < 1e-6 && fabs(r->bwd_tflops - 200) < 1e-6);
    assert_true(fabs(r->fwd_fixed_us - 10) < 1e-6 && fabs(r->bwd_fixed_us - 10) < 1e-6);
    assert_true(fabs(fit.profile.masked_fwd - 0.8) < 1e-9 && fabs(fit.profile.masked_bwd - 0.8) < 1e-9);
    assert_true(fabs(fit.profile.hbm_gbps - 2000) < 1e-6);
    /* each kind at its own rate; a kind not measured stays unset (hbm_gbps) */
    assert_true(fabs(fit.profile.memory_gbps[USP_STEP_PACK] - 1000) < 1e-6);
    assert_true(fabs(fit.profile.memory_gbps[USP_STEP_MERGE] - 3000) < 1e-6);
    assert_true(fit.profile.memory_gbps[USP_STEP_UNPACK] == 0);
    assert_true(fabs(fit.lat_us - 15) < 1e-6 && fabs(fit.gbps - 250) < 1e-6);
    /* written, the profile is one the simulator loads */
    assert_int_equal(usp_profile_desc_save(&fit.profile, tmp_path("fitted.json")), USP_OK);
    assert_int_equal(usp_profile_check(tmp_path("fitted.json")), USP_OK);
    usp_profile_desc *reread = calloc(1, sizeof *reread);
    assert_int_equal(usp_profile_desc_read(tmp_path("fitted.json"), reread), USP_OK);
    assert_true(reread->memory_gbps[USP_STEP_PACK] == 1000 && reread->memory_gbps[USP_STEP_MERGE] == 3000);
    assert_true(reread->memory_gbps[USP_STEP_INIT] == 0);
    assert_true(fabs(usp_profile_rate_of(reread, USP_BF16, 128)->bwd_fixed_us - 10) < 0.05);
    free(reread);
    /* a base whose kernel carries short-block lengths (the h100 profile's, fitted with another
     * rate): the measured rates replace the base's and their lengths go with them, the affine
     * fit's slope holding the short-block cost of the sizes measured; an unmeasured head dim
     * keeps its own */
    usp_profile_desc *base = calloc(1, sizeof *base);
    assert_int_equal(usp_profile_desc_read(USP_TRACES_DIR "/../sim/profiles/h100.json", base), USP_OK);
    assert_true(usp_profile_rate_of(base, USP_BF16, 128)->fwd_short_keys > 0);
    assert_int_equal(usp_calib_fit_run(m, base, 1 << 20, 0, NULL, &fit), USP_OK);
    r = usp_profile_rate_of(&fit.profile, USP_BF16, 128);
    assert_true(fabs(r->fwd_tflops - 400) < 1e-6 && r->fwd_short_keys == 0 && r->bwd_short_rows == 0);
    assert_true(usp_profile_rate_of(&fit.profile, USP_BF16, 64)->fwd_short_keys ==
                usp_profile_rate_of(base, USP_BF16, 64)->fwd_short_keys);
    free(base);
    /* --short-blocks: full blocks timed by the short-block model give its rate, fixed time and
     * length back (forward: 300 keys; backward: 150 rows) */
    for (int i = 0; i < m->nattn; i++) {
        usp_calib_attn *a = &m->attn[i];
        double shrt = a->backward ? 150 : 300, rate = a->backward ? 200e12 : 400e12;
        double l = a->seq / 4096.0;
        a->flops = 1e12 * l * l; /* square blocks: the FLOPs grow as the length squared */
        if (!a->causal) a->seconds = 5e-6 + a->flops / rate * (1 + shrt / a->seq);
    }
    assert_int_equal(usp_calib_fit_run(m, NULL, 1 << 20, 1, NULL, &fit), USP_OK);
    r = usp_profile_rate_of(&fit.profile, USP_BF16, 128);
    assert_true(fabs(r->fwd_tflops - 400) < 1e-3 && fabs(r->bwd_tflops - 200) < 1e-3);
    assert_true(fabs(r->fwd_short_keys - 300) < 1e-3 && fabs(r->bwd_short_rows - 150) < 1e-3);
    assert_true(fabs(r->fwd_fixed_us - 5) < 1e-3 && fabs(r->bwd_fixed_us - 5) < 1e-3);
    assert_non_null(strstr(fit.profile.source, "short-block fit"));
    assert_true(r->fwd_rowmask_eff == 0 && r->bwd_rowmask_eff == 0);   /* no document points */
    /* packed-document points that run at 0.9 (forward) and 0.8 (backward) of what their tiles
     * and units give at the fitted rates: those efficiencies come back, and the full-block
     * fits do not move */
    int nfull = m->nattn;
    for (int bwd = 0; bwd < 2; bwd++)
        for (int doc = 512; doc <= 2048; doc *= 4) {
            double shrt = bwd ? 150 : 300, rate = bwd ? 200e12 : 400e12, tiles = 4e11 * (1 + 512.0 / doc);
            double loop = 1e9 * 16384 / doc;
            m->attn[m->nattn++] = (usp_calib_attn){.dtype = USP_BF16, .head_dim = 128, .seq = 16384, .heads = 16,
                                                   .backward = bwd, .causal = 1, .flops = 0.9 * tiles,
                                                   .seconds = (5e-6 + (tiles + shrt * loop) / rate) / (bwd ? 0.8 : 0.9),
                                                   .doc = doc, .tile_flops = tiles, .loop_flops = loop};
        }
    assert_int_equal(usp_calib_fit_run(m, NULL, 1 << 20, 1, NULL, &fit), USP_OK);
    r = usp_profile_rate_of(&fit.profile, USP_BF16, 128);
    assert_true(fabs(r->fwd_tflops - 400) < 1e-3 && fabs(r->bwd_short_rows - 150) < 1e-3);
    assert_true(fabs(r->fwd_rowmask_eff - 0.9) < 1e-6 && fabs(r->bwd_rowmask_eff - 0.8) < 1e-6);
    assert_int_equal(usp_profile_desc_save(&fit.profile, tmp_path("rowmask.json")), USP_OK);
    assert_int_equal(usp_profile_check(tmp_path("rowmask.json")), USP_OK);
    reread = calloc(1, sizeof *reread);
    assert_int_equal(usp_profile_desc_read(tmp_path("rowmask.json"), reread), USP_OK);
    assert_true(fabs(usp_profile_rate_of(reread, USP_BF16, 128)->bwd_rowmask_eff - 0.8) < 1e-3);
    free(reread);
    /* and the measurements read back the same */
    assert_int_equal(usp_calib_save(m, tmp_path("calibration.json")), USP_OK);
    usp_calib *back = calloc(1, sizeof *back);
    assert_int_equal(usp_calib_read(tmp_path("calibration.json"), back), USP_OK);
    assert_int_equal(back->nattn, m->nattn);
    assert_int_equal(back->ncomm, m->ncomm);
    assert_true(fabs(back->attn[5].seconds / m->attn[5].seconds - 1) < 1e-6);
    assert_true(back->attn[nfull].doc == 512 && back->attn[nfull].causal == 1);
    assert_true(fabs(back->attn[nfull].tile_flops / m->attn[nfull].tile_flops - 1) < 1e-6);
    assert_true(fabs(back->attn[nfull + 1].loop_flops / m->attn[nfull + 1].loop_flops - 1) < 1e-6);
    free(back);
    free(m);
}

/* ------------------------------------------------------------ platform */

static usp_status simulate(const usp_config *c, int backward, const char *platform, const char *profile,
                           usp_trace *t, usp_result *r) {
    usp_schedule s;
    USP_TRY(usp_schedule_build(c, backward, &s));
    usp_sim_options o = {.platform = platform, .profile = profile};
    usp_status st = usp_result_init(r, &s, 0);
    usp_trace_init(t, "sim", c);
    if (st == USP_OK) st = usp_sim_execute(&s, NULL, &o, r, t);
    usp_schedule_free(&s);
    return st;
}

static usp_config two_gpu_config(int ulysses) {
    usp_config c = usp_config_default();
    c.dtype = USP_BF16;
    c.head_dim = 128;
    c.seq = 8192;
    c.heads = c.kv_heads = 8;
    c.ulysses = ulysses;
    c.ring = 2 / ulysses;
    c.ring_impl = ulysses == 2 ? USP_RING_BASIC : USP_RING_ZIGZAG;
    return c;
}

/* A trace simulated with a known comm_overlap_slowdown, refined from a
 * profile without one, gives the slowdown back, and the attention rates
 * stay those it was simulated with. Not causal: with zigzag's causal ring of
 * 2, the overlapped steps are exactly the masked ones, and the masked-block
 * efficiency would take the slowdown's place. */
static void test_refine_recovers_slowdown(void **state) {
    (void)state;
    usp_profile_desc *truth = calloc(1, sizeof *truth), *guess = calloc(1, sizeof *guess);
    assert_int_equal(usp_profile_desc_read(USP_PROFILES_DIR "/h200.json", truth), USP_OK);
    *guess = *truth;
    truth->comm_slowdown = 0.2;
    truth->launch_us = 0;   /* simulated step times include it, measured ones do not */
    assert_int_equal(usp_profile_desc_save(truth, tmp_path("slow.json")), USP_OK);
    usp_config c = two_gpu_config(1);
    c.causal = 0;
    c.ring_impl = USP_RING_BASIC;
    usp_trace t;
    usp_result r;
    assert_int_equal(simulate(&c, 1, "h200x2", tmp_path("slow.json"), &t, &r), USP_OK);
    usp_vcase vc;
    memset(&vc, 0, sizeof vc);
    vc.cfg = c;
    vc.backward = 1;
    vc.role = USP_VROLE_CALIBRATION;
    snprintf(vc.trace, sizeof vc.trace, "%s", tmp_path("slow.trace.json"));
    assert_int_equal(usp_trace_write(&t, vc.trace), USP_OK);
    assert_int_equal(usp_profile_refine(guess, &vc, 1, NULL), USP_OK);
    if (fabs(guess->comm_slowdown - 0.2) > 0.01) fail_msg("slowdown %.4f, simulated with 0.2", guess->comm_slowdown);
    const usp_profile_rate *want = usp_profile_rate_of(truth, USP_BF16, 128),
                           *got = usp_profile_rate_of(guess, USP_BF16, 128);
    assert_true(fabs(got->fwd_tflops / want->fwd_tflops - 1) < 0.01);
    assert_true(fabs(got->bwd_tflops / want->bwd_tflops - 1) < 0.01);
    usp_result_free(&r);
    usp_trace_free(&t);
    unlink(tmp_path("slow.json"));
    unlink(vc.trace);
    free(truth);
    free(guess);
}

/* A fitted 2-GPU platform is the closed form: its all-to-all of one piece
 * each way takes lat + bytes / bw, as the fit said. */
static void test_fitted_platform(void **state) {
    (void)state;
    const char *xml = tmp_path("fitted.xml");
    FILE *f = fopen(xml, "w");
    assert_non_null(f);
    assert_int_equal(usp_platform_write_fitted(f, "fitted", 2, 20.0, 250.0, "test"), USP_OK);
    fclose(f);
    usp_config c = two_gpu_config(2);
    usp_trace t;
    usp_result r;
    assert_int_equal(simulate(&c, 0, xml, "h200", &t, &r), USP_OK);
    int found = 0;
    for (long i = 0; i < t.count; i++) {
        const usp_trace_event *e = &t.events[i];
        if (e->kind != USP_STEP_ALL_TO_ALL || e->rank != 0 || strcmp(e->name, "fwd.a2a.k")) continue;
        double expect = 20.0 + e->bytes / 250e9 * 1e6;
        assert_true(fabs(e->dur_us - expect) < 1e-3 * expect);
        found = 1;
    }
    assert_true(found);
    usp_result_free(&r);
    usp_trace_free(&t);
    f = fopen(tmp_path("fitted4.xml"), "w");
    assert_int_equal(usp_platform_write_fitted(f, "fitted4", 4, 20.0, 250.0, "four"), USP_OK);
    fclose(f);
    c.ulysses = 4;
    c.ring = 1;
    assert_int_equal(simulate(&c, 0, tmp_path("fitted4.xml"), "h200", &t, &r), USP_OK);
    usp_result_free(&r);
    usp_trace_free(&t);
}

/* ------------------------------------------------------------ phases */

/* A simulated trace as the "measured" one of a case: re-simulated with the
 * same profile and platform, every phase agrees. */
static void write_self_case(const char *name, usp_vrole role, int ulysses, int backward) {
    usp_config c = two_gpu_config(ulysses);
    usp_trace t;
    usp_result r;
    char path[600];
    assert_int_equal(simulate(&c, backward, "h200x2", "h200", &t, &r), USP_OK);
    snprintf(path, sizeof path, "%s/%s.trace.json", tmp_dir, name);
    assert_int_equal(usp_trace_write(&t, path), USP_OK);
    usp_vcase vc;
    memset(&vc, 0, sizeof vc);
    snprintf(vc.name, sizeof vc.name, "%s", name);
    vc.cfg = c;
    vc.backward = backward;
    vc.role = role;
    vc.bound_pct = 1;
    snprintf(vc.profile_raw, sizeof vc.profile_raw, "h200");
    snprintf(vc.platform_raw, sizeof vc.platform_raw, "h200x2");
    vc.measured_fwd_ms = r.time_fwd_s * 1e3;
    vc.measured_bwd_ms = r.time_bwd_s * 1e3;
    vc.iters = 1;
    snprintf(vc.trace, sizeof vc.trace, "%s/%s.trace.json", tmp_dir, name);
    snprintf(path, sizeof path, "%s/%s.case.json", tmp_dir, name);
    assert_int_equal(usp_vcase_write(&vc, path), USP_OK);
    usp_result_free(&r);
    usp_trace_free(&t);
}

static void test_self_validation(void **state) {
    (void)state;
    write_self_case("ulysses-fb", USP_VROLE_CALIBRATION, 2, 1);
    write_self_case("ring-f", USP_VROLE_HELD_OUT, 1, 0);
    usp_vcase *cases;
    int n;
    assert_int_equal(usp_vcase_list(tmp_dir, &cases, &n), USP_OK);
    assert_int_equal(n, 2);
    assert_string_equal(cases[0].name, "ring-f"); /* name order */
    assert_int_equal(cases[0].role, USP_VROLE_HELD_OUT);
    assert_int_equal(cases[0].backward, 0);
    for (int i = 0; i < n; i++) {
        usp_vcompare m;
        assert_int_equal(usp_vcase_validate(&cases[i], NULL, NULL, &m, NULL), USP_OK);
        for (int p = 0; p < USP_VPHASE_COUNT; p++)
            assert_true(isnan(m.error_pct[p]) || fabs(m.error_pct[p]) < SELF_ERROR_PCT);
        /* the phases partition the run as defined */
        assert_true(m.measured_us[USP_VPHASE_TOTAL] > 0);
        assert_true(fabs(m.measured_us[USP_VPHASE_FWD] + m.measured_us[USP_VPHASE_BWD] -
                         m.measured_us[USP_VPHASE_TOTAL]) < 1e-6);
        assert_true(m.measured_us[USP_VPHASE_FWD_A2A] + m.measured_us[USP_VPHASE_FWD_RING] <=
                    m.measured_us[USP_VPHASE_FWD] * 1.000001 + 1e-3);
        if (cases[i].cfg.ulysses == 1) assert_true(m.measured_us[USP_VPHASE_FWD_A2A] == 0);
        else assert_true(m.measured_us[USP_VPHASE_FWD_A2A] > 0);
    }
    /* another profile predicts otherwise: the comparison sees it */
    usp_vcompare m;
    assert_int_equal(usp_vcase_validate(&cases[1], "a100", NULL, &m, NULL), USP_OK);
    assert_true(m.error_pct[USP_VPHASE_TOTAL] > 10);
    free(cases);
}

/* The trace of one schedule is refused as that of another. */
static void test_mismatched_trace(void **state) {
    (void)state;
    usp_config c = two_gpu_config(2);
    usp_trace t;
    usp_result r;
    assert_int_equal(simulate(&c, 1, "h200x2", "h200", &t, &r), USP_OK);
    usp_schedule other;
    usp_config d = two_gpu_config(1);
    assert_int_equal(usp_schedule_build(&d, 1, &other), USP_OK);
    double us[USP_VPHASE_COUNT];
    assert_int_equal(usp_vphases_of_trace(&other, &t, us), USP_EINVAL);
    usp_schedule fwd_only;
    assert_int_equal(usp_schedule_build(&c, 0, &fwd_only), USP_OK);
    assert_int_equal(usp_vphases_of_trace(&fwd_only, &t, us), USP_EINVAL); /* steps beyond the forward */
    usp_schedule_free(&other);
    usp_schedule_free(&fwd_only);
    usp_result_free(&r);
    usp_trace_free(&t);
}

static void test_bad_sidecars(void **state) {
    (void)state;
    const char *p = tmp_path("bad.case.json");
    FILE *f = fopen(p, "w");
    fprintf(f, "{\"trace\": \"x.trace.json\", \"role\": \"training\", \"backward\": true}\n");
    fclose(f);
    usp_vcase c;
    assert_int_equal(usp_vcase_read(p, &c), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "bad.case.json"));
    f = fopen(tmp_path("orphan.trace.json"), "w");
    fprintf(f, "{\"traceEvents\": []}\n");
    fclose(f);
    usp_vcase *cases;
    int n;
    assert_int_equal(usp_vcase_list(tmp_dir, &cases, &n), USP_EINVAL); /* a trace without a sidecar */
    remove(tmp_path("orphan.trace.json"));
    remove(p);
}

/* ------------------------------------------------------------ masked cases */

/* A sidecar of the 2-GPU basic ring, seq 8192, carrying `mask_json` in its
 * config; with a trace (name.trace.json in dir) or measured times only. */
static void write_masked_sidecar(const char *dir, const char *name, const char *mask_json, int with_trace,
                                 double fwd_ms, double bwd_ms) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s.case.json", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "{\"trace\": ");
    if (with_trace) fprintf(f, "\"%s.trace.json\"", name);
    else fprintf(f, "null");
    fprintf(f, ", \"role\": \"held-out\", \"backward\": true,\n"
               " \"config\": {\"batch\": 1, \"seq\": 8192, \"heads\": 8, \"kv_heads\": 8, \"head_dim\": 128,"
               " \"causal\": true, \"dtype\": \"bf16\", \"ulysses\": 1, \"ring\": 2, \"ring_impl\": \"balanced\","
               " \"layout\": \"ulysses-inner\", \"seed\": 1, \"mask\": %s},\n"
               " \"profile\": \"h200\", \"platform\": \"h200x2\", \"bound_pct\": 1,"
               " \"measured_ms\": {\"fwd\": %.9f, \"bwd\": %.9f, \"iters\": 1}}\n",
            mask_json, fwd_ms, bwd_ms);
    fclose(f);
}

/* The case's configuration with the mask `spec` builds, simulated. */
static void simulate_masked(const usp_mask_spec *spec, usp_trace *t, usp_result *r) {
    usp_config c = two_gpu_config(1);
    c.ring_impl = USP_RING_BALANCED;
    c.seed = 1;
    usp_mask *m;
    assert_int_equal(usp_mask_build(spec, 8192, 1, &m), USP_OK);
    c.mask = m;
    assert_int_equal(simulate(&c, 1, "h200x2", "h200", t, r), USP_OK);
    usp_mask_free(m);
}

/* The simulator's attention steps under per-row masks against usp's kernels measured on one
 * H100 (gpu/NOTES.md v15: tools/bench-gpu --mask, bf16, L 16384, H 16, D 128, causal inside):
 * held out from that card's calibration (sim/profiles/h100-calibrated.json: full and causal
 * blocks only). Measured ms: forward call; backward kernel (bench-gpu's DELTA + kernel, less
 * the 0.111 ms DELTA). Bounds: the errors the tile model gave when written (forward -2.5% and
 * +3.6%, backward -13% and -7%) with a little room; the visible-pairs model of before gave
 * -14%/-13% and -19%/-17%. */
static void test_masked_kernels_against_an_h100(void **state) {
    (void)state;
    /* D = 64 from v15's TFLOP/s on visible pairs (forward 370 / 363, backward kernel with DELTA
     * 260 / 263, less DELTA's 0.111 ms). Its masked backward is not the kernel calibrate timed
     * (64-row tiles and atomics against 128-row tiles: gpu/NOTES.md v13), and no per-row-mask
     * efficiency was fitted then: the bounds hold today's error, not a target */
    static const struct {
        const char *seqlens, *window;
        int head_dim;
        double fwd_ms, bwd_ms, fwd_bound, bwd_bound;
    } cases[] = {
        {"8192,3000,1500,1000,700,600,500,400,300,184,8", NULL, 128, 0.648, 2.062, 0.05, 0.16},
        {NULL, "2048,0", 128, 0.505, 1.569, 0.06, 0.10},
        {"8192,3000,1500,1000,700,600,500,400,300,184,8", NULL, 64, 0.894, 3.070, 0.12, 0.28},
        {NULL, "2048,0", 64, 0.710, 2.340, 0.16, 0.21},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        usp_mask_spec spec = {.seqlens = cases[i].seqlens, .window = cases[i].window, .causal = 1};
        usp_mask *m;
        assert_int_equal(usp_mask_build(&spec, 16384, 1, &m), USP_OK);
        usp_config c = usp_config_default();
        c.dtype = USP_BF16; c.head_dim = cases[i].head_dim; c.seq = 16384; c.causal = 1;
        c.heads = c.kv_heads = 2048 / cases[i].head_dim;
        c.ulysses = c.ring = 1;
        c.mask = m;
        usp_trace t;
        usp_result r;
        if (simulate(&c, 1, "h100x8", "h100-calibrated", &t, &r) != USP_OK) fail_msg("%s", usp_error());
        double fwd = 0, bwd = 0;
        for (long e = 0; e < t.count; e++) {
            if (t.events[e].kind == USP_STEP_ATTN_FWD) fwd += t.events[e].dur_us * 1e-3;
            if (t.events[e].kind == USP_STEP_ATTN_BWD) bwd += t.events[e].dur_us * 1e-3;
        }
        double ef = fwd / cases[i].fwd_ms - 1, eb = bwd / cases[i].bwd_ms - 1;
        printf("  %-14s D=%-3d simulated fwd %.3f ms (%+.1f%%), bwd %.3f ms (%+.1f%%) against one H100\n",
               cases[i].seqlens ? "documents" : "window 2048", cases[i].head_dim, fwd, 100 * ef, bwd, 100 * eb);
        if (!(fabs(ef) <= cases[i].fwd_bound && fabs(eb) <= cases[i].bwd_bound))
            fail_msg("masked kernels off the H100's: fwd %+.1f%%, bwd %+.1f%%", 100 * ef, 100 * eb);
        usp_result_free(&r);
        usp_trace_free(&t);
        usp_mask_free(m);
    }
}

/* A profile's per-row-mask efficiency divides the time of the blocks under per-row masks
 * (their fixed time aside) and leaves the blocks without them alone. */
static void test_rowmask_efficiency(void **state) {
    (void)state;
    usp_profile_desc *p = calloc(1, sizeof *p);
    assert_int_equal(usp_profile_desc_read(USP_TRACES_DIR "/../sim/profiles/h100-calibrated.json", p), USP_OK);
    usp_profile_rate_of(p, USP_BF16, 128)->bwd_rowmask_eff = 0.5;
    assert_int_equal(usp_profile_desc_save(p, tmp_path("half.json")), USP_OK);
    free(p);
    usp_mask_spec spec = {.seqlens = "3000,1096,4096", .causal = 1};
    usp_mask *m;
    assert_int_equal(usp_mask_build(&spec, 8192, 1, &m), USP_OK);
    double fwd[2], bwd[2];
    for (int k = 0; k < 2; k++) {
        usp_config c = usp_config_default();
        c.dtype = USP_BF16; c.head_dim = 128; c.seq = 8192; c.heads = c.kv_heads = 16; c.causal = 1;
        c.ulysses = c.ring = 1;
        c.mask = m;
        usp_trace t;
        usp_result r;
        if (simulate(&c, 1, "h100x8", k ? tmp_path("half.json") : "h100-calibrated", &t, &r) != USP_OK)
            fail_msg("%s", usp_error());
        fwd[k] = bwd[k] = 0;
        for (long e = 0; e < t.count; e++) {
            if (t.events[e].kind == USP_STEP_ATTN_FWD) fwd[k] += t.events[e].dur_us;
            if (t.events[e].kind == USP_STEP_ATTN_BWD) bwd[k] += t.events[e].dur_us;
        }
        usp_result_free(&r);
        usp_trace_free(&t);
    }
    usp_mask_free(m);
    assert_true(fabs(fwd[1] / fwd[0] - 1) < 1e-9);
    assert_true(bwd[1] / bwd[0] > 1.9 && bwd[1] / bwd[0] <= 2.0);
}

/* Sidecars carry packed documents, slices, a cu_seqlens file and a window;
 * each is read, re-simulated with its mask (a trace simulated with the mask
 * agrees phase by phase; measured times of the unmasked problem do not),
 * written back unchanged, and bad masks are refused with their line. */
static void test_masked_cases(void **state) {
    (void)state;
    char dir[600];
    snprintf(dir, sizeof dir, "%s/masked", tmp_dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    usp_trace t;
    usp_result r;
    /* 1: documents and a window, measured times only */
    usp_mask_spec docs = {.seqlens = "3000,1096,4096", .window = "512,0", .causal = 1};
    simulate_masked(&docs, &t, &r);
    write_masked_sidecar(dir, "docs", "{\"seqlens\": [3000, 1096, 4096], \"window\": [512, 0]}", 0,
                         r.time_fwd_s * 1e3, r.time_bwd_s * 1e3);
    double docs_fwd = r.time_fwd_s;
    usp_result_free(&r);
    usp_trace_free(&t);
    /* 2: slices with gaps, with the simulated trace as the measured one */
    static const char *slices = "{\"slices\": [{\"q\": [0, 8192], \"k\": [0, 1024], \"type\": \"full\"},"
                                " {\"q\": [4096, 8192], \"k\": [4096, 8192], \"type\": \"causal\"}]}";
    char mask_path[700];
    snprintf(mask_path, sizeof mask_path, "%s/two.json", dir);
    FILE *f = fopen(mask_path, "w");
    fprintf(f, "[{\"q\": [0, 8192], \"k\": [0, 1024], \"type\": \"full\"},"
               " {\"q\": [4096, 8192], \"k\": [4096, 8192], \"type\": \"causal\"}]\n");
    fclose(f);
    usp_mask_spec two = {.mask_file = mask_path, .causal = 1};
    simulate_masked(&two, &t, &r);
    char trace_path[700];
    snprintf(trace_path, sizeof trace_path, "%s/slices.trace.json", dir);
    assert_int_equal(usp_trace_write(&t, trace_path), USP_OK);
    write_masked_sidecar(dir, "slices", slices, 1, r.time_fwd_s * 1e3, r.time_bwd_s * 1e3);
    /* 3: the same slices from a file, the same trace */
    snprintf(trace_path, sizeof trace_path, "%s/slicefile.trace.json", dir);
    assert_int_equal(usp_trace_write(&t, trace_path), USP_OK);
    write_masked_sidecar(dir, "slicefile", "{\"mask_file\": \"two.json\"}", 1, r.time_fwd_s * 1e3,
                         r.time_bwd_s * 1e3);
    usp_result_free(&r);
    usp_trace_free(&t);

    usp_vcase *cases;
    int n;
    assert_int_equal(usp_vcase_list(dir, &cases, &n), USP_OK);
    assert_int_equal(n, 3);
    for (int i = 0; i < n; i++) {
        assert_true(usp_vcase_has_mask(&cases[i]));
        assert_null(cases[i].cfg.mask);
        usp_vcompare m;
        if (usp_vcase_validate(&cases[i], NULL, NULL, &m, NULL) != USP_OK) fail_msg("%s", usp_error());
        for (int p = 0; p < USP_VPHASE_COUNT; p++)
            if (!(isnan(m.error_pct[p]) || fabs(m.error_pct[p]) < SELF_ERROR_PCT))
                fail_msg("case %s, phase %s: %.3g%%", cases[i].name, usp_vphase_name((usp_vphase)p), m.error_pct[p]);
    }
    assert_string_equal(cases[0].name, "docs");
    assert_int_equal(cases[0].mask.ndocs, 3);
    assert_true(cases[0].mask.has_window && cases[0].mask.left == 512 && cases[0].mask.right == 0);
    assert_int_equal(cases[1].mask.nslices, 0); /* slicefile */
    assert_int_equal(cases[2].mask.nslices, 2);
    /* written back and read again: the same mask */
    char out[700];
    snprintf(out, sizeof out, "%s/again.case.json", dir); /* beside two.json */
    for (int i = 0; i < n; i++) {
        usp_vcase back;
        snprintf(cases[i].trace, sizeof cases[i].trace, "%s", ""); /* measured times only */
        assert_int_equal(usp_vcase_write(&cases[i], out), USP_OK);
        if (usp_vcase_read(out, &back) != USP_OK) fail_msg("%s", usp_error());
        assert_int_equal(back.mask.ndocs, cases[i].mask.ndocs);
        assert_int_equal(back.mask.nslices, cases[i].mask.nslices);
        assert_int_equal(back.mask.has_window, cases[i].mask.has_window);
        assert_memory_equal(back.mask.docs, cases[i].mask.docs, sizeof back.mask.docs);
        assert_memory_equal(back.mask.slices, cases[i].mask.slices, sizeof back.mask.slices);
        assert_string_equal(back.mask.mask_file_raw, cases[i].mask.mask_file_raw);
    }
    remove(out);
    /* the mask matters: the documents' case without its mask (one causal
     * document of 8192 tokens, zigzag) is predicted well over its times */
    usp_vcase plain = cases[0];
    memset(&plain.mask, 0, sizeof plain.mask);
    plain.cfg.ring_impl = USP_RING_ZIGZAG;
    usp_vcompare m;
    assert_int_equal(usp_vcase_validate(&plain, NULL, NULL, &m, NULL), USP_OK);
    if (!(m.error_pct[USP_VPHASE_FWD] > 30)) fail_msg("unmasked: fwd %+.1f%%", m.error_pct[USP_VPHASE_FWD]);
    (void)docs_fwd;
    free(cases);

    /* refusals, each naming the sidecar and line */
    static const struct { const char *mask, *why; } bad[] = {
        {"{\"seqlens\": [3000, 1000]}", "seqlens add up to 4000 tokens, not seq 8192"},
        {"{\"seqlens\": [8192], \"slices\": []}", "must be a list of 1..64 slices"},
        {"{\"seqlens\": [4096, 4096], \"mask_file\": \"two.json\"}", "exclude each other"},
        {"{\"window\": [3]}", "'window' is [left, right]"},
        {"{\"docs\": [8192]}", "unknown key 'docs'"},
        {"{}", "'mask' is empty"},
        {"{\"slices\": [{\"q\": [0, 9000], \"k\": [0, 8], \"type\": \"full\"}]}", "9000"},
        {"{\"mask_file\": \"nowhere.json\"}", "nowhere.json"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_masked_sidecar(dir, "bad", bad[i].mask, 0, 1, 1);
        char p[700];
        snprintf(p, sizeof p, "%s/bad.case.json", dir);
        usp_vcase vc;
        assert_int_equal(usp_vcase_read(p, &vc), USP_EINVAL);
        if (!strstr(usp_error(), bad[i].why) || !strstr(usp_error(), "bad.case.json"))
            fail_msg("mask %s: '%s', expected '%s'", bad[i].mask, usp_error(), bad[i].why);
        remove(p);
    }
}

/* ------------------------------------------------------------ the recorded cases */

static void test_recorded_gpu_cases(void **state) {
    (void)state;
    usp_vcase *cases;
    int n;
    assert_int_equal(usp_vcase_list(USP_TRACES_DIR, &cases, &n), USP_OK);
    if (n == 0) { free(cases); skip(); }
    usp_vcompare *cmp = calloc((size_t)n, sizeof *cmp);
    int *held = calloc((size_t)n, sizeof *held), nheld = 0;
    for (int i = 0; i < n; i++) {
        assert_int_equal(usp_vcase_validate(&cases[i], NULL, NULL, &cmp[i], NULL), USP_OK);
        double e = fabs(cmp[i].error_pct[USP_VPHASE_TOTAL]);
        printf("  %-34s %-11s total error %+6.1f%% (bound %.0f%%)\n", cases[i].name, usp_vrole_name(cases[i].role),
               cmp[i].error_pct[USP_VPHASE_TOTAL], cases[i].bound_pct);
        assert_true(e <= cases[i].bound_pct);
        held[i] = cases[i].role == USP_VROLE_HELD_OUT;
        nheld += held[i];
    }
    usp_vsummary s;
    usp_vsummary_make(cmp, held, n, &s);
    assert_int_equal(s.cases, nheld);
    if (nheld) {
        assert_true(s.mean_abs_pct[USP_VPHASE_TOTAL] <= HELD_OUT_MEAN_BOUND_PCT);
        assert_true(s.max_abs_pct[USP_VPHASE_TOTAL] <= HELD_OUT_MAX_BOUND_PCT);
    }
    free(held);
    free(cmp);
    free(cases);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fit_affine_exact),
        cmocka_unit_test(test_fit_affine_no_negative_latency),
        cmocka_unit_test(test_calib_fit),
        cmocka_unit_test(test_fitted_platform),
        cmocka_unit_test(test_refine_recovers_slowdown),
        cmocka_unit_test(test_self_validation),
        cmocka_unit_test(test_mismatched_trace),
        cmocka_unit_test(test_bad_sidecars),
        cmocka_unit_test(test_masked_cases),
        cmocka_unit_test(test_masked_kernels_against_an_h100),
        cmocka_unit_test(test_rowmask_efficiency),
        cmocka_unit_test(test_recorded_gpu_cases),
    };
    return cmocka_run_group_tests(tests, make_tmp_dir, remove_tmp_dir);
}
