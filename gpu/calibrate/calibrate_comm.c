/* calibrate_comm.c: NCCL send/recv and all-to-all between the ranks, through
 * the executor's own transport (usp_calib_measure_comm); a world on the IPC
 * transport (ranks sharing a GPU) is refused: it would not measure a network. */
#define _POSIX_C_SOURCE 200809L
#include "calibrate.h"

#include <stdlib.h>
#include <string.h>
#include "executor/executor_ctx.h"
#include "executor/executor_cuda.h"
#include "transport/nccl_transport.h"

enum { OP_SENDRECV, OP_ALL_TO_ALL };
static const char *const OP_NAMES[] = {"sendrecv", "all_to_all"};

typedef struct {
    usp_gpu_ctx *ctx;
    char *send, *recv;
    cudaEvent_t start, stop;
    int to, from;            /* ring neighbours (group index) */
} comm_bench;

/* One run after a barrier, so both ends start together; seconds between
 * events around the call on the comm stream. */
static usp_status run_once(comm_bench *b, int op, size_t bytes, double *seconds) {
    usp_gpu_ctx *ctx = b->ctx;
    usp_transport *t = ctx->tr;
    USP_TRY(t->ops->barrier(t, ctx->scratch, ctx->comm));
    USP_CUDA_CHECK(cudaEventRecord(b->start, ctx->comm));
    if (op == OP_SENDRECV) {
        size_t half = bytes / 2; /* K and V: two buffers, as a ring step sends them */
        USP_TRY(t->ops->sendrecv(t, b->send, b->send + half, b->recv, b->recv + half, half, bytes - half, b->to,
                                  b->from, ctx->comm));
    } else {
        USP_TRY(usp_transport_all_to_all(t, usp_gpu_world(ctx), b->send, b->recv, bytes, ctx->comm));
    }
    USP_CUDA_CHECK(cudaEventRecord(b->stop, ctx->comm));
    USP_CUDA_CHECK(cudaStreamSynchronize(ctx->comm));
    float ms;
    USP_CUDA_CHECK(cudaEventElapsedTime(&ms, b->start, b->stop));
    *seconds = ms * 1e-3;
    return USP_OK;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

enum { WARMUP_RUNS = 2, MAX_REPS = 32 };

static usp_status measure_size(comm_bench *b, int op, size_t bytes, int reps, double *median) {
    double t[MAX_REPS];
    for (int i = 0; i < WARMUP_RUNS; i++) USP_TRY(run_once(b, op, bytes, &t[0]));
    for (int i = 0; i < reps; i++) USP_TRY(run_once(b, op, bytes, &t[i]));
    qsort(t, (size_t)reps, sizeof *t, compare_doubles);
    *median = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
    return USP_OK;
}

/* The communicator of the op: the ring of every rank, or one ulysses group. */
static usp_status split_for(usp_gpu_ctx *ctx, int op) {
    usp_config c = usp_config_default();
    int w = usp_gpu_world(ctx);
    c.dtype = USP_BF16;
    c.ring_impl = USP_RING_BASIC;
    c.seq = 1024 * w;
    c.heads = c.kv_heads = w;
    c.ulysses = op == OP_ALL_TO_ALL ? w : 1;
    c.ring = op == OP_ALL_TO_ALL ? 1 : w;
    return ctx->tr->ops->split(ctx->tr, &c);
}

static usp_status measure_op(comm_bench *b, int op, const double *sizes, int nsizes, int reps, usp_calib *m) {
    USP_TRY(split_for(b->ctx, op));
    for (int i = 0; i < nsizes; i++) {
        double sec;
        USP_TRY(measure_size(b, op, (size_t)sizes[i], reps, &sec));
        if (usp_gpu_rank(b->ctx) != 0) continue;
        if (m->ncomm == USP_CALIB_MAX) return usp_fail(USP_EINTERNAL, "too many comm measurements");
        usp_calib_comm *c = &m->comm[m->ncomm++];
        snprintf(c->op, sizeof c->op, "%s", OP_NAMES[op]);
        c->bytes = sizes[i];
        c->seconds = sec;
    }
    return USP_OK;
}

static double largest(const double *v, int n) {
    double x = 0;
    for (int i = 0; i < n; i++)
        if (v[i] > x) x = v[i];
    return x;
}

static usp_status setup(comm_bench *b, usp_gpu_ctx *ctx, size_t buffer) {
    int w = usp_gpu_world(ctx), me = usp_gpu_rank(ctx);
    memset(b, 0, sizeof *b);
    b->ctx = ctx;
    b->to = (me + 1) % w;
    b->from = (me + w - 1) % w;
    USP_CUDA_CHECK(cudaSetDevice(ctx->device));
    USP_CUDA_CHECK(cudaMalloc((void **)&b->send, buffer));
    USP_CUDA_CHECK(cudaMalloc((void **)&b->recv, buffer));
    USP_CUDA_CHECK(cudaMemset(b->send, 1, buffer));
    USP_CUDA_CHECK(cudaEventCreate(&b->start));
    USP_CUDA_CHECK(cudaEventCreate(&b->stop));
    return USP_OK;
}

static void teardown(comm_bench *b) {
    if (b->send) cudaFree(b->send);
    if (b->recv) cudaFree(b->recv);
    if (b->start) cudaEventDestroy(b->start);
    if (b->stop) cudaEventDestroy(b->stop);
}

static usp_status nccl_version(int *v) {
    USP_NCCL_CHECK(ncclGetVersion(v));
    return USP_OK;
}

usp_status usp_calib_measure_comm(usp_gpu_ctx *ctx, const double *sizes, int nsizes, int reps, usp_calib *m) {
    int w = usp_gpu_world(ctx);
    if (w < 2) return usp_fail(USP_EINVAL, "measuring NCCL needs 2 or more ranks, this run has %d", w);
    if (reps < 1 || reps > MAX_REPS) return usp_fail(USP_EINVAL, "reps %d outside 1..%d", reps, MAX_REPS);
    if (strcmp(ctx->tr->ops->name, "nccl"))
        return usp_fail(USP_EINVAL, "measuring NCCL needs one rank per GPU; these ranks share a GPU (transport %s)",
                        ctx->tr->ops->name);
    comm_bench b;
    /* the all-to-all stages one piece per rank */
    usp_status st = setup(&b, ctx, (size_t)largest(sizes, nsizes) * (size_t)w);
    if (st == USP_OK) st = measure_op(&b, OP_SENDRECV, sizes, nsizes, reps, m);
    if (st == USP_OK) st = measure_op(&b, OP_ALL_TO_ALL, sizes, nsizes, reps, m);
    teardown(&b);
    m->gpus = w;
    if (st == USP_OK) st = nccl_version(&m->nccl_version);
    return st;
}
