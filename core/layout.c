/* layout.c: token and head placement (see usp/layout.h for the rules). */
#include "usp/layout.h"

#include <string.h>
#include "usp/dispatch.h"

int usp_rank_of(const usp_config *c, int ring_rank, int ulysses_rank) {
    if (c->layout == USP_LAYOUT_RING_INNER) return ulysses_rank * c->ring + ring_rank;
    return ring_rank * c->ulysses + ulysses_rank;
}

void usp_coords_of(const usp_config *c, int rank, int *ring_rank, int *ulysses_rank) {
    if (c->layout == USP_LAYOUT_RING_INNER) {
        *ring_rank = rank % c->ring;
        *ulysses_rank = rank / c->ring;
    } else {
        *ring_rank = rank / c->ulysses;
        *ulysses_rank = rank % c->ulysses;
    }
}

usp_ring_impl usp_token_layout(const usp_config *c) {
    if (c->ring_impl == USP_RING_ALLGATHER)
        return c->mask ? (c->contiguous ? USP_RING_BASIC : USP_RING_BALANCED)
                       : c->causal ? USP_RING_ZIGZAG : USP_RING_BASIC;
    return c->ring_impl;
}

long usp_ring_token(const usp_config *c, int r, long i) {
    long R = c->ring, L = c->seq;
    switch (usp_token_layout(c)) {
    case USP_RING_ZIGZAG: {
        long chunk = L / (2 * R);
        if (i < chunk) return r * chunk + i;
        return (2 * R - 1 - r) * chunk + (i - chunk);
    }
    case USP_RING_STRIPE:
        return i * R + r;
    case USP_RING_BALANCED: {
        const int32_t *tokens = usp_dispatch_tokens(c); /* checked by usp_config_validate */
        return tokens ? tokens[(long)r * (L / R) + i] : r * (L / R) + i;
    }
    default:
        return r * (L / R) + i;
    }
}

long usp_rank_token(const usp_config *c, int rank, long i) {
    int r, u;
    usp_coords_of(c, rank, &r, &u);
    long ls = c->seq / ((long)c->ulysses * c->ring);
    return usp_ring_token(c, r, u * ls + i);
}

int usp_heads_per_rank(const usp_config *c) { return c->heads / c->ulysses; }

int usp_kv_heads_per_rank(const usp_config *c) {
    return c->kv_heads >= c->ulysses ? c->kv_heads / c->ulysses : 1;
}

int usp_first_kv_head(const usp_config *c, int u) {
    if (c->kv_heads >= c->ulysses) return u * (c->kv_heads / c->ulysses);
    return u / (c->ulysses / c->kv_heads);
}

int usp_heads_even(const usp_config *c) {
    int u = c->ulysses, hkv = c->kv_heads;
    return c->heads % u == 0 && (hkv % u == 0 || u % hkv == 0);
}

void usp_rank_heads(const usp_config *c, int u, int *first, int *count) {
    int f = c->heads / c->ulysses, extra = c->heads % c->ulysses;
    *first = u * f + (u < extra ? u : extra);
    *count = f + (u < extra);
}

void usp_rank_kv_heads(const usp_config *c, int u, int *kv_first, int *kv_count) {
    int h0, n, group = c->heads / c->kv_heads;
    usp_rank_heads(c, u, &h0, &n);
    if (n < 1) { *kv_first = h0 / group; *kv_count = 0; return; }
    *kv_first = h0 / group;
    *kv_count = (h0 + n - 1) / group - *kv_first + 1;
}

/* Copies token rows between a global (B, L, nh, D) tensor and one rank's
 * (B, Ls, nh, D) shard; to_shard picks the direction. */
static void move_tokens(const usp_config *c, int rank, char *global, char *shard,
                        int nh, int d, size_t elem, int to_shard) {
    long ls = c->seq / ((long)c->ulysses * c->ring);
    size_t row = (size_t)nh * d * elem;
    for (int b = 0; b < c->batch; b++)
        for (long i = 0; i < ls; i++) {
            long t = usp_rank_token(c, rank, i);
            char *g = global + ((size_t)b * c->seq + t) * row;
            char *s = shard + ((size_t)b * ls + i) * row;
            if (to_shard) memcpy(s, g, row); else memcpy(g, s, row);
        }
}

void usp_scatter_tokens(const usp_config *c, int rank, const void *global, void *shard,
                        int nh, int d, size_t elem) {
    move_tokens(c, rank, (char *)global, shard, nh, d, elem, 1);
}

void usp_gather_tokens(const usp_config *c, int rank, const void *shard, void *global,
                       int nh, int d, size_t elem) {
    move_tokens(c, rank, global, (char *)shard, nh, d, elem, 0);
}

/* LSE: global (B, H, L), shard (B, H, Ls). */
static void move_lse(const usp_config *c, int rank, char *global, char *shard,
                     size_t elem, int to_shard) {
    long ls = c->seq / ((long)c->ulysses * c->ring);
    for (int b = 0; b < c->batch; b++)
        for (int h = 0; h < c->heads; h++)
            for (long i = 0; i < ls; i++) {
                long t = usp_rank_token(c, rank, i);
                char *g = global + (((size_t)b * c->heads + h) * c->seq + t) * elem;
                char *s = shard + (((size_t)b * c->heads + h) * ls + i) * elem;
                if (to_shard) memcpy(s, g, elem); else memcpy(g, s, elem);
            }
}

void usp_scatter_lse(const usp_config *c, int rank, const void *global, void *shard, size_t elem) {
    move_lse(c, rank, (char *)global, shard, elem, 1);
}

void usp_gather_lse(const usp_config *c, int rank, const void *shard, void *global, size_t elem) {
    move_lse(c, rank, global, (char *)shard, elem, 0);
}
