/* test_executor.c: the in-process executor against the dense reference, in
 * fp64, fp32, and the fp32 emulation of bf16/fp16 runs with both wires. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include "usp/attention.h"
#include "usp/compare.h"
#include "usp/executor.h"

typedef struct { double *o, *lse, *dq, *dk, *dv; } reference;

static reference make_reference(const usp_config *c, const usp_inputs *in) {
    long q = (long)c->batch * c->seq * c->heads * c->head_dim;
    long kv = (long)c->batch * c->seq * c->kv_heads * c->head_dim;
    reference r = {malloc(q * 8), malloc((long)c->batch * c->heads * c->seq * 8), malloc(q * 8),
                   malloc(kv * 8), malloc(kv * 8)};
    assert_int_equal(usp_ref_forward(c, in->q, in->k, in->v, r.o, r.lse), USP_OK);
    assert_int_equal(usp_ref_backward(c, in->q, in->k, in->v, r.o, r.lse, in->dout, r.dq, r.dk, r.dv), USP_OK);
    return r;
}

static void check(const double *x, const double *ref, long n, double tol) {
    usp_error_stats e = usp_compare(x, ref, n, tol);
    if (!e.pass) fail_msg("rel %.3e > %.0e (nan %ld, inf mismatch %ld)", e.rel, tol, e.nan_count, e.inf_mismatch);
}

static void run_against_reference(usp_config c) {
    usp_schedule s;
    usp_inputs in;
    usp_result res;
    assert_int_equal(usp_schedule_build(&c, 1, &s), USP_OK);
    assert_int_equal(usp_inputs_make(&c, NULL, &in), USP_OK);
    reference ref = make_reference(&c, &in);
    assert_int_equal(usp_result_init(&res, &s, 1), USP_OK);
    assert_int_equal(usp_ref_execute(&s, &in, &res, NULL), USP_OK);
    long q = (long)c.batch * c.seq * c.heads * c.head_dim, kv = q / c.heads * c.kv_heads;
    double tol = usp_tolerance(c.dtype, 0);
    check(res.o, ref.o, q, tol);
    check(res.lse, ref.lse, (long)c.batch * c.heads * c.seq, tol);
    check(res.dq, ref.dq, q, tol);
    check(res.dk, ref.dk, kv, tol);
    check(res.dv, ref.dv, kv, tol);
    for (int g = 0; g < s.world; g++) assert_true(res.ranks[g].peak_bytes > 0);
    free(ref.o); free(ref.lse); free(ref.dq); free(ref.dk); free(ref.dv);
    usp_result_free(&res);
    usp_inputs_free(&in);
    usp_schedule_free(&s);
}

static usp_config base(usp_ring_impl impl, int causal, int u, int r) {
    usp_config c = usp_config_default();
    c.ring_impl = impl; c.causal = causal; c.ulysses = u; c.ring = r;
    c.seq = 2 * u * r * 5; c.heads = 8; c.kv_heads = 8; c.head_dim = 8; c.batch = 2;
    return c;
}

static void test_every_ring_impl_fp64(void **state) {
    (void)state;
    run_against_reference(base(USP_RING_BASIC, 0, 2, 2));
    run_against_reference(base(USP_RING_BASIC, 1, 1, 4));
    run_against_reference(base(USP_RING_ZIGZAG, 1, 2, 4));
    run_against_reference(base(USP_RING_STRIPE, 1, 4, 2));
    run_against_reference(base(USP_RING_ALLGATHER, 1, 2, 3));
    run_against_reference(base(USP_RING_ALLGATHER, 0, 1, 3));
}

static void test_kv_replication_and_ring_inner(void **state) {
    (void)state;
    usp_config c = base(USP_RING_ZIGZAG, 1, 8, 1);
    c.kv_heads = 1; /* every ulysses rank needs the one K/V head: replicated, gradients summed */
    run_against_reference(c);
    c = base(USP_RING_STRIPE, 1, 4, 2);
    c.kv_heads = 2;
    c.layout = USP_LAYOUT_RING_INNER;
    run_against_reference(c);
}

static void test_fp32(void **state) {
    (void)state;
    usp_config c = base(USP_RING_ZIGZAG, 1, 2, 2);
    c.dtype = USP_F32;
    run_against_reference(c);
}

/* bf16 on the CPU (usp/rankmem.h): fp32 arithmetic on bf16 inputs, the O,
 * dQ, dK, dV all-to-alls rounded to the wire. The reference sees the same
 * rounded inputs, so with the fp32 wire only fp32 arithmetic separates them
 * (USP_TOL_F32); the bf16 wire rounds each of those outputs once more, which
 * moves a vector by at most the unit roundoff of bf16, 2^-9, of its norm
 * (8 significant bits; dK/dV replicas are summed after rounding, in fp32). */
#define BF16_UNIT_ROUNDOFF 0x1p-9

typedef struct { double err[5]; double *out[5]; } run_errors;

static run_errors run_errors_of(usp_config c) {
    usp_schedule s;
    usp_inputs in;
    usp_result res;
    assert_int_equal(usp_schedule_build(&c, 1, &s), USP_OK);
    assert_int_equal(usp_inputs_make(&c, NULL, &in), USP_OK);
    reference ref = make_reference(&c, &in);
    assert_int_equal(usp_result_init(&res, &s, 1), USP_OK);
    assert_int_equal(usp_ref_execute(&s, &in, &res, NULL), USP_OK);
    long q = (long)c.batch * c.seq * c.heads * c.head_dim, kv = q / c.heads * c.kv_heads;
    long n[5] = {q, (long)c.batch * c.heads * c.seq, q, kv, kv};
    double *x[5] = {res.o, res.lse, res.dq, res.dk, res.dv}, *r[5] = {ref.o, ref.lse, ref.dq, ref.dk, ref.dv};
    run_errors e;
    for (int t = 0; t < 5; t++) {
        e.err[t] = usp_compare(x[t], r[t], n[t], 1).rel;
        e.out[t] = malloc((size_t)n[t] * sizeof(double));
        assert_non_null(e.out[t]);
        for (long i = 0; i < n[t]; i++) e.out[t][i] = x[t][i];
        free(r[t]);
    }
    usp_result_free(&res);
    usp_inputs_free(&in);
    usp_schedule_free(&s);
    return e;
}

static void free_errors(run_errors *e) {
    for (int t = 0; t < 5; t++) free(e->out[t]);
}

static void test_bf16_emulation_and_wire(void **state) {
    (void)state;
    usp_config c = base(USP_RING_ZIGZAG, 1, 2, 2);
    c.kv_heads = 1; /* replicated: the dK/dV unpack sums rounded pieces */
    c.dtype = USP_BF16;
    c.wire = USP_WIRE_FP32;
    run_errors fp32 = run_errors_of(c);
    c.wire = USP_WIRE_DTYPE;
    run_errors bf16 = run_errors_of(c);
    for (int t = 0; t < 5; t++) {
        assert_true(fp32.err[t] <= USP_TOL_F32);
        assert_true(bf16.err[t] <= BF16_UNIT_ROUNDOFF + USP_TOL_F32);
        if (t != 1) assert_true(bf16.err[t] > 10 * fp32.err[t]); /* LSE travels in fp32 either way */
    }
    assert_true(bf16.err[1] == fp32.err[1]);
    free_errors(&fp32);
    free_errors(&bf16);
    /* without an all-to-all the wire changes nothing, to the bit */
    c = base(USP_RING_ZIGZAG, 1, 1, 4);
    c.dtype = USP_F16;
    c.wire = USP_WIRE_FP32;
    run_errors a = run_errors_of(c);
    c.wire = USP_WIRE_DTYPE;
    run_errors b = run_errors_of(c);
    long q = (long)c.batch * c.seq * c.heads * c.head_dim;
    assert_memory_equal(a.out[0], b.out[0], (size_t)q * sizeof(double));
    assert_memory_equal(a.out[4], b.out[4], (size_t)q * sizeof(double));
    for (int t = 0; t < 5; t++) assert_true(a.err[t] <= USP_TOL_F32);
    free_errors(&a);
    free_errors(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_ring_impl_fp64),
        cmocka_unit_test(test_kv_replication_and_ring_inner),
        cmocka_unit_test(test_fp32),
        cmocka_unit_test(test_bf16_emulation_and_wire),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
