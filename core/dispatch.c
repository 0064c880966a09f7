/* dispatch.c: token lists of the ring ranks under a mask, the balanced
 * dispatch, and the mask of each (query rank, key rank) block
 * (see usp/dispatch.h). */
#include "usp/dispatch.h"

#include <stdlib.h>
#include <string.h>
#include "usp/layout.h"
#include "usp/rowmask.h"
#include "mask_internal.h"

/* ---- the cache ---------------------------------------------------------- */

void usp_mask_cache_free(usp_mask *m) {
    while (m->cache) {
        dispatch_entry *e = m->cache;
        m->cache = e->next;
        free(e->tokens);
        free(e->blocks);
        free(e);
    }
}

/* ---- balanced dispatch -------------------------------------------------- */

/* Min-heap of ranks by (load, rank). */
typedef struct { int *r; int n; const double *load; } rank_heap;

static int heap_less(const rank_heap *h, int a, int b) {
    return h->load[a] < h->load[b] || (h->load[a] == h->load[b] && a < b);
}

static void heap_push(rank_heap *h, int r) {
    int i = h->n++;
    h->r[i] = r;
    while (i > 0 && heap_less(h, h->r[i], h->r[(i - 1) / 2])) {
        int p = (i - 1) / 2, t = h->r[p];
        h->r[p] = h->r[i];
        h->r[i] = t;
        i = p;
    }
}

static int heap_pop(rank_heap *h) {
    int top = h->r[0];
    h->r[0] = h->r[--h->n];
    for (int i = 0;;) {
        int l = 2 * i + 1, s = i;
        if (l < h->n && heap_less(h, h->r[l], h->r[s])) s = l;
        if (l + 1 < h->n && heap_less(h, h->r[l + 1], h->r[s])) s = l + 1;
        if (s == i) break;
        int t = h->r[s];
        h->r[s] = h->r[i];
        h->r[i] = t;
        i = s;
    }
    return top;
}

/* A chunk and its cost, for sorting. */
typedef struct { double cost; long k; } keyed;

static int by_cost_asc(const void *a, const void *b) {
    const keyed *x = a, *y = b;
    if (x->cost != y->cost) return x->cost < y->cost ? -1 : 1;
    return x->k < y->k ? -1 : x->k > y->k;
}
static int by_cost_desc(const void *a, const void *b) { return -by_cost_asc(a, b); }

/* Chunks per rank: the largest divisor of n not above the cap. */
static long chunks_per_rank(long n) {
    for (long m = n < USP_DISPATCH_MAX_CHUNKS_PER_RANK ? n : USP_DISPATCH_MAX_CHUNKS_PER_RANK; m > 1; m--)
        if (n % m == 0) return m;
    return 1;
}

/* Swaps one chunk of the most loaded rank with one of the least loaded while
 * that narrows their gap; bounded passes. */
static void refine(int R, long C, const double *cost, int *owner, double *load, keyed *scratch) {
    int passes = R * 8 < 512 ? R * 8 : 512;
    for (int pass = 0; pass < passes; pass++) {
        int a = 0, b = 0;
        for (int r = 1; r < R; r++) {
            if (load[r] > load[a]) a = r;
            if (load[r] < load[b]) b = r;
        }
        double gap = load[a] - load[b];
        if (!(gap > 0)) return;
        long nb = 0;
        for (long k = 0; k < C; k++)
            if (owner[k] == b) scratch[nb++] = (keyed){cost[k], k};
        qsort(scratch, (size_t)nb, sizeof *scratch, by_cost_asc);
        long best_a = -1, best_b = -1;
        double best = gap; /* the new larger side's excess over the old smaller one */
        for (long ka = 0; ka < C; ka++) {
            if (owner[ka] != a) continue;
            double want = cost[ka] - gap / 2; /* b's cost that halves the gap */
            long lo = 0, hi = nb;
            while (lo < hi) {
                long mid = (lo + hi) / 2;
                if (scratch[mid].cost < want) lo = mid + 1; else hi = mid;
            }
            for (long c = lo - 1; c <= lo; c++) {
                if (c < 0 || c >= nb) continue;
                double d = cost[ka] - scratch[c].cost;
                if (!(d > 0 && d < gap)) continue;
                double worse = d > gap / 2 ? d : gap - d; /* max(load_a - d, load_b + d) - load_b */
                if (worse < best) { best = worse; best_a = ka; best_b = scratch[c].k; }
            }
        }
        if (best_a < 0) return;
        double d = cost[best_a] - cost[best_b];
        owner[best_a] = b;
        owner[best_b] = a;
        load[a] -= d;
        load[b] += d;
    }
}

/* The ring's critical path for an assignment of chunks (owner[k]), in
 * visible pairs: at ring step s every rank r attends to the keys of rank
 * r - s, and the step lasts as long as its largest block, so the sum over
 * steps of the largest block. (Allgather's blocks run back to back too.) */
static double ring_path(const usp_mask *m, int R, long C, long len, const int *owner, double *scratch) {
    long L = m->seq;
    double *w = scratch;                         /* [R][R] pairs of block (r, j) */
    long *pref = (long *)(scratch + (size_t)R * R); /* [R][C+1] chunks of rank j before chunk c */
    memset(w, 0, (size_t)R * R * sizeof *w);
    for (int j = 0; j < R; j++) pref[(size_t)j * (C + 1)] = 0;
    for (long c = 0; c < C; c++)
        for (int j = 0; j < R; j++)
            pref[(size_t)j * (C + 1) + c + 1] = pref[(size_t)j * (C + 1) + c] + (owner[c] == j);
    for (int b = 0; b < m->lists; b++)
        for (int l = 0; l < m->layers; l++) {
            const int32_t *lo, *hi;
            usp_mask_layer_rows(m, b, l, &lo, &hi);
            for (long q = 0; q < L; q++) {
                if (hi[q] <= lo[q]) continue;
                int r = owner[q / len];
                long c0 = lo[q] / len, c1 = (hi[q] - 1) / len; /* first and last chunk the keys touch */
                if (c0 == c1) { w[(size_t)r * R + owner[c0]] += hi[q] - lo[q]; continue; }
                w[(size_t)r * R + owner[c0]] += (c0 + 1) * len - lo[q];
                w[(size_t)r * R + owner[c1]] += hi[q] - c1 * len;
                for (int j = 0; j < R; j++)
                    w[(size_t)r * R + j] += (double)(pref[(size_t)j * (C + 1) + c1] - pref[(size_t)j * (C + 1) + c0 + 1]) * len;
            }
        }
    double path = 0;
    for (int s = 0; s < R; s++) {
        double worst = 0;
        for (int r = 0; r < R; r++) {
            double x = w[(size_t)r * R + (r - s + R) % R];
            if (x > worst) worst = x;
        }
        path += worst;
    }
    return path;
}

static usp_status balanced_tokens(const usp_mask *m, int R, int32_t *tokens) {
    long L = m->seq, n = L / R, per = chunks_per_rank(n), len = n / per, C = (long)R * per;
    double *cost = usp_calloc((size_t)C, sizeof *cost), *load = usp_calloc((size_t)R, sizeof *load);
    keyed *order = usp_malloc((size_t)C * sizeof *order);
    long *pos = usp_calloc((size_t)R, sizeof *pos);
    int *owner = usp_malloc((size_t)C * sizeof *owner), *count = usp_calloc((size_t)R, sizeof *count);
    int *heap = usp_malloc((size_t)R * sizeof *heap);
    usp_status st = cost && load && order && pos && owner && count && heap ? USP_OK : USP_EINTERNAL;
    if (st == USP_OK) {
        for (int b = 0; b < m->lists; b++)
            for (int l = 0; l < m->layers; l++) {
                const int32_t *lo, *hi;
                usp_mask_layer_rows(m, b, l, &lo, &hi);
                for (long q = 0; q < L; q++)
                    if (hi[q] > lo[q]) cost[q / len] += hi[q] - lo[q];
            }
        for (long k = 0; k < C; k++) order[k] = (keyed){cost[k], k};
        qsort(order, (size_t)C, sizeof *order, by_cost_desc);
        rank_heap h = {heap, 0, load};
        for (int r = 0; r < R; r++) heap_push(&h, r);
        for (long i = 0; i < C; i++) {
            int r = heap_pop(&h);
            owner[order[i].k] = r;
            load[r] += order[i].cost;
            if (++count[r] < per) heap_push(&h, r);
        }
        refine(R, C, cost, owner, load, order);
        /* The snake (chunks dealt 0..R-1, R-1..0, ...) spreads every document
         * over every rank in near-equal parts, which also evens out each
         * ring step; keep it when its ring path is shorter. */
        int *snake = usp_malloc((size_t)C * sizeof *snake);
        double *scratch = usp_malloc((size_t)R * R * sizeof *scratch + (size_t)R * (C + 1) * sizeof(long));
        if (snake && scratch) {
            for (long k = 0; k < C; k++) {
                int p = (int)(k % R);
                snake[k] = (k / R) % 2 ? R - 1 - p : p;
            }
            if (ring_path(m, R, C, len, snake, scratch) < ring_path(m, R, C, len, owner, scratch))
                memcpy(owner, snake, (size_t)C * sizeof *owner);
        } else {
            st = USP_EINTERNAL;
        }
        free(snake);
        free(scratch);
    }
    if (st == USP_OK) {
        for (long k = 0; k < C; k++) {
            int r = owner[k];
            for (long t = 0; t < len; t++) tokens[(size_t)r * n + pos[r]++] = (int32_t)(k * len + t);
        }
    }
    free(cost); free(load); free(order); free(pos); free(owner); free(count); free(heap);
    return st;
}

/* ---- token lists -------------------------------------------------------- */

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y;
}

/* The entry of (token layout, ring), made when first asked; call locked. */
static dispatch_entry *entry_of(usp_mask *m, const usp_config *c) {
    int impl = (int)usp_token_layout(c), R = c->ring;
    for (dispatch_entry *e = m->cache; e; e = e->next)
        if (e->impl == impl && e->ring == R) return e;
    long n = m->seq / R;
    dispatch_entry *e = usp_calloc(1, sizeof *e);
    if (!e) return NULL;
    e->impl = impl;
    e->ring = R;
    e->tokens = usp_malloc((size_t)R * n * sizeof *e->tokens);
    usp_status st = e->tokens ? USP_OK : USP_EINTERNAL;
    if (st == USP_OK && impl == USP_RING_BALANCED) {
        st = balanced_tokens(m, R, e->tokens);
    } else if (st == USP_OK) {
        for (int r = 0; r < R; r++) {
            int32_t *t = e->tokens + (size_t)r * n;
            for (long i = 0; i < n; i++) t[i] = (int32_t)usp_ring_token(c, r, i);
            qsort(t, (size_t)n, sizeof *t, cmp_i32); /* every layout's lists ascend already */
        }
    }
    if (st != USP_OK) { free(e->tokens); free(e); return NULL; }
    e->next = m->cache;
    m->cache = e;
    return e;
}

const int32_t *usp_dispatch_tokens(const usp_config *c) {
    usp_mask *m = (usp_mask *)c->mask; /* the cache is the only thing written */
    if (!m) { usp_fail(USP_EINVAL, "no mask"); return NULL; }
    pthread_mutex_lock(&m->lock);
    dispatch_entry *e = entry_of(m, c);
    pthread_mutex_unlock(&m->lock);
    return e ? e->tokens : NULL;
}

/* ---- blocks ------------------------------------------------------------- */

/* First index p with a[p] >= x in ascending a[0, n), searched from p, the
 * answer for a nearby x: amortized O(1) when x grows row by row. */
static long seek(const int32_t *a, long n, long x, long p) {
    long lo, hi;
    if (p > 0 && a[p - 1] >= x) {
        lo = 0;
        hi = p - 1;
    } else {
        lo = hi = p;
        for (long step = 1; hi < n && a[hi] < x; step *= 2) {
            lo = hi + 1;
            hi += step;
        }
        if (hi > n) hi = n;
    }
    while (lo < hi) {
        long mid = lo + (hi - lo) / 2;
        if (a[mid] < x) lo = mid + 1; else hi = mid;
    }
    return lo;
}

/* Layer `layer` of list `list` between the queries of rank r and the keys of
 * rank j, as local intervals. */
static void map_rows(const usp_mask *m, const int32_t *tokens, long n, int r, int j, int layer,
                     int list, int32_t *lo, int32_t *hi) {
    const int32_t *glo, *ghi, *tq = tokens + (size_t)r * n, *tk = tokens + (size_t)j * n;
    usp_mask_layer_rows(m, list, layer, &glo, &ghi);
    long pl = 0, ph = 0;
    for (long i = 0; i < n; i++) {
        int32_t t = tq[i];
        if (glo[t] >= ghi[t]) { lo[i] = hi[i] = 0; continue; }
        pl = seek(tk, n, glo[t], pl);
        ph = seek(tk, n, ghi[t], ph);
        lo[i] = (int32_t)pl;
        hi[i] = (int32_t)ph;
    }
}

/* The keys that rows [t, t + rows) of [t, q1) see, relative to k0: the union
 * the kernels load key tiles for (usp/rowmask.h). */
static usp_key_range row_tile_keys(const int32_t *lo, const int32_t *hi, long t, long rows, long q1, long k0) {
    usp_key_range r = usp_key_range_none();
    for (long i = t; i < q1 && i < t + rows; i++)
        r = usp_key_range_add(r, (usp_key_interval){(int)(lo[i] - k0), (int)(hi[i] - k0)});
    return r;
}

void usp_tile_work_add(const int32_t *lo, const int32_t *hi, long q0, long q1, long k0, int *scratch,
                       long nkt, usp_tile_work *fwd, usp_tile_work *bwd) {
    int first, end;
    /* forward: each tile of USP_TILE_FWD_ROWS rows visits the key tiles of its rows' union */
    for (long t = q0; t < q1; t += USP_TILE_FWD_ROWS) {
        usp_tile_range(row_tile_keys(lo, hi, t, USP_TILE_FWD_ROWS, q1, k0), USP_TILE_FWD_KEYS, &first, &end);
        if (first >= end) continue;
        fwd->tile_pairs += (double)(end - first) * USP_TILE_FWD_ROWS * USP_TILE_FWD_KEYS;
        fwd->units += 1;
    }
    /* backward: each tile of USP_TILE_BWD_KEYS keys visits the query tiles of
     * USP_TILE_BWD_ROWS rows that see any of its keys */
    memset(scratch, 0, (size_t)nkt * sizeof *scratch);
    for (long t = q0; t < q1; t += USP_TILE_BWD_ROWS) {
        usp_tile_range(row_tile_keys(lo, hi, t, USP_TILE_BWD_ROWS, q1, k0), USP_TILE_BWD_KEYS, &first, &end);
        for (long kt = first; kt < end && kt < nkt; kt++) scratch[kt]++;
    }
    for (long kt = 0; kt < nkt; kt++)
        if (scratch[kt]) {
            bwd->tile_pairs += (double)scratch[kt] * USP_TILE_BWD_ROWS * USP_TILE_BWD_KEYS;
            bwd->units += 1;
        }
}

void usp_tile_work_flops(usp_tile_work w, int bwd, double per_pair, double *tile_flops, double *loop_flops) {
    *tile_flops = per_pair * w.tile_pairs;
    *loop_flops = per_pair * w.units * (bwd ? USP_TILE_BWD_KEYS : USP_TILE_FWD_ROWS);
}

double usp_rated_flops(double flops, double loop, double tile_flops, double loop_flops, double shrt, double rowmask) {
    if (tile_flops > 0) return (tile_flops + shrt * loop_flops) / (rowmask > 0 ? rowmask : 1.0);
    return shrt > 0 && loop > 0 ? flops * (1 + shrt / loop) : flops;
}

/* Bounding box, pairs and kind of one block from its rows in every list
 * (rows[list] = lo, rows[list] + n = hi), and its tile work when it has
 * per-row masks (USP_MBLK_ROWS); scratch: n / USP_TILE_BWD_KEYS + 1 ints. */
static usp_mask_block summarize(int32_t *const *rows, int lists, long n, int *scratch) {
    usp_mask_block mb;
    memset(&mb, 0, sizeof mb);
    long q0 = -1, q1 = 0, k0 = 0, k1 = 0;
    for (int b = 0; b < lists; b++) {
        const int32_t *lo = rows[b], *hi = rows[b] + n;
        for (long i = 0; i < n; i++) {
            if (lo[i] >= hi[i]) continue;
            if (q0 < 0 || i < q0) q0 = i;
            if (i + 1 > q1) q1 = i + 1;
            if (mb.pairs == 0 || lo[i] < k0) k0 = lo[i];
            if (mb.pairs == 0 || hi[i] > k1) k1 = hi[i];
            mb.pairs += hi[i] - lo[i];
        }
    }
    if (q0 < 0) { mb.kind = USP_MBLK_EMPTY; return mb; }
    mb.blk = (usp_block){(int)q0, (int)(q1 - q0), (int)k0, (int)(k1 - k0), 0, 0};
    int full = 1, causal = 1;
    long diag = rows[0][n + q0] - k0 - 1; /* hi of the first row, as its diagonal */
    for (int b = 0; b < lists && (full || causal); b++) {
        const int32_t *lo = rows[b], *hi = rows[b] + n;
        for (long i = q0; i < q1; i++) {
            long want = i - q0 + diag + 1;
            if (want > k1 - k0) want = k1 - k0;
            if (lo[i] != k0 || hi[i] != k1) full = 0;
            if (lo[i] != k0 || hi[i] != k0 + want) causal = 0;
        }
    }
    if (full) {
        mb.kind = USP_MBLK_FULL;
    } else if (causal) {
        mb.kind = USP_MBLK_CAUSAL;
        mb.blk.causal = 1;
        mb.blk.diag = (int)diag;
    } else {
        mb.kind = USP_MBLK_ROWS;
        for (int b = 0; b < lists; b++)
            usp_tile_work_add(rows[b], rows[b] + n, q0, q1, k0, scratch, n / USP_TILE_BWD_KEYS + 1, &mb.fwd, &mb.bwd);
    }
    return mb;
}

static usp_status compute_blocks(const usp_mask *m, dispatch_entry *e) {
    int R = e->ring, lists = m->lists, layers = m->layers;
    long n = m->seq / R;
    usp_mask_block *blocks = usp_calloc((size_t)R * R * layers, sizeof *blocks);
    int32_t *mem = usp_malloc((size_t)lists * 2 * n * sizeof *mem);
    int32_t **rows = usp_malloc((size_t)lists * sizeof *rows);
    int *scratch = usp_malloc((size_t)(n / USP_TILE_BWD_KEYS + 1) * sizeof *scratch);
    if (!blocks || !mem || !rows || !scratch) {
        free(blocks); free(mem); free(rows); free(scratch);
        return USP_EINTERNAL;
    }
    for (int b = 0; b < lists; b++) rows[b] = mem + (size_t)b * 2 * n;
    for (int r = 0; r < R; r++)
        for (int j = 0; j < R; j++)
            for (int l = 0; l < layers; l++) {
                for (int b = 0; b < lists; b++) map_rows(m, e->tokens, n, r, j, l, b, rows[b], rows[b] + n);
                blocks[((size_t)r * R + j) * layers + l] = summarize(rows, lists, n, scratch);
            }
    free(mem);
    free(rows);
    free(scratch);
    e->blocks = blocks;
    return USP_OK;
}

usp_status usp_mask_block_of(const usp_config *c, int r, int j, int layer, usp_mask_block *out) {
    usp_mask *m = (usp_mask *)c->mask;
    if (!m) return usp_fail(USP_EINVAL, "no mask");
    pthread_mutex_lock(&m->lock);
    dispatch_entry *e = entry_of(m, c);
    usp_status st = e ? USP_OK : USP_EINTERNAL;
    if (st == USP_OK && !e->blocks) st = compute_blocks(m, e);
    if (st == USP_OK) *out = e->blocks[((size_t)r * c->ring + j) * m->layers + layer];
    pthread_mutex_unlock(&m->lock);
    return st;
}

/* A block's sums are over the mask's lists: a mask of one list serves every batch element. */
static double batch_times(const usp_config *c) { return usp_mask_lists(c->mask) == 1 ? c->batch : 1; }

double usp_mask_block_pairs(const usp_config *c, const usp_mask_block *mb) { return mb->pairs * batch_times(c); }

usp_tile_work usp_mask_block_tiles(const usp_config *c, const usp_mask_block *mb, int bwd) {
    usp_tile_work w = bwd ? mb->bwd : mb->fwd;
    w.tile_pairs *= batch_times(c);
    w.units *= batch_times(c);
    return w;
}

usp_status usp_mask_block_rows(const usp_config *c, int r, int j, int layer, int b, int32_t *lo,
                               int32_t *hi) {
    const usp_mask *m = c->mask;
    const int32_t *tokens = usp_dispatch_tokens(c);
    if (!tokens) return USP_EINTERNAL;
    map_rows(m, tokens, m->seq / c->ring, r, j, layer, m->lists == 1 ? 0 : b, lo, hi);
    return USP_OK;
}

usp_status usp_step_row_mask(const usp_config *c, int rank, const usp_step *st, int32_t *lo, int32_t *hi) {
    int r, u, j = usp_step_src_block(c, rank, st);
    usp_coords_of(c, rank, &r, &u);
    long n = c->seq / c->ring, q0 = st->blk.q_begin, nq = st->blk.q_len, k0 = st->blk.kv_begin;
    if (st->mask_layer < 0 || !c->mask) return usp_fail(USP_EINVAL, "step %s has no mask layer", st->name);
    int32_t *a = usp_malloc(2 * (size_t)n * sizeof *a);
    if (!a) return USP_EINTERNAL;
    int lists = usp_mask_lists(c->mask);
    usp_status s = USP_OK;
    for (int b = 0; b < c->batch && s == USP_OK; b++) {
        if (b == 0 || lists > 1) s = usp_mask_block_rows(c, r, j, st->mask_layer, b, a, a + n);
        for (long i = 0; i < nq && s == USP_OK; i++) {
            lo[(size_t)b * nq + i] = (int32_t)(a[q0 + i] - k0);
            hi[(size_t)b * nq + i] = (int32_t)(a[n + q0 + i] - k0);
        }
    }
    free(a);
    return s;
}

usp_status usp_dispatch_balance(const usp_config *c, double *per_rank, double *max_over_mean) {
    int R = c->ring;
    long n = c->seq / R;
    double *pairs = per_rank ? per_rank : usp_calloc((size_t)R, sizeof *pairs);
    if (!pairs) return USP_EINTERNAL;
    const usp_mask *m = c->mask;
    const int32_t *tokens = m ? usp_dispatch_tokens(c) : NULL;
    if (m && !tokens) { if (!per_rank) free(pairs); return USP_EINTERNAL; }
    double sum = 0, max = 0;
    for (int r = 0; r < R; r++) {
        pairs[r] = 0;
        for (long i = 0; i < n; i++) {
            long t = m ? tokens[(size_t)r * n + i] : usp_ring_token(c, r, i);
            if (!m) { pairs[r] += (c->causal ? t + 1 : c->seq) * (double)c->batch; continue; }
            for (int b = 0; b < m->lists; b++)
                for (int l = 0; l < m->layers; l++) {
                    const int32_t *lo, *hi;
                    usp_mask_layer_rows(m, b, l, &lo, &hi);
                    if (hi[t] > lo[t]) pairs[r] += (double)(hi[t] - lo[t]) * (m->lists == 1 ? c->batch : 1);
                }
        }
        sum += pairs[r];
        if (pairs[r] > max) max = pairs[r];
    }
    *max_over_mean = sum > 0 ? max / (sum / R) : 1.0;
    if (!per_rank) free(pairs);
    return USP_OK;
}
