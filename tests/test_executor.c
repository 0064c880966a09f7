/* test_executor.c: the in-process executor against the dense reference. */
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

static void test_refuses_16_bit_on_cpu(void **state) {
    (void)state;
    usp_config c = base(USP_RING_ZIGZAG, 1, 2, 2);
    c.dtype = USP_BF16;
    usp_schedule s;
    usp_inputs in;
    usp_result res;
    assert_int_equal(usp_schedule_build(&c, 1, &s), USP_OK);
    assert_int_equal(usp_inputs_make(&c, NULL, &in), USP_OK);
    assert_int_equal(usp_result_init(&res, &s, 1), USP_OK);
    assert_int_equal(usp_ref_execute(&s, &in, &res, NULL), USP_EINVAL);
    usp_result_free(&res);
    usp_inputs_free(&in);
    usp_schedule_free(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_ring_impl_fp64),
        cmocka_unit_test(test_kv_replication_and_ring_inner),
        cmocka_unit_test(test_fp32),
        cmocka_unit_test(test_refuses_16_bit_on_cpu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
