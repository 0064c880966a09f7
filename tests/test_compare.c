/* test_compare.c: the pass check (usp/compare.h) reports the norm-wise and
 * the element-wise error, and fails on either: one wrong element that the
 * norm-wise error hides is caught. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include "usp/compare.h"
#include "usp/inputs.h"

enum { N = 1 << 20 }; /* a tensor of 1M elements: 4 x 4096 x 64 */

static double *values(void) {
    double *x = malloc(N * sizeof *x);
    assert_non_null(x);
    usp_input_fill(7, USP_TENSOR_Q, x, N);
    return x;
}

/* One element off by 1e-10 of the tensor's largest value: the norm-wise error
 * is below its fp64 tolerance (1e-12), the element-wise one is 25x over
 * its tolerance (4e-12). */
static void one_wrong_element_hides_in_the_norm(void **state) {
    (void)state;
    double *ref = values(), *x = malloc(N * sizeof *x);
    assert_non_null(x);
    double ref_max = 0;
    for (long i = 0; i < N; i++) {
        x[i] = ref[i];
        if (fabs(ref[i]) > ref_max) ref_max = fabs(ref[i]);
    }
    x[N / 3] += 1e-10 * ref_max;
    usp_error_stats e = usp_compare2(x, ref, N, USP_TOL_F64, USP_ELEM_TOL_F64);
    assert_true(e.rel < USP_TOL_F64);                        /* hidden here */
    assert_true(fabs(e.elem_rel - 1e-10) < 1e-13);           /* and seen here */
    assert_false(e.pass);
    /* the 4-argument form judges the element-wise error too */
    assert_false(usp_compare(x, ref, N, USP_TOL_F64).pass);
    x[N / 3] = ref[N / 3];
    e = usp_compare2(x, ref, N, USP_TOL_F64, USP_ELEM_TOL_F64);
    assert_true(e.pass);
    assert_true(e.elem_rel == 0 && e.rel == 0);
    free(x);
    free(ref);
}

/* Rounding spread over every element (fp32 here) passes both checks at the
 * fp32 tolerances, and the two errors are of one size, as the tolerance
 * factor assumes. */
static void spread_rounding_passes_both(void **state) {
    (void)state;
    double *ref = values(), *x = malloc(N * sizeof *x);
    assert_non_null(x);
    for (long i = 0; i < N; i++) x[i] = (float)ref[i];
    usp_error_stats e = usp_compare2(x, ref, N, USP_TOL_F32, USP_ELEM_TOL_F32);
    assert_true(e.pass);
    assert_true(e.elem_rel < USP_ELEM_TOL_FACTOR * e.rel);
    assert_true(e.rel < USP_ELEM_TOL_FACTOR * e.elem_rel);
    free(x);
    free(ref);
}

/* -inf where the reference has -inf (a row that sees no key) is right; NaN
 * anywhere fails; an all-zero reference gives absolute errors. */
static void infinities_nans_and_zeros(void **state) {
    (void)state;
    double ref[4] = {-INFINITY, 1, 2, 3}, x[4] = {-INFINITY, 1, 2, 3};
    assert_true(usp_compare(x, ref, 4, USP_TOL_F64).pass);
    x[0] = 0;
    assert_int_equal(usp_compare(x, ref, 4, USP_TOL_F64).inf_mismatch, 1);
    x[0] = -INFINITY;
    x[1] = NAN;
    usp_error_stats e = usp_compare(x, ref, 4, USP_TOL_F64);
    assert_int_equal(e.nan_count, 1);
    assert_false(e.pass);
    double zero[2] = {0, 0}, small[2] = {0, 1e-13};
    e = usp_compare2(small, zero, 2, USP_TOL_F64, USP_ELEM_TOL_F64);
    assert_true(e.elem_rel == 1e-13 && e.pass);
}

static void tolerances_are_named_and_ordered(void **state) {
    (void)state;
    for (int bwd = 0; bwd < 2; bwd++)
        for (int d = 0; d < 4; d++)
            assert_true(usp_elem_tolerance((usp_dtype)d, bwd) ==
                        USP_ELEM_TOL_FACTOR * usp_tolerance((usp_dtype)d, bwd));
    assert_true(usp_elem_tolerance(USP_F64, 0) == USP_ELEM_TOL_F64);
    assert_true(usp_elem_tolerance(USP_BF16, 0) == USP_ELEM_TOL_BF16);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_wrong_element_hides_in_the_norm),
        cmocka_unit_test(spread_rounding_passes_both),
        cmocka_unit_test(infinities_nans_and_zeros),
        cmocka_unit_test(tolerances_are_named_and_ordered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
