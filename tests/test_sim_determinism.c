/* test_sim_determinism.c: the same simulation twice gives the same bytes:
 * the Chrome trace, the summary, and usp sweep's output. */
#define _GNU_SOURCE /* mkstemps, open_memstream */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "usp/executor.h"
#include "usp/sim.h"

typedef struct { char *bytes; size_t len; } blob;

static blob read_file(const char *path) {
    blob b = {0};
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    b.len = (size_t)ftell(f);
    rewind(f);
    b.bytes = malloc(b.len + 1);
    assert_int_equal(fread(b.bytes, 1, b.len, f), b.len);
    fclose(f);
    return b;
}

static void assert_same(blob a, blob b, const char *what) {
    if (a.len != b.len || memcmp(a.bytes, b.bytes, a.len) != 0) fail_msg("%s differs between two runs", what);
    free(a.bytes);
    free(b.bytes);
}

/* One numerics run of a 2 x 2 problem on a100x8: trace file and summary. */
static void run_once(const char *trace_path, blob *summary) {
    usp_config c = usp_config_default();
    c.seq = 512;
    usp_schedule s;
    usp_inputs in;
    usp_result r;
    usp_trace t;
    assert_int_equal(usp_schedule_build(&c, 1, &s), USP_OK);
    assert_int_equal(usp_inputs_make(&c, NULL, &in), USP_OK);
    assert_int_equal(usp_result_init(&r, &s, 1), USP_OK);
    usp_trace_init(&t, "sim", &c);
    usp_sim_options o = {.platform = "a100x8", .numerics = 1};
    if (usp_sim_execute(&s, &in, &o, &r, &t) != USP_OK) fail_msg("%s", usp_error());
    long steps = 0;
    for (int g = 0; g < s.world; g++) steps += s.ranks[g].nsteps;
    assert_int_equal(t.count, steps);
    assert_int_equal(usp_trace_write(&t, trace_path), USP_OK);
    usp_sim_report rep;
    assert_int_equal(usp_sim_report_make(&s, &r, &o, &rep), USP_OK);
    FILE *f = open_memstream(&summary->bytes, &summary->len);
    usp_sim_report_print(f, &rep);
    usp_sim_report_json(f, &rep);
    fclose(f);
    usp_trace_free(&t);
    usp_result_free(&r);
    usp_inputs_free(&in);
    usp_schedule_free(&s);
}

static void trace_and_summary(void **state) {
    (void)state;
    char p1[] = "/tmp/usp-trace-a-XXXXXX.json", p2[] = "/tmp/usp-trace-b-XXXXXX.json";
    close(mkstemps(p1, 5));
    close(mkstemps(p2, 5));
    blob s1, s2;
    run_once(p1, &s1);
    run_once(p2, &s2);
    assert_same(s1, s2, "the summary");
    blob t1 = read_file(p1), t2 = read_file(p2);
    assert_true(t1.len > 1000);
    assert_same(t1, t2, "the trace");
    unlink(p1);
    unlink(p2);
}

/* usp sweep --json, as a user runs it, twice. */
static blob command_output(const char *cmd) {
    blob b = {0};
    FILE *out = open_memstream(&b.bytes, &b.len);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) fwrite(buf, 1, n, out);
    assert_int_equal(pclose(p), 0);
    fclose(out);
    return b;
}

static void sweep_output(void **state) {
    (void)state;
    const char *cmd = USP_BIN " sweep --world 4 --seq 8192 --heads 8 --head-dim 64 --json --quiet";
    blob a = command_output(cmd), b = command_output(cmd);
    assert_non_null(strstr(a.bytes, "\"time_total_s\""));
    assert_same(a, b, "usp sweep --json");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(trace_and_summary),
        cmocka_unit_test(sweep_output),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
