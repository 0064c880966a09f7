/* test_sim_errors.c: what the simulator refuses, with the reason, and the
 * exit status 2 the commands give for it. */
#define _GNU_SOURCE /* mkstemps */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "usp/executor.h"
#include "usp/profile.h"
#include "usp/sim.h"

static char *temp_file(const char *text, const char *suffix) {
    static char paths[8][64];
    static int n;
    char *path = paths[n++ % 8];
    snprintf(path, 64, "/tmp/usp-test-XXXXXX%s", suffix);
    int fd = mkstemps(path, (int)strlen(suffix));
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

/* Runs a timing-only 2 x 2 problem and expects USP_EINVAL with `reason` in the message. */
static void expect_refusal(const usp_sim_options *o, const char *reason) {
    usp_config c = usp_config_default();
    usp_schedule s;
    usp_result r;
    assert_int_equal(usp_schedule_build(&c, 1, &s), USP_OK);
    assert_int_equal(usp_result_init(&r, &s, 0), USP_OK);
    usp_status st = usp_sim_execute(&s, NULL, o, &r, NULL);
    if (st != USP_EINVAL) fail_msg("status %d, expected USP_EINVAL (%s)", st, usp_error());
    if (!strstr(usp_error(), reason)) fail_msg("reason '%s' does not say '%s'", usp_error(), reason);
    usp_result_free(&r);
    usp_schedule_free(&s);
}

static void unknown_preset(void **state) {
    (void)state;
    usp_sim_options o = {.platform = "h300x8"};
    expect_refusal(&o, "unknown platform preset 'h300x8'");
    o.platform = "torus:sides=4";
    expect_refusal(&o, "unknown platform parameter 'sides'");
    o.platform = "l20x8:p2p=node";
    expect_refusal(&o, "p2p 'node' is not pxb or sys");
}

static void bad_platform_file(void **state) {
    (void)state;
    usp_sim_options o = {.platform = temp_file("<?xml version='1.0'?>\n<platform version=\"4.1\">\n"
                                               "<zone id=\"z\" routing=\"Full\">\n<host id=\"a\" speed=\"1f\">\n"
                                               "</zone></platform>\n", ".xml")};
    expect_refusal(&o, "Parse error");
    o.platform = "/nonexistent/platform.xml";
    expect_refusal(&o, "No such file");
}

static const char *const TWO_HOSTS =
    "<?xml version='1.0'?>\n<!DOCTYPE platform SYSTEM \"https://simgrid.org/simgrid.dtd\">\n"
    "<platform version=\"4.1\"><zone id=\"z\" routing=\"Full\">\n"
    "<host id=\"a\" speed=\"1Gf\"/><host id=\"b\" speed=\"1Gf\"/>\n"
    "<link id=\"l\" bandwidth=\"1GBps\" latency=\"1us\"/>\n"
    "<route src=\"a\" dst=\"b\"><link_ctn id=\"l\"/></route>\n</zone></platform>\n";

static void fewer_hosts_than_ranks(void **state) {
    (void)state;
    usp_sim_options o = {.platform = "h200x2"};
    expect_refusal(&o, "fewer than the 4 ranks");
    o.platform = temp_file(TWO_HOSTS, ".xml");
    expect_refusal(&o, "has 2 hosts, fewer than the 4 ranks");
    o.platform = "h200x8";
    o.hostmap = temp_file("gpu0\ngpu1\n", ".txt");
    expect_refusal(&o, "names 2 hosts, fewer than the 4 ranks");
    o.hostmap = temp_file("gpu0\ngpu1\ngpu9\ngpu3\n", ".txt");
    expect_refusal(&o, "no host 'gpu9'");
}

static void profile_missing_a_field(void **state) {
    (void)state;
    usp_sim_options o = {.profile = temp_file(
        "{\"name\": \"x\", \"attention_tflops\": {\"fp64\": {\"64\": {\"fwd\": 1, \"bwd\": 1}}},\n"
        " \"masked_block_efficiency\": {\"fwd\": 1, \"bwd\": 1}, \"launch_overhead_us\": 0,\n"
        " \"memory_gb\": 80, \"peak_dense_tflops\": {\"fp64\": 67}}\n", ".json")};
    expect_refusal(&o, "missing 'hbm_gbps'");
    o.profile = "b200";
    expect_refusal(&o, "b200");
    o.profile = temp_file("{\"name\": \"x\", \"attention_tflops\": {\"bf16\": {\"64\": {\"fwd\": 1, \"bwd\": 1}}},"
                          " \"masked_block_efficiency\": {\"fwd\": 1, \"bwd\": 1}, \"hbm_gbps\": 1,"
                          " \"launch_overhead_us\": 0, \"memory_gb\": 80, \"peak_dense_tflops\": {\"bf16\": 1}}",
                          ".json");
    expect_refusal(&o, "no fp64 attention figures");
}

/* A profile whose 'memory_gbps' (on line 3) is `by_kind`. */
static const char *profile_with_memory(const char *by_kind) {
    char text[1024];
    snprintf(text, sizeof text,
             "{\"name\": \"x\", \"attention_tflops\": {\"fp64\": {\"64\": {\"fwd\": 1, \"bwd\": 1}}},\n"
             " \"masked_block_efficiency\": {\"fwd\": 1, \"bwd\": 1}, \"hbm_gbps\": 100,\n"
             " \"memory_gbps\": %s,\n"
             " \"launch_overhead_us\": 0, \"memory_gb\": 80, \"peak_dense_tflops\": {\"fp64\": 67}}\n",
             by_kind);
    return temp_file(text, ".json");
}

/* Any subset of the memory-bound kinds loads; another name, a figure that
 * is not positive or not a number is refused with the field and its line. */
static void profile_memory_rates(void **state) {
    (void)state;
    assert_int_equal(usp_profile_check(profile_with_memory("{}")), USP_OK);
    assert_int_equal(usp_profile_check(profile_with_memory(
                         "{\"pack\": 622, \"unpack\": 614, \"merge\": 1739, \"init\": 4194, \"bwd_prep\": 2061}")),
                     USP_OK);
    usp_sim_options o = {.profile = profile_with_memory("{\"pack\": 600, \"copy\": 1}")};
    expect_refusal(&o, "line 3: 'memory_gbps.copy' is not a memory-bound step kind");
    o.profile = profile_with_memory("{\"attn_fwd\": 1}");
    expect_refusal(&o, "line 3: 'memory_gbps.attn_fwd' is not a memory-bound step kind");
    o.profile = profile_with_memory("{\"merge\": 0}");
    expect_refusal(&o, "line 3: 'memory_gbps.merge' is 0, outside the physical range [1, 1e+06] GB/s");
    o.profile = profile_with_memory("{\"init\": -5}");
    expect_refusal(&o, "line 3: 'memory_gbps.init' is -5, outside the physical range");
    o.profile = profile_with_memory("{\"pack\": \"fast\"}");
    expect_refusal(&o, "line 3: 'memory_gbps.pack' must be a positive number");
    o.profile = profile_with_memory("600");
    expect_refusal(&o, "line 3: 'memory_gbps' must be an object");
}

/* A profile with `rate` as its fp64 head-dim-64 entry (line 1) and `extra`
 * members on line 3. */
static const char *profile_with(const char *rate, const char *extra) {
    char text[1024];
    snprintf(text, sizeof text,
             "{\"name\": \"x\", \"attention_tflops\": {\"fp64\": {\"64\": %s}},\n"
             " \"masked_block_efficiency\": {\"fwd\": 1, \"bwd\": 1}, \"hbm_gbps\": 100,\n"
             " %s\n"
             " \"launch_overhead_us\": 0, \"memory_gb\": 80, \"peak_dense_tflops\": {\"fp64\": 67}}\n",
             rate, extra);
    return temp_file(text, ".json");
}

/* The optional comm slowdown (a fraction below 1) and fixed kernel times
 * (not negative) load when valid and are refused with their line when not. */
static void profile_overlap_and_fixed_times(void **state) {
    (void)state;
    const char *rate = "{\"fwd\": 1, \"bwd\": 1}";
    assert_int_equal(usp_profile_check(profile_with(rate, "\"comm_overlap_slowdown\": 0.2,")), USP_OK);
    assert_int_equal(usp_profile_check(profile_with(
                         "{\"fwd\": 1, \"bwd\": 1, \"fwd_fixed_us\": 18, \"bwd_fixed_us\": 0}", "")),
                     USP_OK);
    usp_sim_options o = {.profile = profile_with(rate, "\"comm_overlap_slowdown\": 1,")};
    expect_refusal(&o, "line 3: 'comm_overlap_slowdown' must be a number in [0, 1)");
    o.profile = profile_with(rate, "\"comm_overlap_slowdown\": \"some\",");
    expect_refusal(&o, "line 3: 'comm_overlap_slowdown' must be a number in [0, 1)");
    o.profile = profile_with("{\"fwd\": 1, \"bwd\": 1, \"bwd_fixed_us\": -3}", "");
    expect_refusal(&o, "line 1: 'bwd_fixed_us' is -3, outside the physical range [0, 100000] us");
    /* the per-row-mask efficiencies: in the masked-block range, named by their path */
    assert_int_equal(usp_profile_check(profile_with("{\"fwd\": 1, \"bwd\": 1, \"fwd_rowmask_efficiency\": 0.9, "
                                                    "\"bwd_rowmask_efficiency\": 0.8}", "")),
                     USP_OK);
    o.profile = profile_with("{\"fwd\": 1, \"bwd\": 1, \"bwd_rowmask_efficiency\": 0}", "");
    expect_refusal(&o, "'attention_tflops.fp64.64.bwd_rowmask_efficiency' is 0, outside the physical range [0.01, 10]");
    /* the kernel the rates are of: a name, when given */
    assert_int_equal(usp_profile_check(profile_with("{\"fwd\": 1, \"bwd\": 1}", "\"kernel\": \"k\",")), USP_OK);
    o.profile = profile_with("{\"fwd\": 1, \"bwd\": 1}", "\"kernel\": 2,");
    expect_refusal(&o, "line 3: 'kernel' must be a string");
}

/* The simulator and `usp calibrate` (which refines a --base profile) read
 * profiles with one reader: each file below is refused by both, for the same
 * reason, and a profile written back is read as it was. */
static void profile_one_reader(void **state) {
    (void)state;
    static const struct { const char *rate, *extra, *reason; } bad[] = {
        {"{\"fwd\": 3.5e14, \"bwd\": 1}", "", "'attention_tflops.fp64.64.fwd' is 3.5e+14, outside the physical range"},
        {"{\"fwd\": 1, \"bwd\": 1, \"fwd_rowmask_efficiency\": 20}", "",
         "'attention_tflops.fp64.64.fwd_rowmask_efficiency' is 20, outside the physical range [0.01, 10]"},
        {"{\"fwd\": 1, \"bwd\": 1}", "\"memory_mib\": 81920,", "give 'memory_mib' or 'memory_gb', not both"},
        {"{\"fwd\": 1, \"bwd\": 1}", "\"source\": [1],", "line 3: 'source' must be a string"},
        {"{\"fwd\": 1, \"bwd\": 1}, \"064\": {\"fwd\": 2, \"bwd\": 2}", "", "line 1: head dim 64 is given twice"},
        {"{\"fwd\": 1, \"bwd\": 1}, \"64x\": {\"fwd\": 2, \"bwd\": 2}", "", "head dim '64x' is not a positive integer"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *path = profile_with(bad[i].rate, bad[i].extra);
        usp_profile_desc d;
        assert_int_equal(usp_profile_check(path), USP_EINVAL);
        if (!strstr(usp_error(), bad[i].reason)) fail_msg("simulator: '%s' does not say '%s'", usp_error(), bad[i].reason);
        assert_int_equal(usp_profile_desc_read(path, &d), USP_EINVAL);
        if (!strstr(usp_error(), bad[i].reason)) fail_msg("calibration: '%s' does not say '%s'", usp_error(), bad[i].reason);
    }
    /* written back: the same figures (to the writer's digits), the card's memory as GB */
    usp_profile_desc in, out;
    assert_int_equal(usp_profile_desc_read(profile_with("{\"fwd\": 1.5, \"bwd\": 2.5, \"fwd_rowmask_efficiency\": 0.8}",
                                                        "\"comm_overlap_slowdown\": 0.25,"), &in), USP_OK);
    const char *copy = temp_file("", ".json");
    assert_int_equal(usp_profile_desc_save(&in, copy), USP_OK);
    assert_int_equal(usp_profile_desc_read(copy, &out), USP_OK);
    assert_int_equal(out.nrates, 1);
    assert_true(out.rates[0].fwd_tflops == 1.5 && out.rates[0].bwd_tflops == 2.5);
    assert_true(out.rates[0].fwd_rowmask_eff == 0.8 && out.rates[0].bwd_rowmask_eff == 1.0);
    assert_true(out.memory_bytes == 80e9 && out.comm_slowdown == 0.25 && out.peak_tflops[USP_F64] == 67);
    assert_int_equal(usp_profile_check(copy), USP_OK);
}

/* The caveats: all-to-alls through host memory, printed where a ulysses group
 * holds two GPUs that NCCL joins by SHM on the preset's drawing, and nowhere
 * else (NVSwitch, one PCIe switch, P2P through the CPU, XML files); rings whose
 * members span more than two nodes. */
static void platform_caveats(void **state) {
    (void)state;
    usp_config c = usp_config_default();
    struct { const char *spec; int ulysses, ring; usp_layout layout; int expect; } cases[] = {
        {"l20x8", 8, 1, USP_LAYOUT_ULYSSES_INNER, 1},
        {"l20x8", 4, 2, USP_LAYOUT_ULYSSES_INNER, 1},   /* two switches of one socket */
        {"l20x8", 2, 4, USP_LAYOUT_ULYSSES_INNER, 0},   /* one PCIe switch: P2P */
        {"l20x8", 2, 4, USP_LAYOUT_RING_INNER, 1},      /* ranks 0 and 4: the other socket */
        {"l20x8", 1, 8, USP_LAYOUT_ULYSSES_INNER, 0},   /* no all-to-all */
        {"l20x8:p2p=sys", 8, 1, USP_LAYOUT_ULYSSES_INNER, 0},
        {"rtx4090x4", 2, 2, USP_LAYOUT_ULYSSES_INNER, 1},
        {"pcie:gpus=8,per-switch=8,sockets=1", 8, 1, USP_LAYOUT_ULYSSES_INNER, 0},
        {"pcie:gpus=8,per-switch=-1,sockets=1", 2, 4, USP_LAYOUT_ULYSSES_INNER, 1},
        {"h100x8", 8, 1, USP_LAYOUT_ULYSSES_INNER, 0},
        {"h100-fattree", 8, 4, USP_LAYOUT_RING_INNER, 0},   /* across nodes: the network, not SHM */
        {"h200x2", 2, 1, USP_LAYOUT_ULYSSES_INNER, 0},
        /* rings across nodes: more than two nodes only */
        {"h100-fattree", 8, 3, USP_LAYOUT_ULYSSES_INNER, 1},
        {"h100-fattree", 8, 2, USP_LAYOUT_ULYSSES_INNER, 0},
        {"h100-fattree", 4, 4, USP_LAYOUT_ULYSSES_INNER, 0},   /* 16 ranks: two nodes */
        {"h100-fattree", 2, 12, USP_LAYOUT_RING_INNER, 0},     /* each ring of 12 on nodes 0-1 or 1-2 */
        {"a800-2n", 2, 8, USP_LAYOUT_ULYSSES_INNER, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        c.ulysses = cases[i].ulysses;
        c.ring = cases[i].ring;
        c.layout = cases[i].layout;
        const char *why = usp_platform_caveat(cases[i].spec, &c);
        if ((why != NULL) != cases[i].expect)
            fail_msg("%s, ulysses %d x ring %d: caveat %s", cases[i].spec, c.ulysses, c.ring, why ? why : "none");
    }
    const char *xml = temp_file(TWO_HOSTS, ".xml");
    c.ulysses = 2;
    c.ring = 1;
    assert_null(usp_platform_caveat(xml, &c));
}

/* Two ranks, one SENDRECV each, with the given tags; rank 1 may have none. */
static void broken_schedule(usp_schedule *s, int tag0, int tag1, int rank1_steps) {
    usp_config c = usp_config_default();
    c.ulysses = 1;
    c.ring = 2;
    assert_int_equal(usp_schedule_init_empty(&c, 2, s), USP_OK);
    for (int g = 0; g < 2; g++) {
        usp_step st = {.kind = USP_STEP_SENDRECV, .stream = USP_STREAM_COMM, .group = USP_GROUP_RING,
                       .src = {USP_BUF_NONE, USP_BUF_NONE}, .dst = {USP_BUF_NONE, USP_BUF_NONE},
                       .send_hops = 1, .recv_hops = 1, .tag = g ? tag1 : tag0, .dep = -1,
                       .bytes_sent = 1e6, .name = "kv"};
        int n = g == 0 ? 1 : rank1_steps;
        assert_int_equal(usp_schedule_set_steps(s, g, &st, n, n), USP_OK);
    }
}

static void expect_internal(const usp_schedule *s, const char *reason) {
    usp_result r;
    assert_int_equal(usp_result_init(&r, s, 0), USP_OK);
    usp_sim_options o = {.platform = "h200x2"};
    usp_status st = usp_sim_execute(s, NULL, &o, &r, NULL);
    if (st != USP_EINTERNAL) fail_msg("status %d, expected USP_EINTERNAL (%s)", st, usp_error());
    if (!strstr(usp_error(), reason)) fail_msg("reason '%s' does not say '%s'", usp_error(), reason);
    usp_result_free(&r);
}

/* A broken schedule ends the simulation with a reason, not a hang. */
static void broken_schedules(void **state) {
    (void)state;
    usp_schedule s;
    broken_schedule(&s, 1, 2, 1);
    expect_internal(&s, "out of schedule order");
    usp_schedule_free(&s);
    broken_schedule(&s, 1, 1, 0);
    expect_internal(&s, "rank 0 never finished step 0 (kv)");
    usp_schedule_free(&s);
}

/* The commands: exit 2 and "usp: <cmd>: <why>" on stderr. */
static void command_refuses(const char *args, const char *reason) {
    char cmd[512], err[] = "/tmp/usp-test-err-XXXXXX";
    close(mkstemp(err));
    snprintf(cmd, sizeof cmd, "%s %s >/dev/null 2>%s", USP_BIN, args, err);
    int status = system(cmd);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) != 2) fail_msg("'usp %s' exited %d, expected 2", args, WEXITSTATUS(status));
    char text[1024] = "";
    FILE *f = fopen(err, "r");
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    unlink(err);
    if (!strstr(text, reason)) fail_msg("'usp %s' said '%s', not '%s'", args, text, reason);
}

static void commands_exit_2(void **state) {
    (void)state;
    command_refuses("platform --preset nosuch", "usp: platform: unknown platform preset 'nosuch'");
    command_refuses("sweep --world 4 --platform nosuch --quiet", "usp: sweep: unknown platform preset");
    command_refuses("sweep --world 16 --platform h200x8 --quiet", "fewer than the 16 ranks");
    char args[256];
    snprintf(args, sizeof args, "sweep --world 4 --quiet --platform %s", temp_file("<platform>", ".xml"));
    command_refuses(args, "usp: sweep: platform");
    snprintf(args, sizeof args, "sweep --world 4 --quiet --profile %s", temp_file("{\"name\": \"x\"}", ".json"));
    command_refuses(args, "missing 'attention_tflops'");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unknown_preset),
        cmocka_unit_test(bad_platform_file),
        cmocka_unit_test(fewer_hosts_than_ranks),
        cmocka_unit_test(profile_missing_a_field),
        cmocka_unit_test(profile_memory_rates),
        cmocka_unit_test(profile_overlap_and_fixed_times),
        cmocka_unit_test(profile_one_reader),
        cmocka_unit_test(platform_caveats),
        cmocka_unit_test(broken_schedules),
        cmocka_unit_test(commands_exit_2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
