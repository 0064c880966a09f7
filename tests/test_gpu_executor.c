/* test_gpu_executor.c: the GPU executor against the fp64 reference.
 *
 * Host part (every machine): the launcher variables, and the TCP links
 * between rank processes (start, barrier, a failure report, a peer that
 * never comes, a peer that dies).
 * Also on the host: which transport a world gets (gpu/transport.h).
 * GPU part (1 GPU or more, else exit 77 after the host part; ranks that
 * share a GPU get the IPC transport without USP_TRANSPORT, and a
 * USP_TRANSPORT in the environment holds for every run but the ones that
 * test the choice): the matrix of world-2
 * shardings (ulysses 2, ring 2; every ring_impl and layout; causal and not;
 * kv_heads 8 and 1; bf16 and fp16; forward and backward), run once by
 * self-launched ranks and once by ranks started with RANK and WORLD_SIZE as
 * a launcher would; the uneven head splits on worlds of 2, 3 and 4 (heads 5
 * over ulysses 2, 6 over 4, GQA whose K/V heads split unevenly, fp32 and
 * bf16, a document mask); `usp run --backend gpu` both ways; and the failure
 * paths (a failing step, a dying rank, a missing peer) ending with a message
 * that names the rank and the step, well within the timeout.
 *
 *   test_gpu_executor                 everything (ctest)
 *   test_gpu_executor --matrix [SET]  only a matrix (even, uneven2, uneven3,
 *                                     uneven4; default even), self-launched,
 *                                     one line per case */
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
#include "transport/transport.h"
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

/* ---------------------------------------------------------------- transport choice */

static int choose(int world, const char *const *hosts, const char *const *gpus, const char *setting, char *why) {
    why[0] = '\0';
    return usp_transport_choose(world, hosts, gpus, setting, why, 400);
}

static void test_transport_choice(void **state) {
    (void)state;
    char why[400];
    const char *one_host[] = {"a", "a", "a", "a"}, *two_hosts[] = {"a", "a", "b", "b"};
    const char *distinct[] = {"0000:01:00.0", "0000:02:00.0", "0000:03:00.0", "0000:04:00.0"};
    const char *shared[] = {"0000:01:00.0", "0000:01:00.0", "0000:01:00.0", "0000:01:00.0"};
    const char *per_host[] = {"0000:01:00.0", "0000:02:00.0", "0000:01:00.0", "0000:02:00.0"};
    assert_int_equal(choose(4, one_host, distinct, NULL, why), 0);   /* NCCL: one rank per GPU */
    assert_int_equal(choose(4, one_host, shared, NULL, why), 1);     /* IPC: ranks share a GPU */
    assert_int_equal(choose(4, one_host, shared, "", why), 1);
    assert_int_equal(choose(4, two_hosts, per_host, NULL, why), 0);  /* same bus id, other machine */
    assert_int_equal(choose(4, one_host, distinct, "ipc", why), 1);
    assert_int_equal(choose(4, one_host, shared, "ipc", why), 1);
    assert_int_equal(choose(1, one_host, shared, NULL, why), 0);
    assert_int_equal(choose(4, two_hosts, shared, NULL, why), -1);
    assert_non_null(strstr(why, "ranks 0 and 1 share GPU 0000:01:00.0 on a and the ranks span several machines"));
    assert_int_equal(choose(4, one_host, shared, "nccl", why), -1);
    assert_string_equal(why, "USP_TRANSPORT=nccl, but ranks 0 and 1 share GPU 0000:01:00.0 on a: NCCL takes one "
                        "rank per GPU (USP_TRANSPORT=ipc, or no USP_TRANSPORT, runs them through CUDA IPC)");
    assert_int_equal(choose(4, two_hosts, per_host, "ipc", why), -1);
    assert_non_null(strstr(why, "USP_TRANSPORT=ipc, but the ranks are on several machines"));
    assert_int_equal(choose(2, one_host, distinct, "shm", why), -1);
    assert_string_equal(why, "USP_TRANSPORT='shm': nccl or ipc");
}

/* Notes between members relayed by rank 0, in any order of arrival. */
static int note_member(int rank, int world, int port) {
    usp_links l;
    char payload[64] = "";
    usp_gpu_env e = local_env(rank, world, port);
    if (usp_links_open(&l, &e, 5, payload, sizeof payload)) return 11;
    int other = rank == 1 ? 2 : 1, rc = 0;
    char text[32], got[32] = "";
    snprintf(text, sizeof text, "from %d", rank);
    if (usp_links_send(&l, other, 7, text, strlen(text) + 1) || usp_links_send(&l, 0, 8, text, strlen(text) + 1))
        rc = 12;
    char want[32];
    snprintf(want, sizeof want, "from %d", other);
    if (!rc && (usp_links_recv(&l, other, 7, got, sizeof got, "test") || strcmp(got, want))) rc = 13;
    if (!rc && usp_links_barrier(&l)) rc = 14;
    usp_links_close(&l, 1);
    return rc;
}

static void test_links_notes(void **state) {
    (void)state;
    int port = usp_free_port();
    pid_t p[2];
    fflush(NULL);
    for (int r = 1; r <= 2; r++)
        if ((p[r - 1] = fork()) == 0) _exit(note_member(r, 3, port));
    usp_links l;
    assert_int_equal(root_open(&l, 3, port, 5), USP_OK);
    char got[32];
    assert_int_equal(usp_links_recv(&l, 2, 8, got, sizeof got, "test"), USP_OK); /* rank 2's first */
    assert_string_equal(got, "from 2");
    assert_int_equal(usp_links_recv(&l, 1, 8, got, sizeof got, "test"), USP_OK);
    assert_string_equal(got, "from 1");
    assert_int_equal(usp_links_barrier(&l), USP_OK);
    usp_links_close(&l, 1);
    assert_int_equal(wait_code(p[0]), 0);
    assert_int_equal(wait_code(p[1]), 0);
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

/* Uneven head splits (and a few even ones on worlds of 3 and 4), by world. */
typedef struct {
    int world, heads, kv_heads, ulysses, ring;
    usp_ring_impl impl;
    int causal;
    usp_dtype dtype;
    int docs;        /* a mask of 3 packed documents */
} uneven_case;

static const uneven_case uneven_cases[] = {
    {2, 5, 5, 2, 1, USP_RING_BASIC, 1, USP_BF16, 0},
    {2, 5, 5, 2, 1, USP_RING_BASIC, 0, USP_F32, 0},
    {2, 6, 3, 2, 1, USP_RING_ZIGZAG, 1, USP_BF16, 0},   /* K/V heads split 2 + 2 of 3: one call per K/V head */
    {2, 5, 5, 2, 1, USP_RING_BASIC, 1, USP_BF16, 1},
    {3, 8, 2, 3, 1, USP_RING_BASIC, 1, USP_BF16, 0},    /* 3, 3, 2 heads; rank 1 holds parts of both groups */
    {3, 7, 7, 3, 1, USP_RING_BASIC, 0, USP_F32, 0},     /* 3, 2, 2 heads */
    {4, 6, 6, 4, 1, USP_RING_ZIGZAG, 1, USP_BF16, 0},   /* 2, 2, 1, 1 heads */
    {4, 6, 6, 4, 1, USP_RING_BASIC, 0, USP_F32, 0},
    {4, 6, 2, 4, 1, USP_RING_BASIC, 1, USP_BF16, 0},    /* GQA: K/V heads 2 over ulysses 4, uneven */
    {4, 5, 5, 2, 2, USP_RING_ZIGZAG, 1, USP_BF16, 0},
    {4, 6, 6, 4, 1, USP_RING_BASIC, 1, USP_BF16, 1},
    {4, 7, 7, 2, 2, USP_RING_ALLGATHER, 1, USP_F32, 1},
    {4, 8, 2, 2, 2, USP_RING_ZIGZAG, 1, USP_BF16, 0},   /* even, world 4 */
};

static usp_mask *docs_mask(long seq) {
    long cu[4] = {0, seq / 4, seq / 4 + seq / 2 + 8, seq};
    usp_mask *m = NULL;
    if (usp_mask_from_documents(seq, 1, 3, cu, 1, -1, -1, &m) != USP_OK) return NULL;
    return m;
}

/* The i-th uneven case of `world`; 0 past the end. *mask: a docs mask to free, or NULL. */
static int uneven_case_of(int world, int i, usp_config *c, usp_mask **mask) {
    int seen = 0;
    *mask = NULL;
    for (size_t k = 0; k < sizeof uneven_cases / sizeof uneven_cases[0]; k++) {
        const uneven_case *u = &uneven_cases[k];
        if (u->world != world || seen++ != i) continue;
        *c = usp_config_default();
        c->batch = 1; c->head_dim = 128; c->dtype = u->dtype;
        c->seq = world == 3 ? 384 : 512;
        c->heads = u->heads; c->kv_heads = u->kv_heads; c->ulysses = u->ulysses; c->ring = u->ring;
        c->ring_impl = u->impl; c->causal = u->causal;
        if (u->docs) {
            *mask = docs_mask(c->seq);
            c->mask = *mask;
        }
        return 1;
    }
    return 0;
}

typedef struct { const char *name; int world; } case_set;
static const case_set sets[] = {{"even", 2}, {"uneven2", 2}, {"uneven3", 3}, {"uneven4", 4}};

static const case_set *set_named(const char *name) {
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
        if (!strcmp(sets[i].name, name)) return &sets[i];
    return NULL;
}

static int set_case(const case_set *set, int i, usp_config *c, usp_mask **mask) {
    *mask = NULL;
    if (!strcmp(set->name, "even")) return matrix_case(i, c);
    return uneven_case_of(set->world, i, c, mask);
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
    int n = snprintf(line, sizeof line, "%3d  U%d x R%d %-9s %-13s %-10s H=%d kv=%d %-4s L=%d B=%d D=%d%s ", index,
                     c->ulysses, c->ring, usp_ring_impl_name(c->ring_impl), usp_layout_name(c->layout),
                     c->causal ? "causal" : "non-causal", c->heads, c->kv_heads, usp_dtype_name(c->dtype), c->seq,
                     c->batch, c->head_dim, c->mask ? " docs" : "");
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

/* One rank of a matrix (under a launcher's variables). Exit code: 0 all pass. */
static int matrix_rank(const char *set_name) {
    const case_set *set = set_named(set_name ? set_name : "even");
    if (!set) {
        fprintf(stderr, "matrix: no case set '%s'\n", set_name);
        return 3;
    }
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
    usp_mask *mask = NULL;
    for (int i = 0; set_case(set, i, &c, &mask); i++) {
        int pass = 1;
        usp_status st = run_case(ctx, i, &c, &pass);
        usp_mask_free(mask);
        if (st != USP_OK) {
            fprintf(stderr, "matrix %s: case %d: %s\n", set->name, i, usp_error());
            usp_gpu_abort(ctx);
            return 5;
        }
        failed += !pass;
        cases++;
    }
    if (env.rank == 0)
        printf("matrix %s (%s, world %d, transport %s, kernel %s): %d cases, %d failed\n", set->name,
               getenv("USP_TEST_PATH"), env.world, usp_gpu_transport_name(ctx),
               kernel_path ? kernel_path : "built in", cases, failed);
    usp_gpu_close(ctx);
    if (plugin) usp_kernel_unload(plugin);
    return failed ? 1 : 0;
}

static int run_matrix_self_launched(const char *set_name) {
    const case_set *set = set_named(set_name);
    if (!set) {
        fprintf(stderr, "no case set '%s' (even, uneven2, uneven3, uneven4)\n", set_name);
        return 2;
    }
    setenv("USP_TEST_PATH", "self-launch", 1);
    char *argv[] = {"test_gpu_executor", "--matrix-rank", (char *)set->name, NULL};
    return usp_gpu_launch_local(set->world, argv, 60);
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
    assert_int_equal(run_matrix_self_launched("even"), 0);
}

static void test_uneven_world2(void **state) {
    (void)state;
    assert_int_equal(run_matrix_self_launched("uneven2"), 0);
}

static void test_uneven_world3(void **state) {
    (void)state;
    assert_int_equal(run_matrix_self_launched("uneven3"), 0);
}

static void test_uneven_world4(void **state) {
    (void)state;
    assert_int_equal(run_matrix_self_launched("uneven4"), 0);
}

static void test_matrix_env_bootstrap(void **state) {
    (void)state;
    setenv("USP_TEST_PATH", "environment", 1);
    char *argv[] = {"test_gpu_executor", "--matrix-rank", "even", NULL};
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

/* Uneven heads and a mask through the command, 4 ranks, without
 * USP_TRANSPORT: ranks that share a GPU get the IPC transport by themselves.
 * On one GPU, NCCL asked for by name is refused (exit 2, a line that says
 * why and what runs them), and world 2 without the setting runs. */
static void test_cli_uneven_and_transport(void **state) {
    (void)state;
    char err[8192], failure[8400] = "";
    char *old = getenv("USP_TRANSPORT") ? strdup(getenv("USP_TRANSPORT")) : NULL;
    unsetenv("USP_TRANSPORT");
    int rc = run_usp("run --backend gpu --dtype bf16 --seq 1024 --heads 6 --head-dim 128 --ulysses 4 --ring 1 "
                     "--gpus 4 --json", err, sizeof err, NULL);
    if (rc == 0)
        rc = run_usp("run --backend gpu --dtype bf16 --seq 1024 --heads 5 --head-dim 64 --ulysses 2 --ring 2 "
                     "--ring-impl zigzag --seqlens 300,500,224", err, sizeof err, NULL);
    if (rc) snprintf(failure, sizeof failure, "uneven heads: exit %d, stderr: %s", rc, err);
    if (!failure[0] && usp_gpu_device_count() == 1) {
        setenv("USP_TRANSPORT", "nccl", 1);
        rc = run_usp(CLI_PROBLEM " --ulysses 2 --ring 1 --timeout 20", err, sizeof err, NULL);
        unsetenv("USP_TRANSPORT");
        if (rc != 2 || !strstr(err, "USP_TRANSPORT=nccl, but ranks 0 and 1 share GPU") ||
            !strstr(err, "USP_TRANSPORT=ipc, or no USP_TRANSPORT"))
            snprintf(failure, sizeof failure, "USP_TRANSPORT=nccl: exit %d, stderr: %s", rc, err);
        else if ((rc = run_usp(CLI_PROBLEM " --ulysses 2 --ring 1 --timeout 20", err, sizeof err, NULL)) != 0)
            snprintf(failure, sizeof failure, "no USP_TRANSPORT: exit %d, stderr: %s", rc, err);
    }
    if (old) setenv("USP_TRANSPORT", old, 1);
    free(old);
    if (failure[0]) fail_msg("%s", failure);
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
    if (argc > 1 && !strcmp(argv[1], "--matrix-rank")) return matrix_rank(argc > 2 ? argv[2] : NULL);
    if (argc > 1 && !strcmp(argv[1], "--matrix")) return run_matrix_self_launched(argc > 2 ? argv[2] : "even");
    const struct CMUnitTest host[] = {
        cmocka_unit_test(test_env_torchrun_style), cmocka_unit_test(test_env_mpi_and_slurm),
        cmocka_unit_test(test_links_barrier), cmocka_unit_test(test_links_failure_report),
        cmocka_unit_test(test_links_dead_peer), cmocka_unit_test(test_links_missing_peer),
        cmocka_unit_test(test_links_notes), cmocka_unit_test(test_transport_choice)};
    int failed = cmocka_run_group_tests_name("host", host, NULL, NULL);
    int gpus = usp_gpu_device_count();
    if (gpus < 1) {
        printf("skipped: the GPU tests need a GPU, this machine has none\n");
        return failed ? 1 : 77;
    }
    /* worlds larger than the GPUs share them: the IPC transport unless USP_TRANSPORT says otherwise */
    const char *transport = getenv("USP_TRANSPORT");
    printf("%d GPU(s), USP_TRANSPORT %s\n", gpus,
           transport && *transport ? transport : "unset (ranks that share a GPU talk through IPC)");
    const struct CMUnitTest gpu[] = {
        cmocka_unit_test(test_matrix_self_launch), cmocka_unit_test(test_uneven_world2),
        cmocka_unit_test(test_uneven_world3), cmocka_unit_test(test_uneven_world4),
        cmocka_unit_test(test_matrix_env_bootstrap), cmocka_unit_test(test_cli_both_launch_paths),
        cmocka_unit_test(test_cli_uneven_and_transport), cmocka_unit_test(test_failing_step_names_rank_and_step),
        cmocka_unit_test(test_dying_rank_is_reported), cmocka_unit_test(test_missing_peer_times_out)};
    return cmocka_run_group_tests_name("gpu", gpu, NULL, NULL) || failed;
}
