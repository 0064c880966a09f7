/* test_gpu_executor.c: the GPU executor against the fp64 reference.
 *
 * Host part (every machine): the launcher variables, and the TCP links
 * between rank processes (start, barrier, a failure report, a peer that
 * never comes, a peer that dies).
 * GPU part (2 GPUs or more, else exit 77 after the host part): the matrix
 * of world-2 shardings (ulysses 2, ring 2; every ring_impl and layout;
 * causal and not; kv_heads 8 and 1; bf16 and fp16; forward and backward),
 * run once by self-launched ranks and once by ranks started with RANK and
 * WORLD_SIZE as a launcher would; `usp run --backend gpu` both ways; and the
 * failure paths (a failing step, a dying rank, a missing peer) ending with
 * a message that names the rank and the step, well within the timeout.
 *
 *   test_gpu_executor            everything (ctest)
 *   test_gpu_executor --matrix   only the matrix, self-launched, one line per case */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "transport/bootstrap.h"
#include "usp/attention.h"
#include "usp/compare.h"
#include "usp/gpu_exec.h"

#ifndef USP_BIN
#define USP_BIN "usp"
#endif

/* ================================================================ host part */

static void clear_launcher_env(void) {
    const char *names[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                           "OMPI_COMM_WORLD_LOCAL_RANK", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID",
                           "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "MASTER_ADDR", "MASTER_PORT",
                           "USP_BOOTSTRAP_PORT", "TORCHELASTIC_USE_AGENT_STORE"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) unsetenv(names[i]);
}

static void test_env_torchrun_style(void **state) {
    (void)state;
    clear_launcher_env();
    setenv("RANK", "3", 1); setenv("WORLD_SIZE", "8", 1); setenv("LOCAL_RANK", "1", 1);
    setenv("MASTER_ADDR", "node7", 1); setenv("MASTER_PORT", "1234", 1);
    usp_gpu_env e;
    int found;
    assert_int_equal(usp_gpu_env_read(&e, &found), USP_OK);
    assert_int_equal(found, 1);
    assert_int_equal(e.rank, 3); assert_int_equal(e.world, 8); assert_int_equal(e.local_rank, 1);
    assert_string_equal(e.master_addr, "node7");
    assert_int_equal(e.port, 1234);
    /* torchrun's agent holds MASTER_PORT for its store: the next port */
    setenv("TORCHELASTIC_USE_AGENT_STORE", "True", 1);
    assert_int_equal(usp_gpu_env_read(&e, &found), USP_OK);
    assert_int_equal(e.port, 1235);
    setenv("USP_BOOTSTRAP_PORT", "4000", 1);
    assert_int_equal(usp_gpu_env_read(&e, &found), USP_OK);
    assert_int_equal(e.port, 4000);
    clear_launcher_env();
}

static void test_env_mpi_and_slurm(void **state) {
    (void)state;
    clear_launcher_env();
    usp_gpu_env e;
    int found;
    assert_int_equal(usp_gpu_env_read(&e, &found), USP_OK);
    assert_int_equal(found, 0);
    assert_int_equal(e.world, 1);
    assert_string_equal(e.master_addr, "127.0.0.1");
    assert_int_equal(e.port, 29500);
    setenv("OMPI_COMM_WORLD_RANK", "1", 1); setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);
    assert_int_equal(usp_gpu_env_read(&e, &found), USP_OK);
    assert_int_equal(found, 1); assert_int_equal(e.rank, 1); assert_int_equal(e.world, 2);
    assert_string_equal(e.source, "OMPI_COMM_WORLD_RANK");
    clear_launcher_env();
    setenv("SLURM_PROCID", "5", 1); setenv("SLURM_NTASKS", "16", 1);
    assert_int_equal(usp_gpu_env_read(&e, &found), USP_OK);
    assert_int_equal(e.rank, 5); assert_int_equal(e.world, 16); assert_int_equal(e.local_rank, -1);
    setenv("SLURM_NTASKS", "4", 1);  /* rank 5 of 4 */
    assert_int_equal(usp_gpu_env_read(&e, &found), USP_EINVAL);
    setenv("SLURM_NTASKS", "x", 1);
    assert_int_equal(usp_gpu_env_read(&e, &found), USP_EINVAL);
    clear_launcher_env();
}

static usp_gpu_env local_env(int rank, int world, int port) {
    usp_gpu_env e;
    memset(&e, 0, sizeof e);
    e.rank = rank; e.world = world; e.local_rank = rank; e.port = port; e.source = "test";
    snprintf(e.master_addr, sizeof e.master_addr, "127.0.0.1");
    return e;
}

/* A forked rank: opens the links, then does `what`; exit code 0 when it went as expected. */
static int member(int rank, int world, int port, const char *what) {
    usp_links l;
    char payload[64] = "";
    usp_gpu_env e = local_env(rank, world, port);
    if (!strcmp(what, "absent")) return 0;
    if (!strcmp(what, "die-after-open")) {
        if (usp_links_open(&l, &e, 5, payload, sizeof payload)) return 10;
        raise(SIGKILL);
    }
    if (usp_links_open(&l, &e, 5, payload, sizeof payload)) return 11;
    if (strcmp(payload, "id-from-rank-0")) return 12;
    if (!strcmp(what, "fail")) {
        usp_links_fail(&l, "rank 1, step 4 (fwd.ring0.kv): planted");
        usp_links_close(&l, 0);
        return 0;
    }
    int rc = usp_links_barrier(&l) == USP_OK ? 0 : 13;
    usp_links_close(&l, 1);
    return rc;
}

static pid_t start_member(int rank, int world, int port, const char *what) {
    pid_t p = fork();
    if (p == 0) _exit(member(rank, world, port, what));
    return p;
}

static int wait_code(pid_t p) {
    int status;
    waitpid(p, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}

static usp_status root_open(usp_links *l, int world, int port, double timeout) {
    char payload[64] = "id-from-rank-0";
    usp_gpu_env e = local_env(0, world, port);
    return usp_links_open(l, &e, timeout, payload, sizeof payload);
}

static void test_links_barrier(void **state) {
    (void)state;
    int port = usp_free_port();
    pid_t a = start_member(1, 3, port, "barrier"), b = start_member(2, 3, port, "barrier");
    usp_links l;
    assert_int_equal(root_open(&l, 3, port, 5), USP_OK);
    assert_int_equal(usp_links_barrier(&l), USP_OK);
    usp_links_close(&l, 1);
    assert_int_equal(wait_code(a), 0);
    assert_int_equal(wait_code(b), 0);
}

static void test_links_failure_report(void **state) {
    (void)state;
    int port = usp_free_port();
    pid_t a = start_member(1, 2, port, "fail");
    usp_links l;
    assert_int_equal(root_open(&l, 2, port, 5), USP_OK);
    usp_status st = usp_links_barrier(&l);
    assert_int_equal(st, USP_EINTERNAL);
    assert_non_null(strstr(usp_error(), "rank 1, step 4 (fwd.ring0.kv): planted"));
    usp_links_close(&l, 0);
    assert_int_equal(wait_code(a), 0);
}

static void test_links_dead_peer(void **state) {
    (void)state;
    int port = usp_free_port();
    pid_t a = start_member(1, 2, port, "die-after-open");
    usp_links l;
    assert_int_equal(root_open(&l, 2, port, 5), USP_OK);
    assert_int_equal(usp_links_barrier(&l), USP_EINTERNAL);
    assert_non_null(strstr(usp_error(), "rank 1: its process ended"));
    usp_links_close(&l, 0);
    wait_code(a);
}

static void test_links_missing_peer(void **state) {
    (void)state;
    int port = usp_free_port();
    usp_links l;
    time_t t0 = time(NULL);
    assert_int_equal(root_open(&l, 2, port, 1), USP_EINTERNAL);
    assert_true(time(NULL) - t0 <= 3);
    assert_non_null(strstr(usp_error(), "rank 0: bootstrap"));
    assert_non_null(strstr(usp_error(), "only 1 of 2 ranks connected"));
    /* and a member whose rank 0 never comes */
    usp_gpu_env e = local_env(1, 2, port);
    char payload[8];
    assert_int_equal(usp_links_open(&l, &e, 1, payload, sizeof payload), USP_EINTERNAL);
    assert_non_null(strstr(usp_error(), "rank 1: bootstrap: cannot reach rank 0 at 127.0.0.1"));
}

/* ================================================================ GPU part */

typedef struct { int ulysses, ring; usp_ring_impl impl; int causal; } mesh;

static const mesh meshes[] = {
    {2, 1, USP_RING_BASIC, 0}, {2, 1, USP_RING_BASIC, 1}, {2, 1, USP_RING_ZIGZAG, 1},
    {2, 1, USP_RING_STRIPE, 1}, {2, 1, USP_RING_ALLGATHER, 0}, {2, 1, USP_RING_ALLGATHER, 1},
    {1, 2, USP_RING_BASIC, 0}, {1, 2, USP_RING_BASIC, 1}, {1, 2, USP_RING_ZIGZAG, 1},
    {1, 2, USP_RING_STRIPE, 1}, {1, 2, USP_RING_ALLGATHER, 0}, {1, 2, USP_RING_ALLGATHER, 1}};

/* The i-th case of the matrix; 0 past the end. */
static int matrix_case(int i, usp_config *c) {
    int per_mesh = 2 /* layouts */ * 2 /* kv_heads */;
    int nmesh = (int)(sizeof meshes / sizeof meshes[0]);
    int extra = 3; /* fp16, an odd length with batch 2, D 64 */
    if (i >= nmesh * per_mesh + extra) return 0;
    *c = usp_config_default();
    c->seq = 512; c->heads = 8; c->head_dim = 128; c->batch = 1; c->dtype = USP_BF16;
    if (i < nmesh * per_mesh) {
        const mesh *m = &meshes[i / per_mesh];
        c->ulysses = m->ulysses; c->ring = m->ring; c->ring_impl = m->impl; c->causal = m->causal;
        c->layout = (i / 2) % 2 ? USP_LAYOUT_RING_INNER : USP_LAYOUT_ULYSSES_INNER;
        c->kv_heads = i % 2 ? 1 : 8;
        return 1;
    }
    int e = i - nmesh * per_mesh;
    c->ulysses = 1; c->ring = 2; c->ring_impl = USP_RING_ZIGZAG; c->causal = 1; c->kv_heads = 2;
    if (e == 0) { c->dtype = USP_F16; c->ulysses = 2; c->ring = 1; c->kv_heads = 1; }
    if (e == 1) { c->seq = 392; c->batch = 2; c->ring_impl = USP_RING_STRIPE; c->kv_heads = 8; }
    if (e == 2) { c->head_dim = 64; c->ring_impl = USP_RING_ALLGATHER; }
    return 1;
}

typedef struct { double *t[5]; } tensors;

static long tensor_elems(const usp_config *c, int t) {
    long tokens = (long)c->batch * c->seq;
    return t == 1 ? tokens * c->heads : tokens * (t >= 3 ? c->kv_heads : c->heads) * c->head_dim;
}

/* Rank 0: each output against the fp64 reference; prints the case's line. */
static int check_case(int index, const usp_config *c, const usp_inputs *in, const usp_result *res) {
    tensors ref;
    for (int t = 0; t < 5; t++) ref.t[t] = malloc((size_t)tensor_elems(c, t) * sizeof(double));
    usp_ref_forward(c, in->q, in->k, in->v, ref.t[0], ref.t[1]);
    usp_ref_backward(c, in->q, in->k, in->v, ref.t[0], ref.t[1], in->dout, ref.t[2], ref.t[3], ref.t[4]);
    const double *got[5] = {res->o, res->lse, res->dq, res->dk, res->dv};
    static const char *names[5] = {"o", "lse", "dq", "dk", "dv"};
    int pass = 1;
    char line[512];
    int n = snprintf(line, sizeof line, "%3d  U%d x R%d %-9s %-13s %-10s kv=%d %-4s L=%d B=%d D=%d ", index,
                     c->ulysses, c->ring, usp_ring_impl_name(c->ring_impl), usp_layout_name(c->layout),
                     c->causal ? "causal" : "non-causal", c->kv_heads, usp_dtype_name(c->dtype), c->seq,
                     c->batch, c->head_dim);
    for (int t = 0; t < 5; t++) {
        usp_error_stats e = usp_compare(got[t], ref.t[t], tensor_elems(c, t), usp_tolerance(c->dtype, t >= 2));
        pass &= e.pass;
        n += snprintf(line + n, sizeof line - (size_t)n, " %s %.2e", names[t], e.rel);
        free(ref.t[t]);
    }
    printf("%s  %s\n", line, pass ? "pass" : "FAIL");
    fflush(stdout);
    return pass;
}

/* USP_TEST_KERNEL=PATH.so: the matrix through a plugin's kernels. */
static const usp_kernel *matrix_kernel;

static usp_status run_case(usp_gpu_ctx *ctx, int index, const usp_config *c, int *pass) {
    usp_schedule s;
    usp_inputs in;
    usp_result res;
    int root = usp_gpu_rank(ctx) == 0;
    USP_TRY(usp_schedule_build(c, 1, &s));
    usp_status st = usp_inputs_make(c, NULL, &in);
    if (st == USP_OK) st = usp_result_init(&res, &s, root);
    usp_gpu_options o = {.ctx = ctx, .kernel = matrix_kernel, .warmup = 0, .iters = 1, .gather_outputs = 1};
    if (st == USP_OK) st = usp_gpu_execute(&s, &in, &o, &res, NULL);
    if (st == USP_OK && root) *pass = check_case(index, c, &in, &res);
    usp_result_free(&res);
    usp_inputs_free(&in);
    usp_schedule_free(&s);
    return st;
}

/* One rank of the matrix (under a launcher's variables). Exit code: 0 all pass. */
static int matrix_rank(void) {
    usp_gpu_env env;
    int found, failed = 0, cases = 0;
    if (usp_gpu_env_read(&env, &found) != USP_OK || !found) return 3;
    void *plugin = NULL;
    const char *kernel_path = getenv("USP_TEST_KERNEL");
    if (kernel_path && usp_kernel_load(kernel_path, &matrix_kernel, &plugin) != USP_OK) {
        fprintf(stderr, "matrix: %s\n", usp_error());
        return 3;
    }
    usp_gpu_ctx *ctx;
    if (usp_gpu_open(&env, 60, &ctx) != USP_OK) {
        fprintf(stderr, "matrix: %s\n", usp_error());
        return 4;
    }
    usp_config c;
    for (int i = 0; matrix_case(i, &c); i++) {
        int pass = 1;
        if (run_case(ctx, i, &c, &pass) != USP_OK) {
            fprintf(stderr, "matrix: case %d: %s\n", i, usp_error());
            usp_gpu_abort(ctx);
            return 5;
        }
        failed += !pass;
        cases++;
    }
    if (env.rank == 0)
        printf("matrix (%s, kernel %s): %d cases, %d failed\n", getenv("USP_TEST_PATH"),
               kernel_path ? kernel_path : "built in", cases, failed);
    usp_gpu_close(ctx);
    if (plugin) usp_kernel_unload(plugin);
    return failed ? 1 : 0;
}

static int run_matrix_self_launched(void) {
    setenv("USP_TEST_PATH", "self-launch", 1);
    char *argv[] = {"test_gpu_executor", "--matrix-rank", NULL};
    return usp_gpu_launch_local(2, argv, 60);
}

/* Starts 2 ranks of `argv` as a launcher would (RANK, WORLD_SIZE, ...), with
 * one more variable for rank 1 when name is not NULL. Returns rank 0's exit
 * code, the other's in *other. */
static int launch_by_env(char *const *argv, const char *exe, const char *name, const char *value, int *other) {
    int port = usp_free_port();
    pid_t pids[2];
    fflush(NULL);
    for (int r = 0; r < 2; r++) {
        pids[r] = fork();
        if (pids[r] != 0) continue;
        char v[16];
        snprintf(v, sizeof v, "%d", r);
        setenv("RANK", v, 1); setenv("LOCAL_RANK", v, 1); setenv("WORLD_SIZE", "2", 1);
        setenv("MASTER_ADDR", "127.0.0.1", 1);
        snprintf(v, sizeof v, "%d", port);
        setenv("MASTER_PORT", v, 1);
        if (name && r == 1) setenv(name, value, 1);
        execv(exe, argv);
        _exit(127);
    }
    int rc0 = wait_code(pids[0]);
    *other = wait_code(pids[1]);
    return rc0;
}

static void test_matrix_self_launch(void **state) {
    (void)state;
    assert_int_equal(run_matrix_self_launched(), 0);
}

static void test_matrix_env_bootstrap(void **state) {
    (void)state;
    setenv("USP_TEST_PATH", "environment", 1);
    char *argv[] = {"test_gpu_executor", "--matrix-rank", NULL};
    int other;
    assert_int_equal(launch_by_env(argv, "/proc/self/exe", NULL, NULL, &other), 0);
    assert_int_equal(other, 0);
}

/* Runs `usp <args>`; returns its exit code, its stderr in err. */
static int run_usp(const char *args, char *err, size_t n, double *seconds) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s 2>&1 >/dev/null", USP_BIN, args);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t used = fread(err, 1, n - 1, p);
    err[used] = '\0';
    int status = pclose(p);
    clock_gettime(CLOCK_MONOTONIC, &b);
    if (seconds) *seconds = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

#define CLI_PROBLEM "run --backend gpu --dtype bf16 --seq 1024 --heads 8 --kv-heads 2 --head-dim 128"

static void test_cli_both_launch_paths(void **state) {
    (void)state;
    char err[8192];
    assert_int_equal(run_usp(CLI_PROBLEM " --ulysses 2 --ring 1 --ring-impl zigzag", err, sizeof err, NULL), 0);
    assert_int_equal(run_usp(CLI_PROBLEM " --ulysses 1 --ring 2 --ring-impl stripe --gpus 2", err, sizeof err, NULL), 0);
    char *argv[] = {"usp", "run", "--backend", "gpu", "--dtype", "bf16", "--seq", "1024", "--heads", "8",
                    "--ulysses", "1", "--ring", "2", "--ring-impl", "zigzag", "--json", NULL};
    int other;
    assert_int_equal(launch_by_env(argv, USP_BIN, NULL, NULL, &other), 0);
    assert_int_equal(other, 0);
}

static void test_failing_step_names_rank_and_step(void **state) {
    (void)state;
    char err[8192];
    double s;
    setenv("USP_GPU_INJECT_FAILURE", "1:5", 1);
    int rc = run_usp(CLI_PROBLEM " --ulysses 1 --ring 2 --timeout 30", err, sizeof err, &s);
    unsetenv("USP_GPU_INJECT_FAILURE");
    if (rc != 1 || !strstr(err, "rank 1, step 5 (") || s > 25)
        fail_msg("exit %d after %.1f s, stderr: %s", rc, s, err);
}

static void test_dying_rank_is_reported(void **state) {
    (void)state;
    char err[8192];
    double s;
    setenv("USP_GPU_INJECT_FAILURE", "1:3:die", 1);
    int rc = run_usp(CLI_PROBLEM " --ulysses 2 --ring 1 --timeout 30", err, sizeof err, &s);
    unsetenv("USP_GPU_INJECT_FAILURE");
    if (rc == 0 || !strstr(err, "rank 1") || s > 25) fail_msg("exit %d after %.1f s, stderr: %s", rc, s, err);
}

static void test_missing_peer_times_out(void **state) {
    (void)state;
    char *argv[] = {"usp", "run", "--backend", "gpu", "--seq", "512", "--dtype", "bf16", "--ulysses", "2",
                    "--ring", "1", "--timeout", "4", NULL};
    /* rank 1 looks for rank 0 on another port: rank 0 waits for it in vain */
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int other, rc = launch_by_env(argv, USP_BIN, "USP_BOOTSTRAP_PORT", "1", &other);
    clock_gettime(CLOCK_MONOTONIC, &b);
    assert_int_not_equal(rc, 0);
    assert_true(b.tv_sec - a.tv_sec < 20);
}

/* ================================================================ main */

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--matrix-rank")) return matrix_rank();
    if (argc > 1 && !strcmp(argv[1], "--matrix")) return run_matrix_self_launched();
    const struct CMUnitTest host[] = {
        cmocka_unit_test(test_env_torchrun_style), cmocka_unit_test(test_env_mpi_and_slurm),
        cmocka_unit_test(test_links_barrier), cmocka_unit_test(test_links_failure_report),
        cmocka_unit_test(test_links_dead_peer), cmocka_unit_test(test_links_missing_peer)};
    int failed = cmocka_run_group_tests_name("host", host, NULL, NULL);
    int gpus = usp_gpu_device_count();
    if (gpus < 2) {
        printf("skipped: the GPU tests need 2 GPUs, this machine has %d\n", gpus);
        return failed ? 1 : 77;
    }
    const struct CMUnitTest gpu[] = {
        cmocka_unit_test(test_matrix_self_launch), cmocka_unit_test(test_matrix_env_bootstrap),
        cmocka_unit_test(test_cli_both_launch_paths), cmocka_unit_test(test_failing_step_names_rank_and_step),
        cmocka_unit_test(test_dying_rank_is_reported), cmocka_unit_test(test_missing_peer_times_out)};
    return cmocka_run_group_tests_name("gpu", gpu, NULL, NULL) || failed;
}
