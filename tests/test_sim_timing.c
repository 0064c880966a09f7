/* test_sim_timing.c: the simulator's time against closed forms on star
 * platforms (every host one split-duplex link of bandwidth BW and latency
 * LAT to a central router, so a route is two links: 2*LAT + bytes/BW).
 * The simulation is deterministic; the tolerance only absorbs the rounding
 * of SimGrid's clock. */
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
#include "usp/sim.h"

static const double BW = 10e9;    /* bytes/s: the "bw=10" of the star spec */
static const double LAT = 5e-6;   /* s: "lat=5" */
static const char *const STAR = "star:bw=10,lat=5";
/* SimGrid accumulates time in doubles over a few events. */
static const double REL_TOL = 1e-9;

static void assert_close(double got, double want) {
    if (fabs(got - want) > REL_TOL * fabs(want))
        fail_msg("got %.12g s, closed form %.12g s (rel %.2e)", got, want, fabs(got - want) / want);
}

/* ------------------------------------------- schedules written by hand */

/* Every rank runs `steps` (n of them); a SENDRECV goes to the next ring rank. */
static void steps_schedule(usp_schedule *s, int ulysses, int ring, const usp_step *steps, int n) {
    usp_config c = usp_config_default();
    c.ulysses = ulysses;
    c.ring = ring;
    assert_int_equal(usp_schedule_init_empty(&c, ulysses * ring, s), USP_OK);
    usp_step own[2];
    for (int i = 0; i < n; i++) {
        own[i] = steps[i];
        if (own[i].kind == USP_STEP_SENDRECV) {
            own[i].send_hops = 1;
            own[i].recv_hops = ring - 1;
        }
    }
    for (int g = 0; g < s->world; g++) assert_int_equal(usp_schedule_set_steps(s, g, own, n, n), USP_OK);
}

static void one_step_schedule(usp_schedule *s, int ulysses, int ring, usp_step step) {
    steps_schedule(s, ulysses, ring, &step, 1);
}

static usp_step comm_step(usp_step_kind kind, usp_group group, double bytes) {
    usp_step st = {.kind = kind, .stream = USP_STREAM_COMM, .group = group, .dep = -1, .ring_step = -1,
                   .bytes_sent = bytes};
    for (int i = 0; i < 2; i++) st.src[i] = st.dst[i] = USP_BUF_NONE;
    snprintf(st.name, sizeof st.name, "%s", usp_step_kind_name(kind));
    return st;
}

static usp_result simulate_with(const usp_schedule *s, const char *platform, const char *profile,
                                const char *setting) {
    usp_result r;
    assert_int_equal(usp_result_init(&r, s, 0), USP_OK);
    usp_sim_options o = {.platform = platform, .profile = profile, .cfg_overrides = {setting}, .ncfg = setting != NULL};
    if (usp_sim_execute(s, NULL, &o, &r, NULL) != USP_OK) fail_msg("%s", usp_error());
    return r;
}

static usp_result simulate(const usp_schedule *s, const char *platform, const char *profile) {
    return simulate_with(s, platform, profile, NULL);
}

/* One transfer of S bytes each way between two hosts: lat + S/bw, both
 * directions at full bandwidth (split-duplex links). */
static void one_transfer(void **state) {
    (void)state;
    const double S = 64e6;
    usp_schedule s;
    one_step_schedule(&s, 1, 2, comm_step(USP_STEP_SENDRECV, USP_GROUP_RING, S));
    usp_result r = simulate(&s, STAR, NULL);
    assert_close(r.time_fwd_s, 2 * LAT + S / BW);
    assert_close(r.ranks[0].comm_s, 2 * LAT + S / BW);
    assert_close(r.ranks[1].exposed_comm_s, 2 * LAT + S / BW);
    usp_result_free(&r);
    usp_schedule_free(&s);
}

/* SimGrid settings override the defaults: LV08 multiplies latency by 13.01
 * and bandwidth by 0.97 (SimGrid's calibration of TCP). */
static void settings_override(void **state) {
    (void)state;
    const double S = 64e6;
    usp_schedule s;
    one_step_schedule(&s, 1, 2, comm_step(USP_STEP_SENDRECV, USP_GROUP_RING, S));
    usp_result r = simulate_with(&s, STAR, NULL, "network/model:LV08");
    assert_close(r.time_fwd_s, 13.01 * 2 * LAT + S / (0.97 * BW));
    usp_result_free(&r);
    usp_schedule_free(&s);
}

/* The h200x2 preset is the fit of the measured NCCL send/recv between two
 * H200 (sim/SOURCES.md, GPU-to-GPU links): 105 us + bytes / 329 GB/s. */
static void h200x2_reproduces_its_fit(void **state) {
    (void)state;
    const double S = 64.0 * 1024 * 1024;
    usp_schedule s;
    one_step_schedule(&s, 1, 2, comm_step(USP_STEP_SENDRECV, USP_GROUP_RING, S));
    usp_result r = simulate(&s, "h200x2", NULL);
    assert_close(r.time_fwd_s, 105e-6 + S / 329e9);
    usp_result_free(&r);
    usp_schedule_free(&s);
}

/* An all-to-all of U ranks, pieces of P bytes: each host's link carries U-1
 * flows out and U-1 in, max-min fair, so every flow gets BW/(U-1):
 * 2*LAT + (U-1)*P/BW. */
static void all_to_all(void **state) {
    (void)state;
    const double P = 8e6;
    for (int u = 2; u <= 8; u *= 2) {
        usp_schedule s;
        one_step_schedule(&s, u, 1, comm_step(USP_STEP_ALL_TO_ALL, USP_GROUP_ULYSSES, (u - 1) * P));
        usp_result r = simulate(&s, STAR, NULL);
        assert_close(r.time_fwd_s, 2 * LAT + (u - 1) * P / BW);
        usp_result_free(&r);
        usp_schedule_free(&s);
    }
}

/* ------------------------------------------------- real ring schedules */

static usp_config ring_config(int ring) {
    usp_config c = usp_config_default(); /* H=8, D=64, fp64 */
    c.ulysses = 1;
    c.ring = ring;
    c.ring_impl = USP_RING_BASIC;
    c.causal = 0;
    return c;
}

/* Forward ring attention where every block computes longer than its K/V
 * transfer (h200 fp64: 2.1 GFLOP per block at 27 TFLOP/s is 80 us; 8.4 MB
 * at 1000 GB/s is 10 us): no communication is exposed on any rank. */
static void compute_hides_ring(void **state) {
    (void)state;
    usp_config c = ring_config(4);
    usp_schedule s;
    assert_int_equal(usp_schedule_build(&c, 0, &s), USP_OK);
    usp_result r = simulate(&s, "star:bw=1000,lat=1", "h200");
    for (int g = 0; g < s.world; g++) {
        assert_true(r.ranks[g].comm_s > 0);
        if (r.ranks[g].exposed_comm_s > 1e-12) fail_msg("rank %d exposes %.3g s", g, r.ranks[g].exposed_comm_s);
    }
    usp_result_free(&r);
    usp_schedule_free(&s);
}

/* A profile whose kernels take almost no time: the fastest a profile may be
 * (1e5 TFLOP/s, 1e6 GB/s, no launch cost; sim/device/profile.c). */
static const double FAST_FLOPS = 1e17, FAST_BYTES_PER_S = 1e15;

/* What rank 0's compute steps take at most on that profile, one after the other. */
static double fast_compute_bound(const usp_schedule *s) {
    double t = 0;
    for (int i = 0; i < s->ranks[0].nsteps; i++) {
        const usp_step *st = usp_rank_step(&s->ranks[0], i);
        t += st->flops / FAST_FLOPS + st->bytes_mem / FAST_BYTES_PER_S;
    }
    return t;
}

static char *instant_profile(void) {
    static char path[] = "/tmp/usp-test-profile-XXXXXX.json";
    int fd = mkstemps(path, 5);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs("{\"name\": \"instant\", \"attention_tflops\": {\"fp64\": {\"64\": {\"fwd\": 1e5, \"bwd\": 1e5}}},"
          " \"masked_block_efficiency\": {\"fwd\": 1, \"bwd\": 1}, \"hbm_gbps\": 1e6,"
          " \"launch_overhead_us\": 0, \"memory_gb\": 80, \"peak_dense_tflops\": {\"fp64\": 67}}\n", f);
    fclose(f);
    return path;
}

/* With compute (almost) at zero, the forward ring of R ranks is R-1 transfers
 * of one K/V block, one after the other (plus at most the compute). */
static void ring_without_compute(void **state) {
    (void)state;
    char *profile = instant_profile();
    for (int ring = 2; ring <= 8; ring *= 2) {
        usp_config c = ring_config(ring);
        usp_schedule s;
        assert_int_equal(usp_schedule_build(&c, 0, &s), USP_OK);
        double block = 0;
        for (int i = 0; i < s.ranks[0].nsteps; i++)
            if (usp_rank_step(&s.ranks[0], i)->kind == USP_STEP_SENDRECV) block = usp_rank_step(&s.ranks[0], i)->bytes_sent;
        assert_true(block > 0);
        usp_result r = simulate(&s, STAR, profile);
        double comm = (ring - 1) * (2 * LAT + block / BW);
        if (r.time_fwd_s < comm * (1 - 1e-6) || r.time_fwd_s > comm * (1 + 1e-6) + fast_compute_bound(&s))
            fail_msg("ring %d: %.9g s, (R-1) transfers %.9g s", ring, r.time_fwd_s,
                     (ring - 1) * (2 * LAT + block / BW));
        usp_result_free(&r);
        usp_schedule_free(&s);
    }
    unlink(profile);
}

/* ------------------------------------------------ memory-bound steps */

static const char *const PER_KIND_PROFILE =
    "{\"name\": \"per-kind\", \"attention_tflops\": {\"fp64\": {\"64\": {\"fwd\": 1, \"bwd\": 1}}},"
    " \"masked_block_efficiency\": {\"fwd\": 1, \"bwd\": 1}, \"hbm_gbps\": 100,"
    " \"memory_gbps\": {\"pack\": 25, \"merge\": 400},"
    " \"launch_overhead_us\": 2, \"memory_gb\": 80, \"peak_dense_tflops\": {\"fp64\": 67}}\n";

static char *profile_file(const char *json) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/usp-test-profile-XXXXXX.json");
    int fd = mkstemps(path, 5);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs(json, f);
    fclose(f);
    return path;
}

static usp_step memory_step(usp_step_kind kind, double bytes) {
    usp_step st = {.kind = kind, .stream = USP_STREAM_COMPUTE, .dep = -1, .ring_step = -1, .bytes_mem = bytes};
    for (int i = 0; i < 2; i++) st.src[i] = st.dst[i] = USP_BUF_NONE;
    snprintf(st.name, sizeof st.name, "%s", usp_step_kind_name(kind));
    return st;
}

/* A memory-bound step takes launch + bytes_mem / its kind's memory_gbps;
 * a kind the profile does not name (UNPACK), bytes_mem / hbm_gbps. */
static void memory_rate_by_kind(void **state) {
    (void)state;
    const double B = 64e6;
    const usp_step_kind kinds[3] = {USP_STEP_PACK, USP_STEP_MERGE, USP_STEP_UNPACK};
    const double gbps[3] = {25, 400, 100};
    char *profile = profile_file(PER_KIND_PROFILE);
    for (int i = 0; i < 3; i++) {
        usp_schedule s;
        one_step_schedule(&s, 1, 2, memory_step(kinds[i], B));
        usp_result r = simulate(&s, STAR, profile);
        assert_close(r.time_fwd_s, 2e-6 + B / (gbps[i] * 1e9));
        assert_close(r.ranks[1].compute_s, 2e-6 + B / (gbps[i] * 1e9));
        usp_result_free(&r);
        usp_schedule_free(&s);
    }
    unlink(profile);
}

/* ------------------------------------- attention beside a transfer */

static const char *const OVERLAP_PROFILE =
    "{\"name\": \"overlap\", \"attention_tflops\": {\"fp64\": {\"64\": {\"fwd\": 1, \"bwd\": 1,"
    " \"fwd_fixed_us\": 5}}}, \"masked_block_efficiency\": {\"fwd\": 1, \"bwd\": 1}, \"hbm_gbps\": 100,"
    " \"comm_overlap_slowdown\": 0.25,"
    " \"launch_overhead_us\": 0, \"memory_gb\": 80, \"peak_dense_tflops\": {\"fp64\": 67}}\n";

/* Each rank: a transfer of S bytes (T = 2 LAT + S/BW), then a full-block
 * forward attention step of F FLOPs that does not wait for it. Alone it
 * takes d0 = fixed + F / rate; beside the transfer it runs at 1 - f of its
 * rate, so it ends at T + d0 - (1 - f) T when it outlasts the transfer and
 * at d0 / (1 - f) when it does not. */
static void attention_slowed_by_transfer(void **state) {
    (void)state;
    const double f = 0.25, fixed = 5e-6, rate = 1e12, S = 1e6, T = 2 * LAT + S / BW;
    const double flops[2] = {2e8, 4e7};   /* 205 us (outlasts the 110 us transfer), 45 us (inside it) */
    char *profile = profile_file(OVERLAP_PROFILE);
    for (int i = 0; i < 2; i++) {
        usp_schedule s;
        usp_step a = {.kind = USP_STEP_ATTN_FWD, .stream = USP_STREAM_COMPUTE, .dep = -1, .ring_step = 0,
                      .flops = flops[i], .blk = {.q_len = 64, .kv_len = 64}};
        for (int k = 0; k < 2; k++) a.src[k] = a.dst[k] = USP_BUF_NONE;
        snprintf(a.name, sizeof a.name, "attn");
        usp_step steps[2] = {comm_step(USP_STEP_SENDRECV, USP_GROUP_RING, S), a};
        steps_schedule(&s, 1, 2, steps, 2);
        usp_result r = simulate(&s, STAR, profile);
        double d0 = fixed + flops[i] / rate;
        double end = d0 > (1 - f) * T ? T + d0 - (1 - f) * T : d0 / (1 - f);
        assert_close(r.ranks[0].compute_s, end);
        assert_close(r.time_fwd_s, fmax(end, T));
        usp_result_free(&r);
        usp_schedule_free(&s);
    }
    unlink(profile);
}

/* Timing-only and numerics runs of one schedule predict the same times. */
static void numerics_do_not_change_time(void **state) {
    (void)state;
    usp_config c = usp_config_default();
    c.seq = 256;
    usp_schedule s;
    usp_inputs in;
    assert_int_equal(usp_schedule_build(&c, 1, &s), USP_OK);
    assert_int_equal(usp_inputs_make(&c, NULL, &in), USP_OK);
    usp_result a = simulate(&s, "h200x8", NULL), b;
    assert_int_equal(usp_result_init(&b, &s, 1), USP_OK);
    usp_sim_options o = {.numerics = 1};
    assert_int_equal(usp_sim_execute(&s, &in, &o, &b, NULL), USP_OK);
    assert_true(a.time_fwd_s == b.time_fwd_s && a.time_bwd_s == b.time_bwd_s);
    usp_result_free(&a);
    usp_result_free(&b);
    usp_inputs_free(&in);
    usp_schedule_free(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_transfer),
        cmocka_unit_test(h200x2_reproduces_its_fit),
        cmocka_unit_test(settings_override),
        cmocka_unit_test(all_to_all),
        cmocka_unit_test(compute_hides_ring),
        cmocka_unit_test(ring_without_compute),
        cmocka_unit_test(memory_rate_by_kind),
        cmocka_unit_test(attention_slowed_by_transfer),
        cmocka_unit_test(numerics_do_not_change_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
