/* calibrate_record.c: recorded GPU cases for `usp validate`
 * (usp_calib_record_cases): each case run by the GPU executor, its trace and
 * sidecar written by rank 0. */
#define _POSIX_C_SOURCE 200809L
#include "calibrate.h"

#include <string.h>
#include "executor/executor_ctx.h"
#include "executor/executor_cuda.h"

typedef struct {
    usp_schedule sched;
    usp_result res;
    usp_trace trace;
    int has_sched, has_res, has_trace;
} case_run;

static void case_free(case_run *r) {
    if (r->has_trace) usp_trace_free(&r->trace);
    if (r->has_res) usp_result_free(&r->res);
    if (r->has_sched) usp_schedule_free(&r->sched);
}

static usp_status device_name(usp_gpu_ctx *ctx, char *out, size_t n) {
    struct cudaDeviceProp prop;
    USP_CUDA_CHECK(cudaGetDeviceProperties(&prop, ctx->device));
    snprintf(out, n, "%dx %.80s", usp_gpu_world(ctx), prop.name);
    return USP_OK;
}

/* Rank 0: the trace of the last timed run and the sidecar beside it. */
static usp_status write_case(usp_vcase *c, const case_run *r, const char *dir) {
    char path[sizeof c->trace];
    c->measured_fwd_ms = r->res.time_fwd_s * 1e3;
    c->measured_bwd_ms = r->res.time_bwd_s * 1e3;
    snprintf(c->trace, sizeof c->trace, "%s/%s.trace.json", dir, c->name);
    USP_TRY(usp_trace_write(&r->trace, c->trace));
    snprintf(path, sizeof path, "%s/%s.case.json", dir, c->name);
    return usp_vcase_write(c, path);
}

static usp_status run_case(usp_gpu_ctx *ctx, usp_vcase *c, const char *dir, int warmup, int iters, FILE *progress) {
    int root = usp_gpu_rank(ctx) == 0;
    case_run r;
    memset(&r, 0, sizeof r);
    usp_status st = usp_schedule_build(&c->cfg, c->backward, &r.sched);
    r.has_sched = st == USP_OK;
    if (st == USP_OK) st = usp_result_init(&r.res, &r.sched, 0);
    r.has_res = st == USP_OK;
    if (st == USP_OK && root) { usp_trace_init(&r.trace, "gpu", &c->cfg); r.has_trace = 1; }
    usp_gpu_options go = {.ctx = ctx, .kernel = NULL, .warmup = warmup, .iters = iters, .gather_outputs = 0};
    if (st == USP_OK) st = usp_gpu_execute(&r.sched, NULL, &go, &r.res, root ? &r.trace : NULL);
    c->iters = iters;
    if (st == USP_OK && root) st = device_name(ctx, c->device, sizeof c->device);
    if (st == USP_OK && root) st = write_case(c, &r, dir);
    if (st == USP_OK && root && progress)
        fprintf(progress, "  %-34s %-11s fwd %9.3f ms  bwd %9.3f ms\n", c->name, usp_vrole_name(c->role),
                c->measured_fwd_ms, c->measured_bwd_ms);
    case_free(&r);
    if (st != USP_OK) usp_error_prefix("case %s: ", c->name);
    return st;
}

usp_status usp_calib_record_cases(usp_gpu_ctx *ctx, usp_vcase *cases, int n, const char *dir, int warmup, int iters,
                                  FILE *progress) {
    if (progress && usp_gpu_rank(ctx) == 0)
        fprintf(progress, "recording %d cases on %d GPUs into %s (warmup %d, median of %d):\n", n,
                usp_gpu_world(ctx), dir, warmup, iters);
    for (int i = 0; i < n; i++) {
        if (usp_world(&cases[i].cfg) != usp_gpu_world(ctx))
            return usp_fail(USP_EINVAL, "case %s needs %d ranks, this run has %d", cases[i].name,
                            usp_world(&cases[i].cfg), usp_gpu_world(ctx));
        USP_TRY(run_case(ctx, &cases[i], dir, warmup, iters, progress));
    }
    return USP_OK;
}
