/* test_ipc_transport.c: the IPC transport's handshakes and data routing on
 * the host, its CUDA calls replaced by the stand-ins below (no GPU, no CUDA
 * runtime: only the toolkit's headers). Device memory is one shared mapping
 * made before fork, so a pointer means the same bytes in every rank process;
 * copies happen at once and events are no-ops. Checked for worlds of 2 to 4
 * ranks, both layouts, even and uneven head splits: every piece of an
 * all-to-all-v lands where usp/a2a.h puts it, three times over (the notes'
 * counters and the events' reuse); ring send/recv, all-gather and
 * reduce-scatter; gather to rank 0; the barrier; and a rank that fails before
 * an all-to-all ends its peers' wait with its message, not a hang. What it
 * cannot check (stream order on a GPU) the GPU runs of test_gpu_executor do. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include "transport/transport.h"
#include "transport/bootstrap.h"
#include "usp/a2a.h"
#include "usp/gpu_exec.h"
#include "usp/schedule.h"
#include "usp/layout.h"

static char *region;
static const size_t PER_RANK = 1 << 22;
static int my_rank;

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) { (void)e; (void)s; return cudaSuccess; }
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned f) { (void)s; (void)e; (void)f; return cudaSuccess; }
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, enum cudaMemcpyKind k, cudaStream_t st) {
    (void)k; (void)st; memmove(d, s, n); return cudaSuccess;
}
cudaError_t cudaIpcGetMemHandle(cudaIpcMemHandle_t *h, void *p) { memset(h, 0, sizeof *h); memcpy(h, &p, sizeof p); return cudaSuccess; }
cudaError_t cudaIpcOpenMemHandle(void **p, cudaIpcMemHandle_t h, unsigned f) { (void)f; memcpy(p, &h, sizeof *p); return cudaSuccess; }
cudaError_t cudaIpcCloseMemHandle(void *p) { (void)p; return cudaSuccess; }
static int ev_count;
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned f) { (void)f; *e = (cudaEvent_t)(uintptr_t)(++ev_count); return cudaSuccess; }
cudaError_t cudaEventDestroy(cudaEvent_t e) { (void)e; return cudaSuccess; }
cudaError_t cudaIpcGetEventHandle(cudaIpcEventHandle_t *h, cudaEvent_t e) { memset(h, 0, sizeof *h); memcpy(h, &e, sizeof e); return cudaSuccess; }
cudaError_t cudaIpcOpenEventHandle(cudaEvent_t *e, cudaIpcEventHandle_t h) { memcpy(e, &h, sizeof *e); return cudaSuccess; }
cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
const char *cudaGetErrorString(cudaError_t e) { (void)e; return "mock"; }
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
static CUresult range(CUdeviceptr *b, size_t *n, CUdeviceptr p) {
    size_t off = (size_t)((char *)(uintptr_t)p - region);
    *b = (CUdeviceptr)(uintptr_t)(region + off / PER_RANK * PER_RANK);
    *n = PER_RANK;
    return CUDA_SUCCESS;
}
cudaError_t cudaGetDriverEntryPointByVersion(const char *sym, void **f, unsigned v, unsigned long long fl,
                                             enum cudaDriverEntryPointQueryResult *q) {
    (void)sym; (void)v; (void)fl; *f = (void *)range; *q = cudaDriverEntryPointSuccess; return cudaSuccess;
}
usp_status usp_gpu_add_f32(float *x, const float *y, int64_t n, cudaStream_t st) {
    (void)st; for (int64_t i = 0; i < n; i++) x[i] += y[i]; return USP_OK;
}

static float val(int from, int to, long i, int what) { return (float)(what * 1000000 + from * 10000 + to * 1000 + i % 997); }

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "rank %d: %s:%d: %s\n", my_rank, __FILE__, __LINE__, #c); return 1; } } while (0)

/* A rank that fails right after opening: it tells the others, as the executor does. */
static int fail_early(int rank, int world, int port) {
    my_rank = rank;
    usp_gpu_env env = {0};
    env.rank = rank; env.world = world; env.local_rank = rank; env.port = port; env.source = "mock";
    snprintf(env.master_addr, sizeof env.master_addr, "127.0.0.1");
    usp_links links;
    char id[128] = {0};
    if (usp_links_open(&links, &env, 10, id, sizeof id)) return 2;
    usp_transport_env e = {rank, world, 0, &links, 10, id};
    usp_transport *t;
    if (usp_transport_open_ipc(&e, &t)) return 3;
    usp_links_fail(&links, "rank 2, step 4 (a2a.q): planted");
    usp_links_close(&links, 0);
    return 0;
}

static int rank_main(int rank, int world, int port, const usp_config *c, int expect_failure) {
    my_rank = rank;
    usp_gpu_env env = {0};
    env.rank = rank; env.world = world; env.local_rank = rank; env.port = port; env.source = "mock";
    snprintf(env.master_addr, sizeof env.master_addr, "127.0.0.1");
    usp_links links;
    char id[128] = {0};
    if (usp_links_open(&links, &env, 10, id, sizeof id)) { fprintf(stderr, "%s\n", usp_error()); return 2; }
    usp_transport_env e = {rank, world, 0, &links, 10, id};
    usp_transport *t;
    if (usp_transport_open_ipc(&e, &t)) { /* the failing peer may come first */
        if (expect_failure && strstr(usp_error(), "rank 2, step 4 (a2a.q): planted")) return 0;
        fprintf(stderr, "open: %s\n", usp_error());
        return 3;
    }
    CHECK(t->ops->split(t, c) == USP_OK);
    if (expect_failure) { /* a peer fails before the all-to-all: an error naming it, well before the timeout */
        size_t b[8] = {16, 16, 16, 16, 16, 16, 16, 16}, o[8] = {0, 16, 32, 48, 64, 80, 96, 112};
        char *m = region + (size_t)rank * PER_RANK;
        usp_status st = t->ops->all_to_all_v(t, c->ulysses, m, o, b, m + PER_RANK / 2, o, b, NULL);
        CHECK(st == USP_EINTERNAL);
        CHECK(strstr(usp_error(), "rank 2, step 4 (a2a.q): planted") != NULL);
        usp_links_close(&links, 0);
        return 0;
    }
    char *mem = region + (size_t)rank * PER_RANK;
    float *send = (float *)mem, *recv = (float *)(mem + PER_RANK / 2);
    int ring_rank, u;
    usp_coords_of(c, rank, &ring_rank, &u);
    int U = c->ulysses;
    for (int rep = 0; rep < 3; rep++)
    for (usp_a2a a = USP_A2A_Q; a <= USP_A2A_DKV; a++) {
        size_t so[64], sb[64], ro[64], rb[64];
        for (int p = 0; p < U; p++) {
            so[p] = usp_a2a_send_offset(c, a, u, p) * 4; sb[p] = usp_a2a_send_elems(c, a, u, p) * 4;
            ro[p] = usp_a2a_recv_offset(c, a, u, p) * 4; rb[p] = usp_a2a_recv_elems(c, a, u, p) * 4;
            for (size_t i = 0; i < sb[p] / 4; i++) send[so[p] / 4 + i] = val(u, p, (long)i, (int)a + rep);
        }
        memset(recv, 0xff, PER_RANK / 2);
        CHECK(t->ops->all_to_all_v(t, U, send, so, sb, recv, ro, rb, NULL) == USP_OK);
        for (int p = 0; p < U; p++)
            for (size_t i = 0; i < rb[p] / 4; i++) CHECK(recv[ro[p] / 4 + i] == val(p, u, (long)i, (int)a + rep));
        CHECK(usp_links_barrier(&links) == USP_OK);
    }
    int R = c->ring;
    size_t n = 1000;
    if (R > 1) {
        int to = (ring_rank + 1) % R, from = (ring_rank + R - 1) % R;
        for (size_t i = 0; i < 2 * n; i++) send[i] = val(ring_rank, 0, (long)i, 7);
        CHECK(t->ops->sendrecv(t, send, send + n, recv, recv + n, n * 4, n * 4, to, from, NULL) == USP_OK);
        for (size_t i = 0; i < 2 * n; i++) CHECK(recv[i] == val(from, 0, (long)i, 7));
        CHECK(usp_links_barrier(&links) == USP_OK);
        CHECK(t->ops->allgather(t, send, send + n, recv, recv + R * n, n * 4, NULL) == USP_OK);
        for (int q = 0; q < R; q++)
            for (size_t i = 0; i < n; i++) {
                CHECK(recv[q * n + i] == val(q, 0, (long)i, 7));
                CHECK(recv[R * n + q * n + i] == val(q, 0, (long)(i + n), 7));
            }
        CHECK(usp_links_barrier(&links) == USP_OK);
        for (size_t i = 0; i < R * n; i++) { send[i] = (float)(ring_rank + 1); send[R * n + i] = (float)(10 * (ring_rank + 1)); }
        CHECK(t->ops->reduce_scatter(t, send, send + R * n, recv, recv + n, n, NULL) == USP_OK);
        float sum = (float)(R * (R + 1) / 2);
        for (size_t i = 0; i < n; i++) { CHECK(recv[i] == sum); CHECK(recv[n + i] == 10 * sum); }
        CHECK(usp_links_barrier(&links) == USP_OK);
    }
    for (size_t i = 0; i < n; i++) send[i] = val(rank, 0, (long)i, 9);
    CHECK(t->ops->gather(t, send, recv, n * 4, NULL) == USP_OK);
    if (rank == 0)
        for (int g = 0; g < world; g++)
            for (size_t i = 0; i < n; i++) CHECK(recv[g * n + i] == val(g, 0, (long)i, 9));
    CHECK(t->ops->barrier(t, NULL, NULL) == USP_OK);
    CHECK(t->ops->end_run(t) == USP_OK);
    CHECK(usp_links_barrier(&links) == USP_OK);
    t->ops->close(t);
    usp_links_close(&links, 1);
    return 0;
}

static int run_world(const usp_config *c, int fail_rank) {
    int world = c->ulysses * c->ring, port = usp_free_port(), bad = 0;
    pid_t p[8];
    fflush(NULL);
    for (int r = 0; r < world; r++)
        if ((p[r] = fork()) == 0) _exit(r == fail_rank ? fail_early(r, world, port) : rank_main(r, world, port, c, fail_rank >= 0));
    for (int r = 0; r < world; r++) {
        int st;
        waitpid(p[r], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st)) {
            bad++;
            fprintf(stderr, "H %d kv %d U %d R %d layout %d, rank %d: status %d\n", c->heads, c->kv_heads, c->ulysses,
                    c->ring, (int)c->layout, r, st);
        }
    }
    return bad;
}

static usp_config shape(int h, int kv, int u, int r, int layout) {
    usp_config c = usp_config_default();
    c.batch = 2; c.heads = h; c.kv_heads = kv; c.ulysses = u; c.ring = r;
    c.head_dim = 8; c.seq = 8 * u * r; c.ring_impl = USP_RING_BASIC; c.causal = 0;
    c.layout = layout ? USP_LAYOUT_RING_INNER : USP_LAYOUT_ULYSSES_INNER;
    return c;
}

static void test_routing(void **state) {
    (void)state;
    const int shapes[][4] = {{6, 6, 4, 1}, {5, 5, 2, 2}, {6, 2, 4, 1}, {8, 2, 3, 1}, {8, 8, 2, 2}, {7, 7, 1, 4}, {5, 5, 2, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int layout = 0; layout < 2; layout++) {
            usp_config c = shape(shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], layout);
            assert_int_equal(run_world(&c, -1), 0);
        }
}

static void test_failing_peer(void **state) {
    (void)state;
    usp_config c = shape(6, 6, 4, 1, 0);
    assert_int_equal(run_world(&c, 2), 0); /* the others see rank 2's failure and say so (rank_main checks) */
}

int main(void) {
    region = mmap(NULL, PER_RANK * 8, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED) return 1;
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_routing), cmocka_unit_test(test_failing_peer)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
