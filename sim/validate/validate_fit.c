/* validate_fit.c: the fits of `usp calibrate` (usp/validate.h): kernel
 * rates, memory bandwidth and link parameters from measurements, and the
 * refinement of a profile from the step durations of measured traces.
 * Plain C on usp_core. */
#define _POSIX_C_SOURCE 200809L
#include "usp/validate.h"
#include "usp/kernel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "usp/dispatch.h"
#include "usp/trace_read.h"

/* ------------------------------------------------------------ affine fit */

/* Weighted sums of the normal equations, weights 1/t^2 (relative residuals). */
typedef struct { double s0, sx, sxx, st, sxt; } fit_sums;

static fit_sums sums_of(const double *x, const double *t, int n) {
    fit_sums s = {0, 0, 0, 0, 0};
    for (int i = 0; i < n; i++) {
        double w = 1 / (t[i] * t[i]);
        s.s0 += w;
        s.sx += w * x[i];
        s.sxx += w * x[i] * x[i];
        s.st += w * t[i];
        s.sxt += w * x[i] * t[i];
    }
    return s;
}

static void residuals(const double *x, const double *t, int n, usp_affine_fit *f) {
    double sq = 0, worst = 0;
    for (int i = 0; i < n; i++) {
        double r = (f->intercept + f->slope * x[i] - t[i]) / t[i];
        sq += r * r;
        if (fabs(r) > fabs(worst)) worst = r;
    }
    f->rms_pct = 100 * sqrt(sq / n);
    f->max_pct = 100 * worst;
}

usp_status usp_fit_affine(const double *x, const double *t, int n, usp_affine_fit *out) {
    memset(out, 0, sizeof *out);
    if (n < 1) return usp_fail(USP_EINVAL, "nothing to fit");
    for (int i = 0; i < n; i++)
        if (!(x[i] > 0 && t[i] > 0)) return usp_fail(USP_EINVAL, "fit point %d: size and time must be positive", i);
    fit_sums s = sums_of(x, t, n);
    double det = s.s0 * s.sxx - s.sx * s.sx;
    if (n >= 2 && det > 1e-12 * s.s0 * s.sxx) {
        out->intercept = (s.st * s.sxx - s.sx * s.sxt) / det;
        out->slope = (s.s0 * s.sxt - s.sx * s.st) / det;
    }
    if (n < 2 || !(det > 1e-12 * s.s0 * s.sxx) || out->intercept < 0 || !(out->slope > 0)) {
        /* one point, one size, or a fixed cost the data cannot carry: through 0 */
        out->intercept = 0;
        out->slope = s.sxt / s.sxx;
    }
    out->points = n;
    residuals(x, t, n, out);
    return USP_OK;
}

/* ------------------------------------------------- measurements: kernels */

static const char *dtype_key(usp_dtype d) { return usp_dtype_name(d); }

/* Fits the points of one (dtype, head dim, direction, mask) group. */
static int fit_attn_group(const usp_calib *m, usp_dtype dt, int d, int bwd, int causal, usp_affine_fit *f) {
    double x[USP_CALIB_MAX], t[USP_CALIB_MAX];
    int n = 0;
    for (int i = 0; i < m->nattn; i++) {
        const usp_calib_attn *a = &m->attn[i];
        if (a->dtype == dt && a->head_dim == d && a->backward == bwd && a->causal == causal && a->doc == 0) {
            x[n] = a->flops;
            t[n++] = a->seconds;
        }
    }
    return n > 0 && usp_fit_affine(x, t, n, f) == USP_OK;
}

/* The short-block model of one group (usp_fit_short_block), reported beside
 * the affine fit: the length the kernel loops over is the measured square
 * block's side. Written into no profile here: sim/SOURCES.md says which
 * profiles carry it. */
static int fit_short(const usp_calib *m, usp_dtype dt, int d, int bwd, int causal, usp_short_fit *f) {
    double len[USP_CALIB_MAX], x[USP_CALIB_MAX], t[USP_CALIB_MAX];
    int n = 0;
    for (int i = 0; i < m->nattn; i++) {
        const usp_calib_attn *a = &m->attn[i];
        if (a->dtype == dt && a->head_dim == d && a->backward == bwd && a->causal == causal && a->doc == 0) {
            len[n] = a->seq;
            x[n] = a->flops;
            t[n++] = a->seconds;
        }
    }
    return n >= 3 && usp_fit_short_block(len, x, t, n, f) == USP_OK;
}

static void report_short(const usp_calib *m, usp_dtype dt, int d, int bwd, int causal, FILE *r) {
    usp_short_fit f;
    if (!r || !fit_short(m, dt, d, bwd, causal, &f)) return;
    fprintf(r, "  %-5s D=%-4d %-3s %-6s  %7.1f TFLOP/s  fixed %7.1f us  short %5.0f %s  rms %5.2f%% max %+6.2f%%\n",
            dtype_key(dt), d, bwd ? "bwd" : "fwd", causal ? "causal" : "full", f.rate * 1e-12, f.fixed_s * 1e6,
            f.short_len, bwd ? "rows" : "keys", f.rms_pct, f.max_pct);
}

/* The (dtype, head dim) pairs measured, each once. */
static int attn_keys(const usp_calib *m, usp_dtype *dts, int *dims) {
    int n = 0;
    for (int i = 0; i < m->nattn; i++) {
        int seen = 0;
        for (int k = 0; k < n; k++) seen |= dts[k] == m->attn[i].dtype && dims[k] == m->attn[i].head_dim;
        if (!seen && n < USP_PROFILE_MAX_RATES) { dts[n] = m->attn[i].dtype; dims[n++] = m->attn[i].head_dim; }
    }
    return n;
}

static void report_attn(FILE *r, usp_dtype dt, int d, int bwd, int causal, const usp_affine_fit *f) {
    if (!r) return;
    fprintf(r, "  %-5s D=%-4d %-3s %-6s  %7.1f TFLOP/s  fixed %7.1f us  residual rms %5.1f%% max %+6.1f%% (%d sizes)\n",
            dtype_key(dt), d, bwd ? "bwd" : "fwd", causal ? "causal" : "full", 1e-12 / f->slope,
            f->intercept * 1e6, f->rms_pct, f->max_pct, f->points);
}

/* pr's short length of the direction (none without pr): usp_rated_flops's shrt. */
static double short_of(const usp_profile_rate *pr, int bwd) {
    return pr ? (bwd ? pr->bwd_short_rows : pr->fwd_short_keys) : 0;
}

/* The per-row-mask efficiency of (dtype, head dim, direction): the time the tile model gives
 * the packed-document points at the rate, fixed time and short length just fitted (pr), over
 * the time they took, summed over the points; 0 without such points. Reported point by
 * point. */
static double fit_rowmask(const usp_calib *m, const usp_profile_rate *pr, int bwd, FILE *r) {
    double rate = (bwd ? pr->bwd_tflops : pr->fwd_tflops) * 1e12;
    double fixed = (bwd ? pr->bwd_fixed_us : pr->fwd_fixed_us) * 1e-6, model = 0, measured = 0;
    for (int i = 0; i < m->nattn; i++) {
        const usp_calib_attn *a = &m->attn[i];
        if (a->doc <= 0 || a->dtype != pr->dtype || a->head_dim != pr->head_dim || a->backward != bwd) continue;
        double t = fixed + usp_rated_flops(0, 0, a->tile_flops, a->loop_flops, short_of(pr, bwd), 1) / rate;
        model += t;
        measured += a->seconds;
        if (r)
            fprintf(r, "  %-5s D=%-4d %-3s docs of %-5d L=%-6d  %8.3f ms, tiles and units give %8.3f ms (%+.1f%%)\n",
                    dtype_key(a->dtype), a->head_dim, bwd ? "bwd" : "fwd", a->doc, a->seq, a->seconds * 1e3,
                    t * 1e3, 100 * (t / a->seconds - 1));
    }
    return measured > 0 ? model / measured : 0;
}

/* Rates of the full blocks into the profile (with short_blocks, the
 * short-block fit's rate, fixed time and length where it converges); the
 * causal/full ratio of the affine fits into the masked efficiencies (mean
 * over the keys that have both). */
static void fit_attention(const usp_calib *m, usp_profile_desc *p, int short_blocks, FILE *r) {
    usp_dtype dts[USP_PROFILE_MAX_RATES];
    int dims[USP_PROFILE_MAX_RATES], nkeys = attn_keys(m, dts, dims);
    double eff_sum[2] = {0, 0};
    int eff_n[2] = {0, 0};
    if (r) fprintf(r, "attention kernels: time = fixed + FLOPs / rate, by dtype, head dim, direction, mask\n");
    for (int k = 0; k < nkeys; k++) {
        usp_profile_rate *pr = usp_profile_rate_of(p, dts[k], dims[k]);
        for (int bwd = 0; bwd < 2 && pr; bwd++) {
            usp_affine_fit full, causal;
            int has_full = fit_attn_group(m, dts[k], dims[k], bwd, 0, &full);
            int has_causal = fit_attn_group(m, dts[k], dims[k], bwd, 1, &causal);
            if (has_full) report_attn(r, dts[k], dims[k], bwd, 0, &full);
            if (has_causal) report_attn(r, dts[k], dims[k], bwd, 1, &causal);
            if (!has_full) continue;
            /* the affine fit's slope already holds the short-block cost of the sizes measured:
             * a short-block length the base profile carried (fitted with another rate) would
             * count it twice, so it goes with the rate it was fitted with */
            double rate = 1e-12 / full.slope, fixed = fmax(0.0, full.intercept * 1e6);
            double shrt = 0;
            usp_short_fit sf;
            if (short_blocks && fit_short(m, dts[k], dims[k], bwd, 0, &sf)) {
                rate = sf.rate * 1e-12;
                fixed = fmax(0.0, sf.fixed_s * 1e6);
                shrt = sf.short_len;
            }
            if (bwd) { pr->bwd_tflops = rate; pr->bwd_fixed_us = fixed; pr->bwd_short_rows = shrt; }
            else { pr->fwd_tflops = rate; pr->fwd_fixed_us = fixed; pr->fwd_short_keys = shrt; }
            if (has_causal) { eff_sum[bwd] += full.slope / causal.slope; eff_n[bwd]++; }
        }
    }
    /* blocks under per-row masks: at the rates just written, what the kernels that run them
     * achieve (an efficiency the base profile carried goes with the rates it was fitted to) */
    int docs = 0;
    for (int i = 0; i < m->nattn; i++) docs += m->attn[i].doc > 0;
    if (r && docs)
        fprintf(r, "attention kernels under per-row masks (packed documents, causal inside): time against the "
                   "tile model (fixed + (tile FLOPs + short x loop FLOPs) / rate)\n");
    for (int k = 0; k < nkeys; k++) {
        usp_profile_rate *pr = usp_profile_rate_of(p, dts[k], dims[k]);
        for (int bwd = 0; bwd < 2 && pr; bwd++) {
            double eff = fit_rowmask(m, pr, bwd, r);
            if (bwd) pr->bwd_rowmask_eff = eff;
            else pr->fwd_rowmask_eff = eff;
            if (r && eff > 0)
                fprintf(r, "  %-5s D=%-4d %-3s per-row-mask efficiency %.3f\n", dtype_key(dts[k]), dims[k],
                        bwd ? "bwd" : "fwd", eff);
        }
    }
    if (r) fprintf(r, "attention kernels, short-block model: time = fixed + FLOPs / rate x (1 + short / n), "
                      "n the keys (fwd) or query rows (bwd) of the block\n");
    for (int k = 0; k < nkeys; k++)
        for (int bwd = 0; bwd < 2; bwd++) report_short(m, dts[k], dims[k], bwd, 0, r);
    if (eff_n[0]) p->masked_fwd = eff_sum[0] / eff_n[0];
    if (eff_n[1]) p->masked_bwd = eff_sum[1] / eff_n[1];
    if (r) fprintf(r, "  masked-block efficiency (causal rate / full rate, mean): fwd %.3f  bwd %.3f\n",
                   p->masked_fwd, p->masked_bwd);
}

/* Each kind's bandwidth (its bytes over its time) into memory_gbps: the
 * kinds differ several-fold; hbm_gbps, over all of them, is what a kind
 * without a figure falls back to. */
static void fit_memory(const usp_calib *m, usp_profile_desc *p, FILE *r) {
    double bytes = 0, seconds = 0, kind_bytes[USP_STEP_KIND_COUNT] = {0}, kind_seconds[USP_STEP_KIND_COUNT] = {0};
    if (r) fprintf(r, "memory-bound kernels (bytes read + written):\n");
    for (int i = 0; i < m->nmem; i++) {
        usp_step_kind k = usp_step_kind_of(m->mem[i].kind);
        bytes += m->mem[i].bytes;
        seconds += m->mem[i].seconds;
        if (k != USP_STEP_KIND_COUNT && usp_step_memory_bound(k)) {
            kind_bytes[k] += m->mem[i].bytes;
            kind_seconds[k] += m->mem[i].seconds;
        }
        if (r) fprintf(r, "  %-9s %9.1f MB %9.1f us %8.0f GB/s\n", m->mem[i].kind, m->mem[i].bytes / 1e6,
                       m->mem[i].seconds * 1e6, m->mem[i].bytes / m->mem[i].seconds / 1e9);
    }
    for (int k = 0; k < USP_STEP_KIND_COUNT; k++)
        if (kind_seconds[k] > 0) p->memory_gbps[k] = kind_bytes[k] / kind_seconds[k] / 1e9;
    if (seconds > 0) p->hbm_gbps = bytes / seconds / 1e9;
    if (r) fprintf(r, "  each kind at its own rate (memory_gbps); for the others, all of them (sum of bytes / sum "
                      "of time): %.0f GB/s\n", p->hbm_gbps);
}

/* ---------------------------------------------------- measurements: link */

static int comm_points(const usp_calib *m, const char *op, double min_bytes, double *x, double *t) {
    int n = 0;
    for (int i = 0; i < m->ncomm; i++)
        if ((!op || !strcmp(m->comm[i].op, op)) && m->comm[i].bytes >= min_bytes) {
            x[n] = m->comm[i].bytes;
            t[n++] = m->comm[i].seconds;
        }
    return n;
}

static void report_comm(const usp_calib *m, const usp_calib_fit *fit, FILE *r) {
    fprintf(r, "NCCL between the GPUs: time = latency + bytes / bandwidth\n");
    fprintf(r, "  %-10s %12s %11s %9s %11s %9s\n", "op", "bytes", "measured us", "GB/s", "fitted us", "residual");
    for (int i = 0; i < m->ncomm; i++) {
        const usp_calib_comm *c = &m->comm[i];
        double fitted = fit->link.intercept + fit->link.slope * c->bytes;
        fprintf(r, "  %-10s %12.0f %11.1f %9.1f %11.1f %+8.1f%%\n", c->op, c->bytes, c->seconds * 1e6,
                c->bytes / c->seconds / 1e9, fitted * 1e6, 100 * (fitted - c->seconds) / c->seconds);
    }
    const usp_affine_fit *f[3] = {&fit->link_sendrecv, &fit->link_all_to_all, &fit->link};
    const char *names[3] = {"sendrecv", "all_to_all", "both (platform)"};
    for (int k = 0; k < 3; k++)
        if (f[k]->points)
            fprintf(r, "  fit %-16s %7.1f us + bytes / %6.1f GB/s   residual rms %5.1f%% max %+6.1f%% (%d points)\n",
                    names[k], f[k]->intercept * 1e6, 1e-9 / f[k]->slope, f[k]->rms_pct, f[k]->max_pct, f[k]->points);
}

static usp_status fit_link(const usp_calib *m, double min_bytes, usp_calib_fit *out, FILE *r) {
    double *x = usp_malloc(USP_CALIB_MAX * sizeof *x), *t = usp_malloc(USP_CALIB_MAX * sizeof *t);
    usp_status st = x && t ? USP_OK : USP_EINTERNAL;
    int n = st == USP_OK ? comm_points(m, "sendrecv", min_bytes, x, t) : 0;
    if (n) st = usp_fit_affine(x, t, n, &out->link_sendrecv);
    n = st == USP_OK ? comm_points(m, "all_to_all", min_bytes, x, t) : 0;
    if (n && st == USP_OK) st = usp_fit_affine(x, t, n, &out->link_all_to_all);
    n = st == USP_OK ? comm_points(m, NULL, min_bytes, x, t) : 0;
    if (st == USP_OK && n == 0) st = usp_fail(USP_EINVAL, "no comm measurement of %.0f bytes or more", min_bytes);
    if (st == USP_OK) st = usp_fit_affine(x, t, n, &out->link);
    free(x);
    free(t);
    USP_TRY(st);
    out->lat_us = out->link.intercept * 1e6;
    out->gbps = 1e-9 / out->link.slope;
    if (r) report_comm(m, out, r);
    return USP_OK;
}

/* ----------------------------------------------------- measurements: all */

/* What was not measured comes from the base profile, else H200 data-sheet
 * figures (dense peaks; fp64 attention as the built-in h200 profile's estimate). */
static void profile_defaults(const usp_calib *m, const usp_profile_desc *base, usp_profile_desc *p) {
    static const double DATASHEET_PEAK[4] = {[USP_F64] = 67, [USP_F32] = 67, [USP_F16] = 989, [USP_BF16] = 989};
    if (base) *p = *base;
    else memset(p, 0, sizeof *p);
    for (int d = 0; d < 4; d++)
        if (!(p->peak_tflops[d] > 0)) p->peak_tflops[d] = DATASHEET_PEAK[d];
    if (!(p->masked_fwd > 0)) p->masked_fwd = 1;
    if (!(p->masked_bwd > 0)) p->masked_bwd = 1;
    snprintf(p->name, sizeof p->name, "%s, usp kernels (usp calibrate)", m->device[0] ? m->device : "GPU");
    snprintf(p->kernel, sizeof p->kernel, "usp built-in attention kernels (kernel ABI v%u)", USP_KERNEL_ABI_VERSION);
    if (m->memory_gb > 0) p->memory_bytes = m->memory_gb * 1e9;
    if (m->nmem) p->launch_us = m->launch_us;
}

/* The profile's "source": what was measured, how it was fitted, what was not. */
static void describe_sources(const usp_calib *m, int short_blocks, usp_profile_desc *p) {
    char *s = p->source;
    size_t n = sizeof p->source, len;
    snprintf(s, n, "usp calibrate on %s%s%s%s.", m->device, m->source[0] ? " (" : "", m->source,
             m->source[0] ? ")" : "");
    len = strlen(s);
    if (m->nattn && short_blocks)
        snprintf(s + len, n - len, " Attention TFLOP/s, fixed times and short lengths: the short-block fit "
                 "(time = fixed + FLOPs / rate x (1 + short / loop length)) of full blocks over block sizes; "
                 "masked efficiency: causal-diagonal over full rate of the affine fits.");
    else if (m->nattn)
        snprintf(s + len, n - len, " Attention TFLOP/s: slope of time against FLOPs of full blocks over block "
                 "sizes; masked efficiency: causal-diagonal over full rate.");
    len = strlen(s);
    if (m->nmem)
        snprintf(s + len, n - len, " memory_gbps: each memory-bound kernel (pack, unpack, merge, init, bwd_prep), "
                 "bytes over time; hbm_gbps: all of them, summed bytes over summed time; launch: an almost empty "
                 "kernel.");
    len = strlen(s);
    snprintf(s + len, n - len, " Not measured here (%s%sfp64, dense peaks): the base profile or the NVIDIA data sheet.",
             m->nattn ? "" : "attention rates, ", m->nmem ? "" : "memory bandwidth, launch, ");
}

usp_status usp_calib_fit_run(const usp_calib *m, const usp_profile_desc *base, double min_bytes, int short_blocks,
                             FILE *report, usp_calib_fit *out) {
    memset(out, 0, sizeof *out);
    profile_defaults(m, base, &out->profile);
    if (m->nattn) fit_attention(m, &out->profile, short_blocks, report);
    if (m->nmem) fit_memory(m, &out->profile, report);
    if (report && m->nmem) fprintf(report, "launch overhead (an almost empty kernel): %.2f us\n", m->launch_us);
    if (m->ncomm) USP_TRY(fit_link(m, min_bytes, out, report));
    describe_sources(m, short_blocks, &out->profile);
    return USP_OK;
}

/* ---------------------------------------------- refinement from traces */

/* Step durations of the calibration traces, summed by what sets their time. */
typedef struct {
    usp_dtype dtype;
    int head_dim;
    double flops[2][2], seconds[2][2];   /* [bwd][partial] */
} attn_sums;

/* One measured attention step: what it computed, how long it took, and how
 * much of that time a transfer listed before it on its rank was running. */
typedef struct {
    usp_dtype dtype;
    int head_dim, bwd, partial;
    double flops, seconds, overlap_s;
    double loop;   /* tokens the kernel loops over: keys (fwd), query rows (bwd) */
    double tile_flops, loop_flops;   /* per-row masks: the step's (usp_step) */
} attn_obs;

typedef struct {
    attn_sums keys[USP_PROFILE_MAX_RATES];
    int nkeys;
    attn_obs *obs;
    int nobs, capobs;
    double mem_bytes, mem_seconds;
    double kind_bytes[USP_STEP_KIND_COUNT], kind_seconds[USP_STEP_KIND_COUNT];
    int kind_steps[USP_STEP_KIND_COUNT];
    double *gaps;                         /* us between compute steps that waited for nothing */
    int ngaps, capgaps;
    int traces;
} trace_sums;

static attn_sums *sums_key(trace_sums *s, usp_dtype dt, int d) {
    for (int i = 0; i < s->nkeys; i++)
        if (s->keys[i].dtype == dt && s->keys[i].head_dim == d) return &s->keys[i];
    if (s->nkeys == USP_PROFILE_MAX_RATES) return NULL;
    attn_sums *k = &s->keys[s->nkeys++];
    memset(k, 0, sizeof *k);
    k->dtype = dt;
    k->head_dim = d;
    return k;
}

static usp_status push(double **a, int *n, int *cap, double v) {
    if (*n == *cap) {
        int c = *cap ? 2 * *cap : 256;
        double *g = realloc(*a, (size_t)c * sizeof *g);
        if (!g) return usp_fail(USP_EINTERNAL, "out of memory");
        *a = g;
        *cap = c;
    }
    (*a)[(*n)++] = v;
    return USP_OK;
}

/* Gaps longer than this are waits the schedule explains (a peer, a
 * transfer), not the cost of starting a kernel. */
#define LAUNCH_GAP_MAX_US 50.0

/* The idle time before a compute step that could have started at once. */
static usp_status rank_gaps(const usp_rank_schedule *rs, const usp_trace_event *const *ev, trace_sums *s) {
    double prev_end = -1;
    for (int i = 0; i < rs->nsteps; i++) {
        const usp_step *st = usp_rank_step(rs, i);
        if (st->stream != USP_STREAM_COMPUTE) continue;
        double ready = prev_end;
        if (st->dep >= 0) ready = fmax(ready, ev[st->dep]->start_us + ev[st->dep]->dur_us);
        double gap = ev[i]->start_us - ready;
        if (prev_end >= 0 && gap >= 0 && gap < LAUNCH_GAP_MAX_US) USP_TRY(push(&s->gaps, &s->ngaps, &s->capgaps, gap));
        prev_end = ev[i]->start_us + ev[i]->dur_us;
    }
    return USP_OK;
}

static usp_status add_obs(trace_sums *s, attn_obs o) {
    if (s->nobs == s->capobs) {
        int cap = s->capobs ? 2 * s->capobs : 256;
        attn_obs *a = realloc(s->obs, (size_t)cap * sizeof *a);
        if (!a) return usp_fail(USP_EINTERNAL, "out of memory");
        s->obs = a;
        s->capobs = cap;
    }
    s->obs[s->nobs++] = o;
    return USP_OK;
}

/* Seconds of step i during which a comm step listed before it ran (the
 * comm stream is in order: its steps do not overlap each other). */
static double comm_overlap(const usp_rank_schedule *rs, const usp_trace_event *const *ev, int i) {
    double a = ev[i]->start_us, b = a + ev[i]->dur_us, us = 0;
    for (int j = 0; j < i; j++) {
        if (usp_rank_step(rs, j)->stream != USP_STREAM_COMM) continue;
        double lo = fmax(a, ev[j]->start_us), hi = fmin(b, ev[j]->start_us + ev[j]->dur_us);
        if (hi > lo) us += hi - lo;
    }
    return us * 1e-6;
}

static usp_status rank_sums(const usp_schedule *sch, const usp_rank_schedule *rs, const usp_trace_event *const *ev,
                            trace_sums *s) {
    for (int i = 0; i < rs->nsteps; i++) {
        const usp_step *st = usp_rank_step(rs, i);
        double sec = ev[i]->dur_us * 1e-6;
        if (usp_step_memory_bound(st->kind)) {
            s->mem_bytes += st->bytes_mem;
            s->mem_seconds += sec;
            s->kind_bytes[st->kind] += st->bytes_mem;
            s->kind_seconds[st->kind] += sec;
            s->kind_steps[st->kind]++;
        }
        if (st->kind != USP_STEP_ATTN_FWD && st->kind != USP_STEP_ATTN_BWD) continue;
        /* per-row masks: timed by their tiles, not at the masked-block efficiency */
        attn_obs o = {sch->cfg.dtype, sch->cfg.head_dim, st->kind == USP_STEP_ATTN_BWD,
                      usp_step_partial(&sch->cfg, st) && !(st->tile_flops > 0), st->flops, sec,
                      comm_overlap(rs, ev, i), st->kind == USP_STEP_ATTN_BWD ? st->blk.q_len : st->blk.kv_len,
                      st->tile_flops, st->loop_flops};
        USP_TRY(add_obs(s, o));
    }
    return rank_gaps(rs, ev, s);
}

static usp_status case_sums(const usp_vcase *c, trace_sums *s) {
    usp_schedule sch;
    usp_trace t;
    usp_vsteps v;
    usp_mask *mask = NULL;
    USP_TRY(usp_vcase_schedule(c, &sch, &mask));
    usp_status st = usp_trace_read(c->trace, &t);
    if (st == USP_OK) {
        st = usp_vsteps_index(&sch, &t, &v);
        if (st != USP_OK) usp_error_prefix("%s: ", c->trace);
        for (int g = 0; st == USP_OK && g < sch.world; g++) st = rank_sums(&sch, &sch.ranks[g], v.ev[g], s);
        if (v.ev) usp_vsteps_free(&v);
        usp_trace_free(&t);
    }
    usp_schedule_free(&sch);
    usp_mask_free(mask);
    s->traces++;
    return st;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The profile's fixed time of an observed step's kernel (0 without one). */
static double fixed_seconds(const usp_profile_desc *p, const attn_obs *o) {
    const usp_profile_rate *pr = usp_profile_rate_find(p, o->dtype, o->head_dim);
    return pr ? (o->bwd ? pr->bwd_fixed_us : pr->fwd_fixed_us) * 1e-6 : 0;
}

/* The step's FLOPs as the profile's rate sees them (usp_rated_flops, the simulator's model). */
static double rated_flops(const usp_profile_desc *p, const attn_obs *o) {
    const usp_profile_rate *pr = usp_profile_rate_find(p, o->dtype, o->head_dim);
    return usp_rated_flops(o->flops, o->loop, o->tile_flops, o->loop_flops, short_of(pr, o->bwd),
                           pr ? (o->bwd ? pr->bwd_rowmask_eff : pr->fwd_rowmask_eff) : 0);
}

/* The attention steps summed by (dtype, head dim, direction, partial), each
 * step's time less its kernel's fixed time and less what the transfers
 * beside it cost (slowdown x overlap): what remains is FLOPs / rate. */
static usp_status attention_sums(const usp_profile_desc *p, trace_sums *s, double slowdown) {
    s->nkeys = 0;
    for (int i = 0; i < s->nobs; i++) {
        const attn_obs *o = &s->obs[i];
        attn_sums *k = sums_key(s, o->dtype, o->head_dim);
        if (!k) return usp_fail(USP_EINVAL, "more than %d (dtype, head dim) pairs", USP_PROFILE_MAX_RATES);
        k->flops[o->bwd][o->partial] += rated_flops(p, o);
        k->seconds[o->bwd][o->partial] += o->seconds - fixed_seconds(p, o) - slowdown * o->overlap_s;
    }
    return USP_OK;
}

/* A step that would take d0 alone and shares o seconds with a transfer, at
 * (1 - f) of its rate meanwhile, takes d = d0 + f o: f is the least-squares
 * slope of (d - d0) over o, for the steps with some overlap. */
static double fit_comm_slowdown(const usp_profile_desc *p, const trace_sums *s, double *overlapped_s) {
    double num = 0, den = 0;
    *overlapped_s = 0;
    for (int i = 0; i < s->nobs; i++) {
        const attn_obs *o = &s->obs[i];
        const usp_profile_rate *pr = usp_profile_rate_find(p, o->dtype, o->head_dim);
        double rate = pr ? (o->bwd ? pr->bwd_tflops : pr->fwd_tflops) * 1e12 : 0;
        if (o->partial) rate *= o->bwd ? p->masked_bwd : p->masked_fwd;
        if (!(o->overlap_s > 0) || !(rate > 0)) continue;
        num += (o->seconds - fixed_seconds(p, o) - rated_flops(p, o) / rate) * o->overlap_s;
        den += o->overlap_s * o->overlap_s;
        *overlapped_s += o->overlap_s;
    }
    double f = den > 0 ? num / den : 0;
    return f < 0 ? 0 : f > 0.9 ? 0.9 : f;
}

/* Full-block rates set the profile's rates; partial blocks set the masked
 * efficiency, weighted by their time across keys. */
static void apply_attention(usp_profile_desc *p, const trace_sums *s, FILE *r) {
    double part_time[2] = {0, 0}, eff_weighted[2] = {0, 0};
    for (int k = 0; k < s->nkeys; k++) {
        const attn_sums *a = &s->keys[k];
        usp_profile_rate *pr = usp_profile_rate_of(p, a->dtype, a->head_dim);
        for (int bwd = 0; bwd < 2 && pr; bwd++) {
            double *rate = bwd ? &pr->bwd_tflops : &pr->fwd_tflops, old = *rate;
            if (a->seconds[bwd][0] > 0) *rate = a->flops[bwd][0] / a->seconds[bwd][0] / 1e12;
            if (r) fprintf(r, "  %s D=%d %s full blocks: %.1f -> %.1f TFLOP/s (%.2f ms of steps)\n",
                           usp_dtype_name(a->dtype), a->head_dim, bwd ? "bwd" : "fwd", old, *rate,
                           a->seconds[bwd][0] * 1e3);
            if (!(a->seconds[bwd][1] > 0) || !(*rate > 0)) continue;
            double eff = a->flops[bwd][1] / a->seconds[bwd][1] / 1e12 / *rate;
            eff_weighted[bwd] += eff * a->seconds[bwd][1];
            part_time[bwd] += a->seconds[bwd][1];
        }
    }
    for (int bwd = 0; bwd < 2; bwd++) {
        double *eff = bwd ? &p->masked_bwd : &p->masked_fwd, old = *eff;
        if (part_time[bwd] > 0) *eff = eff_weighted[bwd] / part_time[bwd];
        if (r) fprintf(r, "  masked-block efficiency %s: %.3f -> %.3f\n", bwd ? "bwd" : "fwd", old, *eff);
    }
}

/* Rates and the slowdown depend on each other: rounds of one then the other
 * settle them (each round moves f by a fraction of its last move). */
static usp_status apply_attention_and_overlap(usp_profile_desc *p, trace_sums *s, FILE *r) {
    double f = 0, old = p->comm_slowdown, overlapped = 0;
    for (int round = 0; round < 100; round++) {
        USP_TRY(attention_sums(p, s, f));
        usp_profile_desc trial = *p;
        apply_attention(&trial, s, NULL);
        double last = f;
        f = fit_comm_slowdown(&trial, s, &overlapped);
        if (fabs(f - last) < 1e-6) break;
    }
    USP_TRY(attention_sums(p, s, f));
    apply_attention(p, s, r);
    p->comm_slowdown = f;
    if (r) fprintf(r, "  attention rate lost while a transfer runs: %.3f -> %.3f (%.2f ms of attention overlapped)\n",
                   old, f, overlapped * 1e3);
    return USP_OK;
}

/* A kind with enough steps in the traces gets their rate; one with fewer
 * keeps its figure (a few short steps measure the launch more than the copy). */
static void apply_memory_kinds(usp_profile_desc *p, const trace_sums *s, FILE *r) {
    for (int k = 0; k < USP_STEP_KIND_COUNT; k++) {
        if (!usp_step_memory_bound((usp_step_kind)k) || s->kind_steps[k] == 0) continue;
        double old = p->memory_gbps[k];
        int enough = s->kind_steps[k] >= USP_REFINE_MIN_MEM_STEPS && s->kind_seconds[k] > 0;
        if (enough) p->memory_gbps[k] = s->kind_bytes[k] / s->kind_seconds[k] / 1e9;
        if (r) fprintf(r, "    %-9s %.0f -> %.0f GB/s (%d steps, %.2f GB in %.2f ms%s)\n",
                       usp_step_kind_name((usp_step_kind)k), old, p->memory_gbps[k], s->kind_steps[k],
                       s->kind_bytes[k] / 1e9, s->kind_seconds[k] * 1e3, enough ? "" : ": too few, kept");
    }
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, compare_doubles);
    return v[n / 2];
}

static void apply_memory_and_launch(usp_profile_desc *p, trace_sums *s, FILE *r) {
    double old_hbm = p->hbm_gbps, old_launch = p->launch_us;
    if (s->mem_seconds > 0) p->hbm_gbps = s->mem_bytes / s->mem_seconds / 1e9;
    if (s->ngaps > 0) p->launch_us = median(s->gaps, s->ngaps);
    if (r) fprintf(r, "  memory-bound steps: %.0f -> %.0f GB/s (%.2f GB in %.2f ms), by kind:\n", old_hbm,
                   p->hbm_gbps, s->mem_bytes / 1e9, s->mem_seconds * 1e3);
    apply_memory_kinds(p, s, r);
    if (r) fprintf(r, "  launch overhead (median idle time before a ready compute step, %d steps): %.2f -> %.2f us\n",
                   s->ngaps, old_launch, p->launch_us);
}

usp_status usp_profile_refine(usp_profile_desc *p, const usp_vcase *cases, int n, FILE *report) {
    trace_sums s;
    memset(&s, 0, sizeof s);
    usp_status st = USP_OK;
    for (int i = 0; i < n && st == USP_OK; i++)
        if (cases[i].role == USP_VROLE_CALIBRATION) st = case_sums(&cases[i], &s);
    if (st == USP_OK && s.traces == 0) st = usp_fail(USP_EINVAL, "no calibration case to fit the profile to");
    if (st == USP_OK) {
        if (report) fprintf(report, "refined from the step durations of %d calibration traces:\n", s.traces);
        st = apply_attention_and_overlap(p, &s, report);
    }
    if (st == USP_OK) {
        apply_memory_and_launch(p, &s, report);
        size_t len = strlen(p->source);
        snprintf(p->source + len, sizeof p->source - len,
                 " Refined from %d measured calibration traces (usp calibrate --traces): attention rates of "
                 "full blocks, the masked efficiency and comm_overlap_slowdown from ATTN step durations, hbm_gbps from the "
                 "memory-bound steps and memory_gbps from those of each kind with %d steps or more, launch "
                 "from the median idle time before a ready compute step.",
                 s.traces, USP_REFINE_MIN_MEM_STEPS);
    }
    free(s.gaps);
    free(s.obs);
    return st;
}

/* ------------------------------------------------ the link from traces */

typedef struct {
    double *bytes, *seconds;
    int n, cap;
} transfer_points;

static usp_status add_point(transfer_points *c, double bytes, double seconds) {
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 64;
        double *b = realloc(c->bytes, (size_t)cap * sizeof *b);
        if (b) c->bytes = b;
        double *t = realloc(c->seconds, (size_t)cap * sizeof *t);
        if (t) c->seconds = t;
        if (!b || !t) return usp_fail(USP_EINTERNAL, "out of memory");
        c->cap = cap;
    }
    c->bytes[c->n] = bytes;
    c->seconds[c->n++] = seconds;
    return USP_OK;
}

/* When the first and the last rank posted comm step `tag` (the group's
 * steps carry one tag). */
static void posts(const usp_schedule *s, const usp_vsteps *v, int tag, double *first, double *last) {
    *first = INFINITY;
    *last = -INFINITY;
    for (int g = 0; g < s->world; g++)
        for (int i = 0; i < s->ranks[g].nsteps; i++)
            if (usp_rank_step(&s->ranks[g], i)->stream == USP_STREAM_COMM && usp_rank_step(&s->ranks[g], i)->tag == tag) {
                *first = fmin(*first, v->ev[g][i]->start_us);
                *last = fmax(*last, v->ev[g][i]->start_us);
            }
}

/* Only transfers whose ends posted this close together measure the link:
 * NCCL moves part of a message before the later end posts, so a skewed
 * transfer looks faster than the link is. */
#define LINK_FIT_MAX_SKEW_US 50.0

/* The first transfer of a run pays for waking NCCL up after the start
 * barrier (two to three times the time of the next one of its size): it
 * measures that, not the link, and is left out. */
static usp_status trace_transfer_points(const usp_schedule *s, const usp_vsteps *v, double min_bytes,
                                        transfer_points *c) {
    for (int g = 0; g < s->world; g++)
        for (int i = 0, first = 1; i < s->ranks[g].nsteps; i++) {
            const usp_step *st = usp_rank_step(&s->ranks[g], i);
            int peers = usp_group_size(&s->cfg, st->group);
            if (st->stream != USP_STREAM_COMM) continue;
            int skip = first;
            first = 0;
            if (skip || (st->kind != USP_STEP_SENDRECV && st->kind != USP_STEP_ALL_TO_ALL)) continue;
            double bytes = st->kind == USP_STEP_SENDRECV || peers < 2 ? st->bytes_sent : st->bytes_sent / (peers - 1);
            double first, last;
            posts(s, v, st->tag, &first, &last);
            double us = v->ev[g][i]->start_us + v->ev[g][i]->dur_us - last;
            if (bytes >= min_bytes && us > 0 && last - first <= LINK_FIT_MAX_SKEW_US)
                USP_TRY(add_point(c, bytes, us * 1e-6));
        }
    return USP_OK;
}

static usp_status case_transfer_points(const usp_vcase *c, double min_bytes, transfer_points *pts) {
    usp_schedule sch;
    usp_trace t;
    usp_vsteps v;
    usp_mask *mask = NULL;
    USP_TRY(usp_vcase_schedule(c, &sch, &mask));
    usp_status st = usp_trace_read(c->trace, &t);
    if (st == USP_OK) {
        st = usp_vsteps_index(&sch, &t, &v);
        if (st == USP_OK) {
            st = trace_transfer_points(&sch, &v, min_bytes, pts);
            usp_vsteps_free(&v);
        }
        usp_trace_free(&t);
    }
    usp_schedule_free(&sch);
    usp_mask_free(mask);
    return st;
}

usp_status usp_link_fit_traces(const usp_vcase *cases, int n, double min_bytes, FILE *report, usp_affine_fit *out,
                               int *gpus) {
    transfer_points pts = {0};
    usp_status st = USP_OK;
    *gpus = 0;
    for (int i = 0; i < n && st == USP_OK; i++) {
        if (cases[i].role != USP_VROLE_CALIBRATION || !cases[i].trace[0]) continue;
        st = case_transfer_points(&cases[i], min_bytes, &pts);
        if (usp_world(&cases[i].cfg) > *gpus) *gpus = usp_world(&cases[i].cfg);
    }
    if (st == USP_OK && pts.n == 0) st = usp_fail(USP_EINVAL, "no transfer of %.0f bytes or more in the calibration traces", min_bytes);
    if (st == USP_OK) st = usp_fit_affine(pts.bytes, pts.seconds, pts.n, out);
    if (st == USP_OK && report) {
        fprintf(report, "link from the traces' transfers whose ends posted within %.0f us (from the later "
                        "post to the end; not the first of a run):\n", LINK_FIT_MAX_SKEW_US);
        for (int i = 0; i < pts.n; i++)
            fprintf(report, "  %12.0f bytes %9.1f us %7.1f GB/s  fitted %9.1f us %+6.1f%%\n", pts.bytes[i],
                    pts.seconds[i] * 1e6, pts.bytes[i] / pts.seconds[i] / 1e9,
                    (out->intercept + out->slope * pts.bytes[i]) * 1e6,
                    100 * (out->intercept + out->slope * pts.bytes[i] - pts.seconds[i]) / pts.seconds[i]);
        fprintf(report, "  fit %.1f us + bytes / %.1f GB/s   residual rms %.1f%% max %+.1f%% (%d transfers)\n",
                out->intercept * 1e6, 1e-9 / out->slope, out->rms_pct, out->max_pct, out->points);
    }
    free(pts.bytes);
    free(pts.seconds);
    return st;
}
