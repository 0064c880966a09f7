/* plan.c: enumerate the mixes, simulate each one's representative layer and
 * step-level parts, rank them.
 *
 * Programs that time the same thing are simulated once: ZeRO-1 and ZeRO-2
 * send the same bytes at the same moments (they differ in memory only), and
 * every ZeRO stage is the same program when one GPU holds each TP shard. */
#include "plan_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Programs per simulation (one platform load, one progress line), fewer on
 * large platforms, whose loading is itself long and whose programs are too.
 * A program is built in the simulation's process when it runs, for the ranks
 * that run, so one is held at a time. */
enum { BATCH_PROGRAMS = 24, BATCH_RANKS = 65536 };

void usp_plan_options_init(usp_plan_options *o) {
    memset(o, 0, sizeof *o);
    o->zero = -1;
    o->recompute = -1;
}

/* ------------------------------------------------------------ enumeration */

static int fixed_ok(int fixed, int value) { return fixed <= 0 || fixed == value; }

static usp_status add_point(usp_plan *p, int *cap, const usp_mix *x) {
    if (p->count == *cap) {
        int n = *cap ? *cap * 2 : 64;
        usp_plan_point *grown = realloc(p->points, (size_t)n * sizeof *grown);
        if (!grown) return usp_fail(USP_EINTERNAL, "out of memory enumerating mixes");
        p->points = grown;
        *cap = n;
    }
    usp_plan_point *pt = &p->points[p->count++];
    memset(pt, 0, sizeof *pt);
    pt->mix = *x;
    return USP_OK;
}

static usp_status add_variants(const usp_plan_options *o, usp_plan *p, int *cap, int dp, int tp, int u, int r) {
    /* One GPU per TP shard: every ZeRO stage is ZeRO-0. */
    int zmax = o->zero < 0 && dp * u * r == 1 ? 0 : 3;
    for (int z = 0; z <= zmax; z++) {
        if (o->zero >= 0 && o->zero != z) continue;
        for (int rc = 0; rc <= 1; rc++) {
            if (o->recompute >= 0 && o->recompute != rc) continue;
            usp_mix x = {dp, tp, u, r, z, rc, 1, o->tp_overlap};
            USP_TRY(add_point(p, cap, &x));
        }
    }
    return USP_OK;
}

/* Every dp x tp x ulysses x ring = gpus, ZeRO stage and recomputation the
 * options leave open. Four fixed degrees are taken as given, so that a
 * product other than the GPU count is refused with the reason. */
static usp_status enumerate(const usp_plan_options *o, usp_plan *p) {
    int cap = 0, n = o->gpus;
    if (o->dp > 0 && o->tp > 0 && o->ulysses > 0 && o->ring > 0)
        return add_variants(o, p, &cap, o->dp, o->tp, o->ulysses, o->ring);
    for (int tp = 1; tp <= n; tp++) {
        if (n % tp || !fixed_ok(o->tp, tp)) continue;
        for (int u = 1; u <= n / tp; u++) {
            if ((n / tp) % u || !fixed_ok(o->ulysses, u)) continue;
            for (int r = 1; r <= n / tp / u; r++) {
                int dp = n / tp / u / r;
                if ((n / tp / u) % r || !fixed_ok(o->ring, r) || !fixed_ok(o->dp, dp)) continue;
                USP_TRY(add_variants(o, p, &cap, dp, tp, u, r));
            }
        }
    }
    return USP_OK;
}

/* ----------------------------------------------------- distinct programs */

/* What decides a program's steps: the degrees, the ZeRO traffic pattern,
 * recomputation (layers only), and whether it is a micro-batch before the
 * last (accumulating). */
typedef struct {
    usp_mix mix;
    int layer, accumulating;
} program_key;

/* ZeRO-1 and ZeRO-2 send alike, except while accumulating (ZeRO-2 reduces
 * every micro-batch's gradients). */
static int zero_pattern(const usp_mix *x, int accumulating) {
    if (usp_mix_zero_group(x) < 2) return 0;
    return x->zero == 2 && !accumulating ? 1 : x->zero;
}

static int same_program(const program_key *k, const usp_mix *x, int layer, int accumulating) {
    const usp_mix *y = &k->mix;
    return k->layer == layer && k->accumulating == accumulating && y->dp == x->dp && y->tp == x->tp &&
           y->ulysses == x->ulysses && y->ring == x->ring && y->tp_sp == x->tp_sp && y->tp_overlap == x->tp_overlap &&
           zero_pattern(y, accumulating) == zero_pattern(x, accumulating) && (!layer || y->recompute == x->recompute);
}

typedef struct {
    program_key *keys;
    int count, cap;
} program_set;

/* The index of the program that times (x, layer), added when new. */
static int program_index(program_set *ps, const usp_mix *x, int layer, int accumulating) {
    for (int i = 0; i < ps->count; i++)
        if (same_program(&ps->keys[i], x, layer, accumulating)) return i;
    if (ps->count == ps->cap) {
        int n = ps->cap ? ps->cap * 2 : 64;
        program_key *grown = realloc(ps->keys, (size_t)n * sizeof *grown);
        if (!grown) return -1;
        ps->keys = grown;
        ps->cap = n;
    }
    ps->keys[ps->count] = (program_key){*x, layer, accumulating};
    return ps->count++;
}

/* Starts the simulation of programs [from, to) of the set (built in the
 * simulation's process) in a child of its own. A layer program (not an
 * accumulating one) whose lower bound exceeds layer_cutoff > 0 is not
 * simulated (plan_sim_result.cut): a mix's step is at least its layer count
 * times its layer program's makespan. */
static usp_status start_batch(const usp_workload *w, const usp_plan_options *o, const plan_device *dev,
                              const program_set *ps, int from, int to, double layer_cutoff, const int *skip_if,
                              plan_sim_result *results, plan_sim_job *job) {
    int n = to - from;
    usp_mix *mixes = usp_calloc((size_t)n, sizeof *mixes);
    int *layers = usp_calloc((size_t)n, sizeof *layers), *accumulating = usp_calloc((size_t)n, sizeof *accumulating);
    double *cutoff = usp_calloc((size_t)n, sizeof *cutoff);
    usp_status st = mixes && layers && accumulating && cutoff ? USP_OK : USP_EINTERNAL;
    for (int i = 0; st == USP_OK && i < n; i++) {
        mixes[i] = ps->keys[from + i].mix;
        layers[i] = ps->keys[from + i].layer;
        accumulating[i] = ps->keys[from + i].accumulating;
        cutoff[i] = layers[i] && !accumulating[i] ? layer_cutoff : 0;
    }
    plan_programs progs = {w, dev, mixes, layers, accumulating, NULL, cutoff, skip_if + from};
    if (st == USP_OK) st = plan_sim_start(&progs, n, o->platform, o->gpus, o->full, results + from, job);
    free(mixes); /* the child has its copy */
    free(layers);
    free(accumulating);
    free(cutoff);
    return st;
}

/* Simulations run at once: one per processor, at most MAX_JOBS (each child
 * holds a platform of o->gpus hosts). */
enum { MAX_JOBS = 4 };
static int sim_jobs(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > MAX_JOBS ? MAX_JOBS : (int)n;
}

/* ------------------------------------------------------------- evaluation */

/* res[0], res[1]: the layer and edges of the step's last micro-batch;
 * res[2], res[3]: those of each micro-batch before it (accumulating), NULL
 * without accumulation. A step is n - 1 accumulating micro-batches and the
 * last one, back to back. */
static void fill_point(const usp_plan *p, usp_plan_point *pt, const plan_sim_result *const res[4]) {
    const plan_sim_result *layer = res[0], *edges = res[1];
    double layers = p->work.model.layers, more = pt->accumulation_steps - 1;
    pt->layer_fwd_s = layer->fwd_s;
    pt->layer_bwd_s = layer->makespan_s - layer->fwd_s;
    pt->edges_s = edges->makespan_s;
    pt->step_s = layers * layer->makespan_s + edges->makespan_s;
    pt->compute_s = layers * layer->compute_s + edges->compute_s;
    for (int t = 0; t < USP_TERM_COUNT; t++) {
        pt->simulated.layer[t] = layer->bytes[t];
        pt->simulated.edges[t] = edges->bytes[t];
        pt->simulated.step[t] = layers * layer->bytes[t] + edges->bytes[t];
    }
    if (more > 0 && res[2] && res[3]) {
        pt->step_s += more * (layers * res[2]->makespan_s + res[3]->makespan_s);
        pt->compute_s += more * (layers * res[2]->compute_s + res[3]->compute_s);
        for (int t = 0; t < USP_TERM_COUNT; t++) {
            pt->simulated.accum[t] = layers * res[2]->bytes[t] + res[3]->bytes[t];
            pt->simulated.step[t] += more * pt->simulated.accum[t];
        }
    }
    pt->exposed_s = pt->step_s - pt->compute_s;
    pt->tflops_per_gpu = p->flops.total / p->gpus / pt->step_s / 1e12;
    pt->mfu = pt->tflops_per_gpu * 1e12 / p->peak_flops;
}

/* Fitting, out of memory, not simulated, refused. */
static int point_class(const usp_plan_point *pt) {
    return pt->status != USP_OK ? 3 : pt->pruned ? 2 : pt->oom ? 1 : 0;
}

/* Step times within 1e-4 of each other are a tie (the simulation's own
 * rounding is far below that), broken by fewer bytes on the network, then
 * less memory: ZeRO-2 before ZeRO-1 before ZeRO-3 when all hide alike. */
static long time_bucket(double s) { return lround(log(s) * 1e4); }

static double step_bytes(const usp_plan_point *p) {
    double b = 0;
    for (int t = 0; t < USP_TERM_COUNT; t++) b += p->simulated.step[t];
    return b;
}

static int cmp_double(double a, double b) { return (a > b) - (a < b); }

static int cmp_points(const void *a, const void *b) {
    const usp_plan_point *x = a, *y = b;
    int cx = point_class(x), cy = point_class(y);
    if (cx != cy) return cx - cy;
    if (cx >= 2) return 0;
    long tx = time_bucket(x->step_s), ty = time_bucket(y->step_s);
    if (tx != ty) return tx > ty ? 1 : -1;
    int by_bytes = cmp_double(step_bytes(x), step_bytes(y));
    return by_bytes ? by_bytes : cmp_double(x->mem.total, y->mem.total);
}

/* Refuses the impossible points with their reason; the memory of the others. */
static void check_points(const usp_workload *w, const usp_plan_options *o, usp_plan *p) {
    for (int i = 0; i < p->count; i++) {
        usp_plan_point *pt = &p->points[i];
        pt->status = usp_mix_check(w, &pt->mix, o->gpus);
        if (pt->status != USP_OK) { snprintf(pt->why, sizeof pt->why, "%s", usp_error()); continue; }
        usp_memory_closed_form(w, &pt->mix, &pt->mem);
        pt->oom = pt->mem.total > p->usable_bytes;
        pt->micro_batch = usp_micro_batch(w, &pt->mix);
        pt->accumulation_steps = usp_accumulation_steps(w, &pt->mix);
        p->runnable++;
    }
}

/* Recomputation only slows a mix down: where the same mix fits without it,
 * the recomputing twin is dropped unsimulated. */
static int fits_without_recompute(const usp_plan *p, const usp_mix *x) {
    for (int j = 0; j < p->count; j++) {
        const usp_plan_point *q = &p->points[j];
        usp_mix y = q->mix;
        y.recompute = 1;
        if (!q->mix.recompute && q->status == USP_OK && !q->oom && !memcmp(&y, x, sizeof y)) return 1;
    }
    return 0;
}

static void drop_needless_recomputation(usp_plan *p) {
    int kept = 0;
    for (int i = 0; i < p->count; i++) {
        usp_plan_point *pt = &p->points[i];
        if (pt->status == USP_OK && pt->mix.recompute && fits_without_recompute(p, &pt->mix)) { p->runnable--; continue; }
        p->points[kept++] = *pt;
    }
    p->count = kept;
}

/* Step times whose ratio is within this are a tie (time_bucket's 1e-4, with
 * room): a point is pruned only when its bound is beyond the threshold by more. */
static const double PRUNE_TIE = 2e-4;

typedef struct {
    program_set ps;
    int *which;              /* [4 * count]: a point's layer, edges and accumulating twins (-2: none) */
    plan_sim_result *res;    /* [ps.count] */
    char *simulated;         /* [ps.count] */
    double *bound;           /* [count]: what rank 0's compute streams alone take in a step */
    int *order;              /* the points to simulate, by bound when pruning */
    int npoints;             /* of which */
} sim_plan_state;

/* Simulates the programs of the points pts[0..npts) not simulated yet, in
 * batches; *done counts the programs simulated, of `total`. */
static usp_status simulate_programs(const usp_workload *w, const usp_plan_options *o, const plan_device *dev,
                                    sim_plan_state *s, const int *pts, int npts, double layer_cutoff, int *done,
                                    int total) {
    program_set sub = {0};
    int *idx = usp_calloc((size_t)s->ps.count + 1, sizeof *idx), nidx = 0;
    if (!idx) return USP_EINTERNAL;
    for (int k = 0; k < npts; k++)
        for (int l = 0; l < 4; l++) {
            int j = s->which[4 * pts[k] + l];
            if (j < 0 || s->simulated[j]) continue;
            s->simulated[j] = 1;
            idx[nidx++] = j;
        }
    sub.keys = usp_calloc((size_t)nidx + 1, sizeof *sub.keys);
    plan_sim_result *r = usp_calloc((size_t)nidx + 1, sizeof *r);
    usp_status st = sub.keys && r ? USP_OK : USP_EINTERNAL;
    for (int k = 0; k < nidx && st == USP_OK; k++) sub.keys[k] = s->ps.keys[idx[k]];
    sub.count = sub.cap = nidx;
    int batch = BATCH_RANKS / o->gpus;
    if (batch > BATCH_PROGRAMS) batch = BATCH_PROGRAMS;
    if (batch < 1) batch = 1;
    /* The once-per-step parts of mixes whose one layer program is cut are not
     * simulated either: skip_if[k] is that layer program's place when it is
     * earlier in the same batch and every point needing program k needs it. */
    int *skip_if = usp_calloc((size_t)nidx + 1, sizeof *skip_if);
    if (st == USP_OK && !skip_if) st = USP_EINTERNAL;
    for (int k = 0; st == USP_OK && k < nidx; k++) {
        skip_if[k] = -1;
        if (sub.keys[k].layer || sub.keys[k].accumulating) continue;
        int layer = -1, unique = 1;
        for (int i = 0; i < s->npoints && unique; i++) {
            if (s->which[4 * i + 1] != idx[k]) continue;
            if (layer < 0) layer = s->which[4 * i];
            else if (s->which[4 * i] != layer) unique = 0;
        }
        for (int q = k - k % batch; unique && layer >= 0 && q < k; q++) /* the same batch, earlier */
            if (idx[q] == layer) skip_if[k] = q;
    }
    /* the batches, sim_jobs() at a time, each in its own child */
    plan_sim_job jobs[MAX_JOBS];
    int njobs = sim_jobs();
    for (int from = 0; st == USP_OK && from < nidx;) {
        int started = 0, ends[MAX_JOBS];
        for (; st == USP_OK && started < njobs && from < nidx; started++) {
            int to = from + batch < nidx ? from + batch : nidx;
            st = start_batch(w, o, dev, &sub, from, to, layer_cutoff, skip_if, r, &jobs[started]);
            if (st != USP_OK) break;
            ends[started] = to - from;
            from = to;
        }
        for (int k = 0; k < started; k++) { /* every started child is waited for, even after a failure */
            usp_status f = plan_sim_finish(&jobs[k]);
            if (st == USP_OK) st = f;
            *done += ends[k];
            if (st == USP_OK && o->progress) o->progress(o->progress_ctx, *done, total);
        }
    }
    for (int k = 0; k < nidx && st == USP_OK; k++) s->res[idx[k]] = r[k];
    free(skip_if);
    free(sub.keys);
    free(r);
    free(idx);
    return st;
}

static const double *g_sort_bound;
static int cmp_by_bound(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b;
    return cmp_double(g_sort_bound[i], g_sort_bound[j]);
}

static int point_simulated(const sim_plan_state *s, int i) {
    for (int l = 0; l < 4; l++)
        if (s->which[4 * i + l] >= 0 && !s->simulated[s->which[4 * i + l]]) return 0;
    return 1;
}

/* The keep-th best step time among the simulated fitting points, or infinity. */
static double kth_best(const usp_plan *p, const sim_plan_state *s, int keep) {
    double *t = usp_calloc((size_t)p->count + 1, sizeof *t);
    int n = 0;
    if (!t) return INFINITY;
    for (int i = 0; i < p->count; i++) {
        const usp_plan_point *pt = &p->points[i];
        if (pt->status == USP_OK && !pt->oom && !pt->pruned && point_simulated(s, i)) t[n++] = pt->step_s;
    }
    double r = INFINITY;
    if (n >= keep) {
        for (int a = 0; a < keep; a++) /* partial selection: keep is small */
            for (int b = a + 1; b < n; b++)
                if (t[b] < t[a]) { double x = t[a]; t[a] = t[b]; t[b] = x; }
        r = t[keep - 1];
    }
    free(t);
    return r;
}

static void prune(usp_plan_point *pt, const char *why) {
    pt->pruned = 1;
    snprintf(pt->why, sizeof pt->why, "%s", why);
}

/* The compute bound of every point (see simulate_points). */
static usp_status bound_points(const usp_workload *w, const plan_device *dev, usp_plan *p, sim_plan_state *s,
                               int *norder) {
    double *pb = usp_calloc((size_t)s->ps.count + 1, sizeof *pb);
    usp_status st = pb ? USP_OK : USP_EINTERNAL;
    for (int j = 0; st == USP_OK && j < s->ps.count; j++)
        st = plan_compute_bound(w, &s->ps.keys[j].mix, dev, s->ps.keys[j].layer, s->ps.keys[j].accumulating, &pb[j]);
    double layers = p->work.model.layers;
    for (int i = 0; st == USP_OK && i < p->count; i++) {
        usp_plan_point *pt = &p->points[i];
        if (pt->status != USP_OK) continue;
        if (pt->oom) { prune(pt, "not simulated: over memory, and enough mixes fit"); continue; }
        const int *wh = s->which + 4 * i;
        s->bound[i] = layers * pb[wh[0]] + pb[wh[1]];
        if (wh[2] >= 0 && wh[3] >= 0) s->bound[i] += (pt->accumulation_steps - 1) * (layers * pb[wh[2]] + pb[wh[3]]);
        s->order[(*norder)++] = i;
    }
    free(pb);
    g_sort_bound = s->bound;
    if (st == USP_OK) qsort(s->order, (size_t)*norder, sizeof *s->order, cmp_by_bound);
    return st;
}

/* Simulates the runnable points (each distinct program once) and ranks.
 * With o->keep > 0 only the keep best fitting points need exact times: when
 * that many fit, the points over memory are not simulated, and the fitting
 * ones are simulated in order of a bound no simulation can beat (the compute
 * rank 0 does, one step at a time: plan_compute_bound); once keep are
 * simulated, a point whose bound exceeds the keep-th best step time cannot
 * enter them and is not simulated either. */
static usp_status simulate_points(const usp_workload *w, const usp_plan_options *o, const plan_device *dev,
                                  usp_plan *p) {
    sim_plan_state s = {0};
    int n = p->count;
    s.npoints = n;
    /* per point: layer, edges, and with accumulation their accumulating twins */
    s.which = usp_calloc((size_t)n * 4 + 1, sizeof *s.which);
    s.bound = usp_calloc((size_t)n + 1, sizeof *s.bound);
    s.order = usp_calloc((size_t)n + 1, sizeof *s.order);
    usp_status st = s.which && s.bound && s.order ? USP_OK : USP_EINTERNAL;
    for (int i = 0; st == USP_OK && i < n; i++) {
        if (p->points[i].status != USP_OK) continue;
        int *wh = s.which + 4 * i;
        for (int k = 0; k < 4; k++) {
            int acc = k >= 2;
            wh[k] = acc && p->points[i].accumulation_steps < 2 ? -2
                                                                 : program_index(&s.ps, &p->points[i].mix, k % 2 == 0, acc);
            if (wh[k] == -1) st = usp_fail(USP_EINTERNAL, "out of memory");
        }
    }
    s.res = st == USP_OK ? usp_calloc((size_t)s.ps.count + 1, sizeof *s.res) : NULL;
    s.simulated = st == USP_OK ? usp_calloc((size_t)s.ps.count + 1, 1) : NULL;
    if (st == USP_OK && (!s.res || !s.simulated)) st = USP_EINTERNAL;
    int fits = 0, norder = 0, done = 0, total = 0;
    for (int i = 0; i < n; i++) fits += p->points[i].status == USP_OK && !p->points[i].oom;
    int keep = o->keep > 0 && fits >= o->keep ? o->keep : 0;
    if (st == USP_OK && keep) st = bound_points(w, dev, p, &s, &norder);
    else
        for (int i = 0; i < n; i++)
            if (p->points[i].status == USP_OK) s.order[norder++] = i;
    char *counted = st == USP_OK ? usp_calloc((size_t)s.ps.count + 1, 1) : NULL;
    for (int k = 0; counted && k < norder; k++)
        for (int l = 0; l < 4; l++) {
            int j = s.which[4 * s.order[k] + l];
            if (j >= 0 && !counted[j]) { counted[j] = 1; total++; }
        }
    free(counted);
    int batch = BATCH_RANKS / o->gpus;
    if (batch > BATCH_PROGRAMS) batch = BATCH_PROGRAMS;
    if (batch < 1) batch = 1;
    if (!keep) batch = norder; /* every point: the programs in batches, in order */
    for (int k = 0; st == USP_OK && k < norder;) {
        double threshold = keep ? kth_best(p, &s, keep) : INFINITY;
        int take = 0;
        while (k + take < norder && take < batch && !(s.bound[s.order[k + take]] > threshold * (1 + PRUNE_TIE)))
            take++;
        if (take == 0) { /* every point left is bounded out */
            for (; k < norder; k++)
                prune(&p->points[s.order[k]], "not simulated: its compute alone is slower than the best mixes");
            break;
        }
        /* a layer program whose lower bound puts every mix using it beyond
         * the threshold is not simulated either (plan_sim.c, lower_bound) */
        double layer_cutoff = isfinite(threshold) ? threshold * (1 + PRUNE_TIE) / p->work.model.layers : 0;
        st = simulate_programs(w, o, dev, &s, s.order + k, take, layer_cutoff, &done, total);
        for (int t = 0; st == USP_OK && t < take; t++) {
            int i = s.order[k + t];
            const plan_sim_result *r[4];
            for (int l = 0; l < 4; l++) r[l] = s.which[4 * i + l] >= 0 ? &s.res[s.which[4 * i + l]] : NULL;
            if (r[0]->cut) prune(&p->points[i], "not simulated: a lower bound on its step is slower than the best mixes");
            else fill_point(p, &p->points[i], r);
        }
        k += take;
    }
    for (int i = 0; i < n; i++) p->pruned += p->points[i].pruned;
    if (st == USP_OK) qsort(p->points, (size_t)p->count, sizeof *p->points, cmp_points);
    free(s.res);
    free(s.simulated);
    free(s.ps.keys);
    free(s.which);
    free(s.bound);
    free(s.order);
    return st;
}

/* ------------------------------------------------------------- the calls */

static usp_status start_plan(const usp_workload *w, const usp_plan_options *o, plan_device *dev, usp_plan *p) {
    memset(p, 0, sizeof *p);
    USP_TRY(usp_model_validate(&w->model));
    if (w->seq < 1 || w->global_batch < 1)
        return usp_fail(USP_EINVAL, "seq %d and global batch %d must be >= 1", w->seq, w->global_batch);
    if (w->micro_batch < 0 || w->micro_batch > w->global_batch)
        return usp_fail(USP_EINVAL, "micro-batch %d is not in 1..global batch %d", w->micro_batch, w->global_batch);
    if (o->gpus < 1 || o->gpus > USP_PLAN_MAX_GPUS)
        return usp_fail(USP_EINVAL, "gpus %d is not in 1..%d", o->gpus, USP_PLAN_MAX_GPUS);
    usp_sim_options so = {.platform = o->platform, .profile = o->profile};
    USP_TRY(plan_device_load(sim_profile_for(&so), w, o->matmul_tflops, dev));
    p->work = *w;
    p->gpus = o->gpus;
    snprintf(p->platform, sizeof p->platform, "%s", o->platform ? o->platform : "h200x8");
    snprintf(p->gpu, sizeof p->gpu, "%s", dev->prof.name);
    p->peak_flops = dev->peak_flops;
    p->matmul_flops = dev->matmul_flops;
    p->capacity_bytes = dev->prof.capacity_bytes;
    p->usable_bytes = dev->prof.usable_bytes;
    usp_model_flops(w, &p->flops);
    return USP_OK;
}

usp_status usp_plan_run(const usp_workload *w, const usp_plan_options *o, usp_plan *out) {
    plan_device dev;
    USP_TRY(start_plan(w, o, &dev, out));
    usp_status st = enumerate(o, out);
    if (st == USP_OK && out->count == 0)
        st = usp_fail(USP_EINVAL, "no dp x tp x ulysses x ring = %d within the given degrees", o->gpus);
    if (st == USP_OK) {
        check_points(w, o, out);
        if (o->recompute < 0) drop_needless_recomputation(out);
        st = simulate_points(w, o, &dev, out);
    }
    if (st != USP_OK) usp_plan_free(out);
    return st;
}

usp_status usp_plan_one(const usp_workload *w, const usp_plan_options *o, const usp_mix *x, usp_plan *out) {
    plan_device dev;
    USP_TRY(start_plan(w, o, &dev, out));
    int cap = 0;
    usp_status st = add_point(out, &cap, x);
    if (st == USP_OK) {
        check_points(w, o, out);
        st = simulate_points(w, o, &dev, out);
    }
    if (st != USP_OK) usp_plan_free(out);
    return st;
}

void usp_plan_free(usp_plan *p) {
    free(p->points);
    memset(p, 0, sizeof *p);
}
