/* sweep.c: every way to shard one problem over a world, ranked by the
 * simulator's predicted time (timing-only, forward and backward). */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "usp/json.h"
#include "usp/progress.h"

/* ------------------------------------------------------------- running */

/* Degrees of 1 make some variants identical: without a ring there is no
 * ring_impl to choose (all run as basic), and with a degree of 1 both rank
 * layouts are the same placement. */
static int variant_applies(int ulysses, int ring, usp_ring_impl impl, usp_layout layout) {
    if (ring == 1 && impl != USP_RING_BASIC) return 0;
    if ((ring == 1 || ulysses == 1) && layout != USP_LAYOUT_ULYSSES_INNER) return 0;
    return 1;
}

/* The rank with the most compute is the bottleneck device; its compute,
 * exposed communication and the rest (waiting for slower peers) explain
 * the predicted time. */
static int busiest_rank(const usp_schedule *s, const usp_result *r) {
    int best = 0;
    for (int g = 1; g < s->world; g++)
        if (r->ranks[g].compute_s > r->ranks[best].compute_s) best = g;
    return best;
}

/* Times one configuration. *sim_failed tells a refusal of the simulator
 * (platform, profile, host map: the same for every point) from one of the
 * configuration. */
static usp_status time_point(usp_sweep_point *pt, const usp_sim_options *o, int *sim_failed) {
    usp_schedule s;
    usp_result r;
    *sim_failed = 0;
    USP_TRY(usp_schedule_build(&pt->cfg, 1, &s));
    usp_status st = usp_result_init(&r, &s, 0);
    if (st == USP_OK) {
        st = usp_sim_execute(&s, NULL, o, &r, NULL);
        *sim_failed = st != USP_OK;
    }
    usp_sim_report rep;
    if (st == USP_OK) st = usp_sim_report_make(&s, &r, o, &rep);
    if (st == USP_OK) {
        int g = busiest_rank(&s, &r);
        pt->time_fwd_s = r.time_fwd_s;
        pt->time_bwd_s = r.time_bwd_s;
        pt->time_total_s = r.time_fwd_s + r.time_bwd_s;
        pt->compute_s = r.ranks[g].compute_s;
        pt->exposed_comm_s = r.ranks[g].exposed_comm_s;
        pt->peak_bytes = rep.peak_bytes_max;
        pt->oom = rep.oom;
        pt->mfu = rep.mfu;
    }
    if (r.ranks) usp_result_free(&r);
    usp_schedule_free(&s);
    return st;
}

static int by_time(const void *a, const void *b) {
    const usp_sweep_point *x = a, *y = b;
    if ((x->status == USP_OK) != (y->status == USP_OK)) return x->status == USP_OK ? -1 : 1;
    if (x->status != USP_OK) return 0;
    if (x->time_total_s != y->time_total_s) return x->time_total_s < y->time_total_s ? -1 : 1;
    return 0;
}

static usp_status add_point(usp_sweep *sw, const usp_config *cfg) {
    usp_sweep_point *p = realloc(sw->points, (size_t)(sw->count + 1) * sizeof *p);
    if (!p) return usp_fail(USP_EINTERNAL, "out of memory");
    sw->points = p;
    memset(&p[sw->count], 0, sizeof *p);
    p[sw->count++].cfg = *cfg;
    return USP_OK;
}

static usp_status list_points(const usp_config *base, int world, usp_sweep *sw) {
    for (int u = 1; u <= world; u++) {
        if (world % u) continue;
        for (int impl = 0; impl < USP_RING_IMPL_COUNT; impl++)
            for (int lay = 0; lay < 2; lay++) {
                if (impl == USP_RING_BALANCED && !base->mask) continue; /* it balances a mask */
                if (!variant_applies(u, world / u, (usp_ring_impl)impl, (usp_layout)lay)) continue;
                usp_config c = *base;
                c.ulysses = u;
                c.ring = world / u;
                c.ring_impl = (usp_ring_impl)impl;
                c.layout = (usp_layout)lay;
                c.contiguous = base->contiguous && c.ring_impl == USP_RING_ALLGATHER; /* its placement only */
                USP_TRY(add_point(sw, &c));
            }
    }
    return USP_OK;
}

static void show_progress(FILE *f, int i, int n, const usp_config *c) {
    if (!f) return;
    usp_progress(f, "sweep: %d/%d  ulysses %d x ring %d %s %s", i + 1, n, c->ulysses, c->ring,
                 usp_ring_impl_name(c->ring_impl), usp_layout_name(c->layout));
}

usp_status usp_sweep_run(const usp_config *base, int world, const usp_sim_options *o, FILE *progress,
                         usp_sweep *out) {
    memset(out, 0, sizeof *out);
    if (world < 1) return usp_fail(USP_EINVAL, "world %d must be at least 1", world);
    usp_status st = list_points(base, world, out);
    for (int i = 0; i < out->count && st == USP_OK; i++) {
        usp_sweep_point *pt = &out->points[i];
        show_progress(progress, i, out->count, &pt->cfg);
        int sim_failed = 0;
        pt->status = usp_config_validate(&pt->cfg);
        if (pt->status == USP_OK) pt->status = time_point(pt, o, &sim_failed);
        if (pt->status == USP_OK) pt->caveat = sim_caveat_for(o, &pt->cfg);
        if (pt->status == USP_OK) out->ran++;
        else sim_copy_str(pt->why, sizeof pt->why, usp_error());
        if (sim_failed || pt->status == USP_EINTERNAL) st = pt->status; /* no point can run: stop */
    }
    usp_progress_end(progress, 0);
    if (st != USP_OK) { usp_sweep_free(out); return st; }
    qsort(out->points, (size_t)out->count, sizeof *out->points, by_time);
    return USP_OK;
}

void usp_sweep_free(usp_sweep *sw) {
    free(sw->points);
    memset(sw, 0, sizeof *sw);
}

/* -------------------------------------------------------------- output */

static void label(const usp_config *c, char *buf, size_t n) {
    snprintf(buf, n, "U%d x R%d %s %s", c->ulysses, c->ring, usp_ring_impl_name(c->ring_impl),
             usp_layout_name(c->layout));
}

void usp_sweep_print_table(FILE *f, const usp_sweep *sw) {
    const double GiB = 1024.0 * 1024 * 1024;
    fprintf(f, "%4s %7s %5s %-9s %-13s %9s %9s %9s %9s %9s %6s %8s\n", "rank", "ulysses", "ring", "ring_impl",
            "layout", "fwd ms", "bwd ms", "total ms", "compute", "exposed", "MFU", "peak GiB");
    for (int i = 0; i < sw->count; i++) {
        const usp_sweep_point *p = &sw->points[i];
        const usp_config *c = &p->cfg;
        if (p->status != USP_OK) {
            fprintf(f, "%4s %7d %5d %-9s %-13s refused: %s\n", "-", c->ulysses, c->ring,
                    usp_ring_impl_name(c->ring_impl), usp_layout_name(c->layout), p->why);
            continue;
        }
        fprintf(f, "%4d %7d %5d %-9s %-13s %9.2f %9.2f %9.2f %9.2f %9.2f %5.1f%% %7.2f%s%s\n", i + 1, c->ulysses,
                c->ring, usp_ring_impl_name(c->ring_impl), usp_layout_name(c->layout), p->time_fwd_s * 1e3,
                p->time_bwd_s * 1e3, p->time_total_s * 1e3, p->compute_s * 1e3, p->exposed_comm_s * 1e3,
                p->mfu * 100, p->peak_bytes / GiB, p->oom ? " OOM" : "", p->caveat ? " *" : "");
    }
    for (int i = 0; i < sw->count; i++)   /* one text: the platform's */
        if (sw->points[i].caveat) {
            usp_caveat_print(f, "* ", "this platform", sw->points[i].caveat);
            break;
        }
}

void usp_sweep_print_csv(FILE *f, const usp_sweep *sw) {
    fprintf(f, "rank,ulysses,ring,ring_impl,layout,time_fwd_s,time_bwd_s,time_total_s,compute_s,"
               "exposed_comm_s,mfu,peak_bytes,oom,refused,caveat\n");
    for (int i = 0; i < sw->count; i++) {
        const usp_sweep_point *p = &sw->points[i];
        const usp_config *c = &p->cfg;
        fprintf(f, "%d,%d,%d,%s,%s,", p->status == USP_OK ? i + 1 : 0, c->ulysses, c->ring,
                usp_ring_impl_name(c->ring_impl), usp_layout_name(c->layout));
        if (p->status != USP_OK) {
            fputs(",,,,,,,,\"", f);
            for (const char *q = p->why; *q; q++) fputs(*q == '"' ? "\"\"" : (char[2]){*q, 0}, f);
            fputs("\",0\n", f);
            continue;
        }
        fprintf(f, "%.9g,%.9g,%.9g,%.9g,%.9g,%.6g,%.0f,%d,,%d\n", p->time_fwd_s, p->time_bwd_s, p->time_total_s,
                p->compute_s, p->exposed_comm_s, p->mfu, p->peak_bytes, p->oom, p->caveat != NULL);
    }
}

static void json_num(FILE *f, const char *key, double v) {
    fprintf(f, ", \"%s\": ", key);
    usp_json_write_number(f, v);
}

void usp_sweep_print_json(FILE *f, const usp_sweep *sw, const char *platform) {
    fputs("{\"platform\": ", f);
    usp_json_write_string(f, platform ? platform : "h200x8");
    fprintf(f, ", \"ran\": %d, \"points\": [", sw->ran);
    for (int i = 0; i < sw->count; i++) {
        const usp_sweep_point *p = &sw->points[i];
        const usp_config *c = &p->cfg;
        fprintf(f, "%s\n  {\"rank\": %d, \"ulysses\": %d, \"ring\": %d, \"ring_impl\": \"%s\", \"layout\": \"%s\"",
                i ? "," : "", p->status == USP_OK ? i + 1 : 0, c->ulysses, c->ring, usp_ring_impl_name(c->ring_impl),
                usp_layout_name(c->layout));
        if (p->status != USP_OK) {
            fputs(", \"refused\": ", f);
            usp_json_write_string(f, p->why);
            fputc('}', f);
            continue;
        }
        json_num(f, "time_fwd_s", p->time_fwd_s);
        json_num(f, "time_bwd_s", p->time_bwd_s);
        json_num(f, "time_total_s", p->time_total_s);
        json_num(f, "compute_s", p->compute_s);
        json_num(f, "exposed_comm_s", p->exposed_comm_s);
        json_num(f, "mfu", p->mfu);
        json_num(f, "peak_bytes", p->peak_bytes);
        fprintf(f, ", \"oom\": %s, \"caveat\": %s}", p->oom ? "true" : "false", p->caveat ? "true" : "false");
    }
    const char *caveat = NULL;
    for (int i = 0; i < sw->count && !caveat; i++) caveat = sw->points[i].caveat;
    fputs("\n], \"caveat\": ", f);
    if (caveat) usp_json_write_string(f, caveat);
    else fputs("null", f);
    fputs("}\n", f);
}

/* ----------------------------------------------------------------- SVG */

enum { SVG_WIDTH = 900, SVG_LABEL = 250, SVG_BAR = 18, SVG_GAP = 6, SVG_TOP = 54, SVG_AXIS = 40 };

/* A round tick step (1, 2 or 5 times a power of ten) giving about 6 ticks. */
static double tick_step(double max) {
    double raw = max / 6, p = pow(10, floor(log10(raw))), m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

static void svg_bar(FILE *f, double x, double y, double w, const char *color, const char *title) {
    if (w <= 0) return;
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%d\" fill=\"%s\"><title>%s</title></rect>\n", x,
            y, w, SVG_BAR, color, title);
}

static void svg_axis(FILE *f, double max_ms, double scale, int y) {
    double step = tick_step(max_ms);
    for (double t = 0; t <= max_ms * 1.0001; t += step) {
        double x = SVG_LABEL + t * scale;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#ccc\"/>\n", x, SVG_TOP - 4, x, y);
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%g</text>\n", x, y + 14, t);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">predicted forward + backward time (ms)</text>\n",
            SVG_LABEL + (SVG_WIDTH - SVG_LABEL - 20) / 2, y + 32);
}

static void svg_legend(FILE *f) {
    static const char *const names[3] = {"compute", "exposed communication", "waiting (imbalance)"};
    static const char *const colors[3] = {"#4c78a8", "#f58518", "#bab0ac"};
    for (int i = 0; i < 3; i++) {
        fprintf(f, "<rect x=\"%d\" y=\"30\" width=\"12\" height=\"12\" fill=\"%s\"/>", SVG_LABEL + i * 190, colors[i]);
        fprintf(f, "<text x=\"%d\" y=\"40\">%s</text>\n", SVG_LABEL + 16 + i * 190, names[i]);
    }
}

static void svg_point(FILE *f, const usp_sweep_point *p, int row, double scale) {
    char name[96], title[160];
    double y = SVG_TOP + row * (SVG_BAR + SVG_GAP);
    double total = p->time_total_s * 1e3, comp = p->compute_s * 1e3, exp = p->exposed_comm_s * 1e3;
    double wait = total - comp - exp;
    label(&p->cfg, name, sizeof name);
    fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s%s</text>\n", SVG_LABEL - 8, y + SVG_BAR - 5, name,
            p->oom ? " (OOM)" : "");
    snprintf(title, sizeof title, "%s: %.2f ms, compute %.2f ms, exposed comm %.2f ms", name, total, comp, exp);
    svg_bar(f, SVG_LABEL, y, comp * scale, "#4c78a8", title);
    svg_bar(f, SVG_LABEL + comp * scale, y, exp * scale, "#f58518", title);
    if (wait > 0) svg_bar(f, SVG_LABEL + (comp + exp) * scale, y, wait * scale, "#bab0ac", title);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">%.1f</text>\n", SVG_LABEL + total * scale + 4, y + SVG_BAR - 5, total);
}

usp_status usp_sweep_write_svg(const usp_sweep *sw, const char *title, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) return usp_fail(USP_EINVAL, "cannot write %s", path);
    double max_ms = 0;
    for (int i = 0; i < sw->ran; i++)
        if (sw->points[i].time_total_s * 1e3 > max_ms) max_ms = sw->points[i].time_total_s * 1e3;
    if (max_ms <= 0) max_ms = 1;
    double scale = (SVG_WIDTH - SVG_LABEL - 60) / max_ms;
    int height = SVG_TOP + sw->ran * (SVG_BAR + SVG_GAP) + SVG_AXIS + 12;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" "
               "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
               "<text x=\"10\" y=\"18\" font-size=\"14\" font-weight=\"bold\">", SVG_WIDTH, height);
    for (const char *q = title ? title : ""; *q; q++) {
        if (*q == '<') fputs("&lt;", f);
        else if (*q == '&') fputs("&amp;", f);
        else fputc(*q, f);
    }
    fputs("</text>\n", f);
    svg_legend(f);
    svg_axis(f, max_ms, scale, SVG_TOP + sw->ran * (SVG_BAR + SVG_GAP));
    for (int i = 0; i < sw->ran; i++) svg_point(f, &sw->points[i], i, scale);
    fputs("</svg>\n", f);
    if (fclose(f) != 0) return usp_fail(USP_EINTERNAL, "cannot write %s", path);
    return USP_OK;
}
