/* test_attention.c: the CPU block kernels against plain O(L^2) loops.
 *
 * The loops below compute attention the textbook way, in long double, one
 * (query, key) pair at a time. The kernels (tiles, online softmax, cblas or
 * the built-in product, OpenMP) must agree with them on every mask, slice,
 * head grouping and head dimension, leave the rows outside their block
 * alone, give -inf / exactly 0 for rows that see no key, merge exactly, and
 * repeat themselves bit for bit. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "usp/attention.h"
#include "test_random.h"

/* fp64 kernels against the long-double loops, relative to the largest
 * element of each tensor. Rounding in D <= 256-term products, lkv <= 1000-
 * term sums and a 1-ulp exp stays near 1e-14 (at most 3.4e-14 over these
 * cases; the largest is printed); 1e-12 leaves margin without hiding a
 * wrong term, which shows up at 1e-3 or more. */
static const double FP64_TOL = 1e-12;
/* Merging two key halves against one pass over all keys: both are fp64
 * kernels; they differ by the merge's exp/log1p and the summation order. */
static const double MERGE_TOL = 1e-13;
/* fp32 kernels against fp64 kernels on the same (fp32-rounded) inputs, for
 * scores of order 1: float rounding (6e-8) grown by D-term products and
 * lkv-term sums stays below 1e-6 on these cases (the largest is printed).
 * Scores of size |s| carry absolute errors |s| * 6e-8 that exp() turns into
 * relative errors of the same size, so the case with scores in the hundreds
 * (its own scale) is compared in fp64 only. */
static const double FP32_TOL = 1e-5;
/* What the kernels must leave alone: rows outside the block keep it. */
static const double UNTOUCHED = 0.5;

/* ---- problems ------------------------------------------------------------ */

typedef struct {
    int batch, hq, hkv, d;
    long lq, lkv;
    int q_begin, q_len, kv_begin, kv_len, causal, diag;
    double scale; /* 0: 1/sqrt(d) */
} attn_case;

/* Head dims 1..256, MHA / GQA / MQA, no mask and causal with diag 0, -1,
 * +3 and far below (rows that see nothing), slices that start inside the
 * buffers, and query counts that are not multiples of any tile. */
static const attn_case CASES[] = {
    {1, 1, 1, 1, 5, 5, 0, 5, 0, 5, 0, 0, 0},
    {2, 2, 1, 3, 17, 13, 0, 17, 0, 13, 1, 0, 0},
    {1, 4, 2, 64, 40, 50, 3, 30, 5, 40, 1, -1, 0},
    {1, 4, 1, 128, 33, 70, 0, 33, 10, 60, 1, 3, 0},
    {2, 3, 3, 256, 20, 20, 2, 15, 1, 18, 0, 0, 0},
    {1, 2, 2, 64, 1, 300, 0, 1, 0, 300, 0, 0, 0},
    {1, 2, 1, 16, 1000, 260, 0, 1000, 0, 260, 1, 0, 0},
    {1, 1, 1, 64, 1000, 700, 0, 1000, 0, 700, 1, -200, 0},
    {1, 2, 2, 64, 300, 300, 0, 300, 0, 300, 1, 0, 0},
    {1, 8, 2, 128, 129, 129, 0, 129, 0, 129, 0, 0, 0},
    {1, 2, 1, 32, 70, 90, 0, 70, 0, 90, 1, 5, 40.0}, /* scores down to -700: exp underflow */
    {1, 2, 2, 8, 12, 12, 0, 12, 0, 12, 1, -20, 0},   /* no row sees a key */
};
enum { NCASES = sizeof CASES / sizeof CASES[0] };

typedef struct {
    usp_attn_shape s;
    usp_block blk;
    usp_row_mask mask; /* NULL arrays: the block's causal/diag */
    long q_elems, kv_elems, stat_elems;
    double *q, *k, *v, *dout;
} problem;

static double *filled(long n, double value) {
    double *x = malloc(sizeof *x * (size_t)n);
    assert_non_null(x);
    for (long i = 0; i < n; i++) x[i] = value;
    return x;
}

static problem problem_make(const attn_case *c, uint64_t seed) {
    problem p;
    memset(&p, 0, sizeof p);
    p.s = (usp_attn_shape){.batch = c->batch, .hq = c->hq, .hkv = c->hkv, .d = c->d,
                           .lq = c->lq, .lkv = c->lkv,
                           .scale = c->scale > 0 ? c->scale : 1.0 / sqrt((double)c->d)};
    p.blk = (usp_block){.q_begin = c->q_begin, .q_len = c->q_len, .kv_begin = c->kv_begin,
                        .kv_len = c->kv_len, .causal = c->causal, .diag = c->diag};
    p.q_elems = (long)c->batch * c->lq * c->hq * c->d;
    p.kv_elems = (long)c->batch * c->lkv * c->hkv * c->d;
    p.stat_elems = (long)c->batch * c->hq * c->lq;
    rng_seed(seed);
    p.q = random_tensor(p.q_elems);
    p.k = random_tensor(p.kv_elems);
    p.v = random_tensor(p.kv_elems);
    p.dout = random_tensor(p.q_elems);
    return p;
}

static void problem_free(problem *p) {
    free(p->q);
    free(p->k);
    free(p->v);
    free(p->dout);
}

static long tok(const problem *p, int b, long row, int heads, int h, long rows) {
    return ((b * rows + row) * heads + h) * (long)p->s.d;
}
static long stat(const problem *p, int b, int h, long row) {
    return ((long)b * p->s.hq + h) * p->s.lq + row;
}
/* Written out from the definitions of usp/attention.h and usp/rowmask.h,
 * not through usp_row_keys: [lo, hi) clipped to the block's keys, or causal. */
static int visible(const problem *p, int b, long i, long j) {
    const usp_block *blk = &p->blk;
    if (p->mask.lo) {
        long at = (long)b * blk->q_len + i;
        return j >= p->mask.lo[at] && j < p->mask.hi[at] && j >= 0 && j < blk->kv_len;
    }
    return !blk->causal || j <= i + blk->diag;
}

/* ---- the textbook loops ---------------------------------------------------- */

static long double dot_ld(const double *x, const double *y, int d) {
    long double sum = 0;
    for (int e = 0; e < d; e++) sum += (long double)x[e] * y[e];
    return sum;
}

/* Score of local query i (head h) and local key j. */
static long double naive_score(const problem *p, int b, int h, long i, long j) {
    int g = h / (p->s.hq / p->s.hkv);
    const double *qi = p->q + tok(p, b, p->blk.q_begin + i, p->s.hq, h, p->s.lq);
    const double *kj = p->k + tok(p, b, p->blk.kv_begin + j, p->s.hkv, g, p->s.lkv);
    return (long double)p->s.scale * dot_ld(qi, kj, p->s.d);
}

static void naive_forward_row(const problem *p, int b, int h, long i, double *o, double *lse) {
    int d = p->s.d, g = h / (p->s.hq / p->s.hkv);
    long double max = -INFINITY, sum = 0, acc[256] = {0};
    for (long j = 0; j < p->blk.kv_len; j++)
        if (visible(p, b, i, j)) max = fmaxl(max, naive_score(p, b, h, i, j));
    double *oi = o + tok(p, b, p->blk.q_begin + i, p->s.hq, h, p->s.lq);
    if (max == -INFINITY) {
        for (int e = 0; e < d; e++) oi[e] = 0;
        lse[stat(p, b, h, p->blk.q_begin + i)] = -INFINITY;
        return;
    }
    for (long j = 0; j < p->blk.kv_len; j++) {
        if (!visible(p, b, i, j)) continue;
        long double w = expl(naive_score(p, b, h, i, j) - max);
        const double *vj = p->v + tok(p, b, p->blk.kv_begin + j, p->s.hkv, g, p->s.lkv);
        sum += w;
        for (int e = 0; e < d; e++) acc[e] += w * vj[e];
    }
    for (int e = 0; e < d; e++) oi[e] = (double)(acc[e] / sum);
    lse[stat(p, b, h, p->blk.q_begin + i)] = (double)(max + logl(sum));
}

static void naive_forward(const problem *p, double *o, double *lse) {
    for (int b = 0; b < p->s.batch; b++)
        for (int h = 0; h < p->s.hq; h++)
            for (long i = 0; i < p->blk.q_len; i++) naive_forward_row(p, b, h, i, o, lse);
}

static void naive_delta(const problem *p, const double *o, double *delta) {
    for (int b = 0; b < p->s.batch; b++)
        for (int h = 0; h < p->s.hq; h++)
            for (long i = 0; i < p->s.lq; i++) {
                long at = tok(p, b, i, p->s.hq, h, p->s.lq);
                delta[stat(p, b, h, i)] = (double)dot_ld(o + at, p->dout + at, p->s.d);
            }
}

typedef struct {
    long double *dq, *dk, *dv;
} grads_ld;

/* One visible pair's contribution to the gradients. */
static void naive_backward_pair(const problem *p, int b, int h, long i, long j, long double prob,
                                double delta, grads_ld *g_acc) {
    int d = p->s.d, g = h / (p->s.hq / p->s.hkv);
    long qi = tok(p, b, p->blk.q_begin + i, p->s.hq, h, p->s.lq);
    long kj = tok(p, b, p->blk.kv_begin + j, p->s.hkv, g, p->s.lkv);
    long double dprob = dot_ld(p->dout + qi, p->v + kj, d);
    long double dscore = prob * (dprob - delta);
    for (int e = 0; e < d; e++) {
        g_acc->dv[kj + e] += prob * p->dout[qi + e];
        g_acc->dk[kj + e] += (long double)p->s.scale * dscore * p->q[qi + e];
        g_acc->dq[qi + e] += (long double)p->s.scale * dscore * p->k[kj + e];
    }
}

/* dq, dk, dv += the block's gradients, accumulated in long double. */
static void naive_backward(const problem *p, const double *lse, const double *delta, double *dq,
                           double *dk, double *dv) {
    grads_ld acc = {calloc((size_t)p->q_elems, sizeof(long double)),
                    calloc((size_t)p->kv_elems, sizeof(long double)),
                    calloc((size_t)p->kv_elems, sizeof(long double))};
    assert_true(acc.dq && acc.dk && acc.dv);
    for (int b = 0; b < p->s.batch; b++)
        for (int h = 0; h < p->s.hq; h++)
            for (long i = 0; i < p->blk.q_len; i++) {
                long st = stat(p, b, h, p->blk.q_begin + i);
                if (lse[st] == -INFINITY) continue;
                for (long j = 0; j < p->blk.kv_len; j++)
                    if (visible(p, b, i, j))
                        naive_backward_pair(p, b, h, i, j, expl(naive_score(p, b, h, i, j) - lse[st]),
                                            delta[st], &acc);
            }
    for (long x = 0; x < p->q_elems; x++) dq[x] = (double)(dq[x] + acc.dq[x]);
    for (long x = 0; x < p->kv_elems; x++) {
        dk[x] = (double)(dk[x] + acc.dk[x]);
        dv[x] = (double)(dv[x] + acc.dv[x]);
    }
    free(acc.dq);
    free(acc.dk);
    free(acc.dv);
}

/* ---- comparisons ------------------------------------------------------------ */

static double largest_error, largest_bwd_error;

/* max |got - want| / max |want|; -inf must meet -inf; no NaN anywhere. */
static double rel_err(const double *got, const double *want, long n) {
    double err = 0, scale = 0;
    for (long x = 0; x < n; x++) {
        if (isnan(got[x]) || isnan(want[x])) return INFINITY;
        if (isinf(want[x]) || isinf(got[x])) {
            if (got[x] != want[x]) return INFINITY;
            continue;
        }
        err = fmax(err, fabs(got[x] - want[x]));
        scale = fmax(scale, fabs(want[x]));
    }
    return scale > 0 ? err / scale : err;
}

static double rel_err_f32(const float *got, const double *want, long n) {
    double *wide = malloc(sizeof *wide * (size_t)(n ? n : 1));
    assert_non_null(wide);
    for (long x = 0; x < n; x++) wide[x] = got[x];
    double err = rel_err(wide, want, n);
    free(wide);
    return err;
}

static void assert_close(const double *got, const double *want, long n, double tol,
                         const char *what, int case_index) {
    double err = rel_err(got, want, n);
    if (err > largest_error && err < tol) largest_error = err;
    if (!(err <= tol)) fail_msg("case %d: %s relative error %.3g > %.1g", case_index, what, err, tol);
}

/* Rows of a (B, rows, heads, D) tensor outside [begin, begin+len) hold UNTOUCHED. */
static void assert_rows_untouched(const double *x, int batch, long rows, int heads, int d,
                                  long begin, long len, const char *what) {
    for (int b = 0; b < batch; b++)
        for (long i = 0; i < rows; i++) {
            if (i >= begin && i < begin + len) continue;
            for (long e = 0; e < (long)heads * d; e++)
                if (x[(b * rows + i) * heads * d + e] != UNTOUCHED)
                    fail_msg("%s: row %ld outside the block was written", what, i);
        }
}

/* ---- forward ------------------------------------------------------------- */

static void run_forward(const problem *p, double *o, double *lse) {
    usp_attn_fwd_masked_f64(&p->s, &p->blk, &p->mask, p->q, p->k, p->v, o, lse);
}

static void test_forward_matches_loops(void **state) {
    (void)state;
    largest_error = 0;
    for (int c = 0; c < NCASES; c++) {
        problem p = problem_make(&CASES[c], (uint64_t)c + 1);
        double *o = filled(p.q_elems, UNTOUCHED), *lse = filled(p.stat_elems, UNTOUCHED);
        double *o_ref = filled(p.q_elems, UNTOUCHED), *lse_ref = filled(p.stat_elems, UNTOUCHED);
        run_forward(&p, o, lse);
        naive_forward(&p, o_ref, lse_ref);
        assert_close(o, o_ref, p.q_elems, FP64_TOL, "O", c);
        assert_close(lse, lse_ref, p.stat_elems, FP64_TOL, "LSE", c);
        assert_rows_untouched(o, p.s.batch, p.s.lq, p.s.hq, p.s.d, p.blk.q_begin, p.blk.q_len, "O");
        assert_rows_untouched(lse, p.s.batch * p.s.hq, p.s.lq, 1, 1, p.blk.q_begin, p.blk.q_len, "LSE");
        free(o), free(lse), free(o_ref), free(lse_ref);
        problem_free(&p);
    }
    print_message("forward: largest relative error %.3g\n", largest_error);
}

/* ---- backward ------------------------------------------------------------ */

typedef struct {
    double *o, *lse, *delta, *dq, *dk, *dv;
} fwd_bwd;

/* Forward by the textbook loops (so that the backward is tested alone),
 * then delta by bwd_prep; gradients start at UNTOUCHED. */
static fwd_bwd fwd_bwd_make(const problem *p) {
    fwd_bwd r = {filled(p->q_elems, 0), filled(p->stat_elems, -INFINITY),
                 filled(p->stat_elems, 0), filled(p->q_elems, UNTOUCHED),
                 filled(p->kv_elems, UNTOUCHED), filled(p->kv_elems, UNTOUCHED)};
    naive_forward(p, r.o, r.lse);
    return r;
}

static void fwd_bwd_free(fwd_bwd *r) {
    free(r->o), free(r->lse), free(r->delta), free(r->dq), free(r->dk), free(r->dv);
}

static void test_bwd_prep_matches_loops(void **state) {
    (void)state;
    for (int c = 0; c < NCASES; c++) {
        problem p = problem_make(&CASES[c], (uint64_t)c + 100);
        double *delta = filled(p.stat_elems, 0), *delta_ref = filled(p.stat_elems, 0);
        /* any o works here: use q as o. */
        usp_attn_bwd_prep_f64(&p.s, p.q, p.dout, delta);
        naive_delta(&p, p.q, delta_ref);
        assert_close(delta, delta_ref, p.stat_elems, FP64_TOL, "delta", c);
        free(delta), free(delta_ref);
        problem_free(&p);
    }
}

static void test_backward_matches_loops(void **state) {
    (void)state;
    largest_error = 0;
    for (int c = 0; c < NCASES; c++) {
        problem p = problem_make(&CASES[c], (uint64_t)c + 200);
        fwd_bwd got = fwd_bwd_make(&p), want = fwd_bwd_make(&p);
        usp_attn_bwd_prep_f64(&p.s, got.o, p.dout, got.delta);
        naive_delta(&p, want.o, want.delta);
        usp_attn_bwd_f64(&p.s, &p.blk, p.q, p.k, p.v, p.dout, got.lse, got.delta, got.dq, got.dk,
                         got.dv);
        naive_backward(&p, want.lse, want.delta, want.dq, want.dk, want.dv);
        assert_close(got.dq, want.dq, p.q_elems, FP64_TOL, "dQ", c);
        assert_close(got.dk, want.dk, p.kv_elems, FP64_TOL, "dK", c);
        assert_close(got.dv, want.dv, p.kv_elems, FP64_TOL, "dV", c);
        assert_rows_untouched(got.dq, p.s.batch, p.s.lq, p.s.hq, p.s.d, p.blk.q_begin, p.blk.q_len, "dQ");
        assert_rows_untouched(got.dk, p.s.batch, p.s.lkv, p.s.hkv, p.s.d, p.blk.kv_begin, p.blk.kv_len, "dK");
        assert_rows_untouched(got.dv, p.s.batch, p.s.lkv, p.s.hkv, p.s.d, p.blk.kv_begin, p.blk.kv_len, "dV");
        fwd_bwd_free(&got), fwd_bwd_free(&want);
        problem_free(&p);
    }
    print_message("backward: largest relative error %.3g\n", largest_error);
}

/* ---- rows that see no key -------------------------------------------------- */

/* diag -1: the first query of the block sees nothing; diag far below: no
 * query does. Their LSE is -inf, O exactly 0, and the backward leaves their
 * dQ exactly as it was. */
static void check_masked_rows(const attn_case *c) {
    problem p = problem_make(c, 7);
    fwd_bwd r = {filled(p.q_elems, UNTOUCHED), filled(p.stat_elems, UNTOUCHED),
                 filled(p.stat_elems, 0), filled(p.q_elems, UNTOUCHED),
                 filled(p.kv_elems, UNTOUCHED), filled(p.kv_elems, UNTOUCHED)};
    run_forward(&p, r.o, r.lse);
    usp_attn_bwd_prep_f64(&p.s, r.o, p.dout, r.delta);
    usp_attn_bwd_f64(&p.s, &p.blk, p.q, p.k, p.v, p.dout, r.lse, r.delta, r.dq, r.dk, r.dv);
    for (int b = 0; b < p.s.batch; b++)
        for (int h = 0; h < p.s.hq; h++)
            for (long i = 0; i < p.blk.q_len; i++) {
                long row = p.blk.q_begin + i, at = tok(&p, b, row, p.s.hq, h, p.s.lq);
                int sees_none = i + p.blk.diag < 0;
                assert_false(isnan(r.lse[stat(&p, b, h, row)]));
                if (!sees_none) continue;
                assert_true(r.lse[stat(&p, b, h, row)] == -INFINITY);
                for (int e = 0; e < p.s.d; e++) {
                    assert_true(r.o[at + e] == 0.0);
                    assert_true(r.dq[at + e] == UNTOUCHED);
                }
            }
    for (long x = 0; x < p.kv_elems; x++) assert_false(isnan(r.dk[x]) || isnan(r.dv[x]));
    fwd_bwd_free(&r);
    problem_free(&p);
}

static void test_rows_that_see_no_key(void **state) {
    (void)state;
    const attn_case first_row_blind = {2, 4, 2, 16, 40, 40, 0, 40, 0, 40, 1, -1, 0};
    const attn_case all_blind = {1, 2, 1, 16, 300, 300, 0, 300, 0, 300, 1, -400, 0};
    const attn_case slice_blind = {1, 2, 2, 8, 50, 60, 10, 30, 20, 20, 1, -5, 0};
    check_masked_rows(&first_row_blind);
    check_masked_rows(&all_blind);
    check_masked_rows(&slice_blind);
}

/* ---- merge ------------------------------------------------------------------- */

/* Attention over keys [0, split) merged with attention over [split, kv_len)
 * equals attention over all keys. With a causal mask the second half is a
 * block starting `split` keys later, so its diagonal moves by -split. */
static void check_merge_halves(const attn_case *c, int split) {
    problem p = problem_make(c, 11);
    double *o_all = filled(p.q_elems, UNTOUCHED), *lse_all = filled(p.stat_elems, UNTOUCHED);
    double *o = filled(p.q_elems, UNTOUCHED), *lse = filled(p.stat_elems, UNTOUCHED);
    double *o_blk = filled(p.q_elems, UNTOUCHED), *lse_blk = filled(p.stat_elems, UNTOUCHED);
    run_forward(&p, o_all, lse_all);
    usp_block whole = p.blk;
    p.blk.kv_len = split;
    run_forward(&p, o, lse);
    p.blk.kv_begin = whole.kv_begin + split;
    p.blk.kv_len = whole.kv_len - split;
    p.blk.diag = whole.diag - split;
    run_forward(&p, o_blk, lse_blk);
    usp_attn_merge_f64(&p.s, whole.q_begin, whole.q_len, o_blk, lse_blk, o, lse);
    assert_close(o, o_all, p.q_elems, MERGE_TOL, "merged O", split);
    assert_close(lse, lse_all, p.stat_elems, MERGE_TOL, "merged LSE", split);
    free(o_all), free(lse_all), free(o), free(lse), free(o_blk), free(lse_blk);
    problem_free(&p);
}

static void test_merge_of_halves_is_whole(void **state) {
    (void)state;
    const attn_case plain = {2, 4, 2, 64, 90, 200, 5, 80, 0, 200, 0, 0, 0};
    const attn_case causal = {1, 2, 1, 32, 300, 300, 0, 300, 0, 300, 1, 0, 0};
    const attn_case shifted = {1, 3, 3, 16, 60, 80, 10, 50, 7, 70, 1, -4, 0};
    check_merge_halves(&plain, 77);
    check_merge_halves(&plain, 1);
    check_merge_halves(&causal, 150);
    check_merge_halves(&causal, 299);
    check_merge_halves(&shifted, 25);
}

/* Row by row: both -inf, own -inf, block -inf, both finite and too large
 * for exp() to hold (the overflow-safe form must not overflow). */
static void test_merge_infinite_and_huge_lse(void **state) {
    (void)state;
    usp_attn_shape s = {.batch = 1, .hq = 1, .hkv = 1, .d = 3, .lq = 6, .lkv = 6, .scale = 1};
    double o[18], o_blk[18];
    for (int x = 0; x < 18; x++) o[x] = 0.25 * x - 1, o_blk[x] = 0.5 - 0.125 * x;
    for (int e = 0; e < 3; e++) o[e] = 0, o_blk[e] = 0; /* row 0: no keys on either side */
    double lse[6] = {-INFINITY, -INFINITY, 2.0, 800.0, 1.0, UNTOUCHED};
    double lse_blk[6] = {-INFINITY, 3.0, -INFINITY, 790.0, 1.0, 7.0};
    double o_before[18];
    memcpy(o_before, o, sizeof o);
    usp_attn_merge_f64(&s, 0, 5, o_blk, lse_blk, o, lse);
    assert_true(lse[0] == -INFINITY);
    for (int e = 0; e < 3; e++) assert_true(o[e] == 0.0);
    assert_true(lse[1] == 3.0);
    for (int e = 0; e < 3; e++) assert_true(o[3 + e] == o_blk[3 + e]);
    assert_true(lse[2] == 2.0);
    for (int e = 0; e < 3; e++) assert_true(o[6 + e] == o_before[6 + e]);
    assert_true(isfinite(lse[3]));
    assert_true(fabs(lse[3] - (800.0 + log1p(exp(-10.0)))) <= MERGE_TOL * 800.0);
    double w = 1.0 / (1.0 + exp(-10.0));
    for (int e = 0; e < 3; e++)
        assert_true(fabs(o[9 + e] - (w * o_before[9 + e] + (1 - w) * o_blk[9 + e])) <= MERGE_TOL);
    assert_true(fabs(lse[4] - (1.0 + log(2.0))) <= MERGE_TOL);
    for (int e = 0; e < 3; e++)
        assert_true(fabs(o[12 + e] - 0.5 * (o_before[12 + e] + o_blk[12 + e])) <= MERGE_TOL);
    assert_true(lse[5] == UNTOUCHED); /* outside [row_begin, row_begin + rows) */
    for (int e = 0; e < 3; e++) assert_true(o[15 + e] == o_before[15 + e]);
    for (int x = 0; x < 18; x++) assert_false(isnan(o[x]));
}

/* ---- fp32 ---------------------------------------------------------------------- */

static float *to_float(const double *x, long n) {
    float *f = malloc(sizeof *f * (size_t)(n ? n : 1));
    assert_non_null(f);
    for (long i = 0; i < n; i++) f[i] = (float)x[i];
    return f;
}

/* Rounds the problem's inputs to float in place, so that the fp64 kernels
 * see exactly what the fp32 kernels see. */
static void round_inputs_to_float(problem *p) {
    double *t[4] = {p->q, p->k, p->v, p->dout};
    long n[4] = {p->q_elems, p->kv_elems, p->kv_elems, p->q_elems};
    for (int x = 0; x < 4; x++)
        for (long i = 0; i < n[x]; i++) t[x][i] = (float)t[x][i];
}

typedef struct {
    float *q, *k, *v, *dout, *o, *lse, *delta, *dq, *dk, *dv;
} f32_run;

static f32_run f32_run_make(const problem *p) {
    f32_run r = {to_float(p->q, p->q_elems), to_float(p->k, p->kv_elems),
                 to_float(p->v, p->kv_elems), to_float(p->dout, p->q_elems),
                 calloc((size_t)p->q_elems, sizeof(float)), calloc((size_t)p->stat_elems, sizeof(float)),
                 calloc((size_t)p->stat_elems, sizeof(float)), calloc((size_t)p->q_elems, sizeof(float)),
                 calloc((size_t)p->kv_elems, sizeof(float)), calloc((size_t)p->kv_elems, sizeof(float))};
    assert_true(r.o && r.lse && r.delta && r.dq && r.dk && r.dv);
    return r;
}

static void f32_run_free(f32_run *r) {
    free(r->q), free(r->k), free(r->v), free(r->dout), free(r->o);
    free(r->lse), free(r->delta), free(r->dq), free(r->dk), free(r->dv);
}

static void check_fp32(const problem *p, int c) {
    fwd_bwd w = {filled(p->q_elems, 0), filled(p->stat_elems, 0), filled(p->stat_elems, 0),
                 filled(p->q_elems, 0), filled(p->kv_elems, 0), filled(p->kv_elems, 0)};
    f32_run f = f32_run_make(p);
    run_forward(p, w.o, w.lse);
    usp_attn_bwd_prep_f64(&p->s, w.o, p->dout, w.delta);
    usp_attn_bwd_f64(&p->s, &p->blk, p->q, p->k, p->v, p->dout, w.lse, w.delta, w.dq, w.dk, w.dv);
    usp_attn_fwd_f32(&p->s, &p->blk, f.q, f.k, f.v, f.o, f.lse);
    usp_attn_bwd_prep_f32(&p->s, f.o, f.dout, f.delta);
    usp_attn_bwd_f32(&p->s, &p->blk, f.q, f.k, f.v, f.dout, f.lse, f.delta, f.dq, f.dk, f.dv);
    struct { const float *got; const double *want; long n; const char *what; } cmp[] = {
        {f.o, w.o, p->q_elems, "fp32 O"},
        {f.lse, w.lse, p->stat_elems, "fp32 LSE"},
        {f.dq, w.dq, p->q_elems, "fp32 dQ"},
        {f.dk, w.dk, p->kv_elems, "fp32 dK"},
        {f.dv, w.dv, p->kv_elems, "fp32 dV"},
    };
    for (size_t x = 0; x < sizeof cmp / sizeof cmp[0]; x++) {
        double err = rel_err_f32(cmp[x].got, cmp[x].want, cmp[x].n);
        if (!(err <= FP32_TOL)) fail_msg("case %d: %s relative error %.3g > %.1g", c, cmp[x].what, err, FP32_TOL);
        double *largest = x < 2 ? &largest_error : &largest_bwd_error;
        if (err > *largest) *largest = err;
    }
    f32_run_free(&f);
    fwd_bwd_free(&w);
}

static void test_fp32_matches_fp64(void **state) {
    (void)state;
    largest_error = 0;
    for (int c = 0; c < NCASES; c++) {
        if (CASES[c].scale > 0) continue; /* scores in the hundreds: see FP32_TOL */
        problem p = problem_make(&CASES[c], (uint64_t)c + 300);
        round_inputs_to_float(&p);
        check_fp32(&p, c);
        problem_free(&p);
    }
    print_message("fp32: largest relative error %.3g forward, %.3g backward\n", largest_error,
                  largest_bwd_error);
}

/* ---- per-row key intervals ------------------------------------------------ */

/* Masks as the schedule hands them to kernels (usp/rowmask.h): query row i
 * of the block sits at position i + q_pos of the sequence, key j at j; both
 * lie in packed documents of length doc (0: one document). */
typedef enum {
    MASK_DOCS,        /* causal inside documents */
    MASK_DOCS_FULL,   /* bidirectional inside documents */
    MASK_WINDOW,      /* sliding window left/right, no documents */
    MASK_DOC_WINDOW,  /* window inside documents */
    MASK_SCATTERED,   /* seeded intervals, some empty, some past the ends */
} mask_kind;

typedef struct {
    mask_kind kind;
    int doc, left, right, q_pos;
} mask_case;

static int32_t clampi(long x, long lo, long hi) { return (int32_t)(x < lo ? lo : x > hi ? hi : x); }

static void mask_fill(problem *p, const mask_case *m, int32_t *lo, int32_t *hi) {
    rng_seed(99);
    for (int b = 0; b < p->s.batch; b++)
        for (long i = 0; i < p->blk.q_len; i++) {
            long at = (long)b * p->blk.q_len + i, pos = i + m->q_pos;
            /* documents differ by batch element: shifted by 3b */
            long doc_lo = 0, doc_hi = p->blk.kv_len;
            if (m->doc > 0) {
                long shifted = pos + 3 * b;
                doc_lo = shifted / m->doc * m->doc - 3 * b;
                doc_hi = doc_lo + m->doc;
            }
            long a = doc_lo, z = doc_hi;
            switch (m->kind) {
            case MASK_DOCS: z = pos + 1 < z ? pos + 1 : z; break;
            case MASK_DOCS_FULL: break;
            case MASK_WINDOW:
            case MASK_DOC_WINDOW:
                if (m->left >= 0 && pos - m->left > a) a = pos - m->left;
                if (m->right >= 0 && pos + m->right + 1 < z) z = pos + m->right + 1;
                break;
            case MASK_SCATTERED:
                a = (long)((uniform() + 1) / 2 * (p->blk.kv_len + 10)) - 5;
                z = a + (long)((uniform() + 1) * 20) - 8;
                break;
            }
            lo[at] = clampi(a, -20, p->blk.kv_len + 20);
            hi[at] = clampi(z, -20, p->blk.kv_len + 20);
        }
    p->mask.lo = lo;
    p->mask.hi = hi;
}

static void check_row_mask(const attn_case *c, const mask_case *m, int index) {
    problem p = problem_make(c, (uint64_t)index + 500);
    round_inputs_to_float(&p);
    long n = (long)p.s.batch * p.blk.q_len;
    int32_t *lo = malloc(sizeof *lo * (size_t)n), *hi = malloc(sizeof *hi * (size_t)n);
    assert_true(lo && hi);
    mask_fill(&p, m, lo, hi);
    /* forward */
    double *o = filled(p.q_elems, UNTOUCHED), *lse = filled(p.stat_elems, UNTOUCHED);
    double *o_ref = filled(p.q_elems, UNTOUCHED), *lse_ref = filled(p.stat_elems, UNTOUCHED);
    run_forward(&p, o, lse);
    naive_forward(&p, o_ref, lse_ref);
    assert_close(o, o_ref, p.q_elems, FP64_TOL, "masked O", index);
    assert_close(lse, lse_ref, p.stat_elems, FP64_TOL, "masked LSE", index);
    assert_rows_untouched(o, p.s.batch, p.s.lq, p.s.hq, p.s.d, p.blk.q_begin, p.blk.q_len, "O");
    /* rows with an empty interval: -inf and exactly 0 */
    for (int b = 0; b < p.s.batch; b++)
        for (long i = 0; i < p.blk.q_len; i++) {
            long at = (long)b * p.blk.q_len + i;
            int empty = lo[at] >= hi[at] || hi[at] <= 0 || lo[at] >= p.blk.kv_len;
            for (int h = 0; h < p.s.hq && empty; h++) {
                assert_true(lse[stat(&p, b, h, p.blk.q_begin + i)] == -INFINITY);
                long t = tok(&p, b, p.blk.q_begin + i, p.s.hq, h, p.s.lq);
                for (int e = 0; e < p.s.d; e++) assert_true(o[t + e] == 0.0);
            }
        }
    /* backward */
    fwd_bwd got = fwd_bwd_make(&p), want = fwd_bwd_make(&p);
    usp_attn_bwd_prep_f64(&p.s, got.o, p.dout, got.delta);
    naive_delta(&p, want.o, want.delta);
    usp_attn_bwd_masked_f64(&p.s, &p.blk, &p.mask, p.q, p.k, p.v, p.dout, got.lse, got.delta,
                            got.dq, got.dk, got.dv);
    naive_backward(&p, want.lse, want.delta, want.dq, want.dk, want.dv);
    assert_close(got.dq, want.dq, p.q_elems, FP64_TOL, "masked dQ", index);
    assert_close(got.dk, want.dk, p.kv_elems, FP64_TOL, "masked dK", index);
    assert_close(got.dv, want.dv, p.kv_elems, FP64_TOL, "masked dV", index);
    /* fp32 against the fp64 kernels on the same inputs */
    f32_run f = f32_run_make(&p);
    usp_attn_fwd_masked_f32(&p.s, &p.blk, &p.mask, f.q, f.k, f.v, f.o, f.lse);
    usp_attn_bwd_prep_f32(&p.s, f.o, f.dout, f.delta);
    usp_attn_bwd_masked_f32(&p.s, &p.blk, &p.mask, f.q, f.k, f.v, f.dout, f.lse, f.delta, f.dq,
                            f.dk, f.dv);
    double *dq64 = filled(p.q_elems, 0), *dk64 = filled(p.kv_elems, 0), *dv64 = filled(p.kv_elems, 0);
    double *o64 = filled(p.q_elems, 0), *delta64 = filled(p.stat_elems, 0);
    double *lse64 = filled(p.stat_elems, 0);
    run_forward(&p, o64, lse64);
    usp_attn_bwd_prep_f64(&p.s, o64, p.dout, delta64);
    usp_attn_bwd_masked_f64(&p.s, &p.blk, &p.mask, p.q, p.k, p.v, p.dout, lse64, delta64, dq64,
                            dk64, dv64);
    struct { const float *got; const double *want; long n; const char *what; } cmp[] = {
        {f.o, o64, p.q_elems, "fp32 masked O"},   {f.lse, lse64, p.stat_elems, "fp32 masked LSE"},
        {f.dq, dq64, p.q_elems, "fp32 masked dQ"}, {f.dk, dk64, p.kv_elems, "fp32 masked dK"},
        {f.dv, dv64, p.kv_elems, "fp32 masked dV"},
    };
    for (size_t x = 0; x < sizeof cmp / sizeof cmp[0]; x++) {
        double err = rel_err_f32(cmp[x].got, cmp[x].want, cmp[x].n);
        if (!(err <= FP32_TOL)) fail_msg("mask %d: %s relative error %.3g > %.1g", index, cmp[x].what, err, FP32_TOL);
    }
    free(dq64), free(dk64), free(dv64), free(o64), free(delta64), free(lse64);
    f32_run_free(&f);
    fwd_bwd_free(&got), fwd_bwd_free(&want);
    free(o), free(lse), free(o_ref), free(lse_ref), free(lo), free(hi);
    problem_free(&p);
}

/* Every mask kind on blocks larger than the CPU tiles (so that some key
 * tiles are skipped, some run unmasked and some masked), documents not
 * aligned to tiles, windows smaller and larger than a tile, GQA, and a
 * block whose rows start inside the buffers. */
static void test_row_masks_match_loops(void **state) {
    (void)state;
    const attn_case big = {1, 4, 2, 32, 700, 700, 0, 700, 0, 700, 0, 0, 0};
    const attn_case batched = {2, 2, 1, 16, 300, 320, 20, 270, 10, 300, 0, 0, 0};
    const struct { const attn_case *c; mask_case m; } runs[] = {
        {&big, {MASK_DOCS, 173, 0, 0, 0}},
        {&big, {MASK_DOCS_FULL, 300, 0, 0, 0}},
        {&big, {MASK_WINDOW, 0, 40, 0, 0}},
        {&big, {MASK_WINDOW, 0, 300, 17, 0}},
        {&big, {MASK_DOC_WINDOW, 251, 100, -1, 0}},
        {&big, {MASK_SCATTERED, 0, 0, 0, 0}},
        {&batched, {MASK_DOCS, 61, 0, 0, 30}},
        {&batched, {MASK_WINDOW, 0, 5, 5, -40}},
        {&batched, {MASK_SCATTERED, 0, 0, 0, 0}},
    };
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) check_row_mask(runs[r].c, &runs[r].m, (int)r);
}

/* NULL arrays are the block's own mask, bit for bit. */
static void test_null_row_mask_is_block_mask(void **state) {
    (void)state;
    const attn_case c = {1, 2, 1, 16, 300, 300, 0, 300, 0, 300, 1, 3, 0};
    problem p = problem_make(&c, 5);
    double *o1 = filled(p.q_elems, 0), *l1 = filled(p.stat_elems, 0);
    double *o2 = filled(p.q_elems, 0), *l2 = filled(p.stat_elems, 0);
    usp_attn_fwd_f64(&p.s, &p.blk, p.q, p.k, p.v, o1, l1);
    usp_attn_fwd_masked_f64(&p.s, &p.blk, NULL, p.q, p.k, p.v, o2, l2);
    assert_memory_equal(o1, o2, sizeof(double) * (size_t)p.q_elems);
    assert_memory_equal(l1, l2, sizeof(double) * (size_t)p.stat_elems);
    free(o1), free(l1), free(o2), free(l2);
    problem_free(&p);
}

/* ---- determinism ------------------------------------------------------------ */

typedef struct {
    double *o, *lse, *delta, *dq, *dk, *dv;
} run_out;

/* Forward and backward with `threads` OpenMP threads (0: the default). */
static run_out run_all(const problem *p, int threads) {
#ifdef _OPENMP
    int before = omp_get_max_threads();
    if (threads > 0) omp_set_num_threads(threads);
#else
    (void)threads;
#endif
    run_out r = {filled(p->q_elems, 0), filled(p->stat_elems, 0), filled(p->stat_elems, 0),
                 filled(p->q_elems, 0), filled(p->kv_elems, 0), filled(p->kv_elems, 0)};
    run_forward(p, r.o, r.lse);
    usp_attn_bwd_prep_f64(&p->s, r.o, p->dout, r.delta);
    usp_attn_bwd_f64(&p->s, &p->blk, p->q, p->k, p->v, p->dout, r.lse, r.delta, r.dq, r.dk, r.dv);
#ifdef _OPENMP
    omp_set_num_threads(before);
#endif
    return r;
}

static void assert_same_bits(const run_out *a, const run_out *b, const problem *p) {
    assert_memory_equal(a->o, b->o, sizeof(double) * (size_t)p->q_elems);
    assert_memory_equal(a->lse, b->lse, sizeof(double) * (size_t)p->stat_elems);
    assert_memory_equal(a->delta, b->delta, sizeof(double) * (size_t)p->stat_elems);
    assert_memory_equal(a->dq, b->dq, sizeof(double) * (size_t)p->q_elems);
    assert_memory_equal(a->dk, b->dk, sizeof(double) * (size_t)p->kv_elems);
    assert_memory_equal(a->dv, b->dv, sizeof(double) * (size_t)p->kv_elems);
}

static void run_out_free(run_out *r) {
    free(r->o), free(r->lse), free(r->delta), free(r->dq), free(r->dk), free(r->dv);
}

static void test_same_bits_every_call(void **state) {
    (void)state;
    /* Large enough to run on several threads with several tiles per head. */
    const attn_case c = {2, 4, 2, 64, 700, 650, 20, 600, 30, 600, 1, 7, 0};
    problem p = problem_make(&c, 21);
    run_out first = run_all(&p, 0), again = run_all(&p, 0);
    run_out one = run_all(&p, 1), three = run_all(&p, 3);
    assert_same_bits(&first, &again, &p);
    assert_same_bits(&first, &one, &p);
    assert_same_bits(&first, &three, &p);
    run_out_free(&first), run_out_free(&again), run_out_free(&one), run_out_free(&three);
    problem_free(&p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_matches_loops),
        cmocka_unit_test(test_bwd_prep_matches_loops),
        cmocka_unit_test(test_backward_matches_loops),
        cmocka_unit_test(test_rows_that_see_no_key),
        cmocka_unit_test(test_merge_of_halves_is_whole),
        cmocka_unit_test(test_merge_infinite_and_huge_lse),
        cmocka_unit_test(test_fp32_matches_fp64),
        cmocka_unit_test(test_same_bits_every_call),
        cmocka_unit_test(test_row_masks_match_loops),
        cmocka_unit_test(test_null_row_mask_is_block_mask),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
