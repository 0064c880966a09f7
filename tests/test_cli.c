/* test_cli.c: the usp command refuses bad input with exit 2 and one line.
 * argv[1] is the path of the usp binary. */
#define _GNU_SOURCE /* mkdtemp, nftw in test_util.h */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "usp/npy.h"
#include "test_util.h"

static const char *usp_bin;
static char dir[256];

/* Runs `usp <args>`, returns its exit code and its stderr (first line) in err. */
static int run_usp(const char *args, char *err, size_t n) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s 2>&1 >/dev/null", usp_bin, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    err[0] = '\0';
    size_t used = fread(err, 1, n - 1, p);
    err[used] = '\0';
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void expect_refusal(const char *args, const char *message) {
    char err[4096];
    int rc = run_usp(args, err, sizeof err);
    check_refusal(args, rc, err, message);
}

static void test_bad_configurations(void **state) {
    (void)state;
    expect_refusal("run --seq 1000 --ulysses 2 --ring 4", "seq 1000 is not divisible by 2*ring*ulysses = 16 (zigzag)");
    expect_refusal("run --heads 8 --kv-heads 3", "heads 8 is not divisible by kv_heads 3");
    expect_refusal("run --dtype int8", "unknown dtype 'int8'");
    expect_refusal("run --ring-impl spiral", "unknown ring_impl 'spiral'");
    expect_refusal("run --layout diagonal", "unknown layout 'diagonal'");
    expect_refusal("run --seq abc", "--seq 'abc' is not an integer");
    expect_refusal("run --head-dim 300", "--head-dim '300' is not an integer in 1..256");
    expect_refusal("run --backend tpu", "unknown backend 'tpu'");
    expect_refusal("run --no-causal", "ring_impl zigzag balances causal work only");
    expect_refusal("run --scale -2", "--scale '-2' is not a positive number");
    expect_refusal("run --heads 6 --ulysses 8 --ring 1", "heads 6 < ulysses 8: ulysses rank 6 would hold no query head");
    expect_refusal("run --ring-impl zigzag --contiguous", "contiguous chunks are a placement of allgather with a mask");
    { /* a build without the GPU executor refuses the backend itself */
        const char *gpu = "run --backend gpu --no-check --dump unused --dtype bf16";
        char err[4096];
        int rc = run_usp(gpu, err, sizeof err);
        check_refusal(gpu, rc, err, strstr(err, "built without") ? "built without"
                                                                 : "--no-check makes its inputs on the GPU: no "
                                                                   "--input or --dump");
    }
    expect_refusal("run --wire int8", "unknown wire 'int8' (dtype, fp32)");
    expect_refusal("run extra", "unexpected argument 'extra'");
    expect_refusal("schedule --rank 99", "--rank 99 but world is 4");
    expect_refusal("verify --wire-errors --dtype fp32", "--dtype fp32 has no 16-bit wire");
    expect_refusal("verify --wire-errors --seq 100", "seq 100 is not divisible by 2*ring*ulysses = 8");
    expect_refusal("verify --seq 64", "--seq, --heads and --head-dim go with --wire-errors");
    expect_refusal("frobnicate", "unknown command 'frobnicate'");
    /* about 7.5 TB of tensors: refused before any allocation */
    expect_refusal("run --backend ref --seq 100000000 --ulysses 1 --ring 1",
                   "checking this problem on the CPU needs about");
    /* about 1 TB of simulator state (65536 ranks x 393256 steps): refused before any allocation */
    expect_refusal("run --no-numerics --seq 131072 --ulysses 1 --ring 65536 --platform h100-fattree",
                   "simulating 65536 ranks (ulysses 1 x ring 65536, timing only) needs about");
}

/* ---------------------------------------------------------- .npy inputs */

#define SHAPE "--batch 1 --seq 16 --heads 2 --head-dim 4 --ulysses 2 --ring 2"
static const long good_shape[4] = {1, 16, 2, 4};

static void write_good_inputs(void) {
    double x[128];
    for (int i = 0; i < 128; i++) x[i] = (i % 7) * 0.25 - 0.5;
    const char *names[] = {"q", "k", "v"};
    for (int i = 0; i < 3; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s.npy", dir, names[i]);
        assert_int_equal(usp_npy_write(path, 4, good_shape, x, 0), USP_OK);
    }
}

/* Replaces k.npy with raw bytes. */
static void write_k_raw(const char *header, size_t data_bytes) {
    char path[512];
    snprintf(path, sizeof path, "%s/k.npy", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    size_t hl = strlen(header);
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hl & 0xff), (unsigned char)(hl >> 8)};
    fwrite(pre, 1, 10, f);
    fwrite(header, 1, hl, f);
    for (size_t i = 0; i < data_bytes; i++) fputc(0, f);
    fclose(f);
}

static void expect_input_refusal(const char *message) {
    char args[1024];
    snprintf(args, sizeof args, "run " SHAPE " --input %s", dir);
    expect_refusal(args, message);
}

static void test_malformed_npy_inputs(void **state) {
    (void)state;
    write_good_inputs();
    char args[1024], err[4096];
    snprintf(args, sizeof args, "run " SHAPE " --input %s", dir);
    assert_int_equal(run_usp(args, err, sizeof err), 0);

    write_k_raw("{'descr': '<i4', 'fortran_order': False, 'shape': (1, 16, 2, 4), }          \n", 128 * 4);
    expect_input_refusal("k.npy");
    write_k_raw("{'descr': '<f8', 'fortran_order': True, 'shape': (1, 16, 2, 4), }           \n", 128 * 8);
    expect_input_refusal("ortran");
    write_k_raw("{'descr': '<f8', 'fortran_order': False, 'shape': (1, 8, 2, 4), }           \n", 64 * 8);
    expect_input_refusal("shape (1, 8, 2, 4) but (1, 16, 2, 4) expected");
    write_k_raw("{'descr': '<f8', 'fortran_order': False, 'shape': (1, 16, 2, 4), }          \n", 100);
    expect_input_refusal("k.npy");
    write_k_raw("{'descr': '>f8', 'fortran_order': False, 'shape': (1, 16, 2, 4), }          \n", 128 * 8);
    expect_input_refusal("k.npy");

    write_good_inputs();
    char path[512];
    snprintf(path, sizeof path, "%s/v.npy", dir);
    FILE *f = fopen(path, "wb");
    fputs("not a numpy file at all", f);
    fclose(f);
    expect_input_refusal("v.npy");

    write_good_inputs();
    double x[128] = {0};
    x[5] = 0.0 / 0.0;
    snprintf(path, sizeof path, "%s/q.npy", dir);
    assert_int_equal(usp_npy_write(path, 4, good_shape, x, 0), USP_OK);
    expect_input_refusal("q.npy");

    write_good_inputs();
    snprintf(path, sizeof path, "%s/k.npy", dir);
    unlink(path);
    expect_input_refusal("k.npy");
}

/* ---------------------------------------------------------- masks */

static void write_file(const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* cu_seqlens as numpy saves np.array([...], dtype=np.int32): '<i4'. */
static void write_cu_seqlens(const char *name, const int *v, int n, int rows) {
    char path[512], header[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (rows > 1) snprintf(header, sizeof header, "{'descr': '<i4', 'fortran_order': False, 'shape': (%d, %d), }", rows, n / rows);
    else snprintf(header, sizeof header, "{'descr': '<i4', 'fortran_order': False, 'shape': (%d,), }", n);
    size_t hl = strlen(header);
    while ((10 + hl + 1) % 64) header[hl++] = ' ';
    header[hl++] = '\n';
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hl & 0xff), (unsigned char)(hl >> 8)};
    fwrite(pre, 1, 10, f);
    fwrite(header, 1, hl, f);
    fwrite(v, sizeof *v, (size_t)n, f);
    fclose(f);
}

static void test_masks(void **state) {
    (void)state;
    char args[1024], err[4096];
    expect_refusal("run --seqlens 10,20 --seq 64", "--seqlens add up to 30 tokens, not --seq 64");
    expect_refusal("run --seqlens 10,x", "document 1 is not a positive integer");
    expect_refusal("run --seqlens 10,0,6", "document 1 is not a positive integer");
    expect_refusal("run --window 3", "--window '3' is not LEFT,RIGHT");
    expect_refusal("run --window 3,-2", "--window '3,-2' is not LEFT,RIGHT");
    expect_refusal("run --seqlens 32,32 --mask m.json", "exclude each other");
    expect_refusal("run --no-causal --ring-impl basic --mask /nonexistent/m.json --seq 64", "/nonexistent/m.json");
    write_file("overlap.json", "[{\"q\": [0, 64], \"k\": [0, 64], \"type\": \"causal\"},\n"
                               " {\"q\": [8, 16], \"k\": [0, 4]}]\n");
    snprintf(args, sizeof args, "run --seq 64 --mask %s/overlap.json", dir);
    expect_refusal(args, "slices 0 and 1 overlap: query 8 sees key 0 in both");
    write_file("bounds.json", "[{\"q\": [0, 64], \"k\": [0, 65]}]");
    snprintf(args, sizeof args, "run --seq 64 --mask %s/bounds.json", dir);
    expect_refusal(args, "bounds must be integers in 0..64");
    int two[] = {0, 10, 30, 64, 0, 64, 64, 64};
    write_cu_seqlens("cu2.npy", two, 8, 2);
    snprintf(args, sizeof args, "run --batch 3 --seqlens-file %s/cu2.npy", dir);
    expect_refusal(args, "2 rows of cumulative lengths but batch 3");
    int bad[] = {0, 10, 5, 64};
    write_cu_seqlens("bad.npy", bad, 4, 1);
    snprintf(args, sizeof args, "run --seqlens-file %s/bad.npy", dir);
    expect_refusal(args, "cumulative lengths decrease");

    /* the masks that parse run and pass, with the sequence from the documents */
    snprintf(args, sizeof args, "run --backend ref --batch 2 --seqlens-file %s/cu2.npy --heads 4 "
             "--head-dim 8 --ring-impl balanced", dir);
    assert_int_equal(run_usp(args, err, sizeof err), 0);
    write_file("gaps.json", "[{\"q\": [0, 64], \"k\": [0, 8]}, {\"q\": [32, 64], \"k\": [32, 64], "
                            "\"type\": \"causal\"}, {\"q\": [0, 32], \"k\": [16, 32], \"type\": \"bicausal\"}]");
    snprintf(args, sizeof args, "run --backend ref --seq 64 --mask %s/gaps.json --heads 4 --head-dim 8 "
             "--ring-impl basic --window 20,-1", dir);
    assert_int_equal(run_usp(args, err, sizeof err), 0);
    assert_int_equal(run_usp("run --backend ref --seqlens 20,9,35 --heads 4 --head-dim 8 --ring-impl balanced",
                             err, sizeof err), 0);
}

/* Every command refuses an option it does not know, one without its value
 * and a value given to a switch in one line that names the option and where
 * its help is (getopt's own messages are off). */
static void test_unknown_options(void **state) {
    (void)state;
    static const char *const commands[] = {"run", "schedule", "verify", "platform", "nccl", "sweep", "kernel-check",
                                           "calibrate", "validate", "plan", "costs", "trace diff", "trace svg"};
    char args[256], message[256];
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        char err[4096];
        snprintf(args, sizeof args, "%s --help", commands[i]);
        int built = run_usp(args, err, sizeof err) == 0;   /* else this usp lacks its backend (missing.c) */
        snprintf(args, sizeof args, "%s --bogus", commands[i]);
        if (built) snprintf(message, sizeof message, "unknown option '--bogus' (usp %s --help)", commands[i]);
        else snprintf(message, sizeof message, "this usp was built without");
        expect_refusal(args, message);
    }
    expect_refusal("run --seq", "option '--seq' needs a value (usp run --help)");
    expect_refusal("nccl -b", "option '-b' needs a value (usp nccl --help)");
    expect_refusal("nccl -x", "unknown option '-x' (usp nccl --help)");
    expect_refusal("sweep --json=1", "option '--json' takes no value (usp sweep --help)");
}

static void test_help_and_json(void **state) {
    (void)state;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s run --help >/dev/null && %s schedule --help >/dev/null && "
             "%s verify --help >/dev/null && %s --help >/dev/null", usp_bin, usp_bin, usp_bin, usp_bin);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s run --seq 64 --heads 4 --head-dim 8 --json | grep -q '\"pass\": true'", usp_bin);
    assert_int_equal(system(cmd), 0);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: test_cli PATH-TO-USP\n"); return 2; }
    usp_bin = argv[1];
    snprintf(dir, sizeof dir, "/tmp/usp-cli-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_configurations),
        cmocka_unit_test(test_malformed_npy_inputs),
        cmocka_unit_test(test_masks),
        cmocka_unit_test(test_unknown_options),
        cmocka_unit_test(test_help_and_json),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) rc = rc ? rc : 1;
    return rc;
}
