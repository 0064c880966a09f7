/* test_gpu_a2a_index.c: the GPU pack/unpack's index arithmetic
 * (gpu/a2a_index.h) against core/a2a.c's layout, on the host (no GPU, no
 * CUDA): for every pattern and every ulysses rank of even and uneven head
 * splits (GQA and MQA among them), piece sizes and offsets equal
 * usp_a2a_send/recv_elems/offset, and the element each GPU thread copies is
 * the one usp_a2a_pack_rank / unpack_rank moves (tensors filled with their
 * own indices, so a copy is checked element by element; the dK/dV unpack's
 * sum by the set of replicas it adds). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../gpu/kernels/a2a_index.h"
#include "usp/a2a.h"
#include "usp/layout.h"

typedef struct { int heads, kv_heads, ulysses, ring; } split;

static const split splits[] = {
    {8, 8, 2, 1}, {8, 2, 4, 1}, {8, 1, 4, 2}, {6, 6, 4, 1}, {5, 5, 2, 1}, {6, 2, 4, 1},
    {8, 2, 3, 1}, {7, 7, 3, 2}, {12, 4, 5, 1}, {6, 3, 4, 1}, {9, 3, 2, 2}};

static usp_config config_of(const split *s) {
    usp_config c = usp_config_default();
    c.batch = 2;
    c.heads = s->heads;
    c.kv_heads = s->kv_heads;
    c.ulysses = s->ulysses;
    c.ring = s->ring;
    c.head_dim = 3;
    c.seq = 4 * s->ulysses * s->ring;
    c.causal = 0;
    c.ring_impl = USP_RING_BASIC;
    return c;
}

static usp_a2a_geom geom_of(const usp_config *c, int u) {
    usp_a2a_geom g = {c->batch, (int)(c->seq / ((long)c->ulysses * c->ring)), c->ulysses, c->heads, c->kv_heads,
                      c->head_dim, u};
    return g;
}

static void test_numbers_agree(void **state) {
    (void)state;
    assert_int_equal(USP_AX_Q, USP_A2A_Q);
    assert_int_equal(USP_AX_KV, USP_A2A_KV);
    assert_int_equal(USP_AX_O, USP_A2A_O);
    assert_int_equal(USP_AX_LSE, USP_A2A_LSE);
    assert_int_equal(USP_AX_DKV, USP_A2A_DKV);
}

static void test_heads_and_pieces(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof splits / sizeof splits[0]; i++) {
        usp_config c = config_of(&splits[i]);
        for (int u = 0; u < c.ulysses; u++) {
            usp_a2a_geom g = geom_of(&c, u);
            int h0, n, gh0, gn, k0, kn, gk0, gkn;
            usp_rank_heads(&c, u, &h0, &n);
            usp_ax_heads(&g, u, &gh0, &gn);
            usp_rank_kv_heads(&c, u, &k0, &kn);
            usp_ax_kv_heads(&g, u, &gk0, &gkn);
            assert_int_equal(h0, gh0);
            assert_int_equal(n, gn);
            assert_int_equal(k0, gk0);
            assert_int_equal(kn, gkn);
            for (int h = h0; h < h0 + n; h++) assert_int_equal(usp_ax_owner(&g, h), u);
            for (usp_a2a a = USP_A2A_Q; a <= USP_A2A_DKV; a++) {
                for (int p = 0; p <= c.ulysses; p++) {
                    if (p < c.ulysses) {
                        assert_int_equal(usp_ax_send_elems(&g, a, u, p), usp_a2a_send_elems(&c, a, u, p));
                        assert_int_equal(usp_ax_recv_elems(&g, a, u, p), usp_a2a_recv_elems(&c, a, u, p));
                    }
                    assert_int_equal(usp_ax_send_offset(&g, a, u, p), usp_a2a_send_offset(&c, a, u, p));
                    assert_int_equal(usp_ax_recv_offset(&g, a, u, p), usp_a2a_recv_offset(&c, a, u, p));
                }
                assert_int_equal(usp_ax_dst_elems(&g, a), usp_a2a_dst_elems_rank(&c, a, u));
            }
        }
    }
}

/* 0, 1, 2, ... as doubles. */
static double *iota(long n) {
    double *x = malloc((size_t)(n ? n : 1) * sizeof *x);
    for (long i = 0; i < n; i++) x[i] = (double)i;
    return x;
}

static void test_pack_moves_what_the_host_moves(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof splits / sizeof splits[0]; i++) {
        usp_config c = config_of(&splits[i]);
        for (int u = 0; u < c.ulysses; u++) {
            usp_a2a_geom g = geom_of(&c, u);
            for (usp_a2a a = USP_A2A_Q; a <= USP_A2A_DKV; a++) {
                long src_n = usp_a2a_src_elems_rank(&c, a, u), send_n = usp_a2a_send_offset(&c, a, u, c.ulysses);
                double *src = iota(src_n), *send = calloc((size_t)send_n + 1, sizeof *send);
                usp_a2a_pack_rank(&c, u, a, src, send, sizeof(double));
                for (long idx = 0; idx < send_n; idx++) {
                    int64_t from = usp_ax_pack_source(&g, a, idx);
                    if (from < 0 || from >= src_n || (double)from != send[idx])
                        fail_msg("H %d Hkv %d U %d rank %d pattern %d: SEND[%ld] from %lld, host moved %.0f", c.heads,
                                 c.kv_heads, c.ulysses, u, (int)a, idx, (long long)from, send[idx]);
                }
                free(src);
                free(send);
            }
        }
    }
}

static void test_unpack_moves_what_the_host_moves(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof splits / sizeof splits[0]; i++) {
        usp_config c = config_of(&splits[i]);
        for (int u = 0; u < c.ulysses; u++) {
            usp_a2a_geom g = geom_of(&c, u);
            for (usp_a2a a = USP_A2A_Q; a <= USP_A2A_LSE; a++) {
                long recv_n = usp_a2a_recv_offset(&c, a, u, c.ulysses), dst_n = usp_a2a_dst_elems_rank(&c, a, u);
                double *recv = iota(recv_n), *dst = calloc((size_t)dst_n + 1, sizeof *dst);
                usp_a2a_unpack_rank(&c, u, a, recv, dst, sizeof(double));
                for (long idx = 0; idx < dst_n; idx++) {
                    int64_t from = usp_ax_unpack_source(&g, a, idx);
                    if (from < 0 || from >= recv_n || (double)from != dst[idx])
                        fail_msg("H %d Hkv %d U %d rank %d pattern %d: dst[%ld] from %lld, host moved %.0f", c.heads,
                                 c.kv_heads, c.ulysses, u, (int)a, idx, (long long)from, dst[idx]);
                }
                free(recv);
                free(dst);
            }
        }
    }
}

/* dK/dV: with RECV element j holding 2^j (j < 50 here), the host's sum names
 * the set of elements it added; the GPU's sources must be that set. */
static void test_dkv_sums_the_same_replicas(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof splits / sizeof splits[0]; i++) {
        usp_config c = config_of(&splits[i]);
        c.batch = 1;
        c.head_dim = 1;
        c.seq = c.ulysses * c.ring; /* one token a rank: RECV stays short */
        for (int u = 0; u < c.ulysses; u++) {
            usp_a2a_geom g = geom_of(&c, u);
            long recv_n = usp_a2a_recv_offset(&c, USP_A2A_DKV, u, c.ulysses);
            long dst_n = usp_a2a_dst_elems_rank(&c, USP_A2A_DKV, u);
            assert_true(recv_n < 50);
            double *recv = malloc((size_t)recv_n * sizeof *recv), *dst = calloc((size_t)dst_n, sizeof *dst);
            for (long j = 0; j < recv_n; j++) recv[j] = (double)(1ull << j);
            usp_a2a_unpack_rank(&c, u, USP_A2A_DKV, recv, dst, sizeof(double));
            for (long idx = 0; idx < dst_n; idx++) { /* dst (1, 1, Hkv, 1): idx is the K/V head */
                double want = 0;
                for (int p = 0; p < c.ulysses; p++) {
                    int64_t s = usp_ax_dkv_source(&g, p, 0, 0, (int)idx, 0);
                    if (s >= 0) want += (double)(1ull << s);
                }
                if (want != dst[idx])
                    fail_msg("H %d Hkv %d U %d rank %d: K/V head %ld sums %.0f, host %.0f", c.heads, c.kv_heads,
                             c.ulysses, u, idx, want, dst[idx]);
            }
            free(recv);
            free(dst);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numbers_agree), cmocka_unit_test(test_heads_and_pieces),
        cmocka_unit_test(test_pack_moves_what_the_host_moves), cmocka_unit_test(test_unpack_moves_what_the_host_moves),
        cmocka_unit_test(test_dkv_sums_the_same_replicas)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
