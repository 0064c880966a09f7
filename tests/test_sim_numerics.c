/* test_sim_numerics.c: the simulator with numerics on gives the very bits of
 * the in-process executor, on every case of `usp verify` (world 1, 2, 4, 8,
 * every ulysses x ring split, ring_impl, layout, causal or not, kv_heads 8,
 * 2 and 1), forward and backward, in fp64; and in fp32 on the world-8
 * cases of `usp verify --quick` with both degrees above 1 and kv_heads 8.
 * Each case is a fresh simulation in a child process (tens of ms), hence
 * the fp32 subset: it checks the 4-byte element paths of the messages;
 * and bf16/fp16, emulated in fp32, on both wires.
 * With masks (documents, windows, slices with gaps, on basic, zigzag and
 * balanced layouts) the same bits again, and compute time on visible pairs:
 * packed documents take less simulated attention time than one causal
 * document of the same length. Uneven head splits (12 heads over ulysses 8,
 * K/V heads split unevenly or replicated): the same bits again, and the
 * simulator costs each rank's own share of the heads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "usp/executor.h"
#include "usp/mask.h"
#include "usp/sim.h"

typedef struct { usp_ring_impl impl; int causal; } impl_case;
static const impl_case IMPLS[] = {
    {USP_RING_BASIC, 0}, {USP_RING_BASIC, 1}, {USP_RING_ZIGZAG, 1},
    {USP_RING_STRIPE, 1}, {USP_RING_ALLGATHER, 0}, {USP_RING_ALLGATHER, 1}};
static const int WORLDS[] = {1, 2, 4, 8};
static const int KV_HEADS[] = {8, 2, 1};

/* The shapes of usp verify: balanced layouts need seq % (2*world) == 0. */
static int case_seq(const usp_config *c, int world) {
    int balanced = c->ring_impl == USP_RING_ZIGZAG || (c->ring_impl == USP_RING_ALLGATHER && c->causal);
    return balanced ? 2 * world * (24 / world) : world * (47 / world);
}

static void same_bits(const char *what, const usp_config *c, const double *a, const double *b, long n) {
    if (memcmp(a, b, (size_t)n * sizeof *a) == 0) return;
    char desc[256];
    usp_config_describe(c, desc, sizeof desc);
    long i = 0;
    while (i < n && memcmp(&a[i], &b[i], sizeof *a) == 0) i++;
    fail_msg("%s differs at %ld (sim %.17g, ref %.17g): %s", what, i, a[i], b[i], desc);
}

static void compare_case(const usp_config *c) {
    usp_schedule s;
    usp_inputs in;
    usp_result ref, sim;
    assert_int_equal(usp_schedule_build(c, 1, &s), USP_OK);
    assert_int_equal(usp_inputs_make(c, NULL, &in), USP_OK);
    assert_int_equal(usp_result_init(&ref, &s, 1), USP_OK);
    assert_int_equal(usp_result_init(&sim, &s, 1), USP_OK);
    assert_int_equal(usp_ref_execute(&s, &in, &ref, NULL), USP_OK);
    usp_sim_options o = {.platform = "h200x8", .numerics = 1};
    if (usp_sim_execute(&s, &in, &o, &sim, NULL) != USP_OK) fail_msg("%s", usp_error());
    long q = (long)c->batch * c->seq * c->heads * c->head_dim;
    long kv = (long)c->batch * c->seq * c->kv_heads * c->head_dim;
    same_bits("o", c, sim.o, ref.o, q);
    same_bits("lse", c, sim.lse, ref.lse, (long)c->batch * c->heads * c->seq);
    same_bits("dq", c, sim.dq, ref.dq, q);
    same_bits("dk", c, sim.dk, ref.dk, kv);
    same_bits("dv", c, sim.dv, ref.dv, kv);
    assert_true(sim.time_fwd_s > 0 && sim.time_bwd_s > 0);

    usp_result_free(&ref);
    usp_result_free(&sim);
    usp_inputs_free(&in);
    usp_schedule_free(&s);
}

static void verify_matrix(usp_dtype dtype, int quick) {
    int n = 0, ran = 0;
    for (size_t w = quick ? 3 : 0; w < sizeof WORLDS / sizeof WORLDS[0]; w++)
        for (int u = 1; u <= WORLDS[w]; u *= 2)
            for (size_t i = 0; i < sizeof IMPLS / sizeof IMPLS[0]; i++)
                for (int lay = 0; lay < (quick ? 1 : 2); lay++)
                    for (size_t kv = 0; kv < sizeof KV_HEADS / sizeof KV_HEADS[0]; kv++) {
                        if (quick && (kv > 0 || u == 1 || u == WORLDS[w])) continue;
                        usp_config c = usp_config_default();
                        c.ulysses = u; c.ring = WORLDS[w] / u;
                        c.ring_impl = IMPLS[i].impl; c.causal = IMPLS[i].causal;
                        c.layout = (usp_layout)lay; c.kv_heads = KV_HEADS[kv];
                        c.heads = 8; c.head_dim = 16; c.dtype = dtype;
                        c.batch = 1 + (int)(kv % 2);
                        c.seed = 100 + n++;
                        c.seq = case_seq(&c, WORLDS[w]);
                        compare_case(&c);
                        ran++;
                    }
    assert_int_equal(ran, quick ? 12 : 360);
}

static void verify_cases_fp64(void **state) { (void)state; verify_matrix(USP_F64, 0); }
static void verify_quick_cases_fp32(void **state) { (void)state; verify_matrix(USP_F32, 1); }

/* bf16 and fp16, emulated in fp32 with the payloads of the 16-bit wire
 * rounded: the same bits in the simulator as in the in-process executor. */
static void emulated_16_bit_cases(void **state) {
    (void)state;
    static const int mesh[][2] = {{2, 2}, {4, 2}};
    for (int k = 0; k < 2; k++)
        for (int w = 0; w < 2; w++) {
            usp_config c = usp_config_default();
            c.ulysses = mesh[k][0]; c.ring = mesh[k][1];
            c.heads = 8; c.kv_heads = k ? 2 : 8; c.head_dim = 16; c.seq = 96;
            c.dtype = k ? USP_F16 : USP_BF16;
            c.wire = w ? USP_WIRE_FP32 : USP_WIRE_DTYPE;
            compare_case(&c);
        }
}

/* A larger case, where blocks span many kernel tiles. */
static void larger_case(void **state) {
    (void)state;
    usp_config c = usp_config_default(); /* L=4096, H=8, D=64, causal zigzag, 2 x 2 */
    c.seq = 1024;
    compare_case(&c);
}

static void mask_cases(void **state) {
    (void)state;
    static const usp_mask_spec specs[] = {
        {.seqlens = "50,3,40,35", .causal = 1}, {.window = "5,-1", .causal = 1},
        {.seqlens = "70,58", .window = "9,4", .causal = 0}};
    static const usp_ring_impl impls[] = {USP_RING_BASIC, USP_RING_ZIGZAG, USP_RING_BALANCED};
    static const int mesh[][2] = {{2, 2}, {1, 4}};
    for (size_t k = 0; k < sizeof specs / sizeof specs[0]; k++) {
        usp_mask *m;
        assert_int_equal(usp_mask_build(&specs[k], 128, 2, &m), USP_OK);
        for (size_t i = 0; i < sizeof impls / sizeof impls[0]; i++)
            for (size_t mi = 0; mi < 2; mi++) {
                usp_config c = usp_config_default();
                c.seq = 128; c.batch = 2; c.heads = 4; c.kv_heads = 2; c.head_dim = 16;
                c.ulysses = mesh[mi][0]; c.ring = mesh[mi][1]; c.ring_impl = impls[i];
                c.causal = specs[k].causal; c.mask = m;
                compare_case(&c);
            }
        usp_mask_free(m);
    }
}

/* Simulated time, timing only: the whole run and each rank's compute. */
static double timed_ranks(const usp_config *c, double *compute) {
    usp_schedule s;
    usp_result r;
    assert_int_equal(usp_schedule_build(c, 1, &s), USP_OK);
    assert_int_equal(usp_result_init(&r, &s, 0), USP_OK);
    usp_sim_options o = {.platform = "h200x8", .numerics = 0};
    if (usp_sim_execute(&s, NULL, &o, &r, NULL) != USP_OK) fail_msg("%s", usp_error());
    for (int g = 0; g < s.world; g++) compute[g] = r.ranks[g].compute_s;
    double t = r.time_fwd_s + r.time_bwd_s;
    usp_result_free(&r);
    usp_schedule_free(&s);
    return t;
}

/* Simulated compute time of every rank, summed, timing only. */
static double timed_compute(const usp_config *c) {
    double compute[64];
    assert_true(c->ulysses * c->ring <= 64);
    timed_ranks(c, compute);
    double t = 0;
    for (int g = 0; g < c->ulysses * c->ring; g++) t += compute[g];
    return t;
}

/* Time on visible pairs: 8 documents of 4K hold 1/8 of the pairs of one
 * causal 32K document; their attention must take well under half its time. */
static void mask_time_counts_visible_pairs(void **state) {
    (void)state;
    usp_config c = usp_config_default();
    c.seq = 32768; c.ring_impl = USP_RING_BASIC; c.ulysses = 2; c.ring = 4;
    double dense = timed_compute(&c);
    usp_mask *m;
    usp_mask_spec docs = {.seqlens = "4096,4096,4096,4096,4096,4096,4096,4096", .causal = 1};
    assert_int_equal(usp_mask_build(&docs, 32768, 1, &m), USP_OK);
    c.mask = m;
    double packed = timed_compute(&c);
    usp_mask_free(m);
    if (!(packed < 0.5 * dense)) fail_msg("packed %.3g s, dense %.3g s", packed, dense);
}

/* Heads the ulysses degree does not divide: same bits as the in-process executor. */
static void uneven_head_cases(void **state) {
    (void)state;
    static const int shapes[][4] = {{4, 2, 6, 2}, {8, 1, 12, 4}, {2, 4, 3, 1}, {4, 2, 10, 5}};
    static const usp_ring_impl impls[] = {USP_RING_ZIGZAG, USP_RING_BASIC, USP_RING_STRIPE, USP_RING_ALLGATHER};
    for (int i = 0; i < 4; i++) {
        usp_config c = usp_config_default();
        c.ulysses = shapes[i][0]; c.ring = shapes[i][1]; c.heads = shapes[i][2]; c.kv_heads = shapes[i][3];
        c.ring_impl = impls[i]; c.head_dim = 16; c.seq = 96; c.batch = 2;
        compare_case(&c);
    }
    usp_mask *m;
    usp_mask_spec docs = {.seqlens = "50,3,40,35", .causal = 1};
    assert_int_equal(usp_mask_build(&docs, 128, 1, &m), USP_OK);
    usp_config c = usp_config_default();
    c.ulysses = 4; c.ring = 2; c.heads = 6; c.kv_heads = 3; c.head_dim = 16; c.seq = 128;
    c.ring_impl = USP_RING_BALANCED; c.mask = m;
    compare_case(&c);
    usp_mask_free(m);
}


/* 12 heads over ulysses 8: ranks 0-3 hold 2 heads, ranks 4-7 one, so the
 * first compute about twice as long, and the run takes about as long as 16
 * heads (2 on every rank), clearly longer than 8 (1 on every rank). */
static void uneven_heads_are_costed(void **state) {
    (void)state;
    double c12[8], c16[8], c8[8];
    usp_config c = usp_config_default();
    c.seq = 16384; c.head_dim = 128; c.ulysses = 8; c.ring = 1; c.dtype = USP_BF16;
    c.heads = 12; c.kv_heads = 12;
    double t12 = timed_ranks(&c, c12);
    c.heads = c.kv_heads = 16;
    double t16 = timed_ranks(&c, c16);
    c.heads = c.kv_heads = 8;
    double t8 = timed_ranks(&c, c8);
    if (!(c12[0] > 1.8 * c12[7] && c12[0] < 2.05 * c12[7]))
        fail_msg("rank 0 (2 heads) %.4g s, rank 7 (1 head) %.4g s", c12[0], c12[7]);
    if (!(t12 > 0.9 * t16 && t12 <= 1.02 * t16 && t12 > 1.5 * t8))
        fail_msg("12 heads %.4g s, 16 heads %.4g s, 8 heads %.4g s", t12, t16, t8);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(verify_cases_fp64),
        cmocka_unit_test(verify_quick_cases_fp32),
        cmocka_unit_test(emulated_16_bit_cases),
        cmocka_unit_test(larger_case),
        cmocka_unit_test(mask_cases),
        cmocka_unit_test(mask_time_counts_visible_pairs),
        cmocka_unit_test(uneven_head_cases),
        cmocka_unit_test(uneven_heads_are_costed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
