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

/* Programs per simulation, and rank programs held at once: bounds the
 * memory the step lists take (a few hundred bytes per step). */
enum { BATCH_PROGRAMS = 24, BATCH_RANKS = 4096 };

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

/* Builds and simulates programs [from, to) of the set. */
static usp_status simulate_batch(const usp_workload *w, const usp_plan_options *o, const plan_device *dev,
                                 const program_set *ps, int from, int to, plan_sim_result *results) {
    int n = to - from;
    plan_program *progs = usp_calloc((size_t)n, sizeof *progs);
    const plan_program **ptrs = usp_calloc((size_t)n, sizeof *ptrs);
    usp_status st = progs && ptrs ? USP_OK : USP_EINTERNAL;
    for (int i = 0; st == USP_OK && i < n; i++) {
        const program_key *k = &ps->keys[from + i];
        st = k->layer ? plan_build_layer(w, &k->mix, dev, k->accumulating, &progs[i])
                      : plan_build_edges(w, &k->mix, dev, k->accumulating, &progs[i]);
        ptrs[i] = &progs[i];
    }
    if (st == USP_OK) st = plan_simulate(ptrs, n, o->platform, o->gpus, results + from);
    for (int i = 0; progs && i < n; i++) plan_program_free(&progs[i]);
    free(progs);
    free(ptrs);
    return st;
}

static usp_status simulate_all(const usp_workload *w, const usp_plan_options *o, const plan_device *dev,
                               const program_set *ps, plan_sim_result *results) {
    int batch = BATCH_RANKS / o->gpus;
    if (batch > BATCH_PROGRAMS) batch = BATCH_PROGRAMS;
    if (batch < 1) batch = 1;
    for (int from = 0; from < ps->count; from += batch) {
        int to = from + batch < ps->count ? from + batch : ps->count;
        USP_TRY(simulate_batch(w, o, dev, ps, from, to, results));
        if (o->progress) o->progress(o->progress_ctx, to, ps->count);
    }
    return USP_OK;
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

static int point_class(const usp_plan_point *pt) { return pt->status != USP_OK ? 2 : pt->oom ? 1 : 0; }

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
    if (cx == 2) return 0;
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

/* Simulates the runnable points (each distinct program once) and ranks. */
static usp_status simulate_points(const usp_workload *w, const usp_plan_options *o, const plan_device *dev,
                                  usp_plan *p) {
    program_set ps = {0};
    /* per point: layer, edges, and with accumulation their accumulating twins */
    int *which = usp_calloc((size_t)p->count * 4 + 1, sizeof *which);
    if (!which) return USP_EINTERNAL;
    usp_status st = USP_OK;
    for (int i = 0; st == USP_OK && i < p->count; i++) {
        if (p->points[i].status != USP_OK) continue;
        int *wh = which + 4 * i;
        for (int k = 0; k < 4; k++) {
            int acc = k >= 2;
            wh[k] = acc && p->points[i].accumulation_steps < 2 ? -2
                                                                 : program_index(&ps, &p->points[i].mix, k % 2 == 0, acc);
            if (wh[k] == -1) st = usp_fail(USP_EINTERNAL, "out of memory");
        }
    }
    plan_sim_result *res = st == USP_OK ? usp_calloc((size_t)ps.count + 1, sizeof *res) : NULL;
    if (st == USP_OK && !res) st = USP_EINTERNAL;
    if (st == USP_OK) st = simulate_all(w, o, dev, &ps, res);
    for (int i = 0; st == USP_OK && i < p->count; i++) {
        if (p->points[i].status != USP_OK) continue;
        const plan_sim_result *r[4];
        for (int k = 0; k < 4; k++) r[k] = which[4 * i + k] >= 0 ? &res[which[4 * i + k]] : NULL;
        fill_point(p, &p->points[i], r);
    }
    if (st == USP_OK) qsort(p->points, (size_t)p->count, sizeof *p->points, cmp_points);
    free(res);
    free(ps.keys);
    free(which);
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
    if (o->gpus < 1 || o->gpus > 4096) return usp_fail(USP_EINVAL, "gpus %d is not in 1..4096", o->gpus);
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
