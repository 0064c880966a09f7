/* compare.c: published nccl-tests results against usp's prediction.
 *
 * A file (traces/published/nccl/NAME.json; traces/README.md has the format):
 *   {"source": URL, "hardware": ..., "software": ..., "class": "pcie-shm" |
 *    "pcie-p2p" | "nvswitch" | "multi-node", "platform": preset spec or XML
 *    (a relative .xml path is looked up beside the file first),
 *    "tables": [{"op": "allreduce", "ranks": N, "kind": "sweep",
 *                "columns": ["size", ..., "busbw", ...],
 *                "rows": [[...], ...]},
 *               {"op": ..., "ranks": N, "kind": "peak" | "average",
 *                "sweep": [MIN, MAX, FACTOR], "busbw": X}, ...]}
 * A table may name its own "platform" and "class" (a run with a transport
 * forced by an environment variable is another platform: p2p=sys for
 * NCCL_P2P_LEVEL=SYS; a run on other hardware another preset or XML).
 * A table may give "per_node": G when its run put G ranks on each node
 * (mpirun -N G, fewer than the node's GPUs): its ranks go on the first G GPUs
 * of each node. A sweep row is re-predicted at its size; a peak or average figure is the
 * peak or mean busbw of the simulated sweep over the same sizes (nccl-tests'
 * -b -e -f). The error is the predicted busbw over the published one, less 1;
 * where the row gives its time (a "time_us" column) it is the published time
 * over the predicted one, less 1: the same ratio (busbw is bytes over time),
 * without the rounding of a busbw printed with two decimals (0.00 GB/s at
 * 8 bytes). Counted toward the bar: every sweep row, whatever its size, and
 * every peak and average figure; a table may say "counted": false with a
 * "note" (a run with a transport forced by an environment variable, an op usp
 * does not model): its rows are printed, never counted. */
#define _POSIX_C_SOURCE 200809L
#include "usp/json.h"
#include "usp/nccl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The largest size a row may give: 1 PiB, far beyond any GPU's memory (nccl-tests
 * prints up to tens of GiB); beyond it a figure is a typo, not a measurement. */
#define MAX_ROW_BYTES 1125899906842624.0

static int column(const usp_json *cols, const char *name) {
    for (size_t i = 0; cols && i < cols->count; i++)
        if (cols->items[i].type == USP_JSON_STRING && strcmp(cols->items[i].string, name) == 0) return (int)i;
    return -1;
}

static void copy_str(const usp_json *obj, const char *key, char *dst, size_t n) {
    const usp_json *v = usp_json_get(obj, key);
    snprintf(dst, n, "%s", v && v->type == USP_JSON_STRING ? v->string : "");
}

static usp_status add_row(usp_nccl_comparison *c, const usp_nccl_compare_row *r) {
    usp_nccl_compare_row *rows = realloc(c->rows, ((size_t)c->nrows + 1) * sizeof *rows);
    if (!rows) return usp_fail(USP_EINTERNAL, "out of memory");
    c->rows = rows;
    c->rows[c->nrows++] = *r;
    return USP_OK;
}

static double number_at(const usp_json *row, int i) {
    return i >= 0 && (size_t)i < row->count && row->items[i].type == USP_JSON_NUMBER ? row->items[i].number : NAN;
}

static void finish_row(usp_nccl_compare_row *r, int counted) {
    if (r->published_time_us > 0 && r->predicted_time_us > 0) r->error = r->published_time_us / r->predicted_time_us - 1;
    else r->error = r->published_busbw > 0 ? r->predicted_busbw / r->published_busbw - 1 : NAN;
    r->counted = counted && isfinite(r->error);
}

/* One "sweep" table: every row at its size. */
static usp_status sweep_table(const usp_json *t, const char *platform, int counted, usp_nccl_compare_row *tmpl,
                              int dry, usp_nccl_comparison *c) {
    const usp_json *cols = usp_json_get(t, "columns"), *rows = usp_json_get(t, "rows");
    int isize = column(cols, "size"), ibus = column(cols, "busbw"), itime = column(cols, "time_us");
    if (isize < 0 || ibus < 0) return usp_fail(USP_EINVAL, "line %d: 'columns' must name size and busbw", t->line);
    if (!rows || rows->type != USP_JSON_ARRAY || rows->count == 0)
        return usp_fail(USP_EINVAL, "line %d: 'rows' must be a non-empty array", t->line);
    double *sizes = calloc(rows->count, sizeof *sizes);
    if (!sizes) return usp_fail(USP_EINTERNAL, "out of memory");
    usp_status st = USP_OK;
    for (size_t r = 0; r < rows->count && st == USP_OK; r++) {
        const usp_json *row = &rows->items[r];
        if (row->type != USP_JSON_ARRAY || !isfinite(number_at(row, isize)) || !isfinite(number_at(row, ibus)))
            st = usp_fail(USP_EINVAL, "line %d: a row needs numbers for size and busbw", row->line);
        else if (!(number_at(row, isize) >= 1 && number_at(row, isize) <= MAX_ROW_BYTES) ||
                 !(number_at(row, ibus) >= 0) ||
                 (isfinite(number_at(row, itime)) && !(number_at(row, itime) > 0)))   /* null: no time */
            st = usp_fail(USP_EINVAL, "line %d: a row's size must be 1 to 2^50 bytes, its busbw not negative and "
                          "its time positive", row->line);
        else sizes[r] = number_at(row, isize);
    }
    usp_nccl_table sim = {0};
    if (st == USP_OK && counted != -1 && !dry) {
        usp_nccl_options o = {.platform = platform, .op = tmpl->op, .ranks = tmpl->ranks,
                              .per_node = tmpl->per_node, .sizes = sizes, .nsizes = (int)rows->count};
        st = usp_nccl_simulate(&o, &sim);
    }
    for (size_t r = 0; r < rows->count && st == USP_OK; r++) {
        const usp_json *row = &rows->items[r];
        usp_nccl_compare_row x = *tmpl;
        x.size = sizes[r];
        x.published_busbw = number_at(row, ibus);
        x.published_time_us = itime >= 0 && isfinite(number_at(row, itime)) ? number_at(row, itime) : 0;
        if (sim.rows) {
            x.predicted_busbw = sim.rows[r].busbw;
            x.predicted_time_us = sim.rows[r].time_us;
        }
        finish_row(&x, counted == 1);
        st = add_row(c, &x);
    }
    usp_nccl_table_free(&sim);
    free(sizes);
    return st;
}

/* A "peak" or "average" figure over a sweep. */
static usp_status summary_table(const usp_json *t, const char *platform, int counted, usp_nccl_compare_row *tmpl,
                                int dry, usp_nccl_comparison *c) {
    const usp_json *sw = usp_json_get(t, "sweep");
    double busbw;
    USP_TRY(usp_json_get_number(t, "busbw", &busbw));
    if (!sw || sw->type != USP_JSON_ARRAY || sw->count != 3 || sw->items[0].type != USP_JSON_NUMBER ||
        sw->items[1].type != USP_JSON_NUMBER || sw->items[2].type != USP_JSON_NUMBER)
        return usp_fail(USP_EINVAL, "line %d: 'sweep' must be [min bytes, max bytes, factor]", t->line);
    if (!(sw->items[0].number >= 1 && sw->items[1].number <= MAX_ROW_BYTES && sw->items[1].number >= sw->items[0].number &&
          sw->items[2].number >= 1 && busbw >= 0))
        return usp_fail(USP_EINVAL, "line %d: 'sweep' must be [min, max, factor] with 1 <= min <= max <= 2^50 bytes and "
                        "factor >= 1, and 'busbw' not negative", t->line);
    usp_nccl_compare_row x = *tmpl;
    x.published_busbw = busbw;
    if (counted != -1 && !dry) {
        usp_nccl_options o = {.platform = platform, .op = tmpl->op, .ranks = tmpl->ranks,
                              .per_node = tmpl->per_node, .min_bytes = sw->items[0].number, .max_bytes = sw->items[1].number,
                              .factor = sw->items[2].number};
        usp_nccl_table sim;
        USP_TRY(usp_nccl_simulate(&o, &sim));
        double peak = 0, sum = 0;
        for (int i = 0; i < sim.nrows; i++) {
            sum += sim.rows[i].busbw;
            if (sim.rows[i].busbw > peak) peak = sim.rows[i].busbw;
        }
        x.predicted_busbw = strcmp(x.kind, "peak") == 0 ? peak : sim.nrows ? sum / sim.nrows : 0;
        usp_nccl_table_free(&sim);
    }
    finish_row(&x, counted == 1);
    return add_row(c, &x);
}

static int is_modelled(const char *op) {
    for (const char *const *o = usp_nccl_ops(); *o; o++)
        if (strcmp(*o, op) == 0) return 1;
    return 0;
}

static void resolve_platform(const char *file, const char *spec, char *out, size_t n);

static usp_status one_table(const char *file, const usp_json *t, const char *platform, int dry,
                            usp_nccl_comparison *c) {
    usp_nccl_compare_row tmpl = {0};
    snprintf(tmpl.cls, sizeof tmpl.cls, "%s", c->cls);
    const usp_json *own = usp_json_get(t, "platform"), *cls = usp_json_get(t, "class");
    char resolved[512];
    if (own && own->type == USP_JSON_STRING) {
        snprintf(tmpl.platform, sizeof tmpl.platform, "%s", own->string);
        resolve_platform(file, own->string, resolved, sizeof resolved);
        platform = resolved;
    }
    if (cls && cls->type == USP_JSON_STRING) snprintf(tmpl.cls, sizeof tmpl.cls, "%s", cls->string);
    const char *op, *kind;
    USP_TRY(usp_json_get_string(t, "op", &op));
    USP_TRY(usp_json_get_string(t, "kind", &kind));
    USP_TRY(usp_json_get_int(t, "ranks", &tmpl.ranks));
    if (tmpl.ranks < 2 || tmpl.ranks > 100000)
        return usp_fail(USP_EINVAL, "line %d: 'ranks' must be 2 to 100000", t->line);
    if (usp_json_get(t, "per_node")) {   /* mpirun -N G: the first G GPUs of each node */
        USP_TRY(usp_json_get_int(t, "per_node", &tmpl.per_node));
        if (tmpl.per_node < 1) return usp_fail(USP_EINVAL, "line %d: 'per_node' must be 1 or more", t->line);
    }
    snprintf(tmpl.op, sizeof tmpl.op, "%s", op);
    snprintf(tmpl.kind, sizeof tmpl.kind, "%s", kind);
    const usp_json *cv = usp_json_get(t, "counted");
    /* 1: counted; 0: predicted, not counted; -1: not predicted (an op usp does not model) */
    int counted = cv && cv->type == USP_JSON_BOOL && !cv->boolean ? 0 : 1;
    copy_str(t, "note", tmpl.note, sizeof tmpl.note);
    if (!is_modelled(op)) {
        counted = -1;
        if (!tmpl.note[0]) snprintf(tmpl.note, sizeof tmpl.note, "%s is not modelled", op);
    }
    if (strcmp(kind, "sweep") == 0) return sweep_table(t, platform, counted, &tmpl, dry, c);
    if (strcmp(kind, "peak") == 0 || strcmp(kind, "average") == 0)
        return summary_table(t, platform, counted, &tmpl, dry, c);
    return usp_fail(USP_EINVAL, "line %d: kind '%s' is not sweep, peak or average", t->line, kind);
}

/* A relative .xml platform is looked up beside the file first. */
static void resolve_platform(const char *file, const char *spec, char *out, size_t n) {
    snprintf(out, n, "%s", spec);
    size_t len = strlen(spec);
    if (spec[0] == '/' || len < 4 || strcmp(spec + len - 4, ".xml") != 0) return;
    const char *slash = strrchr(file, '/');
    if (!slash) return;
    char beside[512];
    snprintf(beside, sizeof beside, "%.*s/%s", (int)(slash - file), file, spec);
    if (access(beside, R_OK) == 0) snprintf(out, n, "%s", beside);
}

/* Reads the file and checks every table without simulating (no prediction in
 * the rows); then, with `simulate`, predicts them: a malformed table is refused
 * at once, not after the simulations of those before it. */
static usp_status compare(const char *file, int simulate, usp_nccl_comparison *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->file, sizeof c->file, "%s", file);
    usp_json *root;
    USP_TRY(usp_json_parse_file(file, &root));
    usp_status st = USP_OK;
    const char *need[] = {"source", "hardware", "software", "class", "platform"};
    for (int i = 0; i < 5 && st == USP_OK; i++) {
        const char *s;
        st = usp_json_get_string(root, need[i], &s);
    }
    const usp_json *held = usp_json_get(root, "held_out");
    if (st == USP_OK && held && held->type != USP_JSON_BOOL)
        st = usp_fail(USP_EINVAL, "line %d: 'held_out' must be true or false", held->line);
    c->held_out = held && held->boolean;
    const usp_json *tables = usp_json_get(root, "tables");
    if (st == USP_OK && (!tables || tables->type != USP_JSON_ARRAY || tables->count == 0))
        st = usp_fail(USP_EINVAL, "'tables' must be a non-empty array");
    char platform[512] = "";
    if (st == USP_OK) {
        copy_str(root, "source", c->source, sizeof c->source);
        copy_str(root, "hardware", c->hardware, sizeof c->hardware);
        copy_str(root, "software", c->software, sizeof c->software);
        copy_str(root, "class", c->cls, sizeof c->cls);
        copy_str(root, "platform", c->platform, sizeof c->platform);
        resolve_platform(file, c->platform, platform, sizeof platform);
    }
    for (int pass = 0; pass < (simulate ? 2 : 1) && st == USP_OK; pass++) {   /* check, then predict */
        c->nrows = 0;   /* the checking pass's rows give way to the predicted ones */
        for (size_t i = 0; st == USP_OK && i < tables->count; i++)
            st = one_table(file, &tables->items[i], platform, pass == 0, c);
    }
    usp_json_free(root);
    if (st != USP_OK) {
        usp_error_prefix("%s: ", file);
        usp_nccl_comparison_free(c);
        return st;
    }
    for (int i = 0; i < c->nrows; i++) {
        if (!c->rows[i].counted) continue;
        double e = fabs(c->rows[i].error);
        c->counted++;
        c->mean_abs_error += e;
        if (e > c->max_abs_error) c->max_abs_error = e;
    }
    if (c->counted) c->mean_abs_error /= c->counted;
    return USP_OK;
}

usp_status usp_nccl_compare_check(const char *file) {
    usp_nccl_comparison c;
    usp_status st = compare(file, 0, &c);
    if (st == USP_OK) usp_nccl_comparison_free(&c);
    return st;
}

usp_status usp_nccl_compare(const char *file, usp_nccl_comparison *c) { return compare(file, 1, c); }

void usp_nccl_comparison_free(usp_nccl_comparison *c) {
    free(c->rows);
    c->rows = NULL;
    c->nrows = 0;
}

void usp_nccl_compare_print(FILE *f, const usp_nccl_comparison *c) {
    fprintf(f, "# %s\n# published: %s\n# hardware:  %s\n# software:  %s\n", c->file, c->source, c->hardware,
            c->software);
    fprintf(f, "# class %s; predicted (SIMULATED) on platform %s; %s\n", c->cls, c->platform,
            c->held_out ? "held out (no figure of the model was fitted to it)" : "the model's figures are fitted to it");
    fprintf(f, "#%-13s %5s %7s %12s %10s %10s %10s %10s %8s  %s\n", "op", "ranks", "kind", "size (B)", "time us",
            "sim us", "busbw", "sim busbw", "error", "counted");
    for (int i = 0; i < c->nrows; i++) {
        const usp_nccl_compare_row *r = &c->rows[i];
        char size[24], time[16], err[16];
        if (r->size > 0 || strcmp(r->kind, "sweep") == 0) snprintf(size, sizeof size, "%.0f", r->size);
        else snprintf(size, sizeof size, "%s", "(sweep)");
        if (r->published_time_us > 0) snprintf(time, sizeof time, "%.2f", r->published_time_us);
        else snprintf(time, sizeof time, "%s", "-");
        if (isfinite(r->error) && (r->predicted_busbw > 0 || r->counted)) snprintf(err, sizeof err, "%+.1f%%", 100 * r->error);
        else snprintf(err, sizeof err, "%s", "-");
        fprintf(f, " %-13s %5d %7s %12s %10s %10.2f %10.2f %10.2f %8s  %s%s%s%s%s%s%s%s\n", r->op, r->ranks, r->kind, size,
                time, r->predicted_time_us, r->published_busbw, r->predicted_busbw, err, r->counted ? "yes" : "no",
                r->note[0] ? ": " : "", r->note, r->platform[0] ? " [on " : "", r->platform,
                r->platform[0] && strcmp(r->cls, c->cls) ? ", class " : "",
                r->platform[0] && strcmp(r->cls, c->cls) ? r->cls : "", r->platform[0] ? "]" : "");
    }
    fprintf(f, "# counted rows: %d, mean |error| %.1f%%, max %.1f%%\n", c->counted, 100 * c->mean_abs_error,
            100 * c->max_abs_error);
}

void usp_nccl_compare_json(FILE *f, const usp_nccl_comparison *c) {
    fputs("{\"file\": ", f);
    usp_json_write_string(f, c->file);
    fputs(", \"source\": ", f);
    usp_json_write_string(f, c->source);
    fputs(", \"class\": ", f);
    usp_json_write_string(f, c->cls);
    fputs(", \"platform\": ", f);
    usp_json_write_string(f, c->platform);
    fprintf(f, ", \"simulated\": true, \"held_out\": %s, \"counted\": %d, \"mean_abs_error\": ",
            c->held_out ? "true" : "false", c->counted);
    usp_json_write_number(f, c->mean_abs_error);
    fputs(", \"max_abs_error\": ", f);
    usp_json_write_number(f, c->max_abs_error);
    fputs(", \"rows\": [", f);
    for (int i = 0; i < c->nrows; i++) {
        const usp_nccl_compare_row *r = &c->rows[i];
        fputs(i ? ",\n  {\"op\": " : "\n  {\"op\": ", f);
        usp_json_write_string(f, r->op);
        fputs(", \"kind\": ", f);
        usp_json_write_string(f, r->kind);
        fprintf(f, ", \"ranks\": %d, \"per_node\": %d, \"size\": ", r->ranks, r->per_node);
        usp_json_write_number(f, r->size);
        fputs(", \"published_busbw\": ", f);
        usp_json_write_number(f, r->published_busbw);
        fputs(", \"predicted_busbw\": ", f);
        usp_json_write_number(f, r->predicted_busbw);
        fputs(", \"error\": ", f);
        if (isfinite(r->error)) usp_json_write_number(f, r->error);
        else fputs("null", f);
        fprintf(f, ", \"counted\": %s, \"note\": ", r->counted ? "true" : "false");
        usp_json_write_string(f, r->note);
        fputs(", \"class\": ", f);
        usp_json_write_string(f, r->cls);
        fputs(", \"platform\": ", f);
        usp_json_write_string(f, r->platform[0] ? r->platform : c->platform);
        fputc('}', f);
    }
    fputs("]}\n", f);
}

/* Per topology class, over every counted row of the files; held-out files
 * apart from those the model is fitted to. */
typedef struct {
    char cls[32];
    int held_out;
    int files, rows, within;
    double sum, max;
} class_stat;

static int class_slot(class_stat *st, int *k, int cap, const char *cls, int held_out) {
    int j = 0;
    while (j < *k && (strcmp(st[j].cls, cls) || st[j].held_out != held_out)) j++;
    if (j < *k) return j;
    if (*k == cap) return -1;
    memset(&st[j], 0, sizeof st[j]);
    snprintf(st[j].cls, sizeof st[j].cls, "%s", cls);
    st[j].held_out = held_out;
    (*k)++;
    return j;
}

/* Rows go to their own class (a table may name one); a file counts once
 * for its class. */
static int class_stats(const usp_nccl_comparison *c, int n, class_stat *st, int cap) {
    int k = 0;
    for (int i = 0; i < n; i++) {
        int f = class_slot(st, &k, cap, c[i].cls, c[i].held_out);
        if (f >= 0) st[f].files++;
        for (int r = 0; r < c[i].nrows; r++) {
            if (!c[i].rows[r].counted) continue;
            int j = class_slot(st, &k, cap, c[i].rows[r].cls, c[i].held_out);
            if (j < 0) continue;
            double e = fabs(c[i].rows[r].error);
            st[j].rows++;
            st[j].sum += e;
            st[j].within += e <= USP_NCCL_BAR;
            if (e > st[j].max) st[j].max = e;
        }
    }
    return k;
}

void usp_nccl_compare_summary(FILE *f, const usp_nccl_comparison *c, int n, int json) {
    class_stat st[16];
    int k = class_stats(c, n, st, 16);
    if (json) {
        fputs("{\"bar\": ", f);
        usp_json_write_number(f, USP_NCCL_BAR);
        fputs(", \"simulated\": true, \"classes\": [", f);
    } else {
        fprintf(f, "# per topology class, every counted row, all sizes (SIMULATED against published; bar: every row's\n"
                   "# |error| <= %.0f%%; the error is of busbw, from the times where a row gives them)\n",
                100 * USP_NCCL_BAR);
        fprintf(f, "#%-13s %-8s %5s %5s %11s %9s %13s  %s\n", "class", "data", "files", "rows", "mean |err|",
                "max |err|", "rows <= bar", "meets the bar");
    }
    for (int j = 0; j < k; j++) {
        double mean = st[j].rows ? st[j].sum / st[j].rows : 0;
        if (json) {
            fputs(j ? ", {\"class\": " : "{\"class\": ", f);
            usp_json_write_string(f, st[j].cls);
            fprintf(f, ", \"held_out\": %s, \"files\": %d, \"rows\": %d, \"rows_within_bar\": %d, \"mean_abs_error\": ",
                    st[j].held_out ? "true" : "false", st[j].files, st[j].rows, st[j].within);
            usp_json_write_number(f, mean);
            fputs(", \"max_abs_error\": ", f);
            usp_json_write_number(f, st[j].max);
            fprintf(f, ", \"meets_bar\": %s}", st[j].rows && st[j].within == st[j].rows ? "true" : "false");
        } else {
            fprintf(f, " %-13s %-8s %5d %5d %10.1f%% %8.1f%% %6d of %-4d  %s\n", st[j].cls,
                    st[j].held_out ? "held out" : "fitted", st[j].files, st[j].rows, 100 * mean, 100 * st[j].max,
                    st[j].within, st[j].rows,
                    st[j].rows && st[j].within == st[j].rows ? "yes" : "NO");
        }
    }
    if (json) fputs("]}\n", f);
}
