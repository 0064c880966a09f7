/* published_varlen.c: the masks of ring-flash-attention's varlen benchmark
 * (usp/published.h, usp_pub_varlen_mask).
 *
 * The benchmark (benchmark/benchmark_varlen_kvpacked_func.py) gives every
 * rank L tokens and one list of local cumulative lengths cu (n documents,
 * cu[0] = 0, cu[n] = L), the same on every rank, and cycles through several
 * lists from call to call. What a list means depends on the function:
 *
 *   local   flash_attn on one GPU: the rank's L tokens are the documents cu.
 *   ring    ring_flash_attn_varlen: local document d of ring rank r is the
 *           r-th of R pieces of a global document d; its queries see the
 *           pieces of ranks r' < r whole and their own causally. On usp's
 *           basic layout (ring rank r holds tokens [r*L, (r+1)*L)) that is one
 *           full slice per (r, r' < r, d) and one causal slice per (r, d).
 *   zigzag  zigzag_ring_flash_attn_varlen: global document d of R*len_d tokens
 *           is cut into 2R chunks of len_d/2; ring rank r holds chunk r as the
 *           front half of its local document d and chunk 2R-1-r as the back
 *           half. A query of chunk c sees chunks c' < c whole and its own
 *           causally: slices between the halves, on the basic layout again.
 *   llama3  llama3_flash_attn_varlen: the list times R is the global packing
 *           (documents of R*len_d tokens), ranks hold contiguous chunks of L
 *           and K/V are all-gathered: packed documents, cfg->contiguous.
 *
 * Each is causal inside a document, as the benchmark runs. */
#include "usp/published.h"

#include <stdlib.h>
#include <string.h>

const char *usp_pub_varlen_name(usp_pub_varlen v) {
    static const char *names[] = {"", "local", "ring", "zigzag", "llama3"};
    return v >= USP_VARLEN_NONE && v <= USP_VARLEN_LLAMA3 ? names[v] : "?";
}

usp_status usp_pub_varlen_parse(const char *s, usp_pub_varlen *out) {
    for (int v = USP_VARLEN_LOCAL; v <= USP_VARLEN_LLAMA3; v++)
        if (strcmp(s, usp_pub_varlen_name((usp_pub_varlen)v)) == 0) { *out = (usp_pub_varlen)v; return USP_OK; }
    return usp_fail(USP_EINVAL, "varlen '%s': local, ring, zigzag or llama3", s);
}

/* Appends a slice; slices has room (counted by the caller). */
static void put(usp_slice *s, long *n, long q0, long q1, long k0, long k1, usp_slice_type t) {
    s[(*n)++] = (usp_slice){q0, q1, k0, k1, t};
}

usp_status usp_pub_varlen_mask(usp_pub_varlen api, const long *cu, int ndocs, int ring, usp_mask **out) {
    long L = cu[ndocs];
    *out = NULL;
    if (ndocs < 1 || cu[0] != 0 || L < 1) return usp_fail(USP_EINVAL, "varlen: cu_seqlens must start at 0 and grow");
    for (int d = 0; d < ndocs; d++) {
        if (cu[d + 1] <= cu[d]) return usp_fail(USP_EINVAL, "varlen: cu_seqlens must grow (%ld after %ld)",
                                                cu[d + 1], cu[d]);
        if (api == USP_VARLEN_ZIGZAG && (cu[d + 1] - cu[d]) % 2)
            return usp_fail(USP_EINVAL, "varlen zigzag: document %d of %ld tokens has no halves", d,
                            cu[d + 1] - cu[d]);
    }
    if (api == USP_VARLEN_LOCAL || api == USP_VARLEN_LLAMA3) {
        long R = api == USP_VARLEN_LOCAL ? 1 : ring;
        long *global = malloc((size_t)(ndocs + 1) * sizeof *global);
        if (!global) return usp_fail(USP_EINTERNAL, "out of memory");
        for (int d = 0; d <= ndocs; d++) global[d] = cu[d] * R;
        usp_status st = usp_mask_from_documents(L * R, 1, ndocs, global, 1, -1, -1, out);
        free(global);
        return st;
    }
    long R = ring, cap = api == USP_VARLEN_RING ? R * (R + 1) / 2 * ndocs : 2 * R * (2 * R + 1) * ndocs, n = 0;
    usp_slice *s = malloc((size_t)cap * sizeof *s);
    if (!s) return usp_fail(USP_EINTERNAL, "out of memory");
    for (int d = 0; d < ndocs; d++) {
        long a = cu[d], len = cu[d + 1] - cu[d];
        if (api == USP_VARLEN_RING) {
            for (long r = 0; r < R; r++)
                for (long k = 0; k <= r; k++)
                    put(s, &n, r * L + a, r * L + a + len, k * L + a, k * L + a + len,
                        k == r ? USP_SLICE_CAUSAL : USP_SLICE_FULL);
            continue;
        }
        long half = len / 2;
        for (long r = 0; r < R; r++)
            for (int hq = 0; hq < 2; hq++) {
                long cq = hq ? 2 * R - 1 - r : r, q0 = r * L + a + hq * half;
                for (long k = 0; k < R; k++)
                    for (int hk = 0; hk < 2; hk++) {
                        long ck = hk ? 2 * R - 1 - k : k, k0 = k * L + a + hk * half;
                        if (ck < cq) put(s, &n, q0, q0 + half, k0, k0 + half, USP_SLICE_FULL);
                        else if (ck == cq) put(s, &n, q0, q0 + half, k0, k0 + half, USP_SLICE_CAUSAL);
                    }
            }
    }
    long first[2] = {0, n};
    usp_status st = usp_mask_from_slices(L * R, 1, s, first, -1, -1, out);
    free(s);
    return st;
}
