/* trace_tools.c: step-by-step comparison of two traces, and their timeline
 * as SVG.
 *
 * Both work on sorted copies of the event pointers, never on file order, so
 * the same events give the same report and the same picture bytes whichever
 * executor wrote them and in which order. */
#include "usp/trace_tools.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "usp/json.h"

/* ---------- keys for matching ---------- */

typedef struct {
    const usp_trace_event *event;
    long position;    /* in its trace: the last tie-breaker, for a stable order */
    int occurrence;   /* name matching: 0-based count of earlier events of its (rank, name) */
} keyed_event;

static int compare_ints(long x, long y) { return x < y ? -1 : x > y; }

static int compare_by_step(const void *pa, const void *pb) {
    const keyed_event *a = pa, *b = pb;
    int c = compare_ints(a->event->rank, b->event->rank);
    if (!c) c = compare_ints(a->event->step, b->event->step);
    return c ? c : compare_ints(a->position, b->position);
}

static int compare_by_name_then_start(const void *pa, const void *pb) {
    const keyed_event *a = pa, *b = pb;
    int c = compare_ints(a->event->rank, b->event->rank);
    if (!c) c = strcmp(a->event->name, b->event->name);
    if (!c && a->event->start_us != b->event->start_us)
        c = a->event->start_us < b->event->start_us ? -1 : 1;
    return c ? c : compare_ints(a->position, b->position);
}

static keyed_event *keyed_events(const usp_trace *t) {
    keyed_event *keys = usp_malloc((size_t)t->count * sizeof *keys);
    if (!keys) return NULL;
    for (long i = 0; i < t->count; i++) keys[i] = (keyed_event){&t->events[i], i, 0};
    return keys;
}

static void sort_keys(keyed_event *keys, long count, int by_step_index) {
    qsort(keys, (size_t)count, sizeof *keys,
          by_step_index ? compare_by_step : compare_by_name_then_start);
    if (by_step_index) return;
    for (long i = 1; i < count; i++) {
        const usp_trace_event *prev = keys[i - 1].event, *cur = keys[i].event;
        int same = prev->rank == cur->rank && !strcmp(prev->name, cur->name);
        keys[i].occurrence = same ? keys[i - 1].occurrence + 1 : 0;
    }
}

/* Step indices identify steps only when each (rank, step) appears once;
 * keys must be sorted by step. */
static int step_indices_unique(const keyed_event *keys, long count) {
    for (long i = 0; i < count; i++) {
        if (keys[i].event->step < 0) return 0;
        if (i > 0 && keys[i].event->rank == keys[i - 1].event->rank &&
            keys[i].event->step == keys[i - 1].event->step)
            return 0;
    }
    return 1;
}

static int distinct_ranks(const keyed_event *keys, long count) {
    int ranks = 0;
    for (long i = 0; i < count; i++)
        if (i == 0 || keys[i].event->rank != keys[i - 1].event->rank) ranks++;
    return ranks;
}

static int compare_keys(const keyed_event *a, const keyed_event *b, int by_step_index) {
    int c = compare_ints(a->event->rank, b->event->rank);
    if (c) return c;
    if (by_step_index) return compare_ints(a->event->step, b->event->step);
    c = strcmp(a->event->name, b->event->name);
    return c ? c : compare_ints(a->occurrence, b->occurrence);
}

/* ---------- refusals ---------- */

static usp_status refuse_unpaired(const keyed_event *k, const char *side, int by_step_index) {
    const usp_trace_event *e = k->event;
    if (by_step_index)
        return usp_fail(USP_EINVAL, "different schedules: rank %d step %d '%s' is in %s only",
                        e->rank, e->step, e->name, side);
    return usp_fail(USP_EINVAL, "different schedules: rank %d '%s' #%d is in %s only", e->rank,
                    e->name, k->occurrence + 1, side);
}

static usp_status check_same_step(const usp_trace_event *a, const usp_trace_event *b) {
    if (strcmp(a->name, b->name) != 0)
        return usp_fail(USP_EINVAL, "different schedules: rank %d step %d is '%s' in A, '%s' in B",
                        a->rank, a->step, a->name, b->name);
    if (a->kind != b->kind || a->stream != b->stream)
        return usp_fail(USP_EINVAL, "different schedules: rank %d '%s' is %s on %s in A, "
                        "%s on %s in B", a->rank, a->name, usp_step_kind_name(a->kind),
                        a->stream == USP_STREAM_COMM ? "comm" : "compute",
                        usp_step_kind_name(b->kind),
                        b->stream == USP_STREAM_COMM ? "comm" : "compute");
    return USP_OK;
}

/* ---------- the diff ---------- */

static usp_trace_match make_match(const usp_trace_event *a, const usp_trace_event *b) {
    usp_trace_match m = {
        .rank = a->rank, .step = a->step, .stream = a->stream, .kind = a->kind,
        .start_a_us = a->start_us, .start_b_us = b->start_us,
        .dur_a_us = a->dur_us, .dur_b_us = b->dur_us,
    };
    memcpy(m.name, a->name, sizeof m.name);
    return m;
}

/* Walks both key lists in key order; every key must be in both. */
static usp_status pair_steps(const keyed_event *ka, long na, const keyed_event *kb, long nb,
                             usp_trace_diff *d) {
    long i = 0, j = 0;
    while (i < na || j < nb) {
        int c = i == na ? 1 : j == nb ? -1 : compare_keys(&ka[i], &kb[j], d->by_step_index);
        if (c < 0) return refuse_unpaired(&ka[i], "A", d->by_step_index);
        if (c > 0) return refuse_unpaired(&kb[j], "B", d->by_step_index);
        USP_TRY(check_same_step(ka[i].event, kb[j].event));
        d->matches[d->count++] = make_match(ka[i].event, kb[j].event);
        i++, j++;
    }
    return USP_OK;
}

static int compare_discrepancy(const void *pa, const void *pb) {
    const usp_trace_match *a = pa, *b = pb;
    double da = fabs(a->dur_b_us - a->dur_a_us), db = fabs(b->dur_b_us - b->dur_a_us);
    if (da != db) return da > db ? -1 : 1;
    int c = compare_ints(a->rank, b->rank);
    if (!c) c = compare_ints(a->step, b->step);
    if (!c) c = strcmp(a->name, b->name);
    return c ? c : (a->start_a_us > b->start_a_us) - (a->start_a_us < b->start_a_us);
}

static void sum_totals(usp_trace_diff *d) {
    usp_trace_total all[USP_STEP_KIND_COUNT][2];
    memset(all, 0, sizeof all);
    for (long i = 0; i < d->count; i++) {
        const usp_trace_match *m = &d->matches[i];
        usp_trace_total *t = &all[m->kind][m->stream];
        t->steps++;
        t->a_us += m->dur_a_us;
        t->b_us += m->dur_b_us;
    }
    d->ntotals = 0;
    for (int k = 0; k < USP_STEP_KIND_COUNT; k++) {
        for (int s = 0; s < 2; s++) {
            if (!all[k][s].steps) continue;
            all[k][s].kind = (usp_step_kind)k;
            all[k][s].stream = (usp_stream)s;
            d->totals[d->ntotals++] = all[k][s];
        }
    }
}

static double latest_end(const usp_trace *t) {
    double end = -INFINITY;
    for (long i = 0; i < t->count; i++)
        if (t->events[i].start_us + t->events[i].dur_us > end)
            end = t->events[i].start_us + t->events[i].dur_us;
    return end;
}

static void copy_origin(usp_trace_diff *d, const usp_trace *a, const usp_trace *b) {
    memcpy(d->executor_a, a->executor, sizeof d->executor_a);
    memcpy(d->executor_b, b->executor, sizeof d->executor_b);
    memcpy(d->config_a, a->config, sizeof d->config_a);
    memcpy(d->config_b, b->config, sizeof d->config_b);
    d->makespan_a_us = latest_end(a);
    d->makespan_b_us = latest_end(b);
}

static usp_status match_keys(keyed_event *ka, long na, keyed_event *kb, long nb,
                             usp_trace_diff *d) {
    sort_keys(ka, na, 1);
    sort_keys(kb, nb, 1);
    d->by_step_index = step_indices_unique(ka, na) && step_indices_unique(kb, nb);
    if (!d->by_step_index) {
        sort_keys(ka, na, 0);
        sort_keys(kb, nb, 0);
    }
    d->ranks = distinct_ranks(ka, na);
    int ranks_b = distinct_ranks(kb, nb);
    if (d->ranks != ranks_b)
        return usp_fail(USP_EINVAL, "different schedules: A has %d ranks, B has %d",
                        d->ranks, ranks_b);
    d->matches = usp_malloc((size_t)(na < nb ? na : nb) * sizeof *d->matches);
    if (!d->matches) return USP_EINTERNAL;
    return pair_steps(ka, na, kb, nb, d);
}

usp_status usp_trace_diff_compute(const usp_trace *a, const usp_trace *b, usp_trace_diff *out) {
    memset(out, 0, sizeof *out);
    if (a->count == 0 || b->count == 0)
        return usp_fail(USP_EINVAL, "trace %s has no steps (empty trace)", a->count ? "B" : "A");
    keyed_event *ka = keyed_events(a), *kb = keyed_events(b);
    usp_status st = ka && kb ? match_keys(ka, a->count, kb, b->count, out) : USP_EINTERNAL;
    free(ka);
    free(kb);
    if (st != USP_OK) {
        usp_trace_diff_free(out);
        return st;
    }
    qsort(out->matches, (size_t)out->count, sizeof *out->matches, compare_discrepancy);
    sum_totals(out);
    copy_origin(out, a, b);
    return USP_OK;
}

void usp_trace_diff_free(usp_trace_diff *d) {
    if (!d) return;
    free(d->matches);
    memset(d, 0, sizeof *d);
}

double usp_trace_rel_pct(double a, double b) {
    if (a == 0) return b == 0 ? 0 : NAN;
    return (b - a) / a * 100.0;
}

/* ---------- the diff as text ---------- */

static const char *stream_name(usp_stream s) { return s == USP_STREAM_COMM ? "comm" : "compute"; }

static const char *format_pct(char *buf, size_t n, double pct) {
    if (isnan(pct)) snprintf(buf, n, "n/a");
    else snprintf(buf, n, "%+.1f%%", pct);
    return buf;
}

static void print_header(const usp_trace_diff *d, const char *label_a, const char *label_b,
                         FILE *f) {
    fprintf(f, "A: %s (%s)\nB: %s (%s)\n", label_a, d->executor_a[0] ? d->executor_a : "?",
            label_b, d->executor_b[0] ? d->executor_b : "?");
    if (!strcmp(d->config_a, d->config_b)) fprintf(f, "config: %s\n", d->config_a);
    else fprintf(f, "config A: %s\nconfig B: %s\n", d->config_a, d->config_b);
    fprintf(f, "%ld steps on %d ranks, matched by %s\n\n", d->count, d->ranks,
            d->by_step_index ? "rank and step index" : "rank, name and occurrence");
    char pct[32];
    fprintf(f, "makespan  A %.3f ms  B %.3f ms  %s\n\n", d->makespan_a_us / 1000.0,
            d->makespan_b_us / 1000.0,
            format_pct(pct, sizeof pct, usp_trace_rel_pct(d->makespan_a_us, d->makespan_b_us)));
}

static void print_top(const usp_trace_diff *d, long top, FILE *f) {
    if (top > d->count) top = d->count;
    fprintf(f, "largest duration differences (%ld of %ld steps)\n", top, d->count);
    fprintf(f, "%4s %5s  %-24s %-14s %-7s %12s %12s %12s %8s\n", "rank", "step", "name",
            "kind", "stream", "A us", "B us", "B-A us", "B-A %");
    for (long i = 0; i < top; i++) {
        const usp_trace_match *m = &d->matches[i];
        char pct[32];
        fprintf(f, "%4d %5d  %-24s %-14s %-7s %12.3f %12.3f %+12.3f %8s\n", m->rank, m->step,
                m->name, usp_step_kind_name(m->kind), stream_name(m->stream), m->dur_a_us,
                m->dur_b_us, m->dur_b_us - m->dur_a_us,
                format_pct(pct, sizeof pct, usp_trace_rel_pct(m->dur_a_us, m->dur_b_us)));
    }
}

static void print_totals(const usp_trace_diff *d, FILE *f) {
    fprintf(f, "\ntime by kind and stream (sum of step durations over all ranks)\n");
    fprintf(f, "%-14s %-7s %6s %14s %14s %8s\n", "kind", "stream", "steps", "A us", "B us",
            "B-A %");
    for (int i = 0; i < d->ntotals; i++) {
        const usp_trace_total *t = &d->totals[i];
        char pct[32];
        fprintf(f, "%-14s %-7s %6ld %14.3f %14.3f %8s\n", usp_step_kind_name(t->kind),
                stream_name(t->stream), t->steps, t->a_us, t->b_us,
                format_pct(pct, sizeof pct, usp_trace_rel_pct(t->a_us, t->b_us)));
    }
}

void usp_trace_diff_print(const usp_trace_diff *d, const char *label_a, const char *label_b,
                          long top, FILE *f) {
    print_header(d, label_a, label_b, f);
    print_top(d, top, f);
    print_totals(d, f);
}

/* ---------- the diff as JSON ---------- */

static void json_key_string(FILE *f, const char *key, const char *value) {
    fprintf(f, "\"%s\": ", key);
    usp_json_write_string(f, value);
}

/* Rounded to 0.001 (a nanosecond for times, the trace's resolution) so that
 * sums print as the trace's own numbers, not as 8446290.050999999. */
static void json_key_number(FILE *f, const char *key, double value) {
    double rounded = round(value * 1e3) / 1e3;
    fprintf(f, "\"%s\": ", key);
    usp_json_write_number(f, rounded == 0 ? 0.0 : rounded);
}

static void json_side(FILE *f, const char *label, const char *executor, const char *config,
                      double makespan_us) {
    fputc('{', f);
    json_key_string(f, "file", label);
    fputs(", ", f);
    json_key_string(f, "executor", executor);
    fputs(", ", f);
    json_key_string(f, "config", config);
    fputs(", ", f);
    json_key_number(f, "makespan_us", makespan_us);
    fputc('}', f);
}

static void json_match(FILE *f, const usp_trace_match *m) {
    fprintf(f, "{\"rank\": %d, \"step\": %d, ", m->rank, m->step);
    json_key_string(f, "name", m->name);
    fprintf(f, ", \"kind\": \"%s\", \"stream\": \"%s\", ", usp_step_kind_name(m->kind),
            stream_name(m->stream));
    json_key_number(f, "a_us", m->dur_a_us);
    fputs(", ", f);
    json_key_number(f, "b_us", m->dur_b_us);
    fputs(", ", f);
    json_key_number(f, "diff_us", m->dur_b_us - m->dur_a_us);
    fputs(", ", f);
    json_key_number(f, "diff_pct", usp_trace_rel_pct(m->dur_a_us, m->dur_b_us));
    fputc('}', f);
}

static void json_total(FILE *f, const usp_trace_total *t) {
    fprintf(f, "{\"kind\": \"%s\", \"stream\": \"%s\", \"steps\": %ld, ",
            usp_step_kind_name(t->kind), stream_name(t->stream), t->steps);
    json_key_number(f, "a_us", t->a_us);
    fputs(", ", f);
    json_key_number(f, "b_us", t->b_us);
    fputs(", ", f);
    json_key_number(f, "diff_pct", usp_trace_rel_pct(t->a_us, t->b_us));
    fputc('}', f);
}

void usp_trace_diff_print_json(const usp_trace_diff *d, const char *label_a,
                               const char *label_b, long top, FILE *f) {
    if (top > d->count) top = d->count;
    fputs("{\"a\": ", f);
    json_side(f, label_a, d->executor_a, d->config_a, d->makespan_a_us);
    fputs(",\n \"b\": ", f);
    json_side(f, label_b, d->executor_b, d->config_b, d->makespan_b_us);
    fprintf(f, ",\n \"matched_by\": \"%s\", \"ranks\": %d, \"steps\": %ld, ",
            d->by_step_index ? "step" : "name", d->ranks, d->count);
    json_key_number(f, "makespan_diff_pct",
                    usp_trace_rel_pct(d->makespan_a_us, d->makespan_b_us));
    fputs(",\n \"top\": [", f);
    for (long i = 0; i < top; i++) {
        fputs(i ? ",\n  " : "\n  ", f);
        json_match(f, &d->matches[i]);
    }
    fputs("],\n \"totals\": [", f);
    for (int i = 0; i < d->ntotals; i++) {
        fputs(i ? ",\n  " : "\n  ", f);
        json_total(f, &d->totals[i]);
    }
    fputs("]}\n", f);
}

/* ---------- SVG: layout ---------- */

/* Pixels. The plot is wide enough to tell apart steps of 0.1% of a run. */
enum {
    SVG_WIDTH = 1200,
    SVG_LEFT = 90,          /* lane labels */
    SVG_RIGHT = 20,
    SVG_TITLE_H = 26,
    SVG_LEGEND_ITEM_W = 110,
    SVG_LEGEND_ROW_H = 16,
    SVG_BLOCK_HEAD_H = 22,  /* executor and file name above each timeline */
    SVG_BLOCK_GAP = 12,
    SVG_LANE_H = 12,
    SVG_RANK_GAP = 3,
    SVG_AXIS_H = 30
};

/* One colour per step kind, in usp_step_kind order; never reassigned, so
 * two pictures can be compared by eye. */
static const char *const kind_colours[USP_STEP_KIND_COUNT] = {
    "#9edae5", /* pack */
    "#1f77b4", /* all_to_all */
    "#17becf", /* unpack */
    "#ff7f0e", /* sendrecv */
    "#bcbd22", /* allgather */
    "#8c564b", /* reduce_scatter */
    "#c7c7c7", /* init */
    "#2ca02c", /* attn_fwd */
    "#9467bd", /* merge */
    "#e377c2", /* bwd_prep */
    "#d62728", /* attn_bwd */
    "#7f7f7f", /* accum */
};

typedef struct {
    const usp_trace *trace;
    const char *label;
    const usp_trace_event **events; /* sorted by (rank, stream, start, step) */
    int *ranks;                     /* distinct ranks, ascending */
    int nranks, shown;              /* shown: the lowest USP_TRACE_SVG_MAX_RANKS */
    double top;                     /* y of the block */
} svg_block;

typedef struct {
    svg_block blocks[USP_TRACE_SVG_MAX_TRACES];
    int count;
    int kinds_present[USP_STEP_KIND_COUNT];
    int legend_rows;
    double origin_us, span_us;      /* x = SVG_LEFT at origin_us */
    double plot_top, plot_bottom, height;
} svg_layout;

static int compare_for_drawing(const void *pa, const void *pb) {
    const usp_trace_event *a = *(const usp_trace_event *const *)pa;
    const usp_trace_event *b = *(const usp_trace_event *const *)pb;
    int c = compare_ints(a->rank, b->rank);
    if (!c) c = compare_ints(a->stream, b->stream);
    if (!c && a->start_us != b->start_us) c = a->start_us < b->start_us ? -1 : 1;
    if (!c) c = compare_ints(a->step, b->step);
    if (!c && a->dur_us != b->dur_us) c = a->dur_us < b->dur_us ? -1 : 1;
    return c ? c : strcmp(a->name, b->name);
}

static usp_status sort_block_events(svg_block *b) {
    const usp_trace *t = b->trace;
    b->events = usp_malloc((size_t)t->count * sizeof *b->events);
    b->ranks = usp_malloc((size_t)t->count * sizeof *b->ranks);
    if (!b->events || !b->ranks) return USP_EINTERNAL;
    for (long i = 0; i < t->count; i++) b->events[i] = &t->events[i];
    qsort(b->events, (size_t)t->count, sizeof *b->events, compare_for_drawing);
    for (long i = 0; i < t->count; i++)
        if (i == 0 || b->events[i]->rank != b->events[i - 1]->rank)
            b->ranks[b->nranks++] = b->events[i]->rank;
    b->shown = b->nranks < USP_TRACE_SVG_MAX_RANKS ? b->nranks : USP_TRACE_SVG_MAX_RANKS;
    return USP_OK;
}

/* Lane index of a rank among the shown ones, or -1 when not shown. */
static int rank_slot(const svg_block *b, int rank) {
    int lo = 0, hi = b->shown - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (b->ranks[mid] == rank) return mid;
        if (b->ranks[mid] < rank) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

static double block_height(const svg_block *b) {
    return SVG_BLOCK_HEAD_H + b->shown * (2.0 * SVG_LANE_H + SVG_RANK_GAP);
}

static void find_time_range(svg_layout *l) {
    double first = 0, last = -INFINITY;
    for (int i = 0; i < l->count; i++) {
        const usp_trace *t = l->blocks[i].trace;
        for (long e = 0; e < t->count; e++) {
            if (t->events[e].start_us < first) first = t->events[e].start_us;
            if (t->events[e].start_us + t->events[e].dur_us > last)
                last = t->events[e].start_us + t->events[e].dur_us;
            l->kinds_present[t->events[e].kind] = 1;
        }
    }
    l->origin_us = first;
    /* a trace of zero-length steps at time 0 still gets an axis */
    l->span_us = last > first ? last - first : 1.0;
}

static int legend_entries(const svg_layout *l) {
    int n = 0;
    for (int k = 0; k < USP_STEP_KIND_COUNT; k++) n += l->kinds_present[k];
    return n;
}

static void place_blocks(svg_layout *l) {
    int per_row = (SVG_WIDTH - SVG_LEFT - SVG_RIGHT) / SVG_LEGEND_ITEM_W;
    int entries = legend_entries(l);
    l->legend_rows = (entries + per_row - 1) / per_row;
    double y = SVG_TITLE_H + l->legend_rows * SVG_LEGEND_ROW_H + 6;
    l->plot_top = y;
    for (int i = 0; i < l->count; i++) {
        l->blocks[i].top = y;
        y += block_height(&l->blocks[i]) + (i + 1 < l->count ? SVG_BLOCK_GAP : 0);
    }
    l->plot_bottom = y;
    l->height = y + SVG_AXIS_H;
}

static void free_layout(svg_layout *l) {
    for (int i = 0; i < l->count; i++) {
        free(l->blocks[i].events);
        free(l->blocks[i].ranks);
    }
}

static usp_status build_layout(const usp_trace_svg_input *inputs, int count, svg_layout *l) {
    memset(l, 0, sizeof *l);
    if (count < 1 || count > USP_TRACE_SVG_MAX_TRACES)
        return usp_fail(USP_EINVAL, "a timeline shows 1 or 2 traces, not %d", count);
    for (int i = 0; i < count; i++)
        if (inputs[i].trace->count == 0)
            return usp_fail(USP_EINVAL, "%s has no steps (empty trace)",
                            inputs[i].label ? inputs[i].label : "trace");
    l->count = count;
    for (int i = 0; i < count; i++) {
        l->blocks[i].trace = inputs[i].trace;
        l->blocks[i].label = inputs[i].label ? inputs[i].label : "";
        usp_status st = sort_block_events(&l->blocks[i]);
        if (st != USP_OK) {
            free_layout(l);
            return st;
        }
    }
    find_time_range(l);
    place_blocks(l);
    return USP_OK;
}

/* ---------- SVG: writing ---------- */

/* Coordinates rounded to 0.1 px and written without a trailing ".0": the
 * picture looks the same and the file is a third smaller. */
static void write_px(FILE *f, double v) {
    /* the layout keeps coordinates on the page; this keeps lround defined
     * whatever reaches it (NaN, +-inf, beyond a long) */
    if (!(v > -1e9)) v = -1e9;
    if (v > 1e9) v = 1e9;
    long tenths = lround(v * 10.0);
    if (tenths < 0) {
        fputc('-', f);
        tenths = -tenths;
    }
    fprintf(f, "%ld", tenths / 10);
    if (tenths % 10) fprintf(f, ".%ld", tenths % 10);
}

static void write_xml_text(FILE *f, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default:
            /* XML 1.0 forbids most control characters, even escaped */
            fputc((unsigned char)*s < 0x20 ? ' ' : *s, f);
        }
    }
}

static double x_of(const svg_layout *l, double t_us) {
    return SVG_LEFT + (t_us - l->origin_us) * (SVG_WIDTH - SVG_LEFT - SVG_RIGHT) / l->span_us;
}

static void write_rect(FILE *f, double x, double y, double w, double h, const char *cls) {
    fputs("<rect x=\"", f);
    write_px(f, x);
    fputs("\" y=\"", f);
    write_px(f, y);
    fputs("\" width=\"", f);
    write_px(f, w);
    fputs("\" height=\"", f);
    write_px(f, h);
    fprintf(f, "\" class=\"%s\"", cls);
}

static void write_text_at(FILE *f, double x, double y, const char *cls, const char *text) {
    fputs("<text x=\"", f);
    write_px(f, x);
    fputs("\" y=\"", f);
    write_px(f, y);
    fputc('"', f);
    if (cls) fprintf(f, " class=\"%s\"", cls);
    fputc('>', f);
    write_xml_text(f, text);
    fputs("</text>\n", f);
}

static void write_style(FILE *f) {
    fputs("<style type=\"text/css\"><![CDATA[\n"
          "text{font-family:sans-serif;font-size:10px;fill:#222}\n"
          ".title{font-size:14px;font-weight:bold}.head{font-size:11px;font-weight:bold}\n"
          ".lab{text-anchor:end;font-size:9px}.tick{text-anchor:middle}.warn{fill:#b00}\n"
          ".lane{fill:#f3f3f3}.grid{stroke:#ddd;stroke-width:0.5}.axis{stroke:#444}\n", f);
    for (int k = 0; k < USP_STEP_KIND_COUNT; k++)
        fprintf(f, ".k%d{fill:%s}", k, kind_colours[k]);
    fputs("\n]]></style>\n", f);
}

static void write_legend(FILE *f, const svg_layout *l) {
    int per_row = (SVG_WIDTH - SVG_LEFT - SVG_RIGHT) / SVG_LEGEND_ITEM_W, n = 0;
    for (int k = 0; k < USP_STEP_KIND_COUNT; k++) {
        if (!l->kinds_present[k]) continue;
        double x = SVG_LEFT + (n % per_row) * SVG_LEGEND_ITEM_W;
        double y = SVG_TITLE_H + (n / per_row) * SVG_LEGEND_ROW_H;
        char cls[8];
        snprintf(cls, sizeof cls, "k%d", k);
        write_rect(f, x, y, 10, 10, cls);
        fputs("/>\n", f);
        write_text_at(f, x + 14, y + 9, NULL, usp_step_kind_name((usp_step_kind)k));
        n++;
    }
}

static double lane_y(const svg_block *b, int slot, usp_stream stream) {
    return b->top + SVG_BLOCK_HEAD_H + slot * (2.0 * SVG_LANE_H + SVG_RANK_GAP) +
           (stream == USP_STREAM_COMM ? SVG_LANE_H : 0);
}

static void write_lanes(FILE *f, const svg_block *b) {
    double width = SVG_WIDTH - SVG_LEFT - SVG_RIGHT;
    for (int slot = 0; slot < b->shown; slot++) {
        for (int s = 0; s < 2; s++) {
            double y = lane_y(b, slot, (usp_stream)s);
            char label[48];
            snprintf(label, sizeof label, "rank %d %s", b->ranks[slot], stream_name((usp_stream)s));
            write_rect(f, SVG_LEFT, y, width, SVG_LANE_H - 1, "lane");
            fputs("/>\n", f);
            write_text_at(f, SVG_LEFT - 4, y + SVG_LANE_H - 3, "lab", label);
        }
    }
}

static void write_block_head(FILE *f, const svg_block *b, char letter, int count) {
    char head[400];
    const char *executor = b->trace->executor[0] ? b->trace->executor : "?";
    double end = latest_end(b->trace);
    if (count > 1)
        snprintf(head, sizeof head, "%c: %s  %s  (makespan %.3f ms)", letter, executor,
                 b->label, end / 1000.0);
    else
        snprintf(head, sizeof head, "%s  %s  (makespan %.3f ms)", executor, b->label,
                 end / 1000.0);
    write_text_at(f, SVG_LEFT, b->top + 14, "head", head);
    if (b->nranks > b->shown) {
        char warn[96];
        snprintf(warn, sizeof warn, "showing the first %d of %d ranks", b->shown, b->nranks);
        write_text_at(f, SVG_WIDTH - SVG_RIGHT - 200, b->top + 14, "warn", warn);
    }
}

static void write_event(FILE *f, const svg_layout *l, const svg_block *b,
                        const usp_trace_event *e, int slot) {
    double x = x_of(l, e->start_us);
    double w = x_of(l, e->start_us + e->dur_us) - x;
    char cls[8];
    snprintf(cls, sizeof cls, "k%d", (int)e->kind);
    /* a step too short to see still gets the thinnest mark the rounding allows */
    write_rect(f, x, lane_y(b, slot, e->stream) + 1, w < 0.1 ? 0.1 : w, SVG_LANE_H - 3, cls);
    fputs("><title>", f);
    write_xml_text(f, e->name);
    fprintf(f, " rank %d: %.3f us at %.3f us</title></rect>\n", e->rank, e->dur_us, e->start_us);
}

static void write_block_events(FILE *f, const svg_layout *l, const svg_block *b) {
    for (long i = 0; i < b->trace->count; i++) {
        int slot = rank_slot(b, b->events[i]->rank);
        if (slot >= 0) write_event(f, l, b, b->events[i], slot);
    }
}

enum { SVG_MAX_TICKS = 32 };

/* 1, 2 or 5 times a power of ten, giving 4 to 10 ticks over the span. */
static double tick_step_ms(double span_ms) {
    double raw = span_ms / 10.0;
    if (!(raw > 0) || !isfinite(raw)) return 1.0; /* an empty or broken span: one tick */
    double decade = pow(10.0, floor(log10(raw)));
    if (raw <= decade) return decade;
    if (raw <= 2 * decade) return 2 * decade;
    if (raw <= 5 * decade) return 5 * decade;
    return 10 * decade;
}

static void write_line(FILE *f, double x1, double y1, double x2, double y2, const char *cls) {
    fputs("<line x1=\"", f);
    write_px(f, x1);
    fputs("\" y1=\"", f);
    write_px(f, y1);
    fputs("\" x2=\"", f);
    write_px(f, x2);
    fputs("\" y2=\"", f);
    write_px(f, y2);
    fprintf(f, "\" class=\"%s\"/>\n", cls);
}

static void write_axis(FILE *f, const svg_layout *l) {
    double step = tick_step_ms(l->span_us / 1000.0);
    int decimals = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    double first = ceil(l->origin_us / 1000.0 / step - 1e-9);
    double axis_y = l->plot_bottom + 4;
    write_line(f, SVG_LEFT, axis_y, SVG_WIDTH - SVG_RIGHT, axis_y, "axis");
    /* 4 to 10 ticks fit; the bound keeps a span that rounding broke (i + 1
     * == i beyond 2^53) from writing ticks for ever */
    int ticks = 0;
    for (double i = first; ticks < SVG_MAX_TICKS; i++, ticks++) {
        double t_ms = i * step;
        double x = x_of(l, t_ms * 1000.0);
        if (x > SVG_WIDTH - SVG_RIGHT + 0.05) break;
        char label[32];
        snprintf(label, sizeof label, "%.*f ms", decimals, t_ms == 0 ? 0.0 : t_ms);
        write_line(f, x, l->plot_top, x, axis_y + 4, "grid");
        write_text_at(f, x, axis_y + 16, "tick", label);
    }
}

static void write_document(FILE *f, const svg_layout *l, const char *title) {
    fputs("<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"", f);
    fprintf(f, "%d\" height=\"", SVG_WIDTH);
    write_px(f, l->height);
    fprintf(f, "\" viewBox=\"0 0 %d ", SVG_WIDTH);
    write_px(f, l->height);
    fputs("\" style=\"background:#fff\">\n", f);
    write_style(f);
    write_text_at(f, SVG_LEFT, 18, "title", title);
    write_legend(f, l);
    /* lanes, then the grid over them, then the steps over the grid */
    for (int i = 0; i < l->count; i++) {
        write_block_head(f, &l->blocks[i], (char)('A' + i), l->count);
        write_lanes(f, &l->blocks[i]);
    }
    write_axis(f, l);
    for (int i = 0; i < l->count; i++) write_block_events(f, l, &l->blocks[i]);
    fputs("</svg>\n", f);
}

static const char *default_title(const usp_trace_svg_input *inputs) {
    return inputs[0].trace->config[0] ? inputs[0].trace->config : "usp trace";
}

usp_status usp_trace_svg_write(const usp_trace_svg_input *inputs, int count, const char *title,
                               FILE *f) {
    svg_layout l;
    USP_TRY(build_layout(inputs, count, &l));
    write_document(f, &l, title ? title : default_title(inputs));
    free_layout(&l);
    return USP_OK;
}

usp_status usp_trace_svg_save(const usp_trace_svg_input *inputs, int count, const char *title,
                              const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) return usp_fail(USP_EINVAL, "%s: %s", path, strerror(errno));
    usp_status st = usp_trace_svg_write(inputs, count, title, f);
    int failed = ferror(f);
    if (fclose(f) != 0) failed = 1;
    if (st == USP_OK && failed) st = usp_fail(USP_EINTERNAL, "%s: write failed", path);
    if (st != USP_OK) remove(path);
    return st;
}
