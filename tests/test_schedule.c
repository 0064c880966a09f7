/* test_schedule.c: layouts, masks and the structure of the step lists. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include "usp/layout.h"
#include "usp/schedule.h"

static usp_config small(usp_ring_impl impl, int causal, int u, int r, usp_layout lay) {
    usp_config c = usp_config_default();
    c.ring_impl = impl; c.causal = causal; c.ulysses = u; c.ring = r; c.layout = lay;
    c.seq = 96; c.heads = 8; c.kv_heads = 2; c.head_dim = 4;
    return c;
}

/* Every token is held by exactly one rank, before and after the all-to-all. */
static void test_token_maps_partition_the_sequence(void **state) {
    (void)state;
    for (usp_ring_impl impl = USP_RING_BASIC; impl <= USP_RING_ALLGATHER; impl++)
        for (int lay = 0; lay < 2; lay++) {
            usp_config c = small(impl, 1, 2, 4, (usp_layout)lay);
            char seen[96] = {0};
            for (int g = 0; g < 8; g++)
                for (long i = 0; i < 12; i++) seen[usp_rank_token(&c, g, i)]++;
            for (int t = 0; t < 96; t++) assert_int_equal(seen[t], 1);
        }
}

static void test_layout_definitions(void **state) {
    (void)state;
    usp_config z = small(USP_RING_ZIGZAG, 1, 1, 4, USP_LAYOUT_ULYSSES_INNER); /* chunks of 12 */
    assert_int_equal(usp_ring_token(&z, 1, 0), 12);
    assert_int_equal(usp_ring_token(&z, 1, 12), 6 * 12);
    usp_config s = small(USP_RING_STRIPE, 1, 1, 4, USP_LAYOUT_ULYSSES_INNER);
    assert_int_equal(usp_ring_token(&s, 3, 5), 5 * 4 + 3);
    usp_config b = small(USP_RING_BASIC, 1, 2, 2, USP_LAYOUT_RING_INNER);
    int r, u;
    usp_coords_of(&b, 1, &r, &u); /* ring-inner: g = u*R + r */
    assert_int_equal(r, 1);
    assert_int_equal(u, 0);
    assert_int_equal(usp_rank_token(&b, 1, 0), 48); /* chunk r*U + u = 2 */
}

/* Causal pairs between query tokens of ring rank r and key tokens of ring
 * rank j, counted by brute force, equal the pairs of the blocks the schedule
 * emits: the masks neither lose nor invent work. */
static double brute_pairs(const usp_config *c, int r, int j) {
    long n = c->seq / c->ring;
    double pairs = 0;
    for (long i = 0; i < n; i++)
        for (long k = 0; k < n; k++)
            if (!c->causal || usp_ring_token(c, j, k) <= usp_ring_token(c, r, i)) pairs++;
    return pairs;
}

static void test_masks_cover_exactly_the_causal_pairs(void **state) {
    (void)state;
    for (usp_ring_impl impl = USP_RING_BASIC; impl <= USP_RING_ALLGATHER; impl++)
        for (int causal = 0; causal < 2; causal++) {
            if (!causal && (impl == USP_RING_ZIGZAG || impl == USP_RING_STRIPE)) continue;
            usp_config c = small(impl, causal, 1, 4, USP_LAYOUT_ULYSSES_INNER);
            usp_schedule s;
            assert_int_equal(usp_schedule_build(&c, 0, &s), USP_OK);
            for (int g = 0; g < 4; g++) {
                double got[4] = {0};
                const usp_rank_schedule *rs = &s.ranks[g];
                for (int i = 0; i < rs->nsteps; i++)
                    if (usp_rank_step(rs, i)->kind == USP_STEP_ATTN_FWD)
                        got[usp_step_src_block(&c, g, usp_rank_step(rs, i))] += usp_block_pairs(&usp_rank_step(rs, i)->blk);
                for (int j = 0; j < 4; j++) assert_true(got[j] == brute_pairs(&c, rs->ring_rank, j));
            }
            usp_schedule_free(&s);
        }
}

static void test_block_pairs_closed_form(void **state) {
    (void)state;
    for (int n = 1; n < 9; n++)
        for (int m = 1; m < 9; m++)
            for (int diag = -10; diag < 10; diag++) {
                usp_block b = {0, n, 0, m, 1, diag};
                double brute = 0;
                for (int i = 0; i < n; i++)
                    for (int j = 0; j < m; j++) brute += j <= i + diag;
                assert_true(usp_block_pairs(&b) == brute);
            }
}

/* Every rank of a group meets the same communication steps in the same order,
 * and every dep points backwards to the other stream. */
static void test_comm_steps_line_up(void **state) {
    (void)state;
    for (usp_ring_impl impl = USP_RING_BASIC; impl <= USP_RING_ALLGATHER; impl++) {
        usp_config c = small(impl, 1, 2, 4, USP_LAYOUT_RING_INNER);
        usp_schedule s;
        assert_int_equal(usp_schedule_build(&c, 1, &s), USP_OK);
        const usp_rank_schedule *r0 = &s.ranks[0];
        for (int g = 0; g < s.world; g++) {
            const usp_rank_schedule *rs = &s.ranks[g];
            int k0 = 0;
            for (int i = 0; i < rs->nsteps; i++) {
                const usp_step *st = usp_rank_step(rs, i);
                if (st->dep >= 0) {
                    assert_true(st->dep < i);
                    assert_true(usp_rank_step(rs, st->dep)->stream != st->stream);
                }
                if (st->stream != USP_STREAM_COMM) continue;
                while (usp_rank_step(r0, k0)->stream != USP_STREAM_COMM) k0++;
                assert_int_equal(st->kind, usp_rank_step(r0, k0)->kind);
                assert_int_equal(st->tag, usp_rank_step(r0, k0)->tag);
                assert_true(st->bytes_sent == usp_rank_step(r0, k0)->bytes_sent);
                k0++;
            }
        }
        usp_schedule_free(&s);
    }
}

/* Bytes: a ring forward sends K/V blocks, the all-to-alls (U-1)/U of each tensor. */
static void test_bytes_match_closed_forms(void **state) {
    (void)state;
    usp_config c = small(USP_RING_ZIGZAG, 1, 2, 4, USP_LAYOUT_ULYSSES_INNER);
    usp_schedule s;
    assert_int_equal(usp_schedule_build(&c, 0, &s), USP_OK);
    double ring = 0, a2a = 0;
    const usp_rank_schedule *rs = &s.ranks[3];
    for (int i = 0; i < rs->nsteps; i++) {
        if (usp_rank_step(rs, i)->kind == USP_STEP_SENDRECV) ring += usp_rank_step(rs, i)->bytes_sent;
        if (usp_rank_step(rs, i)->kind == USP_STEP_ALL_TO_ALL) a2a += usp_rank_step(rs, i)->bytes_sent;
    }
    double block = 1.0 * (96 / 4) * 1 * 4 * 8; /* Lr x Hkvu x D x 8 bytes */
    assert_true(ring == 3 * 2 * block);
    double ls = 96 / 8;
    double q = ls * 8 * 4 * 8, kv = ls * 2 * 4 * 8, lse = ls * 8 * 8;
    assert_true(a2a == (q + 2 * kv + q + lse) / 2); /* q, k, v in; o, lse out; half stays */
    usp_schedule_free(&s);
}

/* The compact form (a pool of distinct steps, one index list per ring rank,
 * peers and source blocks as ring offsets) expands to exactly the list the
 * builder makes for each rank on its own: every field equal, the peers the
 * ring neighbours, the source block the one the ring step visits. */
static void test_compact_form_expands_to_every_rank_list(void **state) {
    (void)state;
    static const int shapes[][2] = {{1, 1}, {1, 4}, {2, 3}, {4, 2}, {2, 4}, {3, 1}};
    for (usp_ring_impl impl = USP_RING_BASIC; impl <= USP_RING_ALLGATHER; impl++)
        for (int causal = 0; causal < 2; causal++)
            for (int lay = 0; lay < 2; lay++)
                for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
                    for (int backward = 0; backward < 2; backward++) {
                        if (!causal && (impl == USP_RING_ZIGZAG || impl == USP_RING_STRIPE)) continue;
                        usp_config c = small(impl, causal, shapes[k][0], shapes[k][1], (usp_layout)lay);
                        c.seq = 144; /* divisible by 2 x ring x ulysses for every shape */
                        c.heads = 12; c.kv_heads = 12;
                        int R = c.ring;
                        usp_schedule s;
                        if (usp_schedule_build(&c, backward, &s) != USP_OK) fail_msg("%s", usp_error());
                        for (int g = 0; g < s.world; g++) {
                            const usp_rank_schedule *rs = &s.ranks[g];
                            usp_step *full;
                            int n, nfwd, r, u;
                            usp_coords_of(&c, g, &r, &u);
                            assert_int_equal(usp_schedule_build_rank(&c, g, backward, &full, &n, &nfwd), USP_OK);
                            assert_int_equal(rs->nsteps, n);
                            assert_int_equal(rs->nfwd, nfwd);
                            assert_int_equal(rs->ring_rank, r);
                            assert_int_equal(rs->ulysses_rank, u);
                            for (int i = 0; i < n; i++) {
                                const usp_step *st = usp_rank_step(rs, i);
                                assert_memory_equal(st, &full[i], sizeof *st);
                                if (st->kind == USP_STEP_SENDRECV) {
                                    assert_int_equal(usp_step_send_peer(&c, g, st), usp_rank_of(&c, (r + 1) % R, u));
                                    assert_int_equal(usp_step_recv_peer(&c, g, st),
                                                     usp_rank_of(&c, (r + R - 1) % R, u));
                                }
                                if (st->kind == USP_STEP_ATTN_FWD || st->kind == USP_STEP_ATTN_BWD) {
                                    int j = impl == USP_RING_ALLGATHER && R > 1 ? st->ring_step
                                                                                : (r - st->ring_step + R) % R;
                                    assert_int_equal(usp_step_src_block(&c, g, st), j);
                                }
                            }
                            free(full);
                        }
                        usp_schedule_free(&s);
                    }
}

/* Zigzag: the pool holds O(ring) distinct steps, whatever the world. */
static void test_compact_form_is_small(void **state) {
    (void)state;
    int npool[2];
    for (int k = 0; k < 2; k++) {
        usp_config c = small(USP_RING_ZIGZAG, 1, 4, 8 << k, USP_LAYOUT_ULYSSES_INNER);
        c.seq = 1024; c.heads = 8; c.kv_heads = 8;
        usp_schedule s;
        assert_int_equal(usp_schedule_build(&c, 1, &s), USP_OK);
        npool[k] = s.npool;
        assert_int_equal(s.nlists, c.ring);
        assert_true(s.npool < 12 * c.ring + 64);
        usp_schedule_free(&s);
    }
    assert_true(npool[1] < 2 * npool[0] + 64); /* twice the ring, about twice the steps */
}

static void test_refuses_bad_config(void **state) {
    (void)state;
    usp_config c = small(USP_RING_ZIGZAG, 1, 2, 4, USP_LAYOUT_ULYSSES_INNER);
    c.seq = 100;
    usp_schedule s;
    assert_int_equal(usp_schedule_build(&c, 1, &s), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "seq 100 is not divisible by 2*ring*ulysses = 16"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_maps_partition_the_sequence),
        cmocka_unit_test(test_layout_definitions),
        cmocka_unit_test(test_masks_cover_exactly_the_causal_pairs),
        cmocka_unit_test(test_block_pairs_closed_form),
        cmocka_unit_test(test_comm_steps_line_up),
        cmocka_unit_test(test_bytes_match_closed_forms),
        cmocka_unit_test(test_compact_form_expands_to_every_rank_list),
        cmocka_unit_test(test_compact_form_is_small),
        cmocka_unit_test(test_refuses_bad_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
