/* usp/rowmask.h: the mask an attention kernel sees, one key interval a row.
 *
 * At the kernel level a mask is, for each query row of one attention block,
 * one visible interval of keys [lo, hi) in the block's local coordinates
 * (key 0 is the block's kv_begin). The arrays are int32, indexed
 * [batch][row] with row in [0, q_len) counted from the block's q_begin, and
 * shared by every head. A row with lo >= hi sees no key (LSE = -inf, O = 0,
 * no gradient). Intervals are clipped to [0, kv_len). NULL arrays mean the
 * block's own causal/diag mask: row i sees [0, kv_len), or [0, i + diag + 1)
 * when causal. Masks whose rows need several intervals are split into
 * several blocks by the schedule; a kernel sees one interval a row.
 *
 * Written once for C (the reference, ref/attention.c) and for CUDA device
 * code (gpu/ kernels): the predicate, the interval of a row, and the key
 * range of a tile of rows, which decides which key tiles a kernel visits
 * (the union of the rows' intervals) and which of those it runs without the
 * per-element mask (the intersection: keys every row sees). */
#ifndef USP_ROWMASK_H
#define USP_ROWMASK_H

#include <stdint.h>

#if defined(__CUDACC__)
#define USP_MASK_FN static __host__ __device__ __forceinline__
#else
#define USP_MASK_FN static inline
#endif

/* The per-row arrays of one block: lo[b * q_len + i], hi[b * q_len + i]. */
typedef struct {
    const int32_t *lo, *hi;
} usp_row_mask;

/* Keys [lo, hi) of one row; empty when lo >= hi. */
typedef struct {
    int lo, hi;
} usp_key_interval;

/* Over a set of rows: keys that some row sees lie in [any_lo, any_hi); keys
 * [all_lo, all_hi) are seen by every row (empty when all_lo >= all_hi,
 * which is the case as soon as one row sees nothing). */
typedef struct {
    int any_lo, any_hi, all_lo, all_hi;
} usp_key_range;

/* Whether key j is visible to a row of interval iv. */
USP_MASK_FN int usp_key_visible(usp_key_interval iv, int j) { return j >= iv.lo && j < iv.hi; }

/* Interval of local row i of batch b, clipped to [0, kv_len). lo, hi: the
 * arrays (both NULL: the causal/diag mask), q_len the rows per batch. */
USP_MASK_FN usp_key_interval usp_row_keys(const int32_t *lo, const int32_t *hi, int q_len, int b, int i,
                                          int kv_len, int causal, int diag) {
    usp_key_interval iv;
    if (lo) {
        int64_t at = (int64_t)b * q_len + i;
        iv.lo = lo[at] > 0 ? lo[at] : 0;
        iv.hi = hi[at] < kv_len ? hi[at] : kv_len;
    } else {
        iv.lo = 0;
        iv.hi = kv_len;
        if (causal) {
            int64_t last = (int64_t)i + diag + 1;
            iv.hi = last < 0 ? 0 : (last < kv_len ? (int)last : kv_len);
        }
    }
    if (iv.hi < iv.lo) iv.hi = iv.lo;
    return iv;
}

/* The range of no rows; add rows with usp_key_range_add or merge two. */
USP_MASK_FN usp_key_range usp_key_range_none(void) {
    usp_key_range r;
    r.any_lo = INT32_MAX;
    r.any_hi = INT32_MIN;
    r.all_lo = INT32_MIN;
    r.all_hi = INT32_MAX;
    return r;
}

USP_MASK_FN usp_key_range usp_key_range_merge(usp_key_range a, usp_key_range b) {
    usp_key_range r;
    r.any_lo = a.any_lo < b.any_lo ? a.any_lo : b.any_lo;
    r.any_hi = a.any_hi > b.any_hi ? a.any_hi : b.any_hi;
    r.all_lo = a.all_lo > b.all_lo ? a.all_lo : b.all_lo;
    r.all_hi = a.all_hi < b.all_hi ? a.all_hi : b.all_hi;
    return r;
}

/* An empty row widens nothing in any_* and empties all_*. */
USP_MASK_FN usp_key_range usp_key_range_add(usp_key_range r, usp_key_interval iv) {
    usp_key_range one;
    one.all_lo = iv.lo;
    one.all_hi = iv.hi;
    if (iv.lo < iv.hi) {
        one.any_lo = iv.lo;
        one.any_hi = iv.hi;
    } else {
        one.any_lo = INT32_MAX;
        one.any_hi = INT32_MIN;
    }
    return usp_key_range_merge(r, one);
}

/* Key tiles of width `tile` (from key 0) that some row of r sees: tiles
 * [*first, *end); none when *first >= *end. */
USP_MASK_FN void usp_tile_range(usp_key_range r, int tile, int *first, int *end) {
    if (r.any_lo >= r.any_hi) {
        *first = *end = 0;
        return;
    }
    *first = r.any_lo / tile;
    *end = (r.any_hi + tile - 1) / tile;
}

/* Whether keys [j0, j1) need the per-element mask for the rows of r (some
 * pair hidden); false when every row sees every one of them. */
USP_MASK_FN int usp_tile_masked(usp_key_range r, int j0, int j1) { return j0 < r.all_lo || j1 > r.all_hi; }

#endif
