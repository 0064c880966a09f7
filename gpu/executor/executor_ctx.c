/* executor_ctx.c: a rank process's GPU, links and communicators
 * (usp_gpu_open / usp_gpu_close / usp_gpu_abort of usp/gpu_exec.h). */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "executor_ctx.h"

#include <stdlib.h>
#include <string.h>
#include "executor_cuda.h"
#include "transport/nccl_transport.h"

int usp_gpu_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError(); /* no driver: not an error worth keeping */
        return 0;
    }
    return n;
}

int usp_gpu_rank(const usp_gpu_ctx *ctx) { return ctx->env.rank; }
int usp_gpu_world(const usp_gpu_ctx *ctx) { return ctx->env.world; }

/* The comm stream gets the device's greatest priority: an NCCL kernel
 * enqueued while an attention kernel fills every SM then takes the next free
 * SMs instead of queueing behind the attention kernel's remaining blocks
 * (gpu/NOTES.md has what it changed). USP_GPU_COMM_PRIORITY=normal keeps both
 * streams equal. */
static int comm_stream_priority(void) {
    const char *e = getenv("USP_GPU_COMM_PRIORITY");
    int least = 0, greatest = 0;
    if ((e && !strcmp(e, "normal")) || cudaDeviceGetStreamPriorityRange(&least, &greatest) != cudaSuccess) return 0;
    return greatest;
}

static usp_status bind_device(usp_gpu_ctx *ctx) {
    int count = usp_gpu_device_count();
    if (count == 0)
        return usp_fail(USP_EINTERNAL, "rank %d: no CUDA device is visible to this process", ctx->env.rank);
    int local = ctx->env.local_rank >= 0 ? ctx->env.local_rank : ctx->env.rank;
    ctx->device = local % count;
    USP_CUDA_CHECK(cudaSetDevice(ctx->device));
    USP_CUDA_CHECK(cudaStreamCreateWithFlags(&ctx->compute, cudaStreamNonBlocking));
    USP_CUDA_CHECK(cudaStreamCreateWithPriority(&ctx->comm, cudaStreamNonBlocking, comm_stream_priority()));
    USP_CUDA_CHECK(cudaMalloc((void **)&ctx->scratch, sizeof(float)));
    USP_CUDA_CHECK(cudaMemset(ctx->scratch, 0, sizeof(float)));
    return USP_OK;
}

/* Rank 0 makes the NCCL id (unless USP_TRANSPORT=ipc); the links carry it
 * to the others; then the ranks agree on a transport (transport.h), so the
 * id is made, and left unused, where ranks sharing a GPU then get IPC. */
static usp_status connect_ranks(usp_gpu_ctx *ctx) {
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    const char *setting = getenv("USP_TRANSPORT");
    int ipc_only = setting && !strcmp(setting, "ipc");
    if (ctx->env.world > 1 && ctx->env.rank == 0 && !ipc_only) USP_NCCL_CHECK(ncclGetUniqueId(&id));
    USP_TRY(usp_links_open(&ctx->links, &ctx->env, ctx->timeout_s, &id, sizeof id));
    usp_transport_env e = {ctx->env.rank, ctx->env.world, ctx->device, &ctx->links, ctx->timeout_s, &id};
    usp_status st = usp_transport_open(&e, &ctx->tr);
    if (st != USP_OK && strncmp(usp_error(), "rank ", 5) != 0) usp_error_prefix("rank %d: ", ctx->env.rank);
    return st;
}

const char *usp_gpu_transport_name(const usp_gpu_ctx *ctx) {
    return ctx && ctx->tr ? ctx->tr->ops->name : "none";
}

usp_status usp_gpu_open(const usp_gpu_env *env, double timeout_s, usp_gpu_ctx **out) {
    /* NVLink SHARP (multicast) buffers cost GPU memory and help none of the
     * executor's collectives, which are point-to-point or small; a user who
     * wants them sets the variable. */
    setenv("NCCL_NVLS_ENABLE", "0", 0);
    *out = NULL;
    usp_gpu_ctx *ctx = usp_calloc(1, sizeof *ctx);
    if (!ctx) return USP_EINTERNAL;
    ctx->env = *env;
    ctx->timeout_s = timeout_s > 0 ? timeout_s : 300;
    usp_status st = bind_device(ctx);
    if (st == USP_OK) st = connect_ranks(ctx);
    if (st != USP_OK) {
        usp_gpu_abort(ctx);
        return st;
    }
    *out = ctx;
    return USP_OK;
}

usp_status usp_gpu_barrier(usp_gpu_ctx *ctx) { return usp_links_barrier(&ctx->links); }

static void free_device(usp_gpu_ctx *ctx) {
    if (ctx->scratch) cudaFree(ctx->scratch);
    if (ctx->compute) cudaStreamDestroy(ctx->compute);
    if (ctx->comm) cudaStreamDestroy(ctx->comm);
}

void usp_gpu_close(usp_gpu_ctx *ctx) {
    if (!ctx) return;
    /* every rank past its last NCCL call before any communicator goes */
    if (usp_links_barrier(&ctx->links) != USP_OK) {
        usp_gpu_abort(ctx);
        return;
    }
    if (ctx->tr) ctx->tr->ops->close(ctx->tr);
    ctx->tr = NULL;
    usp_links_close(&ctx->links, 1);
    free_device(ctx);
    free(ctx);
}

void usp_gpu_abort(usp_gpu_ctx *ctx) {
    if (!ctx) return;
    if (!ctx->failed) usp_links_fail(&ctx->links, usp_error());
    int keep = 0;
    if (ctx->tr) {
        keep = ctx->tr->ops->keep_memory_on_failure;
        ctx->tr->ops->abort(ctx->tr);
        if (!keep) ctx->tr->ops->close(ctx->tr); /* its events too may be waited on */
        ctx->tr = NULL;
    }
    usp_links_close(&ctx->links, 0);
    if (!keep) free_device(ctx);
    free(ctx);
}
