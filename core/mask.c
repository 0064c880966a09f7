/* mask.c: the mask description, its checks and its per-row form (usp/mask.h).
 *
 * Building a mask: slices (from documents, a JSON file or a caller) are
 * checked one by one (in range, not empty), then every query row collects
 * the key interval of each slice that covers it; a row's intervals are
 * sorted and checked for overlap (two slices sharing a pair is refused),
 * clipped to the window, and touching intervals are joined. Layer l of row q
 * is then its l-th interval. Memory: O(layers x L) per list, plus the
 * (row, interval) pairs while building (one per slice row). */
#include "usp/mask.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "usp/json.h"
#include "usp/npy.h"
#include "mask_internal.h"

/* ---- building ----------------------------------------------------------- */

/* Limits that keep a hostile mask from taking the machine: the (row,
 * interval) pairs while building (24 bytes each), and the intervals one row
 * may need (each is a layer: layers x L intervals are kept, and every block
 * runs once per layer it meets). */
enum { MASK_MAX_ROW_INTERVALS = 1 << 26, MASK_MAX_LAYERS = 64 };

int usp_mask_spec_given(const usp_mask_spec *s) {
    return s && (s->seqlens || s->seqlens_file || s->mask_file || s->window);
}

/* An interval of one row while building: keys [lo, hi) from slice `slice`. */
typedef struct { long lo, hi, slice; } row_interval;

static int by_lo(const void *a, const void *b) {
    const row_interval *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static usp_status check_slice(const usp_slice *s, long index, long seq) {
    if ((unsigned)s->type > USP_SLICE_BICAUSAL)
        return usp_fail(USP_EINVAL, "slice %ld: unknown type %d", index, (int)s->type);
    if (s->q0 < 0 || s->q1 > seq || s->k0 < 0 || s->k1 > seq)
        return usp_fail(USP_EINVAL, "slice %ld: q [%ld, %ld) x k [%ld, %ld) is outside the sequence "
                        "[0, %ld)", index, s->q0, s->q1, s->k0, s->k1, seq);
    if (s->q0 >= s->q1 || s->k0 >= s->k1)
        return usp_fail(USP_EINVAL, "slice %ld: q [%ld, %ld) x k [%ld, %ld) is empty (begin must "
                        "be below end)", index, s->q0, s->q1, s->k0, s->k1);
    return USP_OK;
}

/* Rows' intervals of one list, CSR: row q has ivs[start[q] .. start[q+1]). */
typedef struct { long *start; row_interval *ivs; } row_table;

static void row_table_free(row_table *t) { free(t->start); free(t->ivs); }

static usp_status collect_rows(const usp_slice *sl, long n, long seq, row_table *t) {
    double rows = 0;
    for (long i = 0; i < n; i++) rows += (double)(sl[i].q1 - sl[i].q0);
    if (rows > MASK_MAX_ROW_INTERVALS)
        return usp_fail(USP_EINVAL, "the slices cover %.0f query rows in all; at most %d", rows,
                        MASK_MAX_ROW_INTERVALS);
    t->start = usp_calloc((size_t)seq + 1, sizeof *t->start);
    if (!t->start) return USP_EINTERNAL;
    long total = 0;
    for (long i = 0; i < n; i++) {
        for (long q = sl[i].q0; q < sl[i].q1; q++) {
            long lo, hi;
            usp_slice_row(&sl[i], q, &lo, &hi);
            if (lo < hi) { t->start[q + 1]++; total++; }
        }
    }
    for (long q = 0; q < seq; q++) t->start[q + 1] += t->start[q];
    t->ivs = usp_malloc((size_t)(total ? total : 1) * sizeof *t->ivs);
    long *fill = usp_malloc((size_t)seq * sizeof *fill);
    if (!t->ivs || !fill) { free(fill); return USP_EINTERNAL; }
    memcpy(fill, t->start, (size_t)seq * sizeof *fill);
    for (long i = 0; i < n; i++)
        for (long q = sl[i].q0; q < sl[i].q1; q++) {
            long lo, hi;
            usp_slice_row(&sl[i], q, &lo, &hi);
            if (lo < hi) t->ivs[fill[q]++] = (row_interval){lo, hi, i};
        }
    free(fill);
    return USP_OK;
}

/* Sorts each row, refuses overlaps, clips to the window and joins touching
 * intervals in place; returns the most intervals a row keeps. */
static usp_status normalize_rows(row_table *t, const usp_mask *m, long *count, int *layers) {
    *layers = 1;
    for (long q = 0; q < m->seq; q++) {
        row_interval *r = t->ivs + t->start[q];
        long n = t->start[q + 1] - t->start[q];
        qsort(r, (size_t)n, sizeof *r, by_lo);
        for (long i = 1; i < n; i++)
            if (r[i].lo < r[i - 1].hi)
                return usp_fail(USP_EINVAL, "slices %ld and %ld overlap: query %ld sees key %ld "
                                "in both", r[i - 1].slice < r[i].slice ? r[i - 1].slice : r[i].slice,
                                r[i - 1].slice < r[i].slice ? r[i].slice : r[i - 1].slice, q, r[i].lo);
        long wlo, whi, kept = 0;
        usp_window_row(m->left, m->right, m->seq, q, &wlo, &whi);
        for (long i = 0; i < n; i++) {
            long lo = r[i].lo > wlo ? r[i].lo : wlo, hi = r[i].hi < whi ? r[i].hi : whi;
            if (lo >= hi) continue;
            if (kept && r[kept - 1].hi == lo) { r[kept - 1].hi = hi; continue; }
            r[kept++] = (row_interval){lo, hi, r[i].slice};
        }
        count[q] = kept;
        if (kept > MASK_MAX_LAYERS)
            return usp_fail(USP_EINVAL, "query %ld sees %ld separate key intervals; at most %d", q, kept,
                            MASK_MAX_LAYERS);
        if (kept > *layers) *layers = (int)kept;
    }
    return USP_OK;
}

static void describe(usp_mask *m, const char *what) {
    int n = snprintf(m->desc, sizeof m->desc, "%s", what);
    if (m->left >= 0 || m->right >= 0)
        snprintf(m->desc + n, sizeof m->desc - (size_t)n, ", window %ld,%ld", m->left, m->right);
}

/* Derives the layers of every list from the slices. */
static usp_status derive(usp_mask *m) {
    row_table *tables = usp_calloc((size_t)m->lists, sizeof *tables);
    long *counts = usp_malloc((size_t)m->lists * m->seq * sizeof *counts);
    usp_status st = tables && counts ? USP_OK : USP_EINTERNAL;
    int layers = 1;
    for (int b = 0; b < m->lists && st == USP_OK; b++) {
        long n = m->first[b + 1] - m->first[b];
        const usp_slice *sl = m->slices + m->first[b];
        for (long i = 0; i < n && st == USP_OK; i++) st = check_slice(&sl[i], i, m->seq);
        if (st == USP_OK) st = collect_rows(sl, n, m->seq, &tables[b]);
        int l = 1;
        if (st == USP_OK) st = normalize_rows(&tables[b], m, counts + (size_t)b * m->seq, &l);
        if (st != USP_OK && m->lists > 1) usp_error_prefix("batch element %d: ", b);
        if (l > layers) layers = l;
    }
    if (st == USP_OK) {
        m->layers = layers;
        size_t cells = (size_t)m->lists * layers * m->seq;
        m->lo = usp_calloc(cells, sizeof *m->lo);
        m->hi = usp_calloc(cells, sizeof *m->hi);
        m->pairs = usp_calloc((size_t)m->lists, sizeof *m->pairs);
        if (!m->lo || !m->hi || !m->pairs) st = USP_EINTERNAL;
    }
    for (int b = 0; b < m->lists && st == USP_OK; b++)
        for (long q = 0; q < m->seq; q++) {
            const row_interval *r = tables[b].ivs + tables[b].start[q];
            for (long l = 0; l < counts[(size_t)b * m->seq + q]; l++) {
                size_t at = ((size_t)b * layers + l) * m->seq + q;
                m->lo[at] = (int32_t)r[l].lo;
                m->hi[at] = (int32_t)r[l].hi;
                m->pairs[b] += (double)(r[l].hi - r[l].lo);
            }
        }
    for (int b = 0; tables && b < m->lists; b++) row_table_free(&tables[b]);
    free(tables);
    free(counts);
    return st;
}

static usp_mask *mask_new(long seq, int lists, long left, long right) {
    usp_mask *m = usp_calloc(1, sizeof *m);
    if (!m) return NULL;
    m->seq = seq;
    m->lists = lists;
    m->left = left;
    m->right = right;
    pthread_mutex_init(&m->lock, NULL);
    return m;
}

static usp_status check_shape(long seq, int lists, long left, long right) {
    if (seq < 1 || seq > INT32_MAX - 1)
        return usp_fail(USP_EINVAL, "mask: sequence length %ld is outside 1..%d", seq, INT32_MAX - 1);
    if (lists < 1) return usp_fail(USP_EINVAL, "mask: %d slice lists", lists);
    if (left < -1 || right < -1)
        return usp_fail(USP_EINVAL, "window %ld,%ld: each side is -1 (unbounded) or >= 0", left, right);
    return USP_OK;
}

usp_status usp_mask_from_slices(long seq, int lists, const usp_slice *slices, const long *first,
                                long left, long right, usp_mask **out) {
    *out = NULL;
    USP_TRY(check_shape(seq, lists, left, right));
    usp_mask *m = mask_new(seq, lists, left, right);
    if (!m) return USP_EINTERNAL;
    long total = first[lists] - first[0];
    m->slices = usp_malloc((size_t)(total ? total : 1) * sizeof *m->slices);
    m->first = usp_malloc(((size_t)lists + 1) * sizeof *m->first);
    if (!m->slices || !m->first) { usp_mask_free(m); return USP_EINTERNAL; }
    memcpy(m->slices, slices + first[0], (size_t)total * sizeof *m->slices);
    for (int b = 0; b <= lists; b++) m->first[b] = first[b] - first[0];
    char what[64];
    snprintf(what, sizeof what, "%ld slices", total);
    describe(m, what);
    usp_status st = derive(m);
    if (st != USP_OK) { usp_mask_free(m); return st; }
    *out = m;
    return USP_OK;
}

usp_status usp_mask_from_documents(long seq, int lists, int ndocs, const long *cu, int causal,
                                   long left, long right, usp_mask **out) {
    *out = NULL;
    USP_TRY(check_shape(seq, lists, left, right));
    if (ndocs < 1) return usp_fail(USP_EINVAL, "no documents");
    usp_slice *sl = usp_malloc((size_t)lists * ndocs * sizeof *sl);
    long *first = usp_malloc(((size_t)lists + 1) * sizeof *first);
    if (!sl || !first) { free(sl); free(first); return USP_EINTERNAL; }
    long n = 0, shortest = -1, longest = 0, docs = 0;
    usp_status st = USP_OK;
    for (int b = 0; b < lists && st == USP_OK; b++) {
        const long *c = cu + (size_t)b * (ndocs + 1);
        first[b] = n;
        if (c[0] != 0)
            st = usp_fail(USP_EINVAL, "%scumulative lengths start at %ld, not 0",
                          lists > 1 ? "batch element: " : "", c[0]);
        for (int d = 0; d < ndocs && st == USP_OK; d++) {
            if (c[d + 1] < c[d]) {
                st = usp_fail(USP_EINVAL, "cumulative lengths decrease (%ld then %ld)", c[d], c[d + 1]);
                break;
            }
            if (c[d + 1] == c[d]) continue; /* padding: an empty document */
            long len = c[d + 1] - c[d];
            sl[n++] = (usp_slice){c[d], c[d + 1], c[d], c[d + 1], causal ? USP_SLICE_CAUSAL : USP_SLICE_FULL};
            if (shortest < 0 || len < shortest) shortest = len;
            if (len > longest) longest = len;
            docs++;
        }
        if (st == USP_OK && c[ndocs] != seq)
            st = usp_fail(USP_EINVAL, "document lengths add up to %ld, not the sequence length %ld",
                          c[ndocs], seq);
        if (st != USP_OK && lists > 1) usp_error_prefix("batch element %d: ", b);
    }
    first[lists] = n;
    usp_mask *m = NULL;
    if (st == USP_OK) st = usp_mask_from_slices(seq, lists, sl, first, left, right, &m);
    if (st == USP_OK) {
        char what[96];
        if (lists == 1)
            snprintf(what, sizeof what, "%ld document%s (%ld..%ld tokens), %s", docs, docs == 1 ? "" : "s",
                     shortest, longest, causal ? "causal" : "full");
        else
            snprintf(what, sizeof what, "%ld documents over %d batch elements (%ld..%ld tokens), %s",
                     docs, lists, shortest, longest, causal ? "causal" : "full");
        describe(m, what);
    }
    free(sl);
    free(first);
    *out = m;
    return st;
}

void usp_mask_free(usp_mask *m) {
    if (!m) return;
    usp_mask_cache_free(m);
    pthread_mutex_destroy(&m->lock);
    free(m->slices);
    free(m->first);
    free(m->lo);
    free(m->hi);
    free(m->pairs);
    free(m);
}

/* ---- parsing ------------------------------------------------------------ */

/* One integer of a comma-separated list at *p, >= lo. */
static int parse_long(const char **p, long lo, long *out) {
    const char *s = *p;
    while (isspace((unsigned char)*s)) s++;
    if (!(isdigit((unsigned char)*s) || (*s == '-' && isdigit((unsigned char)s[1])))) return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || v < lo) return -1;
    while (isspace((unsigned char)*end)) end++;
    *p = end;
    *out = v;
    return 0;
}

usp_status usp_mask_parse_seqlens(const char *text, long **lens, int *count) {
    *lens = NULL;
    *count = 0;
    int n = 1;
    for (const char *c = text; *c; c++) n += *c == ',';
    if (n > (1 << 24)) return usp_fail(USP_EINVAL, "--seqlens: more than %d documents", 1 << 24);
    long *v = usp_malloc((size_t)n * sizeof *v);
    if (!v) return USP_EINTERNAL;
    const char *p = text;
    for (int i = 0; i < n; i++) {
        if (parse_long(&p, 1, &v[i]) || v[i] > INT32_MAX || (*p != ',' && *p != '\0')) {
            free(v);
            return usp_fail(USP_EINVAL, "--seqlens '%.40s%s': document %d is not a positive integer "
                            "(lengths are l1,l2,...)", text, strlen(text) > 40 ? "..." : "", i);
        }
        if (*p == ',') p++;
    }
    *lens = v;
    *count = n;
    return USP_OK;
}

usp_status usp_mask_parse_window(const char *text, long *left, long *right) {
    const char *p = text;
    if (parse_long(&p, -1, left) || *p++ != ',' || parse_long(&p, -1, right) || *p != '\0' ||
        *left > INT32_MAX || *right > INT32_MAX)
        return usp_fail(USP_EINVAL, "--window '%s' is not LEFT,RIGHT (integers >= 0, or -1 for "
                        "unbounded)", text);
    return USP_OK;
}

static usp_status json_index(const usp_json *range, const char *key, long index, long seq, long *a,
                             long *b) {
    if (!range || range->type != USP_JSON_ARRAY || range->count != 2)
        return usp_fail(USP_EINVAL, "line %d: slice %ld: \"%s\" must be [begin, end]",
                        range ? range->line : 0, index, key);
    long v[2];
    for (int i = 0; i < 2; i++) {
        const usp_json *x = &range->items[i];
        /* the range first: a double beyond a long has no (long) (found by fuzzing) */
        if (x->type != USP_JSON_NUMBER || !(x->number >= 0 && x->number <= (double)seq) ||
            x->number != (double)(long)x->number)
            return usp_fail(USP_EINVAL, "line %d: slice %ld: \"%s\" bounds must be integers in "
                            "0..%ld", x->line, index, key, seq);
        v[i] = (long)x->number;
    }
    *a = v[0];
    *b = v[1];
    return USP_OK;
}

static usp_status json_slice(const usp_json *o, long index, long seq, usp_slice *s) {
    if (o->type != USP_JSON_OBJECT)
        return usp_fail(USP_EINVAL, "line %d: slice %ld is a %s, not an object {\"q\", \"k\", "
                        "\"type\"}", o->line, index, usp_json_type_name(o->type));
    for (size_t i = 0; i < o->count; i++)
        if (strcmp(o->keys[i], "q") && strcmp(o->keys[i], "k") && strcmp(o->keys[i], "type"))
            return usp_fail(USP_EINVAL, "line %d: slice %ld: unknown key \"%s\" (q, k, type)",
                            o->items[i].line, index, o->keys[i]);
    USP_TRY(json_index(usp_json_get(o, "q"), "q", index, seq, &s->q0, &s->q1));
    USP_TRY(json_index(usp_json_get(o, "k"), "k", index, seq, &s->k0, &s->k1));
    const char *t = "full";
    const usp_json *type = usp_json_get(o, "type");
    if (type) USP_TRY(usp_json_get_string(o, "type", &t));
    if (!strcmp(t, "full")) s->type = USP_SLICE_FULL;
    else if (!strcmp(t, "causal")) s->type = USP_SLICE_CAUSAL;
    else if (!strcmp(t, "bicausal") || !strcmp(t, "bi-causal") || !strcmp(t, "bi_causal"))
        s->type = USP_SLICE_BICAUSAL;
    else
        return usp_fail(USP_EINVAL, "line %d: slice %ld: type \"%s\" (full, causal, bicausal)",
                        type->line, index, t);
    return USP_OK;
}

usp_status usp_mask_parse_json(const char *text, size_t len, long seq, int batch, usp_mask **out) {
    *out = NULL;
    usp_json *root = NULL;
    USP_TRY(usp_json_parse(text, len, &root));
    const usp_json *lists = root;
    int nlists = 1;
    usp_status st = USP_OK;
    if (root->type == USP_JSON_OBJECT) {
        const usp_json *per = usp_json_get(root, "batch"), *one = usp_json_get(root, "slices");
        if (root->count != 1 || (!per && !one)) {
            st = usp_fail(USP_EINVAL, "line %d: a mask is a list of slices, {\"slices\": [...]} or "
                          "{\"batch\": [[...], ...]}", root->line);
        } else if (per) {
            if (per->type != USP_JSON_ARRAY || (int)per->count != batch)
                st = usp_fail(USP_EINVAL, "line %d: \"batch\" must list one slice list per batch "
                              "element (%d)", per->line, batch);
            lists = per;
            nlists = batch;
        } else {
            lists = one;
        }
    }
    long total = 0;
    for (int b = 0; b < nlists && st == USP_OK; b++) {
        const usp_json *l = nlists == 1 && lists == root ? root : nlists == 1 ? lists : &lists->items[b];
        if (l->type != USP_JSON_ARRAY)
            st = usp_fail(USP_EINVAL, "line %d: expected a list of slices, found a %s", l->line,
                          usp_json_type_name(l->type));
        else
            total += (long)l->count;
    }
    usp_slice *sl = NULL;
    long *first = NULL;
    if (st == USP_OK) {
        sl = usp_malloc((size_t)(total ? total : 1) * sizeof *sl);
        first = usp_malloc(((size_t)nlists + 1) * sizeof *first);
        if (!sl || !first) st = USP_EINTERNAL;
    }
    long n = 0;
    for (int b = 0; b < nlists && st == USP_OK; b++) {
        const usp_json *l = nlists == 1 && lists == root ? root : nlists == 1 ? lists : &lists->items[b];
        first[b] = n;
        for (size_t i = 0; i < l->count && st == USP_OK; i++) st = json_slice(&l->items[i], (long)i, seq, &sl[n++]);
        if (st != USP_OK && nlists > 1) usp_error_prefix("batch element %d: ", b);
    }
    if (st == USP_OK) {
        first[nlists] = n;
        if (n == 0) st = usp_fail(USP_EINVAL, "the mask has no slices");
    }
    if (st == USP_OK) st = usp_mask_from_slices(seq, nlists, sl, first, -1, -1, out);
    free(sl);
    free(first);
    usp_json_free(root);
    return st;
}

/* Cumulative lengths from a .npy: (n+1,) for every element, or (B, n+1). */
static usp_status load_cu_seqlens(const char *path, int batch, long *seq, long **cu, int *lists,
                                  int *ndocs) {
    usp_npy a;
    USP_TRY(usp_npy_read_any(path, &a));
    usp_status st = USP_OK;
    long rows = a.ndim == 2 ? a.shape[0] : 1, cols = a.ndim == 2 ? a.shape[1] : a.shape[0];
    if (a.ndim != 1 && a.ndim != 2)
        st = usp_fail(USP_EINVAL, "%s: cumulative lengths are (n+1,) or (batch, n+1), not %d-D", path, a.ndim);
    else if (a.ndim == 2 && rows != batch)
        st = usp_fail(USP_EINVAL, "%s: %ld rows of cumulative lengths but batch %d", path, rows, batch);
    else if (cols < 2)
        st = usp_fail(USP_EINVAL, "%s: cumulative lengths need at least 2 values (0 and the length)", path);
    long *v = NULL;
    if (st == USP_OK && !(v = usp_malloc((size_t)(rows * cols) * sizeof *v))) st = USP_EINTERNAL;
    for (long i = 0; i < rows * cols && st == USP_OK; i++) {
        double x = a.data[i];
        if (!(x >= 0 && x <= INT32_MAX - 1) || x != (double)(long)x)
            st = usp_fail(USP_EINVAL, "%s: value %g at %ld is not a token count", path, x, i);
        else
            v[i] = (long)x;
    }
    if (st == USP_OK && *seq == 0) *seq = v[cols - 1];
    usp_npy_free(&a);
    if (st != USP_OK) { free(v); return st; }
    *cu = v;
    *lists = (int)rows;
    *ndocs = (int)(cols - 1);
    return USP_OK;
}

static usp_status read_text(const char *path, char **text, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return usp_fail(USP_EINVAL, "%s: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = usp_malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        if (cap >= (size_t)1 << 30) { free(buf); buf = NULL; fclose(f); return usp_fail(USP_EINVAL, "%s: larger than 1 GiB", path); }
        char *g = realloc(buf, cap * 2);
        if (!g) { free(buf); buf = NULL; break; }
        buf = g;
        cap *= 2;
    }
    int err = ferror(f);
    fclose(f);
    if (!buf) return usp_fail(USP_EINTERNAL, "%s: out of memory", path);
    if (err) { free(buf); return usp_fail(USP_EINVAL, "%s: read error", path); }
    *text = buf;
    *len = n;
    return USP_OK;
}

/* The longest sequence usp takes (usp run --seq 1..2^30). */
#define USP_MASK_MAX_SEQ (1L << 30)

usp_status usp_mask_build(const usp_mask_spec *spec, long seq, int batch, usp_mask **out) {
    *out = NULL;
    int sources = !!spec->seqlens + !!spec->seqlens_file + !!spec->mask_file;
    if (sources > 1)
        return usp_fail(USP_EINVAL, "--seqlens, --seqlens-file and --mask exclude each other");
    long left = -1, right = -1;
    if (spec->window) USP_TRY(usp_mask_parse_window(spec->window, &left, &right));
    if (spec->mask_file) {
        if (seq < 1) return usp_fail(USP_EINVAL, "--mask needs --seq");
        char *text = NULL;
        size_t len = 0;
        USP_TRY(read_text(spec->mask_file, &text, &len));
        usp_mask *m = NULL;
        usp_status st = usp_mask_parse_json(text, len, seq, batch, &m);
        free(text);
        if (st != USP_OK) { usp_error_prefix("%s: ", spec->mask_file); return st; }
        if (!spec->window) { *out = m; return USP_OK; }
        /* the window on top: rebuild from the same slices */
        st = usp_mask_from_slices(seq, m->lists, m->slices, m->first, left, right, out);
        usp_mask_free(m);
        return st;
    }
    long *cu = NULL;
    int lists = 1, ndocs = 1;
    usp_status st = USP_OK;
    if (spec->seqlens) {
        long *lens;
        USP_TRY(usp_mask_parse_seqlens(spec->seqlens, &lens, &ndocs));
        cu = usp_malloc(((size_t)ndocs + 1) * sizeof *cu);
        if (!cu) { free(lens); return USP_EINTERNAL; }
        cu[0] = 0;
        for (int d = 0; d < ndocs; d++) cu[d + 1] = cu[d] + lens[d];
        free(lens);
        if (seq == 0) seq = cu[ndocs];
        if (cu[ndocs] != seq)
            st = usp_fail(USP_EINVAL, "--seqlens add up to %ld tokens, not --seq %ld", cu[ndocs], seq);
    } else if (spec->seqlens_file) {
        st = load_cu_seqlens(spec->seqlens_file, batch, &seq, &cu, &lists, &ndocs);
        if (st == USP_OK && cu[ndocs] != seq)
            st = usp_fail(USP_EINVAL, "%s: documents add up to %ld tokens, not --seq %ld",
                          spec->seqlens_file, cu[ndocs], seq);
    } else {
        if (seq < 1) return usp_fail(USP_EINVAL, "--window needs --seq");
        cu = usp_malloc(2 * sizeof *cu);
        if (!cu) return USP_EINTERNAL;
        cu[0] = 0;
        cu[1] = seq;
    }
    /* documents that set the length obey --seq's own limit (found by fuzzing:
     * a --seqlens-file adding up to 2e9 tokens asked for 48 GB) */
    if (st == USP_OK && seq > USP_MASK_MAX_SEQ)
        st = usp_fail(USP_EINVAL, "documents add up to %ld tokens, more than %ld", seq, (long)USP_MASK_MAX_SEQ);
    if (st == USP_OK) st = usp_mask_from_documents(seq, lists, ndocs, cu, spec->causal, left, right, out);
    free(cu);
    return st;
}

/* ---- reading ------------------------------------------------------------ */

long usp_mask_seq(const usp_mask *m) { return m->seq; }
int usp_mask_lists(const usp_mask *m) { return m->lists; }
int usp_mask_layers(const usp_mask *m) { return m->layers; }
const char *usp_mask_describe(const usp_mask *m) { return m->desc; }

const usp_slice *usp_mask_slices(const usp_mask *m, int list, long *n) {
    *n = m->first[list + 1] - m->first[list];
    return m->slices + m->first[list];
}

void usp_mask_layer_rows(const usp_mask *m, int list, int layer, const int32_t **lo,
                         const int32_t **hi) {
    size_t at = ((size_t)list * m->layers + layer) * m->seq;
    *lo = m->lo + at;
    *hi = m->hi + at;
}

double usp_mask_pairs(const usp_mask *m, int b) { return m->pairs[m->lists == 1 ? 0 : b]; }

int usp_mask_sees(const usp_mask *m, int b, long q, long k) {
    int list = m->lists == 1 ? 0 : b;
    long lo, hi;
    usp_window_row(m->left, m->right, m->seq, q, &lo, &hi);
    if (k < lo || k >= hi) return 0;
    for (long i = m->first[list]; i < m->first[list + 1]; i++)
        if (usp_slice_sees(&m->slices[i], q, k)) return 1;
    return 0;
}

const char *usp_slice_type_name(usp_slice_type t) {
    return t == USP_SLICE_FULL ? "full" : t == USP_SLICE_CAUSAL ? "causal" : "bicausal";
}
