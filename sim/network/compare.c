/* compare.c: a published nccl-tests result against usp's prediction.
 *
 * The file (traces/published/nccl/NAME.json; traces/README.md has the format):
 *   {"source": URL, "hardware": ..., "software": ..., "class": "pcie-shm" |
 *    "pcie-p2p" | "nvswitch" | "multi-node", "platform": preset or XML,
 *    "op": "alltoall" ..., "ranks": N, "compare_min_bytes": B,
 *    "columns": ["size", "count", "time_us", "algbw", "busbw", ...],
 *    "rows": [[...], ...]}
 * Every row is re-predicted at its size on the platform; the error is the
 * predicted bus bandwidth over the published one, less 1. Rows of at least
 * compare_min_bytes count toward the mean and max (smaller ones, where the
 * time is a few microseconds of latency, are printed but not counted). */
#define _POSIX_C_SOURCE 200809L
#include "usp/json.h"
#include "usp/nccl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int column(const usp_json *cols, const char *name) {
    for (size_t i = 0; cols && i < cols->count; i++)
        if (cols->items[i].type == USP_JSON_STRING && strcmp(cols->items[i].string, name) == 0) return (int)i;
    return -1;
}

static void copy_str(const usp_json *root, const char *key, char *dst, size_t n) {
    const char *s = NULL;
    const usp_json *v = usp_json_get(root, key);
    if (v && v->type == USP_JSON_STRING) s = v->string;
    snprintf(dst, n, "%s", s ? s : "");
}

static usp_status read_file(const char *file, usp_nccl_comparison *c, double **sizes, double **busbw,
                            double **times) {
    usp_json *root;
    USP_TRY(usp_json_parse_file(file, &root));
    usp_status st = USP_OK;
    const char *need[] = {"source", "hardware", "software", "class", "platform", "op"};
    for (int i = 0; i < 6 && st == USP_OK; i++) {
        const char *s;
        st = usp_json_get_string(root, need[i], &s);
    }
    if (st == USP_OK) st = usp_json_get_int(root, "ranks", &c->ranks);
    if (st == USP_OK) st = usp_json_get_number(root, "compare_min_bytes", &c->min_bytes);
    const usp_json *cols = usp_json_get(root, "columns"), *rows = usp_json_get(root, "rows");
    int isize = column(cols, "size"), ibus = column(cols, "busbw"), itime = column(cols, "time_us");
    if (st == USP_OK && (isize < 0 || ibus < 0 || itime < 0))
        st = usp_fail(USP_EINVAL, "'columns' must name size, time_us and busbw");
    if (st == USP_OK && (!rows || rows->type != USP_JSON_ARRAY || rows->count == 0))
        st = usp_fail(USP_EINVAL, "'rows' must be a non-empty array");
    if (st == USP_OK) {
        copy_str(root, "source", c->source, sizeof c->source);
        copy_str(root, "hardware", c->hardware, sizeof c->hardware);
        copy_str(root, "software", c->software, sizeof c->software);
        copy_str(root, "class", c->cls, sizeof c->cls);
        copy_str(root, "platform", c->platform, sizeof c->platform);
        copy_str(root, "op", c->op, sizeof c->op);
        c->nrows = (int)rows->count;
        *sizes = calloc(rows->count, sizeof **sizes);
        *busbw = calloc(rows->count, sizeof **busbw);
        *times = calloc(rows->count, sizeof **times);
        if (!*sizes || !*busbw || !*times) st = usp_fail(USP_EINTERNAL, "out of memory");
    }
    for (size_t r = 0; st == USP_OK && r < rows->count; r++) {
        const usp_json *row = &rows->items[r];
        int ok = row->type == USP_JSON_ARRAY && (size_t)isize < row->count && (size_t)ibus < row->count &&
                 (size_t)itime < row->count && row->items[isize].type == USP_JSON_NUMBER &&
                 row->items[ibus].type == USP_JSON_NUMBER && row->items[itime].type == USP_JSON_NUMBER;
        if (!ok) { st = usp_fail(USP_EINVAL, "line %d: a row needs numbers for size, time_us and busbw", row->line); break; }
        (*sizes)[r] = row->items[isize].number;
        (*busbw)[r] = row->items[ibus].number;
        (*times)[r] = row->items[itime].number;
    }
    usp_json_free(root);
    if (st != USP_OK) usp_error_prefix("%s: ", file);
    return st;
}

usp_status usp_nccl_compare(const char *file, usp_nccl_comparison *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->file, sizeof c->file, "%s", file);
    double *sizes = NULL, *busbw = NULL, *times = NULL;
    usp_status st = read_file(file, c, &sizes, &busbw, &times);
    usp_nccl_table t = {0};
    if (st == USP_OK) {
        usp_nccl_options o = {.platform = c->platform, .op = c->op, .ranks = c->ranks, .sizes = sizes,
                              .nsizes = c->nrows};
        st = usp_nccl_simulate(&o, &t);
        if (st != USP_OK) usp_error_prefix("%s: ", file);
    }
    if (st == USP_OK && !(c->rows = calloc((size_t)c->nrows, sizeof *c->rows)))
        st = usp_fail(USP_EINTERNAL, "out of memory");
    int counted = 0;
    for (int i = 0; st == USP_OK && i < c->nrows; i++) {
        usp_nccl_compare_row *r = &c->rows[i];
        r->size = sizes[i];
        r->published_busbw = busbw[i];
        r->published_time_us = times[i];
        r->predicted_busbw = t.rows[i].busbw;
        r->predicted_time_us = t.rows[i].time_us;
        r->error = busbw[i] > 0 ? r->predicted_busbw / busbw[i] - 1 : NAN;
        r->counted = sizes[i] >= c->min_bytes && busbw[i] > 0;
        if (!r->counted) continue;
        counted++;
        double e = fabs(r->error);
        c->mean_abs_error += e;
        if (e > c->max_abs_error) c->max_abs_error = e;
        if (busbw[i] > c->published_peak) c->published_peak = busbw[i];
        if (r->predicted_busbw > c->predicted_peak) c->predicted_peak = r->predicted_busbw;
    }
    if (counted) c->mean_abs_error /= counted;
    usp_nccl_table_free(&t);
    free(sizes);
    free(busbw);
    free(times);
    if (st != USP_OK) usp_nccl_comparison_free(c);
    return st;
}

void usp_nccl_comparison_free(usp_nccl_comparison *c) {
    free(c->rows);
    c->rows = NULL;
    c->nrows = 0;
}

void usp_nccl_compare_print(FILE *f, const usp_nccl_comparison *c) {
    fprintf(f, "# %s\n# published: %s\n# hardware:  %s\n# software:  %s\n", c->file, c->source, c->hardware,
            c->software);
    fprintf(f, "# %s, %d ranks, class %s; predicted (SIMULATED) on platform %s\n", c->op, c->ranks, c->cls,
            c->platform);
    fprintf(f, "#%12s %12s %12s %12s %12s %8s  %s\n", "size (B)", "time (us)", "sim time", "busbw GB/s",
            "sim busbw", "error", "counted");
    for (int i = 0; i < c->nrows; i++) {
        const usp_nccl_compare_row *r = &c->rows[i];
        fprintf(f, " %12.0f %12.2f %12.2f %12.2f %12.2f %+7.1f%%  %s\n", r->size, r->published_time_us,
                r->predicted_time_us, r->published_busbw, r->predicted_busbw, 100 * r->error,
                r->counted ? "yes" : "no");
    }
    fprintf(f, "# rows of %.0f B and more: mean |error| %.1f%%, max %.1f%%; peak busbw published %.2f, "
               "predicted %.2f GB/s\n", c->min_bytes, 100 * c->mean_abs_error, 100 * c->max_abs_error,
            c->published_peak, c->predicted_peak);
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
    fputs(", \"op\": ", f);
    usp_json_write_string(f, c->op);
    fprintf(f, ", \"ranks\": %d, \"compare_min_bytes\": ", c->ranks);
    usp_json_write_number(f, c->min_bytes);
    fputs(", \"mean_abs_error\": ", f);
    usp_json_write_number(f, c->mean_abs_error);
    fputs(", \"max_abs_error\": ", f);
    usp_json_write_number(f, c->max_abs_error);
    fputs(", \"simulated\": true, \"rows\": [", f);
    for (int i = 0; i < c->nrows; i++) {
        const usp_nccl_compare_row *r = &c->rows[i];
        fputs(i ? ",\n  {\"size\": " : "\n  {\"size\": ", f);
        usp_json_write_number(f, r->size);
        fputs(", \"published_busbw\": ", f);
        usp_json_write_number(f, r->published_busbw);
        fputs(", \"predicted_busbw\": ", f);
        usp_json_write_number(f, r->predicted_busbw);
        fputs(", \"error\": ", f);
        usp_json_write_number(f, isfinite(r->error) ? r->error : 0);
        fprintf(f, ", \"counted\": %s}", r->counted ? "true" : "false");
    }
    fputs("]}\n", f);
}
