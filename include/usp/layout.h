/* usp/layout.h: which rank holds which tokens and heads.
 *
 * Every ring_impl reduces to one list per ring rank r: the global token
 * indices T_r (length L/ring) that ring rank r holds after the ulysses
 * all-to-all, in local order. Before the all-to-all, the rank with ulysses
 * rank u holds the u-th of `ulysses` equal pieces of T_r (length L/world).
 *
 *   basic:  T_r = [r*L/R, (r+1)*L/R)
 *   zigzag: T_r = chunk r ++ chunk 2R-1-r, chunks of L/(2R) tokens
 *   stripe: T_r = { t : t mod R == r } in increasing order
 *   balanced: chunks dispatched by the visible work of cfg->mask, each
 *           rank's in ascending order (usp/dispatch.h)
 *   allgather: balanced with a mask (basic with cfg->contiguous), else zigzag
 *           when causal, basic otherwise
 *
 * Every T_r is ascending, so a key interval of the sequence is one interval
 * of any rank's local rows (what a mask's per-row form relies on).
 *
 * Heads after the all-to-all: ulysses rank u holds query heads
 * [u*H/U, (u+1)*H/U) and the K/V heads those need, which is
 * [u*Hkv/U, (u+1)*Hkv/U) when U divides Hkv, or the single head
 * u / (U/Hkv) when Hkv divides U (replicated across U/Hkv ranks).
 *
 * Uneven split (H % U != 0, or neither of Hkv and U divides the other): the
 * first H % U ulysses ranks hold ceil(H/U) query heads and the others
 * floor(H/U), in order, so rank u holds [u*f + min(u, H%U), +its count); the
 * K/V heads it holds are those its query heads use, from the first query
 * head's K/V head (h / (H/Hkv)) to the last's. Ranks whose query heads share
 * a K/V head both hold it (replicated by the all-to-all, their gradients
 * summed on the way back), as when Hkv < U. The all-to-alls then carry
 * pieces of different sizes (usp/a2a.h). The even split is the case
 * H % U == 0 of the same rule. */
#ifndef USP_LAYOUT_H
#define USP_LAYOUT_H

#include "usp/config.h"

/* Mesh coordinates of global rank g and back (depends on cfg->layout). */
int usp_rank_of(const usp_config *c, int ring_rank, int ulysses_rank);
void usp_coords_of(const usp_config *c, int rank, int *ring_rank, int *ulysses_rank);

/* The ring_impl that decides token placement (allgather -> balanced/zigzag/basic). */
usp_ring_impl usp_token_layout(const usp_config *c);

/* Global token of local index i (0 <= i < L/R) of ring rank r, after the all-to-all. */
long usp_ring_token(const usp_config *c, int ring_rank, long i);
/* Global token of local index i (0 <= i < L/world) of global rank g, before it. */
long usp_rank_token(const usp_config *c, int rank, long i);

/* Head ranges held by ulysses rank u after the all-to-all. The three
 * without a rank are for even splits (usp_heads_even), where every ulysses
 * rank holds as many: H/U, Hkv/U or 1 when Hkv < U. */
int usp_heads_per_rank(const usp_config *c);      /* H/U */
int usp_kv_heads_per_rank(const usp_config *c);   /* Hkv/U, or 1 when Hkv < U */
int usp_first_kv_head(const usp_config *c, int ulysses_rank);
/* 1 when H % U == 0 and one of Hkv and U divides the other. */
int usp_heads_even(const usp_config *c);
/* Query heads [*first, *first + *count) and K/V heads [*kv_first,
 * *kv_first + *kv_count) of ulysses rank u, even or not. */
void usp_rank_heads(const usp_config *c, int ulysses_rank, int *first, int *count);
void usp_rank_kv_heads(const usp_config *c, int ulysses_rank, int *kv_first, int *kv_count);

/* Copies the shard of rank g out of a global tensor laid out (B, L, nh, D)
 * into `shard` laid out (B, L/world, nh, D), and back. `elem` is the element
 * size in bytes; nh is H for Q/O/dQ/dO and Hkv for K/V/dK/dV. */
void usp_scatter_tokens(const usp_config *c, int rank, const void *global,
                        void *shard, int nh, int d, size_t elem);
void usp_gather_tokens(const usp_config *c, int rank, const void *shard,
                       void *global, int nh, int d, size_t elem);
/* The same for LSE, laid out (B, H, L) globally and (B, H, L/world) per rank. */
void usp_scatter_lse(const usp_config *c, int rank, const void *global, void *shard, size_t elem);
void usp_gather_lse(const usp_config *c, int rank, const void *shard, void *global, size_t elem);

#endif
