/* published_floor.c: what run-to-run noise leaves of a published table
 * (usp/published.h, usp_pub_floor).
 *
 * Some tables measure one program more than once under different column
 * names: the USP tables' ulysses-8 rows have no ring (ring degree 1), so the
 * benchmark's basic, zigzag and stripe rings all run the same single
 * attention call, yet each is a cell of its own. A deterministic prediction
 * gives such rows one figure p, so their measured spread is a floor under
 * its error:
 *
 *   a group measured m_1 .. m_k (throughputs), error_i = (p - m_i) / m_i:
 *   the largest |error_i| is least at p = 2 / (1/m_min + 1/m_max), where it
 *   is (m_max - m_min) / (m_max + m_min); the sum of |error_i| =
 *   sum (1/m_i) |p - m_i| is convex and piecewise linear in p, so it is least
 *   at one of the m_j (a weighted median).
 *
 * A table's floor: the widest group's least largest |error|, and the least
 * mean |error| over the table's rows (a row alone in its group can be met
 * exactly, so it adds 0). No model of the machine can do better than the
 * floor on these rows; it says nothing of the rows that ran once.
 *
 * Rows run one program when everything the prediction reads is equal: for
 * attention rows the simulated configuration (tokens run, batch, heads,
 * K/V heads, head dim, dtype, causal, layout, ulysses, ring, and the ring
 * variant only where the ring has more than one rank), forward or backward,
 * QKV packing, the kernel-only call and the varlen reading; for training rows the sequence, global
 * batch, micro-batch and the mix. Rows marked "skip" are left out. */
#include "usp/published.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int same_attention(const usp_pub_row *a, const usp_pub_row *b) {
    const usp_config *x = &a->cfg, *y = &b->cfg;
    if (x->mask || y->mask) return 0; /* a mask of its own is never compared */
    return x->seq == y->seq && x->batch == y->batch && x->heads == y->heads && x->kv_heads == y->kv_heads &&
           x->head_dim == y->head_dim && x->dtype == y->dtype && x->causal == y->causal && x->layout == y->layout &&
           x->ulysses == y->ulysses && x->ring == y->ring && (x->ring == 1 || x->ring_impl == y->ring_impl) &&
           x->contiguous == y->contiguous && a->backward == b->backward && a->qkv_packed == b->qkv_packed &&
           a->kernel_only == b->kernel_only && a->varlen == b->varlen;
}

static int same_training(const usp_pub_row *a, const usp_pub_row *b) {
    const usp_mix *x = &a->mix, *y = &b->mix;
    return a->seq == b->seq && a->global_batch == b->global_batch && a->micro_batch == b->micro_batch &&
           x->dp == y->dp && x->tp == y->tp && x->ulysses == y->ulysses && x->ring == y->ring &&
           x->zero == y->zero && x->recompute == y->recompute && x->tp_sp == y->tp_sp &&
           x->tp_overlap == y->tp_overlap;
}

int usp_pub_same_program(const usp_pub_table *t, const usp_pub_row *a, const usp_pub_row *b) {
    if (a->skip || b->skip || !(a->measured > 0) || !(b->measured > 0)) return 0;
    return t->kind == USP_PUB_ATTENTION ? same_attention(a, b) : same_training(a, b);
}

static int counted(const usp_pub_row *r, int seq) {
    return !r->skip && r->measured > 0 && (seq <= 0 || r->seq == seq);
}

/* The least sum of |p / m_i - 1| over p, at one of the m_j. */
static double least_sum(const double *m, int k) {
    double best = INFINITY;
    for (int j = 0; j < k; j++) {
        double sum = 0;
        for (int i = 0; i < k; i++) sum += fabs(m[j] / m[i] - 1);
        if (sum < best) best = sum;
    }
    return best;
}

void usp_pub_floor_make(const usp_pub_table *t, int seq, usp_pub_floor *f) {
    memset(f, 0, sizeof *f);
    f->widest = -1;
    f->spread = 1;
    int *group = malloc((size_t)(t->nrows > 0 ? t->nrows : 1) * sizeof *group);
    double *m = malloc((size_t)(t->nrows > 0 ? t->nrows : 1) * sizeof *m);
    if (!group || !m) { free(group); free(m); return; }
    for (int i = 0; i < t->nrows; i++) group[i] = -1;
    double sum = 0;
    for (int i = 0; i < t->nrows; i++) {
        if (!counted(&t->rows[i], seq)) continue;
        f->counted++;
        if (group[i] >= 0) continue;
        int k = 0;
        double lo = t->rows[i].measured, hi = lo;
        for (int j = i; j < t->nrows; j++) {
            if (j != i && (!counted(&t->rows[j], seq) || group[j] >= 0 ||
                           !usp_pub_same_program(t, &t->rows[i], &t->rows[j])))
                continue;
            group[j] = i;
            m[k++] = t->rows[j].measured;
            lo = fmin(lo, t->rows[j].measured);
            hi = fmax(hi, t->rows[j].measured);
        }
        if (k < 2) continue;
        f->groups++;
        f->rows += k;
        sum += least_sum(m, k);
        double worst = 100 * (hi - lo) / (hi + lo);
        if (worst > f->max_abs_pct || f->widest < 0) {
            f->max_abs_pct = worst;
            f->spread = hi / lo;
            f->widest = i;
        }
    }
    f->mean_abs_pct = f->counted ? 100 * sum / f->counted : 0;
    free(group);
    free(m);
}
