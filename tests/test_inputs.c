/* test_inputs.c: generated inputs, rounding to the data types, user .npy inputs. */
#define _XOPEN_SOURCE 700
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "usp/inputs.h"
#include "usp/npy.h"
#include "test_util.h"

/* Sample size for the moment checks; with n = 2^18 draws the standard error
 * of the mean is 1/sqrt(n) ~ 0.002 and of the variance sqrt(2/n) ~ 0.003, so
 * the tolerances below are about 5 standard errors. */
enum { MOMENT_SAMPLES = 1 << 18 };
static const double MEAN_TOLERANCE = 0.01;
static const double VARIANCE_TOLERANCE = 0.015;
/* P(|x| < 1) = 0.6827 for a standard normal; binomial standard error 0.0009. */
static const double WITHIN_ONE_SIGMA = 0.682689492137;
static const double WITHIN_ONE_SIGMA_TOLERANCE = 0.005;

static int make_tmp_dir(void **state) {
    (void)state;
    return tmp_dir_make("usp_test_inputs");
}

/* A fresh subdirectory of the temporary directory for one test's files. */
static const char *fresh_dir(const char *name) {
    const char *path = tmp_path(name);
    assert_int_equal(mkdir(path, 0700), 0);
    return path;
}

static usp_config small_config(usp_dtype dtype) {
    usp_config c = usp_config_default();
    c.batch = 2, c.seq = 16, c.heads = 4, c.kv_heads = 2, c.head_dim = 64;
    c.dtype = dtype;
    c.seed = 77;
    return c;
}

static void write_tensor(const char *dir, const char *file, const long shape[4],
                         const double *x) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if (usp_npy_write(path, 4, shape, x, 0) != USP_OK) fail_msg("%s", usp_error());
}

/* ---------- generated values ---------- */

static void values_are_deterministic_and_distinct(void **state) {
    (void)state;
    double a = usp_input_value(1234, USP_TENSOR_Q, 99);
    assert_true(a == usp_input_value(1234, USP_TENSOR_Q, 99));
    assert_true(a != usp_input_value(1235, USP_TENSOR_Q, 99));
    assert_true(a != usp_input_value(1234, USP_TENSOR_K, 99));
    assert_true(a != usp_input_value(1234, USP_TENSOR_Q, 100));
    assert_true(isfinite(a));
}

static void fill_matches_value(void **state) {
    (void)state;
    double x[1000];
    usp_input_fill(5, USP_TENSOR_V, x, 1000);
    for (uint64_t i = 0; i < 1000; i++) assert_true(x[i] == usp_input_value(5, USP_TENSOR_V, i));
}

static void values_look_standard_normal(void **state) {
    (void)state;
    double *x = malloc(MOMENT_SAMPLES * sizeof *x);
    assert_non_null(x);
    usp_input_fill(42, USP_TENSOR_DO, x, MOMENT_SAMPLES);
    double sum = 0, sum_sq = 0, lag_product = 0;
    long within = 0;
    for (long i = 0; i < MOMENT_SAMPLES; i++) {
        sum += x[i];
        sum_sq += x[i] * x[i];
        within += fabs(x[i]) < 1;
        if (i) lag_product += x[i] * x[i - 1];
    }
    double mean = sum / MOMENT_SAMPLES, variance = sum_sq / MOMENT_SAMPLES - mean * mean;
    assert_true(fabs(mean) < MEAN_TOLERANCE);
    assert_true(fabs(variance - 1) < VARIANCE_TOLERANCE);
    assert_true(fabs((double)within / MOMENT_SAMPLES - WITHIN_ONE_SIGMA) < WITHIN_ONE_SIGMA_TOLERANCE);
    /* neighbouring indices are independent draws: lag-1 correlation ~ 0 */
    assert_true(fabs(lag_product / MOMENT_SAMPLES) < MEAN_TOLERANCE);
    free(x);
}

/* ---------- rounding ---------- */

static double rounded(usp_dtype dtype, double x) {
    usp_round_to_dtype(dtype, &x, 1);
    return x;
}

static void rounds_bf16_to_nearest_even(void **state) {
    (void)state;
    assert_true(rounded(USP_BF16, 1.0 + 0x1p-8) == 1.0);                     /* tie, even below */
    assert_true(rounded(USP_BF16, 1.0 + 3 * 0x1p-8) == 1.0 + 0x1p-6);        /* tie, even above */
    assert_true(rounded(USP_BF16, 1.0 + 0x1p-8 + 0x1p-30) == 1.0 + 0x1p-7);  /* just above tie */
    assert_true(rounded(USP_BF16, 3.14159265358979) == 3.140625);
    assert_true(rounded(USP_BF16, -1000.0) == -1000.0);
    assert_true(rounded(USP_BF16, 3.3895313892515355e38) == 3.3895313892515355e38); /* max */
    assert_true(isinf(rounded(USP_BF16, 3.4e38)));
    assert_true(rounded(USP_BF16, 0x1p-133) == 0x1p-133);                    /* min subnormal */
    assert_true(rounded(USP_BF16, 0x1p-134) == 0.0);                         /* tie to zero */
    assert_true(rounded(USP_BF16, 1e-30) != 0.0);
}

static void rounds_f16_to_nearest_even(void **state) {
    (void)state;
    assert_true(rounded(USP_F16, 0.1) == 0.0999755859375);
    assert_true(rounded(USP_F16, 65504.0) == 65504.0);
    assert_true(rounded(USP_F16, 65519.0) == 65504.0);
    assert_true(isinf(rounded(USP_F16, 65520.0)));
    assert_true(rounded(USP_F16, -65520.0) == -INFINITY);
    assert_true(rounded(USP_F16, 0x1p-25) == 0.0);                 /* tie between 0 and 2^-24 */
    assert_true(rounded(USP_F16, 1.5 * 0x1p-25) == 0x1p-24);
    assert_true(rounded(USP_F16, 2.5 * 0x1p-24) == 2 * 0x1p-24);   /* subnormal tie, even */
    assert_true(rounded(USP_F16, 3.5 * 0x1p-24) == 4 * 0x1p-24);
    assert_true(rounded(USP_F16, 1e-30) == 0.0);
    assert_true(rounded(USP_F16, 2049.0) == 2048.0);
    assert_true(rounded(USP_F16, 2051.0) == 2052.0);
    assert_true(signbit(rounded(USP_F16, -0.0)));
    assert_true(signbit(rounded(USP_F16, -1e-30)));
    assert_true(isnan(rounded(USP_F16, NAN)));
    assert_true(rounded(USP_F16, INFINITY) == INFINITY);
}

static void rounds_f32_as_a_float_cast_does(void **state) {
    (void)state;
    const double specials[] = {1e-40, 1.4e-45, 7e-46, 3.4028235e38, 3.4028236e38, 1.0 / 3};
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++)
        assert_true(rounded(USP_F32, specials[i]) == (double)(float)specials[i]);
    for (uint64_t i = 0; i < 10000; i++) {
        double x = usp_input_value(9, USP_TENSOR_Q, i) * pow(2.0, (double)(i % 300) - 150);
        assert_true(rounded(USP_F32, x) == (double)(float)x);
    }
    double x = 1.0 + 0x1p-40;
    assert_true(rounded(USP_F64, x) == x);
}

/* ---------- usp_inputs_make ---------- */

static void makes_generated_inputs_rounded_to_dtype(void **state) {
    (void)state;
    usp_config c = small_config(USP_BF16);
    usp_inputs in;
    assert_int_equal(usp_inputs_make(&c, NULL, &in), USP_OK);
    assert_int_equal(in.q_elems, 2 * 16 * 4 * 64);
    assert_int_equal(in.kv_elems, 2 * 16 * 2 * 64);
    for (long i = 0; i < in.kv_elems; i++)
        assert_true(in.k[i] == rounded(USP_BF16, usp_input_value(77, USP_TENSOR_K, (uint64_t)i)));
    for (long i = 0; i < in.q_elems; i++) {
        assert_true(in.q[i] == rounded(USP_BF16, in.q[i]));
        assert_true(in.dout[i] == rounded(USP_BF16, usp_input_value(77, USP_TENSOR_DO, (uint64_t)i)));
    }
    usp_inputs_free(&in);
    assert_null(in.q);
    assert_int_equal(in.q_elems, 0);
}

static void reads_user_inputs_and_generates_missing_dout(void **state) {
    (void)state;
    usp_config c = small_config(USP_F64);
    const long q_shape[4] = {2, 16, 4, 64}, kv_shape[4] = {2, 16, 2, 64};
    double *q = malloc(8192 * sizeof *q), *kv = malloc(4096 * sizeof *kv);
    for (long i = 0; i < 8192; i++) q[i] = 0.001 * (double)i;
    for (long i = 0; i < 4096; i++) kv[i] = -0.5 * (double)i;
    const char *dir = fresh_dir("user");
    write_tensor(dir, "q.npy", q_shape, q);
    write_tensor(dir, "k.npy", kv_shape, kv);
    write_tensor(dir, "v.npy", kv_shape, kv);
    usp_inputs in;
    if (usp_inputs_make(&c, dir, &in) != USP_OK) fail_msg("%s", usp_error());
    assert_memory_equal(in.q, q, 8192 * sizeof *q);
    assert_memory_equal(in.v, kv, 4096 * sizeof *kv);
    assert_true(in.dout[5] == usp_input_value(77, USP_TENSOR_DO, 5));
    usp_inputs_free(&in);
    write_tensor(dir, "do.npy", q_shape, q);
    assert_int_equal(usp_inputs_make(&c, dir, &in), USP_OK);
    assert_memory_equal(in.dout, q, 8192 * sizeof *q);
    usp_inputs_free(&in);
    free(q);
    free(kv);
}

static void refuses_non_finite_user_inputs(void **state) {
    (void)state;
    usp_config c = small_config(USP_F32);
    const long q_shape[4] = {2, 16, 4, 64}, kv_shape[4] = {2, 16, 2, 64};
    double *x = calloc(8192, sizeof *x);
    const char *dir = fresh_dir("nan");
    write_tensor(dir, "q.npy", q_shape, x);
    write_tensor(dir, "v.npy", kv_shape, x);
    x[1234] = NAN;
    write_tensor(dir, "k.npy", kv_shape, x);
    usp_inputs in;
    assert_int_equal(usp_inputs_make(&c, dir, &in), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "k.npy: element 1234 (0, 9, 1, 18) is nan"));
    assert_null(in.q);
    x[1234] = 0;
    x[7] = -INFINITY;
    write_tensor(dir, "k.npy", kv_shape, x);
    write_tensor(dir, "do.npy", q_shape, x);
    x[7] = 0;
    write_tensor(dir, "k.npy", kv_shape, x);
    assert_int_equal(usp_inputs_make(&c, dir, &in), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "do.npy: element 7 (0, 0, 0, 7) is -inf"));
    free(x);
}

static void refuses_values_overflowing_f16(void **state) {
    (void)state;
    usp_config c = small_config(USP_F16);
    const long q_shape[4] = {2, 16, 4, 64}, kv_shape[4] = {2, 16, 2, 64};
    double *x = calloc(8192, sizeof *x);
    const char *dir = fresh_dir("f16");
    write_tensor(dir, "k.npy", kv_shape, x);
    write_tensor(dir, "v.npy", kv_shape, x);
    x[3] = 70000.0;
    write_tensor(dir, "q.npy", q_shape, x);
    usp_inputs in;
    assert_int_equal(usp_inputs_make(&c, dir, &in), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "q.npy: element 3 (0, 0, 0, 3) = 70000 overflows"));
    c.dtype = USP_BF16;
    assert_int_equal(usp_inputs_make(&c, dir, &in), USP_OK);
    usp_inputs_free(&in);
    free(x);
}

static void refuses_wrong_shape_and_missing_file(void **state) {
    (void)state;
    usp_config c = small_config(USP_F64);
    const long q_shape[4] = {2, 16, 4, 64}, wrong_kv[4] = {2, 16, 4, 64};
    double *x = calloc(8192, sizeof *x);
    const char *dir = fresh_dir("shape");
    usp_inputs in;
    assert_int_equal(usp_inputs_make(&c, dir, &in), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "q.npy: No such file or directory"));
    write_tensor(dir, "q.npy", q_shape, x);
    write_tensor(dir, "k.npy", wrong_kv, x);
    assert_int_equal(usp_inputs_make(&c, dir, &in), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "k.npy: shape (2, 16, 4, 64) but (2, 16, 2, 64) expected"));
    free(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(values_are_deterministic_and_distinct),
        cmocka_unit_test(fill_matches_value),
        cmocka_unit_test(values_look_standard_normal),
        cmocka_unit_test(rounds_bf16_to_nearest_even),
        cmocka_unit_test(rounds_f16_to_nearest_even),
        cmocka_unit_test(rounds_f32_as_a_float_cast_does),
        cmocka_unit_test(makes_generated_inputs_rounded_to_dtype),
        cmocka_unit_test(reads_user_inputs_and_generates_missing_dout),
        cmocka_unit_test(refuses_non_finite_user_inputs),
        cmocka_unit_test(refuses_values_overflowing_f16),
        cmocka_unit_test(refuses_wrong_shape_and_missing_file),
    };
    return cmocka_run_group_tests(tests, make_tmp_dir, remove_tmp_dir);
}
