/* test_refusals.c: inputs that once ran to a silent wrong answer, a crash or
 * a hang are refused with exit 2 and one line `usp: <command>: <why>`, within
 * a time limit (a refusal that hangs fails here instead of hanging ctest).
 * Beside them in this suite: test_cli.c (bad options and configurations),
 * test_sim_errors.c (profiles, platforms, host maps through the library).
 * argv[1] is the usp binary, argv[2] the repository's traces/ folder. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "test_util.h"

static const char *usp_bin, *traces_dir;

/* Seconds a refusal may take: the route watchdog of a SimGrid routing that
 * spins is 10 s (sim/engine/routes.c); everything else answers in under 2. */
enum { REFUSAL_LIMIT_S = 60 };

static void write_file(const char *name, const char *text) {
    FILE *f = fopen(tmp_path(name), "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Runs `usp <args>` in tmp_dir with stdout capped at 1 MB (an endless writer
 * is cut off, not filling the disk); returns the exit code and stderr. */
static int run_usp(const char *args, char *err, size_t n) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cd %s && timeout %d %s %s 2>&1 >/dev/null | head -c %zu", tmp_dir,
             REFUSAL_LIMIT_S, usp_bin, args, n - 1);
    char wrapped[4200];
    /* the exit status of usp, not of head */
    snprintf(wrapped, sizeof wrapped, "bash -c 'set -o pipefail; %s'", cmd);
    FILE *p = popen(wrapped, "r");
    assert_non_null(p);
    size_t used = fread(err, 1, n - 1, p);
    err[used] = '\0';
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void expect_refusal(const char *args, const char *message) {
    char err[4096];
    int rc = run_usp(args, err, sizeof err);
    check_refusal(args, rc, err, message);
    if (strncmp(err, "usp: ", 5) != 0) fail_msg("usp %s: not 'usp: <command>: <why>': '%s'", args, err);
}

#define SMALL "--seq 256 --heads 4 --head-dim 16 --trace t.json"

/* Two ranks on one host would talk over SimGrid's loopback and each get a
 * whole GPU: refused before anything is built, at any world size. */
static void host_named_for_two_ranks(void **state) {
    (void)state;
    write_file("dup.txt", "gpu0\ngpu1\ngpu2\ngpu1\n");
    expect_refusal("run --hostmap dup.txt " SMALL,
                   "host map dup.txt: ranks 1 and 3 are both on host 'gpu1' (one rank per GPU)");
    expect_refusal("run --hostmap dup.txt --no-numerics " SMALL, "ranks 1 and 3 are both on host 'gpu1'");
}

/* Four hosts, a-b linked and c-d linked (or c and d alone): ranks 0 and 2
 * (ring neighbours) have no path. */
static const char *two_islands(const char *routing, int link_cd) {
    static char xml[2048];
    snprintf(xml, sizeof xml,
             "<?xml version='1.0'?>\n<!DOCTYPE platform SYSTEM \"https://simgrid.org/simgrid.dtd\">\n"
             "<platform version=\"4.1\"><zone id=\"z\" routing=\"%s\">\n"
             "<host id=\"a\" speed=\"1Gf\"/><host id=\"b\" speed=\"1Gf\"/>\n"
             "<host id=\"c\" speed=\"1Gf\"/><host id=\"d\" speed=\"1Gf\"/>\n"
             "<link id=\"l1\" bandwidth=\"1GBps\" latency=\"1us\"/><link id=\"l2\" bandwidth=\"1GBps\" latency=\"1us\"/>\n"
             "<route src=\"a\" dst=\"b\"><link_ctn id=\"l1\"/></route>\n"
             "%s"
             "</zone></platform>\n",
             routing, link_cd ? "<route src=\"c\" dst=\"d\"><link_ctn id=\"l2\"/></route>\n" : "");
    return xml;
}

static void no_route_between_talking_ranks(void **state) {
    (void)state;
    /* Full and Floyd answer "no route"; SimGrid's Dijkstra routings crash on
     * an isolated host and spin on two islands (the watchdog ends it); each
     * is reported as the pair */
    static const struct { const char *routing; int link_cd; } cases[] = {
        {"Full", 1}, {"Floyd", 1}, {"Dijkstra", 0}, {"DijkstraCache", 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[64], args[256];
        snprintf(name, sizeof name, "islands-%s.xml", cases[i].routing);
        write_file(name, two_islands(cases[i].routing, cases[i].link_cd));
        snprintf(args, sizeof args, "run --platform %s " SMALL, name);
        expect_refusal(args, "no route from host 'a' (rank 0) to host 'c' (rank 2)");
    }
}

static const char *profile(const char *masked_fwd, const char *fwd_rate, const char *memory_gb) {
    static char text[1024];
    snprintf(text, sizeof text,
             "{\"name\": \"x\", \"attention_tflops\": {\"fp64\": {\"64\": {\"fwd\": %s, \"bwd\": 23}}},\n"
             " \"masked_block_efficiency\": {\"fwd\": %s, \"bwd\": 1}, \"hbm_gbps\": 4200,\n"
             " \"launch_overhead_us\": 5, \"memory_gb\": %s, \"peak_dense_tflops\": {\"fp64\": 67}}\n",
             fwd_rate, masked_fwd, memory_gb);
    return text;
}

static void profile_outside_physical_ranges(void **state) {
    (void)state;
    write_file("masked.json", profile("1e9", "27", "141"));
    expect_refusal("run --profile masked.json " SMALL,
                   "profile masked.json: line 2: 'masked_block_efficiency.fwd' is 1e+09, outside the physical range");
    write_file("slow.json", profile("1", "1e-300", "141"));
    expect_refusal("run --profile slow.json --no-numerics " SMALL,
                   "'attention_tflops.fp64.64.fwd' is 1e-300, outside the physical range [0.001, 100000] TFLOP/s");
    write_file("mem.json", profile("1", "27", "141e9"));
    expect_refusal("run --profile mem.json " SMALL, "'memory_gb' is 1.41e+11, outside the physical range");
    /* the same profile in range runs */
    char err[4096];
    write_file("ok.json", profile("0.9", "27", "141"));
    assert_int_equal(run_usp("run --profile ok.json --dtype fp64 " SMALL, err, sizeof err), 0);
}

/* Once looped for ever writing axis ticks (and lround(NaN) was negated). */
static void trace_times_beyond_range(void **state) {
    (void)state;
    static const char *event = "{\"ph\": \"X\", \"name\": \"s\", \"cat\": \"attn_fwd\", \"pid\": 0, \"tid\": 0, "
                               "\"ts\": %s, \"dur\": 1, \"args\": {\"step\": %d}}";
    char text[1024], e1[256], e2[256];
    snprintf(e1, sizeof e1, event, "-1e20", 0);
    snprintf(text, sizeof text, "{\"traceEvents\": [%s]}\n", e1);
    write_file("far.json", text);
    expect_refusal("trace svg far.json -o far.svg", "far.json: line 1: ts -1e+20 us, dur 1 us: beyond 1e+15 us");
    snprintf(e1, sizeof e1, event, "-1e308", 0);
    snprintf(e2, sizeof e2, event, "1e308", 1);
    snprintf(text, sizeof text, "{\"traceEvents\": [%s,\n%s]}\n", e1, e2);
    write_file("both.json", text);
    expect_refusal("trace svg both.json -o both.svg", "both.json: line 1: ts -1e+308 us");
    expect_refusal("trace diff both.json far.json", "both.json: line 1: ts -1e+308 us");
    /* the widest span allowed draws a bounded picture */
    snprintf(e1, sizeof e1, event, "-1e15", 0);
    snprintf(e2, sizeof e2, event, "1e15", 1);
    snprintf(text, sizeof text, "{\"traceEvents\": [%s,\n%s]}\n", e1, e2);
    write_file("wide.json", text);
    char err[4096];
    assert_int_equal(run_usp("trace svg wide.json -o wide.svg", err, sizeof err), 0);
    expect_refusal("trace svg wide.json -o - --json", "svg --json needs -o FILE.svg");
}

/* A negative seed was converted to uint64 (undefined behaviour). */
static void case_seed_not_a_seed(void **state) {
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/bench-ring2-basic-32k-h32-causal-fb.case.json", traces_dir);
    char *text = read_text(path);
    static const char *seeds[] = {"-1234", "1.5", "1e300"};
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        char *at = strstr(text, "\"seed\": 1234");
        assert_non_null(at);
        char *edited = malloc(strlen(text) + 64);
        snprintf(edited, strlen(text) + 64, "%.*s\"seed\": %s%s", (int)(at - text), text, seeds[i],
                 at + strlen("\"seed\": 1234"));
        char dir[600];
        snprintf(dir, sizeof dir, "mkdir -p %s/cases", tmp_dir);
        assert_int_equal(system(dir), 0);
        write_file("cases/a.case.json", edited);
        free(edited);
        expect_refusal("validate --traces cases", "line 5: 'seed' must be an integer in [0, 2^53]");
    }
    free(text);
}

/* An int32 .npy of n cumulative lengths, written by hand. */
static void write_cu_npy(const char *name, const int *cu, int n) {
    char header[128];
    int len = snprintf(header, sizeof header, "{'descr': '<i4', 'fortran_order': False, 'shape': (%d,), }", n);
    int pad = 64 - (10 + len + 1) % 64;
    FILE *f = fopen(tmp_path(name), "wb");
    assert_non_null(f);
    unsigned short hlen = (unsigned short)(len + pad + 1);
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    fwrite(&hlen, 2, 1, f); /* little-endian machines */
    fprintf(f, "%s%*s\n", header, pad, "");
    fwrite(cu, sizeof *cu, (size_t)n, f);
    fclose(f);
}

/* What fuzzing found (tests/fuzz/corpus/ keeps each input as a seed too). */
static void found_by_fuzzing(void **state) {
    (void)state;
    /* a slice bound beyond a long was converted to long before its range check */
    write_file("far-slice.json", "[{\"q\": [1e42, 32], \"k\": [0, 32], \"type\": \"full\"}]");
    expect_refusal("run --mask far-slice.json --ring-impl basic " SMALL,
                   "slice 0: \"q\" bounds must be integers in 0..256");
    /* documents adding up to 2e9 tokens set a sequence beyond --seq's limit and asked for 48 GB */
    int cu[3] = {0, 1000000000, 2000000000};
    write_cu_npy("huge-docs.npy", cu, 3);
    expect_refusal("run --seqlens-file huge-docs.npy --ulysses 1 --ring 1 --no-numerics --trace t.json",
                   "documents add up to 2000000000 tokens, more than 1073741824");
    /* a NUMA node of 7777777777 overflowed atoi; the writer then looped over that many sockets */
    write_file("numa.txt", "\tGPU0\tGPU1\tCPU Affinity\tNUMA Affinity\n"
                           "GPU0\t X \tNV4\t0-31\t7777777777\n"
                           "GPU1\tNV4\t X \t0-31\t0\n");
    expect_refusal("platform --from-topo numa.txt", "numa.txt: line 2: NUMA node '7777777777' is not in 0..63");
    write_file("nv.txt", "\tGPU0\tGPU1\tCPU Affinity\tNUMA Affinity\n"
                         "GPU0\t X \tNV77777777777\t0-31\t0\n"
                         "GPU1\tNV4\t X \t0-31\t0\n");
    expect_refusal("platform --from-topo nv.txt", "is not an NVLink count");
    expect_refusal("platform --preset l20x8 --p2p node", "--p2p 'node' is not pxb or sys");
}

/* The default job checks fp64 numerics and predicts the time of a bf16 run,
 * and says so; --dtype D checks and times D. */
static void prediction_in_the_gpu_dtype(void **state) {
    (void)state;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cd %s && %s run " SMALL " | grep -q 'timed dtype      bf16, as a GPU run "
             "(--dtype to change it); checked in fp64 on the CPU'", tmp_dir, usp_bin);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "cd %s && %s run --json " SMALL " | grep -q '\"time_dtype\": \"bf16\", "
             "\"check_dtype\": \"fp64\"'", tmp_dir, usp_bin);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "cd %s && %s run --dtype fp32 --json " SMALL " | grep -q '\"time_dtype\": \"fp32\", "
             "\"check_dtype\": \"fp32\"'", tmp_dir, usp_bin);
    assert_int_equal(system(cmd), 0);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: test_refusals USP_BINARY TRACES_DIR\n");
        return 2;
    }
    usp_bin = argv[1];
    traces_dir = argv[2];
    if (tmp_dir_make("usp_refusals") != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(host_named_for_two_ranks),
        cmocka_unit_test(no_route_between_talking_ranks),
        cmocka_unit_test(profile_outside_physical_ranges),
        cmocka_unit_test(trace_times_beyond_range),
        cmocka_unit_test(case_seed_not_a_seed),
        cmocka_unit_test(found_by_fuzzing),
        cmocka_unit_test(prediction_in_the_gpu_dtype),
    };
    return cmocka_run_group_tests(tests, NULL, remove_tmp_dir);
}
