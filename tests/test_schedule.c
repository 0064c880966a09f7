/* test_schedule.c: layouts, masks and the structure of the step lists. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
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

/* ---------- what waits for what, across ranks ---------- */

/* A step ends after the steps it waits for: the previous step of its stream,
 * its dep, and for a comm step, what the matching step of each peer it
 * receives from waits for (that peer must have started sending). */
typedef struct {
    const usp_schedule *s;
    char *seen;        /* [world * stride] */
    int stride;
} wait_graph;

static int comm_step_of_tag(const usp_rank_schedule *rs, int tag) {
    for (int i = 0; i < rs->nsteps; i++)
        if (usp_rank_step(rs, i)->stream == USP_STREAM_COMM && usp_rank_step(rs, i)->tag == tag) return i;
    return -1;
}

static void mark_waits(wait_graph *w, int g, int i, int self);

static void mark_start(wait_graph *w, int g, int i) {
    const usp_rank_schedule *rs = &w->s->ranks[g];
    const usp_step *st = usp_rank_step(rs, i);
    for (int k = i - 1; k >= 0; k--)
        if (usp_rank_step(rs, k)->stream == st->stream) { mark_waits(w, g, k, 1); break; }
    if (st->dep >= 0) mark_waits(w, g, st->dep, 1);
}

/* Marks (g, i), when self, and everything it waits for. */
static void mark_waits(wait_graph *w, int g, int i, int self) {
    char *seen = &w->seen[(size_t)g * w->stride + i];
    if (self) {
        if (*seen) return;
        *seen = 1;
    }
    const usp_step *st = usp_rank_step(&w->s->ranks[g], i);
    mark_start(w, g, i);
    if (st->stream != USP_STREAM_COMM) return;
    int n = st->kind == USP_STEP_SENDRECV ? 1 : usp_group_size(&w->s->cfg, st->group);
    for (int j = 0; j < n; j++) {
        int from = st->kind == USP_STEP_SENDRECV ? usp_step_recv_peer(&w->s->cfg, g, st)
                                                 : usp_group_member(&w->s->cfg, st->group, g, j);
        if (from == g) continue;
        int k = comm_step_of_tag(&w->s->ranks[from], st->tag);
        assert_true(k >= 0);
        mark_start(w, from, k);
    }
}

static int step_named(const usp_rank_schedule *rs, const char *name) {
    for (int i = 0; i < rs->nsteps; i++)
        if (!strcmp(usp_rank_step(rs, i)->name, name)) return i;
    return -1;
}

/* Whether backward attention s (s >= 1) on any rank waits for dK/dV hop s-1
 * of any rank; checks every s (*checked of them) and returns how many waited. */
static int attentions_waiting_for_hops(const usp_schedule *s, int *checked) {
    int R = s->cfg.ring, stride = 0, waited = 0;
    for (int g = 0; g < s->world; g++)
        if (s->ranks[g].nsteps > stride) stride = s->ranks[g].nsteps;
    wait_graph w = {s, calloc((size_t)s->world * stride, 1), stride};
    assert_non_null(w.seen);
    char name[40];
    for (int g = 0; g < s->world; g++)
        for (int step = 1; step < R; step++) {
            snprintf(name, sizeof name, "bwd.ring%d.attn", step);
            int a = step_named(&s->ranks[g], name);
            if (a < 0) continue; /* fully masked block (basic, causal) */
            (*checked)++;
            memset(w.seen, 0, (size_t)s->world * stride);
            mark_waits(&w, g, a, 0);
            snprintf(name, sizeof name, "bwd.ring%d.dkv", step - 1);
            int any = 0;
            for (int h = 0; h < s->world; h++) {
                int hop = step_named(&s->ranks[h], name);
                assert_true(hop >= 0);
                any |= w.seen[(size_t)h * stride + hop];
            }
            waited += any;
        }
    free(w.seen);
    return waited;
}

/* Backward ring: no attention waits for the dK/dV hop just before it (on its
 * rank or any other), so every hop but the last (home) can run under an
 * attention; the ACCUM that adds into the delivered dK/dV does wait for it.
 * The serial schedule (dkv_serial) makes every attention wait. */
static void test_backward_attention_does_not_wait_for_the_previous_hop(void **state) {
    (void)state;
    static const struct { usp_ring_impl impl; int causal, u, r; } cases[] = {
        {USP_RING_ZIGZAG, 1, 1, 8}, {USP_RING_BASIC, 0, 1, 4}, {USP_RING_STRIPE, 1, 2, 4},
        {USP_RING_BASIC, 1, 2, 2}, {USP_RING_ZIGZAG, 1, 4, 2}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        usp_config c = small(cases[k].impl, cases[k].causal, cases[k].u, cases[k].r, USP_LAYOUT_ULYSSES_INNER);
        usp_schedule s;
        assert_int_equal(usp_schedule_build(&c, 1, &s), USP_OK);
        int checked = 0;
        assert_int_equal(attentions_waiting_for_hops(&s, &checked), 0);
        assert_true(checked >= s.world / 2 * (c.ring - 1));
        for (int g = 0; g < s.world; g++) {
            const usp_rank_schedule *rs = &s.ranks[g];
            char name[40];
            for (int step = 1; step < c.ring; step++) {
                snprintf(name, sizeof name, "bwd.ring%d.accum", step);
                int acc = step_named(rs, name);
                snprintf(name, sizeof name, "bwd.ring%d.attn", step);
                int attn = step_named(rs, name);
                snprintf(name, sizeof name, "bwd.ring%d.dkv", step - 1);
                int hop = step_named(rs, name);
                assert_true(hop >= 0);
                assert_int_equal(acc >= 0, attn >= 0); /* a fully masked block adds nothing */
                if (acc >= 0) assert_int_equal(usp_rank_step(rs, acc)->dep, hop);
            }
        }
        usp_schedule_free(&s);
        c.dkv_serial = 1;
        assert_int_equal(usp_schedule_build(&c, 1, &s), USP_OK);
        int serial_checked = 0;
        assert_int_equal(attentions_waiting_for_hops(&s, &serial_checked), checked);
        assert_int_equal(serial_checked, checked);
        usp_schedule_free(&s);
    }
}

/* The wire: in a 16-bit run the O, dQ, dK, dV all-to-alls send 2 bytes an
 * element (fp32 with --wire fp32), Q, K, V, dO their dtype, LSE fp32. */
static void test_wire_bytes(void **state) {
    (void)state;
    usp_config c = small(USP_RING_ZIGZAG, 1, 2, 2, USP_LAYOUT_ULYSSES_INNER);
    c.dtype = USP_BF16;
    double sent[2][USP_A2A_DKV + 1] = {{0}};
    for (int w = 0; w < 2; w++) {
        c.wire = w ? USP_WIRE_FP32 : USP_WIRE_DTYPE;
        usp_schedule s;
        assert_int_equal(usp_schedule_build(&c, 1, &s), USP_OK);
        const usp_rank_schedule *rs = &s.ranks[1];
        for (int i = 0; i < rs->nsteps; i++)
            if (usp_rank_step(rs, i)->kind == USP_STEP_ALL_TO_ALL)
                sent[w][usp_rank_step(rs, i)->a2a] += usp_rank_step(rs, i)->bytes_sent;
        usp_schedule_free(&s);
    }
    double ls = 96 / 4, q = ls * 8 * 4, kv = ls * 2 * 4, half = 0.5; /* elements; half goes out */
    assert_true(sent[0][USP_A2A_Q] == 2 * 2 * q * half);       /* q, do in bf16 */
    assert_true(sent[0][USP_A2A_KV] == 2 * 2 * kv * half);     /* k, v */
    assert_true(sent[0][USP_A2A_LSE] == 4 * ls * 8 * half);    /* fp32 either way */
    assert_true(sent[0][USP_A2A_O] == 2 * 2 * q * half);       /* o, dq on the bf16 wire */
    assert_true(sent[0][USP_A2A_DKV] == 2 * 2 * kv * half);    /* dk, dv */
    assert_true(sent[1][USP_A2A_O] == 2 * sent[0][USP_A2A_O] && sent[1][USP_A2A_DKV] == 2 * sent[0][USP_A2A_DKV]);
    assert_true(sent[1][USP_A2A_Q] == sent[0][USP_A2A_Q] && sent[1][USP_A2A_LSE] == sent[0][USP_A2A_LSE]);
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
        cmocka_unit_test(test_backward_attention_does_not_wait_for_the_previous_hop),
        cmocka_unit_test(test_wire_bytes),
        cmocka_unit_test(test_refuses_bad_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
