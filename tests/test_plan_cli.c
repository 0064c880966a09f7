/* test_plan_cli.c: usp plan and usp costs as a user runs them: help that
 * states the FLOP convention, one-line refusals with exit 2, JSON that
 * parses; a pack of documents given as --seqlens, --seqlens-file and --mask
 * plans alike. USP_BIN is the path of the usp binary. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "usp/json.h"

/* Runs `usp <args>`; returns the exit code, stdout in out, stderr in err. */
static int run_usp(const char *args, char *out, size_t nout, char *err, size_t nerr) {
    char cmd[2048], err_path[64];
    /* one file per process: several builds of usp may run this test at once */
    snprintf(err_path, sizeof err_path, "/tmp/usp-test-plan-cli-%ld.err", (long)getpid());
    snprintf(cmd, sizeof cmd, "%s %s 2>%s", USP_BIN, args, err_path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t used = fread(out, 1, nout - 1, p);
    out[used] = '\0';
    int status = pclose(p);
    FILE *e = fopen(err_path, "r");
    assert_non_null(e);
    used = fread(err, 1, nerr - 1, e);
    err[used] = '\0';
    fclose(e);
    remove(err_path);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static char out[1 << 20], err[1 << 16];

static void expect_refusal(const char *args, const char *message) {
    int rc = run_usp(args, out, sizeof out, err, sizeof err);
    if (rc != 2 || !strstr(err, message))
        fail_msg("usp %s: exit %d, stderr '%s', expected exit 2 with '%s'", args, rc, err, message);
    char *nl = strchr(err, '\n');
    if (!nl || nl[1] != '\0') fail_msg("usp %s: more than one line: '%s'", args, err);
}

static void test_help(void **state) {
    (void)state;
    assert_int_equal(run_usp("plan --help", out, sizeof out, err, sizeof err), 0);
    assert_non_null(strstr(out, "representative transformer layer"));
    assert_non_null(strstr(out, "halved when causal"));
    assert_non_null(strstr(out, "recomputation is never"));
    assert_int_equal(run_usp("costs --help", out, sizeof out, err, sizeof err), 0);
    assert_non_null(strstr(out, "Table 2"));
    assert_int_equal(run_usp("--help", out, sizeof out, err, sizeof err), 0);
    assert_non_null(strstr(out, "plan"));
    assert_non_null(strstr(out, "costs"));
}

static void test_refusals(void **state) {
    (void)state;
    expect_refusal("plan --seq 64K", "usp: plan: --gpus is required");
    expect_refusal("plan --gpus 16 --model llama9", "usp: plan: unknown model 'llama9' (built in: ");
    expect_refusal("plan --gpus 16 --seq 12x", "usp: plan: --seq '12x' is not a token count");
    expect_refusal("plan --gpus 16 --zero 5", "usp: plan: --zero '5' is not an integer in 0..3");
    expect_refusal("plan --gpus 16 --platform a800-2n --tp 16 --ulysses 2",
                   "no dp x tp x ulysses x ring = 16 within the given degrees");
    expect_refusal("plan --gpus 64 --platform h100-fattree --tp 8 --ulysses 8 --ring 1 --dp 1",
                   "usp: plan: heads 32 / tp 8 = 4 < ulysses 8: a ulysses rank would hold no head");
    expect_refusal("plan --gpus 16 --platform a800-2n --tp 2 --ulysses 2 --ring 2 --dp 1",
                   "usp: plan: 16 GPUs are not dp x tp x ulysses x ring = 1 x 2 x 2 x 2 = 8");
    expect_refusal("plan --gpus 16 --platform a800-2n --seq 1000 --tp 4 --ulysses 2 --ring 2 --dp 1",
                   "usp: plan: seq 1000 is not divisible by tp x ulysses x ring = 16");
    expect_refusal("plan --gpus 16 --platform a800-2n --tp 2 --seq 1002", "no mix can run");
    expect_refusal("plan --gpus 16 --platform nowhere.xml", "platform nowhere.xml");
    expect_refusal("plan --gpus 8 --dtype fp64", "training mixes are planned in bf16 or fp16");
    expect_refusal("plan --gpus 16 --grad-sync sometimes", "usp: plan: --grad-sync 'sometimes': layer or step");
    expect_refusal("plan --gpus 16 --grad-dtype fp8", "usp: plan: --grad-dtype 'fp8': dtype or fp32");
    expect_refusal("costs --degree 8 --ulysses 3", "usp: costs: ulysses 3 does not divide the degree 8");
    expect_refusal("costs --heads 30 --kv-heads 7", "heads 30 are not divisible by kv_heads 7");
}

/* The impossible mix names its reason in the listing. */
static void test_refused_listing(void **state) {
    (void)state;
    int rc = run_usp("plan --gpus 64 --platform h100-fattree --tp 8 --ulysses 8 --ring 1 --dp 1 --all", out,
                     sizeof out, err, sizeof err);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "heads 32 / tp 8 = 4 < ulysses 8: a ulysses rank would hold no head"));
}

static void expect_json(const char *args, const char *member) {
    int rc = run_usp(args, out, sizeof out, err, sizeof err);
    if (rc != 0) fail_msg("usp %s: exit %d: %s", args, rc, err);
    usp_json *root = NULL;
    if (usp_json_parse(out, strlen(out), &root) != USP_OK) fail_msg("usp %s: %s", args, usp_error());
    assert_non_null(usp_json_get(root, member));
    usp_json_free(root);
}

static void test_json(void **state) {
    (void)state;
    expect_json("costs --json", "rows");
    expect_json("plan --model llama2-7b --seq 16K --gpus 8 --platform h200x8 --tp 2 --zero 1 --recompute no "
                "--json --explain --all",
                "explain");
}

static void test_table(void **state) {
    (void)state;
    int rc = run_usp("plan --model llama3-8b --seq 64K --gpus 16 --platform a800-2n --zero 1 --recompute no --top 3 --explain", out,
                     sizeof out, err, sizeof err);
    if (rc != 0) fail_msg("exit %d: %s", rc, err);
    assert_non_null(strstr(out, "TFLOP/s/GPU"));
    assert_non_null(strstr(out, "MFU"));
    assert_non_null(strstr(out, "ulysses all-to-all"));
    assert_non_null(strstr(out, "optimizer states"));
}

/* A (n,) int64 .npy written byte by byte (format 1.0). */
static void write_npy_i64(const char *path, const long *v, int n) {
    char header[128];
    int len = snprintf(header, sizeof header, "{'descr': '<i8', 'fortran_order': False, 'shape': (%d,), }", n);
    int total = 10 + len + 1, pad = (64 - total % 64) % 64;
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    unsigned short hl = (unsigned short)(len + pad + 1);
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    fputc(hl & 0xff, f);
    fputc(hl >> 8, f);
    fwrite(header, 1, (size_t)len, f);
    for (int i = 0; i < pad; i++) fputc(' ', f);
    fputc('\n', f);
    for (int i = 0; i < n; i++) {
        long long x = v[i];
        fwrite(&x, sizeof x, 1, f); /* little-endian hosts */
    }
    fclose(f);
}

/* The line of the best mix: from its step time on. */
static void best_row(const char *args, char *row, size_t n) {
    int rc = run_usp(args, out, sizeof out, err, sizeof err);
    if (rc != 0) fail_msg("usp %s: exit %d: %s", args, rc, err);
    const char *r = strstr(out, "\n   1 ");
    assert_non_null(r);
    const char *end = strchr(r + 1, '\n');
    size_t len = end ? (size_t)(end - r) : strlen(r);
    if (len >= n) len = n - 1;
    memcpy(row, r, len);
    row[len] = '\0';
}

/* Two causal documents, 3000 + 1096 tokens, three ways: the same plan. */
static void test_packed_documents(void **state) {
    (void)state;
    char npy[64], json[64], args[512], a[256], b[256], c[256];
    snprintf(npy, sizeof npy, "/tmp/usp-test-plan-cli-%ld.npy", (long)getpid());
    snprintf(json, sizeof json, "/tmp/usp-test-plan-cli-%ld.json", (long)getpid());
    write_npy_i64(npy, (const long[]){0, 3000, 4096}, 3);
    FILE *f = fopen(json, "w");
    assert_non_null(f);
    fputs("[{\"q\": [0, 3000], \"k\": [0, 3000], \"type\": \"causal\"},\n"
          " {\"q\": [3000, 4096], \"k\": [3000, 4096], \"type\": \"causal\"}]\n", f);
    fclose(f);
    const char *fixed = "plan --model llama2-7b --gpus 8 --platform h200x8 --tp 1 --dp 1 --ulysses 2 --ring 4 "
                        "--zero 1 --recompute no";
    snprintf(args, sizeof args, "%s --seqlens 3000,1096", fixed);
    best_row(args, a, sizeof a);
    assert_non_null(strstr(out, "2 documents (1096..3000 tokens), causal"));
    snprintf(args, sizeof args, "%s --seqlens-file %s", fixed, npy);
    best_row(args, b, sizeof b);
    assert_non_null(strstr(out, "seq 4096"));
    snprintf(args, sizeof args, "%s --seq 4096 --mask %s", fixed, json);
    best_row(args, c, sizeof c);
    assert_string_equal(a, b);
    assert_string_equal(a, c);
    /* one causal document of 4096 tokens has more visible pairs: more attention FLOPs */
    snprintf(args, sizeof args, "%s --seq 4096 --ring-impl zigzag", fixed);
    assert_int_equal(run_usp(args, out, sizeof out, err, sizeof err), 0);
    assert_null(strstr(out, "attention 0.00803"));
    snprintf(args, sizeof args, "%s --seqlens-file %s --seq 4000", fixed, npy);
    expect_refusal(args, "4096");
    snprintf(args, sizeof args, "%s --mask %s/nowhere.json", fixed, "/tmp");
    expect_refusal(args, "nowhere.json");
    remove(npy);
    remove(json);
}

/* 32 heads over ulysses 6 split unevenly (6, 6, 5, 5, 5, 5): planned, and
 * slower per step than ulysses 8 on the same sequence (fewer GPUs, and the
 * six-head ranks set the pace). */
static void test_uneven_heads(void **state) {
    (void)state;
    char a[256], b[256];
    best_row("plan --model llama2-7b --gpus 6 --platform h200x8 --tp 1 --dp 1 --ulysses 6 --ring 1 --seq 24576 "
             "--zero 1 --recompute no", a, sizeof a);
    best_row("plan --model llama2-7b --gpus 8 --platform h200x8 --tp 1 --dp 1 --ulysses 8 --ring 1 --seq 24576 "
             "--zero 1 --recompute no", b, sizeof b);
    double ta, tb;
    assert_int_equal(sscanf(a, " 1 1 1 6 1 1 - %lf", &ta), 1);
    assert_int_equal(sscanf(b, " 1 1 1 8 1 1 - %lf", &tb), 1);
    assert_true(ta > tb);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help), cmocka_unit_test(test_refusals), cmocka_unit_test(test_refused_listing),
        cmocka_unit_test(test_json), cmocka_unit_test(test_table), cmocka_unit_test(test_packed_documents),
        cmocka_unit_test(test_uneven_heads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
