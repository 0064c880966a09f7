/* test_reference.c: properties of the dense reference (usp_ref_forward,
 * usp_ref_backward) that hold whatever the implementation:
 *   - with a causal mask the first query sees only the first key: O = V[0];
 *   - adding one vector w to every key moves each query's scores by the same
 *     constant scale*q.w: O does not change, LSE moves by that constant;
 *   - K/V heads shared by a group of query heads (GQA, MQA) act as if they
 *     were repeated for every query head;
 *   - the backward is the derivative of the forward: central differences of
 *     loss = sum(O * dO) match dQ, dK, dV;
 *   - problems it cannot run are refused with the reason. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "usp/attention.h"
#include "test_random.h"

/* O = V[0] for the first causal query: the softmax of one score is exactly
 * 1, so only the final rounding of O = (1 * V[0]) / 1 may remain. */
static const double FIRST_ROW_TOL = 1e-15;
/* LSE of the first causal query is its one score; the kernel's product and
 * the loop below sum D terms in different orders. */
static const double SCORE_TOL = 1e-14;
/* Shifted keys: the scores are computed from different numbers (k + w), so
 * they agree to rounding of D-term products of larger terms, ~1e-15. */
static const double KEY_SHIFT_TOL = 1e-12;
/* Central differences with step 1e-5 in fp64: truncation ~ step^2 = 1e-10,
 * cancellation ~ 1e-16 * |loss| / step ~ 1e-10; 1e-6 relative to the
 * largest gradient leaves room and still catches any wrong term. */
static const double FD_STEP = 1e-5;
static const double FD_TOL = 1e-6;

/* ---- problems --------------------------------------------------------------- */

typedef struct {
    usp_config cfg;
    long q_elems, kv_elems, stat_elems;
    double *q, *k, *v, *dout, *o, *lse;
} problem;

static double *zeros(long n) {
    double *x = calloc((size_t)n, sizeof *x);
    assert_non_null(x);
    return x;
}

static usp_config small_config(int batch, int seq, int heads, int kv_heads, int head_dim,
                               int causal) {
    usp_config c = usp_config_default();
    c.batch = batch;
    c.seq = seq;
    c.heads = heads;
    c.kv_heads = kv_heads;
    c.head_dim = head_dim;
    c.causal = causal;
    c.scale = 0;
    return c;
}

static problem problem_make(usp_config cfg, uint64_t seed) {
    problem p = {.cfg = cfg};
    p.q_elems = (long)cfg.batch * cfg.seq * cfg.heads * cfg.head_dim;
    p.kv_elems = (long)cfg.batch * cfg.seq * cfg.kv_heads * cfg.head_dim;
    p.stat_elems = (long)cfg.batch * cfg.heads * cfg.seq;
    rng_seed(seed);
    p.q = random_tensor(p.q_elems);
    p.k = random_tensor(p.kv_elems);
    p.v = random_tensor(p.kv_elems);
    p.dout = random_tensor(p.q_elems);
    p.o = zeros(p.q_elems);
    p.lse = zeros(p.stat_elems);
    return p;
}

static void problem_free(problem *p) {
    free(p->q), free(p->k), free(p->v), free(p->dout), free(p->o), free(p->lse);
}

static void forward(problem *p) {
    assert_int_equal(usp_ref_forward(&p->cfg, p->q, p->k, p->v, p->o, p->lse), USP_OK);
}

/* Offset of (b, row, head) in a (B, L, heads, D) tensor. */
static long at(const usp_config *c, int b, int row, int heads, int h) {
    return (((long)b * c->seq + row) * heads + h) * c->head_dim;
}

static long stat_at(const usp_config *c, int b, int h, int row) {
    return ((long)b * c->heads + h) * c->seq + row;
}

static double max_abs(const double *x, long n) {
    double m = 0;
    for (long i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m;
}

/* ---- causal first row ------------------------------------------------------ */

static void test_causal_first_query_returns_first_value(void **state) {
    (void)state;
    usp_config c = small_config(2, 37, 4, 2, 16, 1);
    problem p = problem_make(c, 1);
    forward(&p);
    double scale = usp_scale(&c);
    for (int b = 0; b < c.batch; b++)
        for (int h = 0; h < c.heads; h++) {
            int g = h / (c.heads / c.kv_heads);
            const double *o = p.o + at(&c, b, 0, c.heads, h), *v = p.v + at(&c, b, 0, c.kv_heads, g);
            for (int e = 0; e < c.head_dim; e++) assert_true(fabs(o[e] - v[e]) <= FIRST_ROW_TOL);
            double score = 0;
            const double *q = p.q + at(&c, b, 0, c.heads, h), *k = p.k + at(&c, b, 0, c.kv_heads, g);
            for (int e = 0; e < c.head_dim; e++) score += scale * q[e] * k[e];
            assert_true(fabs(p.lse[stat_at(&c, b, h, 0)] - score) <= SCORE_TOL);
        }
    problem_free(&p);
}

/* ---- shifting every key by w ----------------------------------------------- */

static void check_key_shift(int causal) {
    usp_config c = small_config(1, 50, 4, 1, 8, causal);
    problem p = problem_make(c, 2), shifted = problem_make(c, 2);
    double w[8];
    for (int e = 0; e < 8; e++) w[e] = 0.75 * uniform();
    for (long x = 0; x < p.kv_elems; x++) shifted.k[x] = p.k[x] + w[x % c.head_dim];
    forward(&p);
    forward(&shifted);
    double scale = usp_scale(&c), o_err = 0, lse_err = 0;
    for (long x = 0; x < p.q_elems; x++) o_err = fmax(o_err, fabs(shifted.o[x] - p.o[x]));
    for (int h = 0; h < c.heads; h++)
        for (int i = 0; i < c.seq; i++) {
            const double *q = p.q + at(&c, 0, i, c.heads, h);
            double moved = 0;
            for (int e = 0; e < c.head_dim; e++) moved += scale * q[e] * w[e];
            long s = stat_at(&c, 0, h, i);
            lse_err = fmax(lse_err, fabs(shifted.lse[s] - (p.lse[s] + moved)));
        }
    assert_true(o_err <= KEY_SHIFT_TOL * max_abs(p.o, p.q_elems));
    assert_true(lse_err <= KEY_SHIFT_TOL * max_abs(p.lse, p.stat_elems));
    problem_free(&p), problem_free(&shifted);
}

static void test_shifting_all_keys_leaves_output(void **state) {
    (void)state;
    check_key_shift(0);
    check_key_shift(1);
}

/* ---- GQA = repeated K/V heads -------------------------------------------------- */

/* The same problem with every K/V head copied for each query head of its group. */
static problem repeat_kv_heads(const problem *p) {
    const usp_config *c = &p->cfg;
    problem r = problem_make(small_config(c->batch, c->seq, c->heads, c->heads, c->head_dim, c->causal), 9);
    memcpy(r.q, p->q, sizeof(double) * (size_t)p->q_elems);
    int group = c->heads / c->kv_heads;
    for (int b = 0; b < c->batch; b++)
        for (int j = 0; j < c->seq; j++)
            for (int h = 0; h < c->heads; h++) {
                long from = at(c, b, j, c->kv_heads, h / group), to = at(c, b, j, c->heads, h);
                memcpy(r.k + to, p->k + from, sizeof(double) * (size_t)c->head_dim);
                memcpy(r.v + to, p->v + from, sizeof(double) * (size_t)c->head_dim);
            }
    return r;
}

static void test_grouped_kv_heads_act_repeated(void **state) {
    (void)state;
    int kv_heads[] = {1, 2}; /* MQA, GQA */
    for (int x = 0; x < 2; x++) {
        problem p = problem_make(small_config(2, 33, 4, kv_heads[x], 8, 1), 3);
        problem r = repeat_kv_heads(&p);
        forward(&p);
        forward(&r);
        /* Same numbers through the same code path, head by head. */
        assert_memory_equal(p.o, r.o, sizeof(double) * (size_t)p.q_elems);
        assert_memory_equal(p.lse, r.lse, sizeof(double) * (size_t)p.stat_elems);
        problem_free(&p), problem_free(&r);
    }
}

/* ---- backward against central differences ------------------------------------ */

/* loss = sum(O * dO), summed in long double so that its own rounding stays
 * below the differences it is used for. */
static double loss(problem *p) {
    forward(p);
    long double sum = 0;
    for (long x = 0; x < p->q_elems; x++) sum += (long double)p->o[x] * p->dout[x];
    return (double)sum;
}

/* Largest |analytic - numeric| over the entries of one input tensor, relative
 * to its largest analytic gradient. */
static double fd_error(problem *p, double *param, long n, const double *grad) {
    double err = 0;
    for (long x = 0; x < n; x++) {
        double keep = param[x];
        param[x] = keep + FD_STEP;
        double up = loss(p);
        param[x] = keep - FD_STEP;
        double down = loss(p);
        param[x] = keep;
        err = fmax(err, fabs((up - down) / (2 * FD_STEP) - grad[x]));
    }
    double scale = max_abs(grad, n);
    return scale > 0 ? err / scale : err;
}

static void check_gradients(usp_config c, uint64_t seed) {
    problem p = problem_make(c, seed);
    double *dq = zeros(p.q_elems), *dk = zeros(p.kv_elems), *dv = zeros(p.kv_elems);
    forward(&p);
    assert_int_equal(usp_ref_backward(&p.cfg, p.q, p.k, p.v, p.o, p.lse, p.dout, dq, dk, dv), USP_OK);
    double err_q = fd_error(&p, p.q, p.q_elems, dq);
    double err_k = fd_error(&p, p.k, p.kv_elems, dk);
    double err_v = fd_error(&p, p.v, p.kv_elems, dv);
    if (!(err_q <= FD_TOL && err_k <= FD_TOL && err_v <= FD_TOL))
        fail_msg("B=%d L=%d H=%d Hkv=%d D=%d causal=%d: dQ %.3g dK %.3g dV %.3g > %.1g", c.batch,
                 c.seq, c.heads, c.kv_heads, c.head_dim, c.causal, err_q, err_k, err_v, FD_TOL);
    free(dq), free(dk), free(dv);
    problem_free(&p);
}

static void test_backward_is_derivative_of_forward(void **state) {
    (void)state;
    for (int causal = 0; causal <= 1; causal++) {
        check_gradients(small_config(1, 6, 2, 2, 4, causal), 10 + causal);
        check_gradients(small_config(2, 5, 2, 1, 3, causal), 20 + causal);
        check_gradients(small_config(1, 1, 2, 1, 1, causal), 30 + causal);
        check_gradients(small_config(2, 4, 2, 2, 2, causal), 40 + causal);
    }
}

/* ---- backward accumulates nothing from before ------------------------------------ */

/* The backward overwrites dq, dk, dv (whatever they held). */
static void test_backward_overwrites_gradients(void **state) {
    (void)state;
    problem p = problem_make(small_config(1, 20, 2, 1, 8, 1), 5);
    double *clean[3] = {zeros(p.q_elems), zeros(p.kv_elems), zeros(p.kv_elems)};
    double *dirty[3] = {random_tensor(p.q_elems), random_tensor(p.kv_elems), random_tensor(p.kv_elems)};
    long n[3] = {p.q_elems, p.kv_elems, p.kv_elems};
    forward(&p);
    assert_int_equal(usp_ref_backward(&p.cfg, p.q, p.k, p.v, p.o, p.lse, p.dout, clean[0], clean[1], clean[2]), USP_OK);
    assert_int_equal(usp_ref_backward(&p.cfg, p.q, p.k, p.v, p.o, p.lse, p.dout, dirty[0], dirty[1], dirty[2]), USP_OK);
    for (int x = 0; x < 3; x++) {
        assert_memory_equal(clean[x], dirty[x], sizeof(double) * (size_t)n[x]);
        free(clean[x]), free(dirty[x]);
    }
    problem_free(&p);
}

/* ---- refusals --------------------------------------------------------------------- */

static void check_refused(usp_config c, const char *reason) {
    double x[4] = {0};
    assert_int_equal(usp_ref_forward(&c, x, x, x, x, x), USP_EINVAL);
    assert_string_equal(usp_error(), reason);
    assert_int_equal(usp_ref_backward(&c, x, x, x, x, x, x, x, x, x), USP_EINVAL);
    assert_string_equal(usp_error(), reason);
}

static void test_refuses_what_it_cannot_run(void **state) {
    (void)state;
    check_refused(small_config(1, 8, 6, 4, 8, 0),
                  "heads 6 is not divisible by kv_heads 4 (GQA needs H % Hkv == 0)");
    check_refused(small_config(1, 8, 2, 2, 257, 0), "head_dim 257 is outside 1..256");
    check_refused(small_config(1, 8, 2, 2, 0, 0), "head_dim 0 is outside 1..256");
    check_refused(small_config(1, 0, 2, 2, 8, 0), "seq 0 must be >= 1");
    check_refused(small_config(0, 8, 2, 2, 8, 0), "batch 0 must be >= 1");
    check_refused(small_config(1, 8, 0, 1, 8, 0), "heads 0 must be >= 1");
    check_refused(small_config(1, 8, 2, 0, 8, 0), "kv_heads 0 must be >= 1");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_causal_first_query_returns_first_value),
        cmocka_unit_test(test_shifting_all_keys_leaves_output),
        cmocka_unit_test(test_grouped_kv_heads_act_repeated),
        cmocka_unit_test(test_backward_is_derivative_of_forward),
        cmocka_unit_test(test_backward_overwrites_gradients),
        cmocka_unit_test(test_refuses_what_it_cannot_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
