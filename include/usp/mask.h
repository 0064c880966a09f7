/* usp/mask.h: which keys each query sees, one description for every executor.
 *
 * A mask is a list of slices for each batch element (one list that every
 * element shares, or one list per element) and an optional window. Token
 * indices are global positions in the sequence (0 <= t < L).
 *
 *   slice  queries [q0, q1) x keys [k0, k1), of one type:
 *     full      every pair
 *     causal    key k <= q + (k1 - q1): bottom-right aligned to the slice,
 *               FlashAttention's convention (a slice with more queries than
 *               keys leaves its first rows empty)
 *     bicausal  q - q0 + k0 <= k <= q + (k1 - q1): causal and top-left
 *               inverse-causal at once (a band)
 *   window (left, right): query q sees only keys q-left .. q+right, -1 for
 *     unbounded (FlashAttention's window_size), on top of the slices.
 *
 * Slices of one list may not share a pair. Packed documents (--seqlens,
 * --seqlens-file) are one slice per document, query and key ranges equal,
 * causal or full; one document of length L is plain causal or full attention.
 *
 * The derived form is what kernels and the schedule use: for each query row
 * the visible keys are a few disjoint intervals, and layer l holds every
 * row's l-th interval (in increasing key order), so a layer is at most one
 * interval [lo, hi) per row. Packed documents and windows are one layer; a
 * slice list that leaves a row's keys in two pieces needs two. An attention
 * block runs once per layer it meets, the layers merged by LSE (forward) and
 * summed (backward), so a kernel only ever sees one interval per row.
 *
 * A row that sees no key has LSE = -inf and O = 0.
 *
 * Token layouts (usp/layout.h) hand every ring rank an ascending list of
 * tokens; a global interval of keys is then one interval of a K/V block's
 * local rows, which is how usp_mask_block_rows (usp/dispatch.h) turns a
 * layer into the per-row intervals of one (query rank, key rank) block, the
 * kernels' form (usp/rowmask.h). */
#ifndef USP_MASK_H
#define USP_MASK_H

#include <stdint.h>
#include "usp/error.h"

typedef enum { USP_SLICE_FULL, USP_SLICE_CAUSAL, USP_SLICE_BICAUSAL } usp_slice_type;

typedef struct {
    long q0, q1, k0, k1;   /* queries [q0, q1) x keys [k0, k1) */
    usp_slice_type type;
} usp_slice;

/* "full", "causal", "bicausal". */
const char *usp_slice_type_name(usp_slice_type t);

/* The one predicate, row-wise: the keys [*lo, *hi) that query q
 * (q0 <= q < q1) sees inside slice s; empty when *lo >= *hi. */
static inline void usp_slice_row(const usp_slice *s, long q, long *lo, long *hi) {
    long l = s->k0, h = s->k1;
    if (s->type != USP_SLICE_FULL && q + (s->k1 - s->q1) + 1 < h) h = q + (s->k1 - s->q1) + 1;
    if (s->type == USP_SLICE_BICAUSAL && q - s->q0 + s->k0 > l) l = q - s->q0 + s->k0;
    *lo = l;
    *hi = h;
}

/* The same predicate pair-wise. */
static inline int usp_slice_sees(const usp_slice *s, long q, long k) {
    if (q < s->q0 || q >= s->q1) return 0;
    long lo, hi;
    usp_slice_row(s, q, &lo, &hi);
    return k >= lo && k < hi;
}

/* The window's keys for query q: [q - left, q + right + 1), unbounded sides
 * (-1) clipped to [0, seq). */
static inline void usp_window_row(long left, long right, long seq, long q, long *lo, long *hi) {
    *lo = left < 0 || q - left < 0 ? 0 : q - left;
    *hi = right < 0 || q + right + 1 > seq ? seq : q + right + 1;
}

/* ---- the mask object ---------------------------------------------------- */

typedef struct usp_mask usp_mask;

/* What the command line says: any of the four sources (seqlens and
 * seqlens_file and mask_file exclude each other), NULL where not given. */
typedef struct {
    const char *seqlens;      /* "l1,l2,...": packed documents, every batch element */
    const char *seqlens_file; /* .npy of cumulative lengths: (n+1,) shared or (B, n+1) */
    const char *mask_file;    /* JSON: a list of slices (see usp_mask_parse_json) */
    const char *window;       /* "LEFT,RIGHT", -1 unbounded */
    int causal;               /* inside each document (and for a window alone) */
} usp_mask_spec;

int usp_mask_spec_given(const usp_mask_spec *spec);

/* Builds the mask a spec describes for a problem of `batch` elements and
 * `seq` tokens (seq 0: the length the documents add up to). Bad masks are
 * refused (USP_EINVAL) with one line: out-of-range or malformed slices,
 * overlapping slices, lengths that do not add up to seq, a list per batch
 * element whose count is not the batch. Free with usp_mask_free. */
usp_status usp_mask_build(const usp_mask_spec *spec, long seq, int batch, usp_mask **out);

/* The parsing entry points the builder uses, each refusing bad text:
 * "l1,l2,..." (positive integers) into a malloc'd array; "LEFT,RIGHT"
 * (integers >= -1); a JSON text (see below) into a mask. */
usp_status usp_mask_parse_seqlens(const char *text, long **lens, int *count);
usp_status usp_mask_parse_window(const char *text, long *left, long *right);
/* JSON: [{"q": [q0, q1], "k": [k0, k1], "type": "causal"}, ...] (one list for
 * every batch element), or {"batch": [[...], [...]]} (one list per element).
 * type is "full", "causal" or "bicausal" (also "bi-causal"). */
usp_status usp_mask_parse_json(const char *text, size_t len, long seq, int batch, usp_mask **out);

/* From slices directly: lists 1 (shared) or the batch; list b is
 * slices[first[b] .. first[b+1]). left/right: the window (-1 unbounded). */
usp_status usp_mask_from_slices(long seq, int lists, const usp_slice *slices, const long *first,
                                long left, long right, usp_mask **out);
/* Packed documents: cu[b*(ndocs+1) ..] are cumulative lengths 0 .. seq of list b. */
usp_status usp_mask_from_documents(long seq, int lists, int ndocs, const long *cu, int causal,
                                   long left, long right, usp_mask **out);

void usp_mask_free(usp_mask *m);

long usp_mask_seq(const usp_mask *m);
int usp_mask_lists(const usp_mask *m);     /* 1: shared by the batch */
int usp_mask_layers(const usp_mask *m);    /* intervals a row needs at most (>= 1) */
/* "64 documents (12..9021 tokens), causal, window 256,0" */
const char *usp_mask_describe(const usp_mask *m);
/* Slices of list b (count in *n). */
const usp_slice *usp_mask_slices(const usp_mask *m, int list, long *n);
/* Global intervals of one list and layer: row q sees keys [lo[q], hi[q]). */
void usp_mask_layer_rows(const usp_mask *m, int list, int layer, const int32_t **lo,
                         const int32_t **hi);
/* Visible (query, key) pairs of batch element b. */
double usp_mask_pairs(const usp_mask *m, int b);
/* Whether query q of batch element b sees key k (brute force over slices and window). */
int usp_mask_sees(const usp_mask *m, int b, long q, long k);

#endif
