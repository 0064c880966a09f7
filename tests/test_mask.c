/* test_mask.c: masks against brute force, from the description to the
 * executors.
 *
 *   - the per-row layers of a mask equal the pairs its slices and window
 *     let through, counted pair by pair with the test's own predicate;
 *   - bad masks are refused with a reason;
 *   - the dense reference with a mask equals a naive long-double attention
 *     (full score matrix, the brute predicate) forward and backward;
 *   - the schedule's attention steps cover every visible (query, key) pair
 *     of every (query rank, key rank) block exactly once and nothing else,
 *     for every ring_impl, and count FLOPs on visible pairs;
 *   - the in-process executor matches the reference with masks;
 *   - balanced dispatch: 64 long-tailed packed documents, 128K tokens,
 *     causal, ring 8: max/mean visible pairs per rank <= 1.05 (zigzag's
 *     figure printed beside it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "test_random.h"
#include "usp/attention.h"
#include "usp/compare.h"
#include "usp/dispatch.h"
#include "usp/executor.h"
#include "usp/layout.h"
#include "usp/mask.h"

/* fp64 reference against a long-double naive sum over a few dozen keys:
 * both round at ~1e-16 relative per operation; 1e-12 is the project's fp64
 * tolerance (USP_TOL_F64) and leaves three orders of magnitude. */
#define NAIVE_TOL USP_TOL_F64

/* xorshift64* on a caller's state: the masks' shapes. */
static uint64_t test_rand_u64(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

/* The test's own predicate of a slice (written from the definitions in
 * usp/mask.h, not through usp_slice_row). */
static int slice_sees(const usp_slice *s, long q, long k) {
    if (q < s->q0 || q >= s->q1 || k < s->k0 || k >= s->k1) return 0;
    long qi = q - s->q0, kj = k - s->k0, nq = s->q1 - s->q0, nk = s->k1 - s->k0;
    int causal_ok = kj <= qi + (nk - nq);   /* bottom-right aligned */
    int inverse_ok = kj >= qi;              /* top-left aligned inverse */
    if (s->type == USP_SLICE_FULL) return 1;
    if (s->type == USP_SLICE_CAUSAL) return causal_ok;
    return causal_ok && inverse_ok;
}

typedef struct {
    long seq;
    int lists;
    usp_slice sl[256];
    long first[9];
    long left, right;
} mask_def;

static int def_sees(const mask_def *d, int list, long q, long k) {
    if (d->left >= 0 && k < q - d->left) return 0;
    if (d->right >= 0 && k > q + d->right) return 0;
    for (long i = d->first[list]; i < d->first[list + 1]; i++)
        if (slice_sees(&d->sl[i], q, k)) return 1;
    return 0;
}

/* A random mask that cannot overlap: a grid of query x key cells, each
 * empty or a slice of a random type; rows often see several cells (layers). */
static mask_def random_grid(uint64_t *rng, long seq, int lists, long left, long right) {
    mask_def d;
    memset(&d, 0, sizeof d);
    d.seq = seq;
    d.lists = lists;
    d.left = left;
    d.right = right;
    long n = 0;
    for (int b = 0; b < lists; b++) {
        d.first[b] = n;
        long qs[6] = {0}, ks[6] = {0};
        int nq = 1 + (int)(test_rand_u64(rng) % 4), nk = 1 + (int)(test_rand_u64(rng) % 4);
        for (int i = 1; i < nq; i++) qs[i] = qs[i - 1] + 1 + (long)(test_rand_u64(rng) % (seq / nq));
        for (int i = 1; i < nk; i++) ks[i] = ks[i - 1] + 1 + (long)(test_rand_u64(rng) % (seq / nk));
        qs[nq] = ks[nk] = seq;
        for (int i = 0; i < nq; i++)
            for (int j = 0; j < nk; j++) {
                int t = (int)(test_rand_u64(rng) % 4);
                if (t == 3 || qs[i] >= qs[i + 1] || ks[j] >= ks[j + 1]) continue;
                d.sl[n++] = (usp_slice){qs[i], qs[i + 1], ks[j], ks[j + 1], (usp_slice_type)t};
            }
        if (n == d.first[b]) d.sl[n++] = (usp_slice){0, seq, 0, seq, USP_SLICE_CAUSAL};
    }
    d.first[lists] = n;
    return d;
}

/* Packed documents as a mask_def, and the same through the library. */
static mask_def documents(long seq, const long *lens, int n, int causal, long left, long right) {
    mask_def d;
    memset(&d, 0, sizeof d);
    d.seq = seq; d.lists = 1; d.left = left; d.right = right;
    long at = 0;
    for (int i = 0; i < n; i++) {
        d.sl[i] = (usp_slice){at, at + lens[i], at, at + lens[i], causal ? USP_SLICE_CAUSAL : USP_SLICE_FULL};
        at += lens[i];
    }
    d.first[1] = n;
    return d;
}

static usp_mask *build(const mask_def *d) {
    usp_mask *m = NULL;
    usp_status st = usp_mask_from_slices(d->seq, d->lists, d->sl, d->first, d->left, d->right, &m);
    if (st != USP_OK) fail_msg("mask refused: %s", usp_error());
    return m;
}

/* Layer intervals = the brute predicate, and no pair in two layers. */
static void check_layers(const mask_def *d, const usp_mask *m) {
    for (int b = 0; b < d->lists; b++) {
        double pairs = 0;
        for (long q = 0; q < d->seq; q++)
            for (long k = 0; k < d->seq; k++) {
                int in = 0;
                for (int l = 0; l < usp_mask_layers(m); l++) {
                    const int32_t *lo, *hi;
                    usp_mask_layer_rows(m, b, l, &lo, &hi);
                    in += k >= lo[q] && k < hi[q];
                }
                int want = def_sees(d, b, q, k);
                if (in != want) fail_msg("list %d q %ld k %ld: layers give %d, predicate %d", b, q, k, in, want);
                assert_int_equal(usp_mask_sees(m, b, q, k), want);
                pairs += want;
            }
        assert_true(usp_mask_pairs(m, b) == pairs);
    }
}

static void test_layers_match_the_predicate(void **state) {
    (void)state;
    uint64_t rng = 99;
    for (int trial = 0; trial < 40; trial++) {
        long seq = 5 + (long)(test_rand_u64(&rng) % 40);
        long left = trial % 3 == 0 ? (long)(test_rand_u64(&rng) % 6) : -1;
        long right = trial % 4 == 1 ? (long)(test_rand_u64(&rng) % 6) : -1;
        mask_def d = random_grid(&rng, seq, 1 + trial % 2, left, right);
        usp_mask *m = build(&d);
        check_layers(&d, m);
        usp_mask_free(m);
    }
    long lens[] = {7, 1, 12, 3};
    for (int causal = 0; causal < 2; causal++) {
        mask_def d = documents(23, lens, 4, causal, 2, causal ? -1 : 1);
        usp_mask *m = NULL;
        long cu[] = {0, 7, 8, 20, 23};
        assert_int_equal(usp_mask_from_documents(23, 1, 4, cu, causal, 2, causal ? -1 : 1, &m), USP_OK);
        assert_int_equal(usp_mask_layers(m), 1);
        check_layers(&d, m);
        usp_mask_free(m);
    }
}

/* ---- refusals ----------------------------------------------------------- */

static void expect_refusal(usp_status st, usp_mask *m, const char *needle) {
    assert_int_equal(st, USP_EINVAL);
    assert_null(m);
    if (!strstr(usp_error(), needle)) fail_msg("reason \"%s\" lacks \"%s\"", usp_error(), needle);
    assert_null(strchr(usp_error(), '\n'));
}

static void test_bad_masks_are_refused(void **state) {
    (void)state;
    usp_mask *m = NULL;
    long first[] = {0, 2};
    usp_slice overlap[] = {{0, 8, 0, 8, USP_SLICE_CAUSAL}, {4, 8, 0, 3, USP_SLICE_FULL}};
    expect_refusal(usp_mask_from_slices(8, 1, overlap, first, -1, -1, &m), m, "overlap");
    usp_slice out[] = {{0, 8, 0, 9, USP_SLICE_FULL}, {0, 1, 0, 1, USP_SLICE_FULL}};
    expect_refusal(usp_mask_from_slices(8, 1, out, first, -1, -1, &m), m, "outside the sequence");
    usp_slice empty[] = {{3, 3, 0, 2, USP_SLICE_FULL}, {0, 1, 0, 1, USP_SLICE_FULL}};
    expect_refusal(usp_mask_from_slices(8, 1, empty, first, -1, -1, &m), m, "empty");
    long cu[] = {0, 3, 7};
    expect_refusal(usp_mask_from_documents(8, 1, 2, cu, 1, -1, -1, &m), m, "add up to 7");
    long down[] = {0, 5, 3};
    expect_refusal(usp_mask_from_documents(3, 1, 2, down, 1, -1, -1, &m), m, "decrease");
    expect_refusal(usp_mask_from_documents(8, 1, 1, (long[]){0, 8}, 1, -2, 0, &m), m, "window");

    /* a row in 65 pieces, and slices covering too many rows */
    usp_slice comb[65];
    for (int i = 0; i < 65; i++) comb[i] = (usp_slice){0, 1, 2 * i, 2 * i + 1, USP_SLICE_FULL};
    long comb_first[] = {0, 65};
    expect_refusal(usp_mask_from_slices(200, 1, comb, comb_first, -1, -1, &m), m, "65 separate key intervals");
    static usp_slice wide[100];
    for (int i = 0; i < 100; i++) wide[i] = (usp_slice){0, 1000000, i, i + 1, USP_SLICE_FULL};
    long wide_first[] = {0, 100};
    expect_refusal(usp_mask_from_slices(1000000, 1, wide, wide_first, -1, -1, &m), m, "query rows in all");

    long *lens;
    int n;
    assert_int_equal(usp_mask_parse_seqlens("3,4, 5", &lens, &n), USP_OK);
    assert_int_equal(n, 3);
    assert_int_equal(lens[2], 5);
    free(lens);
    const char *bad_lens[] = {"", "3,,4", "3,0", "3,-1", "3,x", "3,4,", "1e3"};
    for (size_t i = 0; i < sizeof bad_lens / sizeof bad_lens[0]; i++) {
        assert_int_equal(usp_mask_parse_seqlens(bad_lens[i], &lens, &n), USP_EINVAL);
        assert_null(lens);
    }
    long l, r;
    assert_int_equal(usp_mask_parse_window("128,-1", &l, &r), USP_OK);
    assert_true(l == 128 && r == -1);
    const char *bad_windows[] = {"", "3", "3,", "-2,0", "3,4,5", "a,b", "3;4"};
    for (size_t i = 0; i < sizeof bad_windows / sizeof bad_windows[0]; i++)
        assert_int_equal(usp_mask_parse_window(bad_windows[i], &l, &r), USP_EINVAL);

    usp_mask_spec spec = {.seqlens = "10,6", .causal = 1};
    expect_refusal(usp_mask_build(&spec, 20, 1, &m), m, "add up to 16");
    assert_int_equal(usp_mask_build(&spec, 0, 1, &m), USP_OK);
    assert_int_equal(usp_mask_seq(m), 16);
    usp_mask_free(m);
    m = NULL;

    const char *bad_json[] = {
        "{",                                                    /* syntax */
        "[]",                                                   /* no slices */
        "[{\"q\": [0, 4], \"k\": [0, 4], \"type\": \"diag\"}]", /* type */
        "[{\"q\": [0, 4], \"k\": [0, 40]}]",                    /* bounds */
        "[{\"q\": [0, 4.5], \"k\": [0, 4]}]",                   /* not an integer */
        "[{\"q\": [0, 4], \"kk\": [0, 4]}]",                    /* unknown key */
        "[{\"q\": [0, 4], \"k\": [0, 4]}, {\"q\": [2, 3], \"k\": [3, 4]}]", /* overlap */
        "{\"batch\": [[{\"q\": [0, 4], \"k\": [0, 4]}]]}",      /* batch 2, one list */
        "[[0, 4], [0, 4]]",                                     /* not an object */
    };
    for (size_t i = 0; i < sizeof bad_json / sizeof bad_json[0]; i++) {
        assert_int_equal(usp_mask_parse_json(bad_json[i], strlen(bad_json[i]), 16, 2, &m), USP_EINVAL);
        assert_null(m);
    }
    const char *good = "{\"batch\": [[{\"q\": [0, 16], \"k\": [0, 16], \"type\": \"causal\"}],"
                       " [{\"q\": [4, 16], \"k\": [0, 16], \"type\": \"bi-causal\"}]]}";
    assert_int_equal(usp_mask_parse_json(good, strlen(good), 16, 2, &m), USP_OK);
    assert_int_equal(usp_mask_lists(m), 2);
    /* element 1, bi-causal 12 x 16: query 4 sees keys 0..4, query 5 keys 1..5 */
    assert_true(usp_mask_sees(m, 1, 4, 0) && usp_mask_sees(m, 1, 4, 4) && !usp_mask_sees(m, 1, 4, 5));
    assert_true(!usp_mask_sees(m, 1, 5, 0) && usp_mask_sees(m, 1, 5, 5) && !usp_mask_sees(m, 0, 4, 5));
    usp_mask_free(m);
}

/* ---- the dense reference against naive attention ------------------------ */

typedef struct {
    int B, L, H, Hkv, D;
    double *q, *k, *v, *dout;
} problem;

static problem make_problem(int B, int L, int H, int Hkv, int D, uint64_t seed) {
    problem p = {B, L, H, Hkv, D, NULL, NULL, NULL, NULL};
    long nq = (long)B * L * H * D, nk = (long)B * L * Hkv * D;
    rng_seed(seed);
    p.q = random_tensor(nq);
    p.k = random_tensor(nk);
    p.v = random_tensor(nk);
    p.dout = random_tensor(nq);
    return p;
}

static void problem_free(problem *p) { free(p->q); free(p->k); free(p->v); free(p->dout); }

static long at4(const problem *p, int b, long i, int nh, int h) { return (((long)b * p->L + i) * nh + h) * p->D; }

/* Naive attention in long double with the brute predicate: o, lse, dq, dk, dv. */
static void naive(const problem *p, const mask_def *d, double *o, double *lse, double *dq, double *dk,
                  double *dv) {
    int L = p->L, D = p->D, group = p->H / p->Hkv;
    long double scale = 1.0L / sqrtl(D);
    long double *P = malloc(sizeof *P * L * L), *dP = malloc(sizeof *dP * L * L);
    memset(dq, 0, sizeof *dq * p->B * L * p->H * D);
    memset(dk, 0, sizeof *dk * p->B * L * p->Hkv * D);
    memset(dv, 0, sizeof *dv * p->B * L * p->Hkv * D);
    for (int b = 0; b < p->B; b++)
        for (int h = 0; h < p->H; h++) {
            int g = h / group, list = d->lists == 1 ? 0 : b;
            for (int i = 0; i < L; i++) {
                long double max = -INFINITY, sum = 0;
                for (int j = 0; j < L; j++) {
                    long double s = 0;
                    for (int x = 0; x < D; x++) s += (long double)p->q[at4(p, b, i, p->H, h) + x] * p->k[at4(p, b, j, p->Hkv, g) + x];
                    P[i * L + j] = def_sees(d, list, i, j) ? s * scale : -INFINITY;
                    if (P[i * L + j] > max) max = P[i * L + j];
                }
                for (int j = 0; j < L; j++) sum += max == -INFINITY ? 0 : expl(P[i * L + j] - max);
                long double l = max == -INFINITY ? -INFINITY : max + logl(sum);
                lse[((long)b * p->H + h) * L + i] = (double)l;
                long double delta = 0;
                for (int x = 0; x < D; x++) {
                    long double acc = 0;
                    for (int j = 0; j < L; j++) {
                        long double pij = l == -INFINITY ? 0 : expl(P[i * L + j] - l);
                        acc += pij * p->v[at4(p, b, j, p->Hkv, g) + x];
                    }
                    o[at4(p, b, i, p->H, h) + x] = (double)acc;
                    delta += acc * p->dout[at4(p, b, i, p->H, h) + x];
                }
                for (int j = 0; j < L; j++) {
                    long double pij = l == -INFINITY ? 0 : expl(P[i * L + j] - l), dpij = 0;
                    for (int x = 0; x < D; x++) dpij += (long double)p->dout[at4(p, b, i, p->H, h) + x] * p->v[at4(p, b, j, p->Hkv, g) + x];
                    P[i * L + j] = pij;
                    dP[i * L + j] = pij * (dpij - delta);
                }
            }
            for (int i = 0; i < L; i++)
                for (int j = 0; j < L; j++) {
                    if (P[i * L + j] == 0 && dP[i * L + j] == 0) continue;
                    for (int x = 0; x < D; x++) {
                        dv[at4(p, b, j, p->Hkv, g) + x] += (double)(P[i * L + j] * p->dout[at4(p, b, i, p->H, h) + x]);
                        dq[at4(p, b, i, p->H, h) + x] += (double)(scale * dP[i * L + j] * p->k[at4(p, b, j, p->Hkv, g) + x]);
                        dk[at4(p, b, j, p->Hkv, g) + x] += (double)(scale * dP[i * L + j] * p->q[at4(p, b, i, p->H, h) + x]);
                    }
                }
        }
    free(P);
    free(dP);
}

static void check_close(const char *what, const double *x, const double *ref, long n, double tol) {
    usp_error_stats e = usp_compare(x, ref, n, tol);
    if (!e.pass) fail_msg("%s: rel %.3e > %.0e (nan %ld, inf mismatch %ld)", what, e.rel, tol, e.nan_count, e.inf_mismatch);
}

static void reference_case(const mask_def *d, int B, int H, int Hkv, uint64_t seed) {
    problem p = make_problem(B, (int)d->seq, H, Hkv, 8, seed);
    usp_config c = usp_config_default();
    c.batch = B; c.seq = (int)d->seq; c.heads = H; c.kv_heads = Hkv; c.head_dim = 8;
    usp_mask *m = build(d);
    c.mask = m;
    long nq = (long)B * c.seq * H * 8, nk = (long)B * c.seq * Hkv * 8, ns = (long)B * H * c.seq;
    double *o = malloc(nq * 8), *lse = malloc(ns * 8), *dq = malloc(nq * 8), *dk = malloc(nk * 8), *dv = malloc(nk * 8);
    double *no = malloc(nq * 8), *nlse = malloc(ns * 8), *ndq = malloc(nq * 8), *ndk = malloc(nk * 8), *ndv = malloc(nk * 8);
    assert_int_equal(usp_ref_forward(&c, p.q, p.k, p.v, o, lse), USP_OK);
    assert_int_equal(usp_ref_backward(&c, p.q, p.k, p.v, o, lse, p.dout, dq, dk, dv), USP_OK);
    naive(&p, d, no, nlse, ndq, ndk, ndv);
    for (long i = 0; i < nq; i++) assert_false(isnan(o[i]) || isnan(dq[i]));
    check_close("o", o, no, nq, NAIVE_TOL);
    check_close("lse", lse, nlse, ns, NAIVE_TOL);
    check_close("dq", dq, ndq, nq, NAIVE_TOL);
    check_close("dk", dk, ndk, nk, NAIVE_TOL);
    check_close("dv", dv, ndv, nk, NAIVE_TOL);
    free(o); free(lse); free(dq); free(dk); free(dv);
    free(no); free(nlse); free(ndq); free(ndk); free(ndv);
    usp_mask_free(m);
    problem_free(&p);
}

static void test_reference_matches_naive(void **state) {
    (void)state;
    uint64_t rng = 7;
    for (int trial = 0; trial < 12; trial++) {
        long seq = 9 + (long)(test_rand_u64(&rng) % 30);
        mask_def d = random_grid(&rng, seq, 1 + trial % 2, trial % 3 ? 3 : -1, trial % 3 == 2 ? 2 : -1);
        reference_case(&d, 2, 4, trial % 2 ? 2 : 4, 1000 + trial);
    }
    long lens[] = {5, 13, 1, 9};
    mask_def docs = documents(28, lens, 4, 1, -1, -1);
    reference_case(&docs, 1, 2, 1, 77);
    mask_def win = documents(28, lens, 4, 0, 4, 2);
    reference_case(&win, 2, 2, 2, 78);
}

/* ---- the schedule covers exactly the visible pairs ----------------------- */

typedef struct { const char *name; mask_def d; } mask_case;

/* Masks for a sequence of `seq` tokens: documents that do not line up with
 * rank boundaries, windows smaller and larger than a rank's share, a slice
 * list with gaps (two layers) and one per batch element. */
static int mask_cases(long seq, int ring, mask_case *out) {
    int n = 0;
    long lens[4] = {seq / 3 + 1, 5, seq / 4, 0};
    lens[3] = seq - lens[0] - lens[1] - lens[2];
    out[n++] = (mask_case){"documents causal", documents(seq, lens, 4, 1, -1, -1)};
    out[n++] = (mask_case){"documents full", documents(seq, lens, 4, 0, -1, -1)};
    long one[] = {seq};
    long share = seq / ring;
    out[n++] = (mask_case){"window < share", documents(seq, one, 1, 1, share / 2, -1)};
    out[n++] = (mask_case){"window > share", documents(seq, one, 1, 0, share + 3, share + 1)};
    out[n++] = (mask_case){"documents + window", documents(seq, lens, 4, 1, 3, -1)};
    uint64_t rng = (uint64_t)seq * 31 + (uint64_t)ring;
    out[n++] = (mask_case){"slices", random_grid(&rng, seq, 1, -1, -1)};
    out[n++] = (mask_case){"slices per element", random_grid(&rng, seq, 2, -1, -1)};
    mask_def gaps;
    memset(&gaps, 0, sizeof gaps);
    gaps.seq = seq; gaps.lists = 1; gaps.left = gaps.right = -1;
    gaps.sl[0] = (usp_slice){0, seq, 0, seq / 4, USP_SLICE_FULL};
    gaps.sl[1] = (usp_slice){seq / 2, seq, seq / 2, seq, USP_SLICE_CAUSAL};
    gaps.sl[2] = (usp_slice){0, seq / 2, seq / 3, seq / 2, USP_SLICE_BICAUSAL};
    gaps.first[1] = 3;
    out[n++] = (mask_case){"slices with gaps", gaps};
    return n;
}

/* Every pair of every (query rank, key rank) block is covered by exactly as
 * many attention steps as it is visible (0 or 1), and FLOPs count them. */
static void check_schedule(const usp_config *c, const mask_def *d) {
    usp_schedule s;
    if (usp_schedule_build(c, 1, &s) != USP_OK) fail_msg("schedule: %s", usp_error());
    long n = c->seq / c->ring;
    int *cover = calloc((size_t)c->batch * n * n, sizeof *cover);
    int32_t *lo = malloc(n * sizeof *lo), *hi = malloc(n * sizeof *hi);
    for (int g = 0; g < s.world; g++) {
        const usp_rank_schedule *rs = &s.ranks[g];
        int r = rs->ring_rank;
        for (int j = 0; j < c->ring; j++) {
            memset(cover, 0, (size_t)c->batch * n * n * sizeof *cover);
            double flops_pairs = 0, bwd_pairs = 0;
            for (int i = 0; i < rs->nsteps; i++) {
                const usp_step *st = usp_rank_step(rs, i);
                if (usp_step_src_block(c, g, st) != j) continue;
                if (st->kind == USP_STEP_ATTN_BWD) bwd_pairs += usp_step_pairs(c, st);
                if (st->kind != USP_STEP_ATTN_FWD) continue;
                flops_pairs += usp_step_pairs(c, st);
                for (int b = 0; b < c->batch; b++) {
                    if (st->mask_layer >= 0)
                        assert_int_equal(usp_mask_block_rows(c, r, j, st->mask_layer, b, lo, hi), USP_OK);
                    for (long qi = st->blk.q_begin; qi < st->blk.q_begin + st->blk.q_len; qi++)
                        for (long kj = st->blk.kv_begin; kj < st->blk.kv_begin + st->blk.kv_len; kj++) {
                            int sees;
                            if (st->mask_layer >= 0) {
                                sees = kj >= lo[qi] && kj < hi[qi];
                            } else {
                                long a, z;
                                usp_block_row(&st->blk, qi - st->blk.q_begin, &a, &z);
                                sees = kj - st->blk.kv_begin >= a && kj - st->blk.kv_begin < z;
                            }
                            cover[((long)b * n + qi) * n + kj] += sees;
                        }
                }
            }
            double brute = 0;
            for (int b = 0; b < c->batch; b++)
                for (long qi = 0; qi < n; qi++)
                    for (long kj = 0; kj < n; kj++) {
                        int want = def_sees(d, d->lists == 1 ? 0 : b, usp_ring_token(c, r, qi), usp_ring_token(c, j, kj));
                        int got = cover[((long)b * n + qi) * n + kj];
                        if (got != want)
                            fail_msg("%s: rank %d block %d batch %d q %ld k %ld covered %d times, visible %d",
                                     usp_ring_impl_name(c->ring_impl), g, j, b, qi, kj, got, want);
                        brute += want;
                    }
            assert_true(fabs(flops_pairs * c->batch - brute) < 1e-9);
            assert_true(fabs(bwd_pairs * c->batch - brute) < 1e-9);
        }
    }
    free(cover); free(lo); free(hi);
    usp_schedule_free(&s);
}

static void test_schedule_covers_exactly_the_visible_pairs(void **state) {
    (void)state;
    static const int meshes[][2] = {{1, 4}, {2, 3}, {3, 2}};
    for (size_t mi = 0; mi < sizeof meshes / sizeof meshes[0]; mi++) {
        int u = meshes[mi][0], r = meshes[mi][1];
        long seq = 2L * u * r * 7; /* zigzag's 2*R*U */
        mask_case cases[16];
        int nc = mask_cases(seq, r, cases);
        for (int k = 0; k < nc; k++) {
            usp_mask *m = build(&cases[k].d);
            for (int impl = 0; impl < USP_RING_IMPL_COUNT; impl++) {
                usp_config c = usp_config_default();
                c.ulysses = u; c.ring = r; c.seq = (int)seq; c.heads = 6; c.kv_heads = u; c.head_dim = 4;
                c.batch = 2; c.ring_impl = (usp_ring_impl)impl; c.mask = m;
                check_schedule(&c, &cases[k].d);
            }
            usp_mask_free(m);
        }
    }
}

/* ---- the kernels' tiles (the simulator's time of masked blocks) ------------ */

static void test_tile_work_counts_the_kernels_tiles(void **state) {
    (void)state;
    /* 300 causal rows: forward query tiles of 128 see 1, 2 and 3 key tiles of 128;
     * backward 64-row tiles see key tile 0 five times, 1 three times, 2 once */
    int32_t lo[300], hi[300];
    for (int i = 0; i < 300; i++) { lo[i] = 0; hi[i] = i + 1; }
    int scratch[4];
    usp_tile_work f = {0, 0}, b = {0, 0};
    usp_tile_work_add(lo, hi, 0, 300, 0, scratch, 4, &f, &b);
    assert_true(f.tile_pairs == 6.0 * USP_TILE_FWD_ROWS * USP_TILE_FWD_KEYS && f.units == 3);
    assert_true(b.tile_pairs == 9.0 * USP_TILE_BWD_ROWS * USP_TILE_BWD_KEYS && b.units == 3);
    /* two documents [0, 100) and [100, 300), the block starting at row 10, key 10: tiles
     * from there; rows that see nothing count nothing */
    for (int i = 0; i < 300; i++) { lo[i] = i < 100 ? 0 : 100; hi[i] = i + 1; }
    for (int i = 0; i < 10; i++) lo[i] = hi[i] = 0;
    f = b = (usp_tile_work){0, 0};
    usp_tile_work_add(lo, hi, 10, 300, 0, scratch, 4, &f, &b);
    /* forward: rows 10-137 see keys [0, 138): 2 tiles; 138-265 [100, 266): 3; 266-299 [100, 300): 3 */
    assert_true(f.tile_pairs == 8.0 * USP_TILE_FWD_ROWS * USP_TILE_FWD_KEYS && f.units == 3);
    /* the schedule's masked steps carry the tiles: never fewer pairs than they see */
    usp_mask_spec spec = {.seqlens = "3000,1000,96", .causal = 1};
    usp_mask *m = NULL;
    assert_int_equal(usp_mask_build(&spec, 4096, 1, &m), USP_OK);
    usp_config c = usp_config_default();
    c.ring = 2; c.seq = 4096; c.heads = c.kv_heads = 2; c.head_dim = 8; c.mask = m;
    c.ring_impl = USP_RING_ZIGZAG;
    usp_schedule s;
    assert_int_equal(usp_schedule_build(&c, 1, &s), USP_OK);
    int masked = 0;
    for (int r = 0; r < s.world; r++)
        for (int i = 0; i < s.ranks[r].nsteps; i++) {
            const usp_step *st = usp_rank_step(&s.ranks[r], i);
            if (st->kind != USP_STEP_ATTN_FWD && st->kind != USP_STEP_ATTN_BWD) continue;
            if (st->mask_layer < 0) { assert_true(st->tile_flops == 0 && st->loop_flops == 0); continue; }
            masked++;
            assert_true(st->tile_flops >= st->flops && st->loop_flops > 0);
        }
    assert_true(masked > 0);
    usp_schedule_free(&s);
    usp_mask_free(m);
}

/* ---- executor ----------------------------------------------------------- */

static void executor_case(usp_config c) {
    usp_schedule s;
    usp_inputs in;
    usp_result res;
    if (usp_schedule_build(&c, 1, &s) != USP_OK) fail_msg("schedule: %s", usp_error());
    assert_int_equal(usp_inputs_make(&c, NULL, &in), USP_OK);
    long nq = (long)c.batch * c.seq * c.heads * c.head_dim, nk = nq / c.heads * c.kv_heads;
    long ns = (long)c.batch * c.heads * c.seq;
    double *o = malloc(nq * 8), *lse = malloc(ns * 8), *dq = malloc(nq * 8), *dk = malloc(nk * 8), *dv = malloc(nk * 8);
    assert_int_equal(usp_ref_forward(&c, in.q, in.k, in.v, o, lse), USP_OK);
    assert_int_equal(usp_ref_backward(&c, in.q, in.k, in.v, o, lse, in.dout, dq, dk, dv), USP_OK);
    assert_int_equal(usp_result_init(&res, &s, 1), USP_OK);
    assert_int_equal(usp_ref_execute(&s, &in, &res, NULL), USP_OK);
    check_close("o", res.o, o, nq, USP_TOL_F64);
    check_close("lse", res.lse, lse, ns, USP_TOL_F64);
    check_close("dq", res.dq, dq, nq, USP_TOL_F64);
    check_close("dk", res.dk, dk, nk, USP_TOL_F64);
    check_close("dv", res.dv, dv, nk, USP_TOL_F64);
    free(o); free(lse); free(dq); free(dk); free(dv);
    usp_result_free(&res);
    usp_inputs_free(&in);
    usp_schedule_free(&s);
}

static void test_executor_with_masks(void **state) {
    (void)state;
    long seq = 2L * 2 * 3 * 6;
    mask_case cases[16];
    int nc = mask_cases(seq, 3, cases);
    for (int k = 0; k < nc; k++) {
        usp_mask *m = build(&cases[k].d);
        for (int impl = 0; impl < USP_RING_IMPL_COUNT; impl++) {
            usp_config c = usp_config_default();
            c.ulysses = 2; c.ring = 3; c.seq = (int)seq; c.heads = 4; c.kv_heads = 2; c.head_dim = 8;
            c.batch = 2; c.ring_impl = (usp_ring_impl)impl; c.mask = m;
            c.layout = (usp_layout)(impl % 2);
            executor_case(c);
            if (c.ring_impl == USP_RING_ALLGATHER) { /* llama3's contiguous chunks */
                c.contiguous = 1;
                executor_case(c);
            }
        }
        usp_mask_free(m);
    }
}

/* ---- balance ------------------------------------------------------------ */

/* 64 documents with long-tailed (log-normal, sigma 1.5) lengths, seed 2026,
 * scaled to add up to 128K tokens. */
static void long_tailed_pack(long *lens, int n, long total) {
    uint64_t rng = 2026;
    double w[64], sum = 0;
    for (int i = 0; i < n; i++) {
        double u1 = (test_rand_u64(&rng) >> 11) * 0x1.0p-53, u2 = (test_rand_u64(&rng) >> 11) * 0x1.0p-53;
        double z = sqrt(-2 * log(u1 + 1e-300)) * cos(2 * M_PI * u2);
        w[i] = exp(1.5 * z);
        sum += w[i];
    }
    long used = 0;
    for (int i = 0; i < n; i++) {
        lens[i] = 1 + (long)(w[i] / sum * (double)(total - n));
        used += lens[i];
    }
    lens[0] += total - used;
}

static void test_balanced_dispatch_of_a_long_tailed_pack(void **state) {
    (void)state;
    enum { DOCS = 64, TOTAL = 131072, RING = 8 };
    long lens[DOCS], cu[DOCS + 1] = {0}, longest = 0;
    long_tailed_pack(lens, DOCS, TOTAL);
    for (int i = 0; i < DOCS; i++) {
        cu[i + 1] = cu[i] + lens[i];
        if (lens[i] > longest) longest = lens[i];
    }
    usp_mask *m = NULL;
    assert_int_equal(usp_mask_from_documents(TOTAL, 1, DOCS, cu, 1, -1, -1, &m), USP_OK);
    usp_config c = usp_config_default();
    c.seq = TOTAL; c.ring = RING; c.ulysses = 1; c.heads = 1; c.kv_heads = 1; c.head_dim = 64;
    c.mask = m;
    double imb[3];
    const usp_ring_impl impls[3] = {USP_RING_BALANCED, USP_RING_ZIGZAG, USP_RING_BASIC};
    for (int i = 0; i < 3; i++) {
        c.ring_impl = impls[i];
        assert_int_equal(usp_config_validate(&c), USP_OK);
        assert_int_equal(usp_dispatch_balance(&c, NULL, &imb[i]), USP_OK);
        usp_schedule s;
        assert_int_equal(usp_schedule_build(&c, 0, &s), USP_OK);
        assert_true(fabs(usp_schedule_imbalance(&s) - imb[i]) < 1e-12); /* the schedule's own count */
        usp_schedule_free(&s);
    }
    printf("64 documents (%s), 128K tokens, causal, ring 8: max/mean visible pairs per rank "
           "balanced %.4f, zigzag %.4f, basic %.4f\n", usp_mask_describe(m), imb[0], imb[1], imb[2]);
    assert_true(imb[0] <= 1.05);
    assert_true(imb[0] < imb[1]);
    (void)longest;
    usp_mask_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layers_match_the_predicate),
        cmocka_unit_test(test_bad_masks_are_refused),
        cmocka_unit_test(test_reference_matches_naive),
        cmocka_unit_test(test_schedule_covers_exactly_the_visible_pairs),
        cmocka_unit_test(test_tile_work_counts_the_kernels_tiles),
        cmocka_unit_test(test_executor_with_masks),
        cmocka_unit_test(test_balanced_dispatch_of_a_long_tailed_pack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
