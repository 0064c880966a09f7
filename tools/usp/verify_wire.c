/* verify_wire.c: usp verify --wire-errors, what a 16-bit wire costs in accuracy.
 *
 * One causal problem (zigzag, batch 1, kv_heads = heads), its inputs rounded
 * to the 16-bit dtype and its fp64 dense reference computed once; then every
 * mesh ulysses 1, 2 x ring 1, 2, 4, 8 runs in the in-process executor twice,
 * with the O, dQ, dK, dV all-to-alls in the dtype and in fp32, and each
 * output's norm-wise relative error ||x - ref|| / ||ref|| is printed.
 *
 * The run is the CPU's emulation of a 16-bit GPU run (usp/rankmem.h): fp32
 * arithmetic, inputs and wire payloads rounded as the GPU rounds them; the
 * kernels' own 16-bit products (P and dS on the tensor cores) are not
 * emulated, so these errors are those of the schedule and the wire alone.
 * With ulysses 1 there is no all-to-all and both wires give the same bits. */
#include <stdlib.h>
#include <string.h>
#include "runcase.h"
#include "verify_wire.h"
#include "usp/attention.h"

static const int ULYSSES[] = {1, 2};
static const int RINGS[] = {1, 2, 4, 8};

typedef struct {
    usp_config base;
    usp_inputs in;
    double *ref[USP_T_COUNT];
} wire_problem;

static usp_status make_problem(wire_problem *p) {
    usp_config *c = &p->base;
    USP_TRY(usp_inputs_make(c, NULL, &p->in));
    for (int t = 0; t < USP_T_COUNT; t++) {
        p->ref[t] = usp_malloc((size_t)usp_case_elems(c, t) * sizeof(double));
        if (!p->ref[t]) return USP_EINTERNAL;
    }
    usp_inputs *in = &p->in;
    USP_TRY(usp_ref_forward(c, in->q, in->k, in->v, p->ref[USP_T_O], p->ref[USP_T_LSE]));
    return usp_ref_backward(c, in->q, in->k, in->v, p->ref[USP_T_O], p->ref[USP_T_LSE], in->dout,
                            p->ref[USP_T_DQ], p->ref[USP_T_DK], p->ref[USP_T_DV]);
}

static void free_problem(wire_problem *p) {
    for (int t = 0; t < USP_T_COUNT; t++) free(p->ref[t]);
    usp_inputs_free(&p->in);
}

/* One mesh and wire: the relative error of each output. */
static usp_status run_mesh(const wire_problem *p, int u, int r, usp_wire wire, double err[USP_T_COUNT]) {
    usp_config c = p->base;
    c.ulysses = u; c.ring = r; c.wire = wire;
    usp_schedule s;
    usp_result res;
    USP_TRY(usp_schedule_build(&c, 1, &s));
    usp_status st = usp_result_init(&res, &s, 1);
    if (st == USP_OK) st = usp_ref_execute(&s, &p->in, &res, NULL);
    double *out[USP_T_COUNT] = {res.o, res.lse, res.dq, res.dk, res.dv};
    for (int t = 0; t < USP_T_COUNT && st == USP_OK; t++)
        err[t] = usp_compare(out[t], p->ref[t], usp_case_elems(&c, t), 1.0).rel;
    usp_result_free(&res);
    usp_schedule_free(&s);
    return st;
}

static void print_head(const usp_config *c, int json) {
    if (json) {
        printf("{\"dtype\": \"%s\", \"batch\": %d, \"seq\": %d, \"heads\": %d, \"head_dim\": %d, "
               "\"causal\": true, \"ring_impl\": \"zigzag\", \"emulation\": \"cpu\", \"rows\": [",
               usp_dtype_name(c->dtype), c->batch, c->seq, c->heads, c->head_dim);
        return;
    }
    printf("usp verify --wire-errors: %s, B=%d L=%d H=%d D=%d, causal, zigzag\n"
           "CPU emulation of the GPU's arithmetic around its kernels: fp32 arithmetic, inputs in %s,\n"
           "the O, dQ, dK, dV all-to-alls on the wire named (the kernels' own 16-bit products are\n"
           "not emulated). Relative error ||x - ref|| / ||ref|| against the fp64 reference on the\n"
           "same rounded inputs:\n\n",
           usp_dtype_name(c->dtype), c->batch, c->seq, c->heads, c->head_dim, usp_dtype_name(c->dtype));
    printf("%-7s %4s  %-5s", "ulysses", "ring", "wire");
    for (int t = 0; t < USP_T_COUNT; t++) printf(" %10s", usp_tensor_names[t]);
    printf("\n");
}

static void print_row(int u, int r, const char *wire, const double err[USP_T_COUNT], int json, int first) {
    if (json) {
        printf("%s\n  {\"ulysses\": %d, \"ring\": %d, \"wire\": \"%s\", \"rel_err\": {", first ? "" : ",", u, r,
               wire);
        for (int t = 0; t < USP_T_COUNT; t++) printf("%s\"%s\": %.3e", t ? ", " : "", usp_tensor_names[t], err[t]);
        printf("}}");
        return;
    }
    printf("%-7d %4d  %-5s", u, r, wire);
    for (int t = 0; t < USP_T_COUNT; t++) printf(" %10.3e", err[t]);
    printf("\n");
}

int usp_verify_wire_errors(const usp_config *base, int json) {
    wire_problem p = {.base = *base};
    p.base.batch = 1; p.base.causal = 1; p.base.ring_impl = USP_RING_ZIGZAG; p.base.kv_heads = p.base.heads;
    for (size_t i = 0; i < sizeof ULYSSES / sizeof ULYSSES[0]; i++)
        for (size_t j = 0; j < sizeof RINGS / sizeof RINGS[0]; j++) { /* refuse a bad shape before any work */
            usp_config c = p.base;
            c.ulysses = ULYSSES[i]; c.ring = RINGS[j];
            if (usp_config_validate(&c) != USP_OK) return usp_cli_report("verify", USP_EINVAL);
        }
    usp_status st = make_problem(&p);
    if (st != USP_OK) { free_problem(&p); return usp_cli_report("verify", st); }
    print_head(&p.base, json);
    int first = 1;
    for (size_t i = 0; i < sizeof ULYSSES / sizeof ULYSSES[0] && st == USP_OK; i++)
        for (size_t j = 0; j < sizeof RINGS / sizeof RINGS[0] && st == USP_OK; j++)
            for (int w = 0; w < 2 && st == USP_OK; w++) {
                double err[USP_T_COUNT];
                usp_wire wire = w ? USP_WIRE_FP32 : USP_WIRE_DTYPE;
                st = run_mesh(&p, ULYSSES[i], RINGS[j], wire, err);
                if (st == USP_OK) {
                    print_row(ULYSSES[i], RINGS[j], w ? "fp32" : usp_dtype_name(p.base.dtype), err, json, first);
                    first = 0;
                    fflush(stdout);
                }
            }
    free_problem(&p);
    if (st != USP_OK) return usp_cli_report("verify", st);
    if (json) printf("\n]}\n");
    return 0;
}
