/* runcase.c: run one problem and check it against the reference. */
#include "runcase.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "usp/attention.h"

const char *const usp_tensor_names[USP_T_COUNT] = {"o", "lse", "dq", "dk", "dv"};

long usp_case_elems(const usp_config *c, int t) {
    long tokens = (long)c->batch * c->seq;
    switch (t) {
    case USP_T_O: case USP_T_DQ: return tokens * c->heads * c->head_dim;
    case USP_T_LSE: return tokens * c->heads;
    default: return tokens * c->kv_heads * c->head_dim;
    }
}

double *usp_case_output(const usp_case *c, int t) {
    double *out[USP_T_COUNT] = {c->res.o, c->res.lse, c->res.dq, c->res.dk, c->res.dv};
    return out[t];
}

usp_status usp_exec_ref(const usp_schedule *s, const usp_inputs *in, usp_result *out,
                        usp_trace *trace, void *ctx) {
    (void)ctx;
    return usp_ref_execute(s, in, out, trace);
}

static usp_status compute_reference(usp_case *c) {
    for (int t = 0; t < c->ntensors; t++) {
        c->ref[t] = usp_malloc((size_t)usp_case_elems(&c->cfg, t) * sizeof(double));
        if (!c->ref[t]) return USP_EINTERNAL;
    }
    usp_inputs *in = &c->in;
    USP_TRY(usp_ref_forward(&c->cfg, in->q, in->k, in->v, c->ref[USP_T_O], c->ref[USP_T_LSE]));
    if (!c->backward) return USP_OK;
    return usp_ref_backward(&c->cfg, in->q, in->k, in->v, c->ref[USP_T_O], c->ref[USP_T_LSE],
                            in->dout, c->ref[USP_T_DQ], c->ref[USP_T_DK], c->ref[USP_T_DV]);
}

static void compare_all(usp_case *c) {
    c->pass = 1;
    for (int t = 0; t < c->ntensors; t++) {
        c->tol[t] = usp_tolerance(c->cfg.dtype, t >= USP_T_DQ);
        c->elem_tol[t] = usp_elem_tolerance(c->cfg.dtype, t >= USP_T_DQ);
        double *x = usp_case_output(c, t);
        if (!x) { c->pass = 0; continue; }
        c->err[t] = usp_compare2(x, c->ref[t], usp_case_elems(&c->cfg, t), c->tol[t], c->elem_tol[t]);
        if (!c->err[t].pass) c->pass = 0;
    }
}

/* Problems past ~20 GFLOP take seconds on a CPU: say what is going on. */
static void progress(const usp_case *c, const char *what) {
    const usp_config *k = &c->cfg;
    double pairs = (double)k->batch * k->seq * k->seq; /* masked tiles are skipped: count what is visible */
    if (k->mask) {
        pairs = 0;
        for (int b = 0; b < k->batch; b++) pairs += usp_mask_pairs(k->mask, b);
    }
    double flops = 4.0 * pairs * k->heads * k->head_dim;
    if (c->backward) flops *= 3.5;
    if (flops > 2e10) fprintf(stderr, "usp: %s (%.0f GFLOP)...\n", what, flops / 1e9);
}

/* Bytes a checked CPU run holds at once: the fp64 inputs, the reference and
 * the gathered outputs (three sets of global tensors), and every rank's
 * buffers at their busiest. */
static double bytes_needed(const usp_case *c) {
    double global = 0;
    for (int t = 0; t < c->ntensors; t++) global += (double)usp_case_elems(&c->cfg, t);
    double ranks = 0;
    for (int g = 0; g < c->sched.world; g++) ranks += usp_peak_bytes(&c->sched.ranks[g], c->cfg.dtype);
    return 3 * 8 * global + ranks;
}

/* Refuses, before allocating anything, a problem this machine cannot hold. */
static usp_status check_fits(const usp_case *c) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    if (pages <= 0 || page <= 0) return USP_OK;
    double have = (double)pages * page, need = bytes_needed(c);
    if (need <= have) return USP_OK;
    return usp_fail(USP_EINVAL, "checking this problem on the CPU needs about %.1f GiB, this machine "
                    "has %.1f GiB (a smaller --seq, or --no-numerics for time only)",
                    need / (1 << 30), have / (1 << 30));
}

usp_status usp_case_run(usp_case *c, const char *input_dir, usp_exec_fn exec, void *ctx,
                        usp_trace *trace) {
    c->ntensors = c->backward ? USP_T_COUNT : 2;
    USP_TRY(usp_schedule_build(&c->cfg, c->backward, &c->sched));
    USP_TRY(check_fits(c));
    USP_TRY(usp_inputs_make(&c->cfg, input_dir, &c->in));
    progress(c, "computing the fp64 dense reference");
    USP_TRY(compute_reference(c));
    USP_TRY(usp_result_init(&c->res, &c->sched, 1));
    progress(c, "running the sharded schedule");
    USP_TRY(exec(&c->sched, &c->in, &c->res, trace, ctx));
    compare_all(c);
    return USP_OK;
}

void usp_case_free(usp_case *c) {
    for (int t = 0; t < USP_T_COUNT; t++) free(c->ref[t]);
    usp_result_free(&c->res);
    usp_inputs_free(&c->in);
    usp_schedule_free(&c->sched);
    usp_config keep = c->cfg;
    int backward = c->backward;
    memset(c, 0, sizeof *c);
    c->cfg = keep;
    c->backward = backward;
}
