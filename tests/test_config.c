/* test_config.c: every refusal of usp_config_validate names its constraint. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>
#include "usp/config.h"

typedef struct { const char *what; void (*change)(usp_config *); const char *message; } bad_case;

static void seq_zigzag(usp_config *c) { c->seq = 1000; c->ulysses = 2; c->ring = 4; }
static void seq_basic(usp_config *c) { c->ring_impl = USP_RING_BASIC; c->seq = 1001; }
static void heads_gqa(usp_config *c) { c->heads = 8; c->kv_heads = 3; }
static void heads_ulysses(usp_config *c) { c->heads = 6; c->kv_heads = 6; c->ulysses = 8; c->ring = 1; }
static void head_dim_big(usp_config *c) { c->head_dim = 257; }
static void head_dim_zero(usp_config *c) { c->head_dim = 0; }
static void batch_zero(usp_config *c) { c->batch = 0; }
static void seq_zero(usp_config *c) { c->seq = 0; }
static void ring_zero(usp_config *c) { c->ring = 0; }
static void ulysses_zero(usp_config *c) { c->ulysses = 0; }
static void zigzag_noncausal(usp_config *c) { c->causal = 0; }
static void stripe_noncausal(usp_config *c) { c->causal = 0; c->ring_impl = USP_RING_STRIPE; }
static void scale_negative(usp_config *c) { c->scale = -1; }
static void contiguous_ring(usp_config *c) { c->contiguous = 1; }
static void too_many_ranks(usp_config *c) { c->ulysses = 512; c->ring = 512; c->heads = 512; c->kv_heads = 512; }

static const bad_case cases[] = {
    {"zigzag seq", seq_zigzag, "seq 1000 is not divisible by 2*ring*ulysses = 16 (zigzag)"},
    {"basic seq", seq_basic, "seq 1001 is not divisible by ulysses*ring = 4 (basic)"},
    {"gqa", heads_gqa, "heads 8 is not divisible by kv_heads 3"},
    {"heads < ulysses", heads_ulysses, "heads 6 < ulysses 8: ulysses rank 6 would hold no query head"},
    {"head_dim 257", head_dim_big, "head_dim 257 is outside 1..256"},
    {"head_dim 0", head_dim_zero, "head_dim 0 is outside 1..256"},
    {"batch", batch_zero, "batch 0 must be >= 1"},
    {"seq", seq_zero, "seq 0 must be >= 1"},
    {"ring", ring_zero, "ring 0 must be >= 1"},
    {"ulysses", ulysses_zero, "ulysses 0 must be >= 1"},
    {"zigzag non-causal", zigzag_noncausal, "ring_impl zigzag balances causal work only"},
    {"stripe non-causal", stripe_noncausal, "ring_impl stripe balances causal work only"},
    {"scale", scale_negative, "scale -1 must be > 0"},
    {"contiguous", contiguous_ring, "contiguous chunks are a placement of allgather with a mask"},
    {"ranks", too_many_ranks, "ulysses*ring = 262144 ranks is more than 65536"},
};

static void test_refusals_name_the_constraint(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        usp_config c = usp_config_default();
        cases[i].change(&c);
        assert_int_equal(usp_config_validate(&c), USP_EINVAL);
        if (!strstr(usp_error(), cases[i].message)) fail_msg("%s: got '%s'", cases[i].what, usp_error());
    }
}

/* Head counts the ulysses degree does not divide split unevenly (usp/layout.h). */
static void test_uneven_heads_are_valid(void **state) {
    (void)state;
    static const int shapes[][3] = {{12, 12, 8}, {12, 4, 8}, {12, 6, 4}, {6, 6, 4}, {32, 8, 16}, {8, 8, 8}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        usp_config c = usp_config_default();
        c.heads = shapes[i][0]; c.kv_heads = shapes[i][1]; c.ulysses = shapes[i][2]; c.ring = 1;
        c.seq = 64 * c.ulysses;
        if (usp_config_validate(&c) != USP_OK) fail_msg("H %d Hkv %d U %d: %s", c.heads, c.kv_heads, c.ulysses, usp_error());
    }
}

static void test_default_is_valid(void **state) {
    (void)state;
    usp_config c = usp_config_default();
    assert_int_equal(usp_config_validate(&c), USP_OK);
}

static void test_names_round_trip(void **state) {
    (void)state;
    usp_dtype d;
    usp_ring_impl r;
    usp_layout l;
    assert_int_equal(usp_parse_dtype("bf16", &d), USP_OK);
    assert_int_equal(d, USP_BF16);
    assert_int_equal(usp_parse_ring_impl("stripe", &r), USP_OK);
    assert_int_equal(r, USP_RING_STRIPE);
    assert_int_equal(usp_parse_layout("ring-inner", &l), USP_OK);
    assert_int_equal(l, USP_LAYOUT_RING_INNER);
    assert_int_equal(usp_parse_dtype("int8", &d), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "unknown dtype 'int8'"));
    assert_int_equal(usp_parse_ring_impl("spiral", &r), USP_EINVAL);
    assert_int_equal(usp_parse_layout("diagonal", &l), USP_EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusals_name_the_constraint),
        cmocka_unit_test(test_default_is_valid), cmocka_unit_test(test_uneven_heads_are_valid),
        cmocka_unit_test(test_names_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
