/* published_print.c: the tables of usp validate --published (usp/published.h).
 *
 * Per table: its source and machine, every row (measured, predicted,
 * error; a row that could not be predicted with its reason), then the
 * statistics per sequence length and for the whole table, and the noise
 * floor where rows ran one program (usp_pub_floor). */
#include "usp/published.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "usp/json.h"

/* The distinct sequence lengths of t, in order of first appearance. */
static int seqs_of(const usp_pub_table *t, int *out) {
    int n = 0;
    for (int i = 0; i < t->nrows; i++) {
        int seen = 0;
        for (int j = 0; j < n && !seen; j++) seen = out[j] == t->rows[i].seq;
        if (!seen) out[n++] = t->rows[i].seq;
    }
    return n;
}

static const char *unit_of(const usp_pub_table *t) {
    return t->kind == USP_PUB_ATTENTION ? "iter/s" : "TFLOP/s/GPU";
}

static void print_stats_line(FILE *f, const char *what, const usp_pub_stats *s) {
    fprintf(f, "  %-34s %3d/%-3d", what, s->predicted, s->rows);
    if (!s->predicted) { fprintf(f, "  (nothing predicted)\n"); return; }
    fprintf(f, "  mean |err| %6.1f%%  max |err| %6.1f%%", s->mean_abs_pct, s->max_abs_pct);
    if (isnan(s->spearman)) fprintf(f, "  spearman    -\n");
    else fprintf(f, "  spearman %+5.2f\n", s->spearman);
}

/* Rows that ran one program, measured apart: the least error any prediction
 * can have on them (usp_pub_floor). */
static void print_floor(FILE *f, const usp_pub_table *t) {
    usp_pub_floor fl;
    usp_pub_floor_make(t, 0, &fl);
    if (!fl.groups) return;
    fprintf(f, "  noise floor: %d rows are %d programs measured more than once (columns that run the same\n"
               "  program); the widest reads %.2fx apart (%s): no prediction\n"
               "  can do better than mean |err| %.1f%%, max |err| %.1f%% on this table\n",
            fl.rows, fl.groups, fl.spread, fl.widest >= 0 ? t->rows[fl.widest].label : "-", fl.mean_abs_pct,
            fl.max_abs_pct);
}

static void print_table(FILE *f, const usp_pub_table *t) {
    fprintf(f, "%s: %s\n", t->name, t->title);
    fprintf(f, "  source    %s\n  hardware  %s\n", t->source, t->hardware);
    fprintf(f, "  simulated on %s with profile %s (held out: never fitted)\n", t->platform, t->profile);
    if (t->harness != USP_HARNESS_NONE)
        fprintf(f, "  harness   %s: a call takes the longer of the simulated time and the benchmark's host\n"
                   "            time (PyTorch operations and torch.distributed calls it issues); 'host' marks\n"
                   "            the rows where the host time is the longer\n",
                usp_pub_harness_name(t->harness));
    fprintf(f, "\n");
    fprintf(f, "  %-46s %12s %12s %8s %10s\n", "row", "measured", "predicted", "error", "pred. ms");
    for (int i = 0; i < t->nrows; i++) {
        const usp_pub_row *r = &t->rows[i];
        fprintf(f, "  %-46s %12.3f", r->label, r->measured);
        if (r->status != USP_OK || isnan(r->predicted)) {
            fprintf(f, "  %s: %s\n", r->skip ? "not simulated" : "not predicted", r->why[0] ? r->why : "not run");
            continue;
        }
        fprintf(f, " %12.3f %+7.1f%% %10.2f%s%s\n", r->predicted, r->error_pct, r->predicted_s * 1e3,
                r->oom ? "  (over memory)" : "", r->host_s > r->sim_s ? "  host" : "");
    }
    fprintf(f, "\n  throughput in %s; error = (predicted - measured) / measured\n", unit_of(t));
    int *seqs = malloc((size_t)t->nrows * sizeof *seqs);
    int n = seqs ? seqs_of(t, seqs) : 0;
    for (int k = 0; k < n && n > 1; k++) {
        usp_pub_stats s;
        char what[32];
        usp_pub_stats_make(t, seqs[k], &s);
        if (seqs[k] % 1024) snprintf(what, sizeof what, "seq %d", seqs[k]);
        else snprintf(what, sizeof what, "seq %dK", seqs[k] / 1024);
        print_stats_line(f, what, &s);
    }
    free(seqs);
    usp_pub_stats s;
    usp_pub_stats_make(t, 0, &s);
    print_stats_line(f, "table", &s);
    print_floor(f, t);
    fprintf(f, "\n");
}

void usp_pub_print(FILE *f, const usp_pub_table *tables, int count) {
    for (int i = 0; i < count; i++) print_table(f, &tables[i]);
    fprintf(f, "summary: rows predicted / rows, |error| of the throughput, Spearman of predicted vs measured\n");
    for (int i = 0; i < count; i++) {
        usp_pub_stats s;
        usp_pub_stats_make(&tables[i], 0, &s);
        print_stats_line(f, tables[i].name, &s);
    }
}

/* ------------------------------------------------------------ JSON */

static void num(FILE *f, double x) { usp_json_write_number(f, x); }

static void stats_json(FILE *f, const usp_pub_stats *s) {
    fprintf(f, "{\"rows\":%d,\"predicted\":%d,\"mean_abs_pct\":", s->rows, s->predicted);
    num(f, s->predicted ? s->mean_abs_pct : NAN);
    fprintf(f, ",\"max_abs_pct\":");
    num(f, s->predicted ? s->max_abs_pct : NAN);
    fprintf(f, ",\"spearman\":");
    num(f, s->spearman);
    fprintf(f, "}");
}

static void row_json(FILE *f, const usp_pub_table *t, const usp_pub_row *r) {
    fprintf(f, "{\"label\":");
    usp_json_write_string(f, r->label);
    fprintf(f, ",\"seq\":%d", r->seq);
    if (t->kind == USP_PUB_ATTENTION)
        fprintf(f, ",\"seq_run\":%d,\"ulysses\":%d,\"ring\":%d,\"ring_impl\":\"%s\",\"kernel_only\":%s", r->cfg.seq,
                r->cfg.ulysses, r->cfg.ring, usp_ring_impl_name(r->cfg.ring_impl), r->kernel_only ? "true" : "false");
    else
        fprintf(f, ",\"global_batch\":%d,\"micro_batch\":%d,\"dp\":%d,\"tp\":%d,\"ulysses\":%d,\"ring\":%d,\"oom\":%s",
                r->global_batch, r->micro_batch > 0 ? r->micro_batch : r->global_batch / (r->mix.dp > 0 ? r->mix.dp : 1),
                r->mix.dp, r->mix.tp, r->mix.ulysses, r->mix.ring, r->oom ? "true" : "false");
    fprintf(f, ",\"measured\":");
    num(f, r->measured);
    fprintf(f, ",\"predicted\":");
    num(f, r->predicted);
    fprintf(f, ",\"predicted_s\":");
    num(f, r->predicted_s);
    if (t->kind == USP_PUB_ATTENTION) {
        fprintf(f, ",\"sim_s\":");
        num(f, r->sim_s);
        fprintf(f, ",\"host_s\":");
        num(f, r->host_s);
        fprintf(f, ",\"delay_s\":");
        num(f, r->delay_s);
    }
    fprintf(f, ",\"error_pct\":");
    num(f, r->error_pct);
    fprintf(f, ",\"skipped\":%s,\"why\":", r->skip ? "true" : "false");
    if (r->status == USP_OK) fprintf(f, "null");
    else usp_json_write_string(f, r->why);
    fprintf(f, "}");
}

static void table_json(FILE *f, const usp_pub_table *t) {
    fprintf(f, "{\"table\":");
    usp_json_write_string(f, t->name);
    fprintf(f, ",\"title\":");
    usp_json_write_string(f, t->title);
    fprintf(f, ",\"file\":");
    usp_json_write_string(f, t->file);
    fprintf(f, ",\"kind\":\"%s\",\"metric\":", t->kind == USP_PUB_ATTENTION ? "attention" : "training");
    usp_json_write_string(f, t->metric);
    fprintf(f, ",\"source\":");
    usp_json_write_string(f, t->source);
    fprintf(f, ",\"hardware\":");
    usp_json_write_string(f, t->hardware);
    fprintf(f, ",\"platform\":");
    usp_json_write_string(f, t->platform);
    fprintf(f, ",\"profile\":");
    usp_json_write_string(f, t->profile);
    if (t->kind == USP_PUB_ATTENTION) fprintf(f, ",\"harness\":\"%s\"", usp_pub_harness_name(t->harness));
    fprintf(f, ",\"rows\":[");
    for (int i = 0; i < t->nrows; i++) {
        if (i) fprintf(f, ",");
        row_json(f, t, &t->rows[i]);
    }
    fprintf(f, "],\"by_seq\":[");
    int *seqs = malloc((size_t)t->nrows * sizeof *seqs);
    int n = seqs ? seqs_of(t, seqs) : 0;
    for (int k = 0; k < n; k++) {
        usp_pub_stats s;
        usp_pub_stats_make(t, seqs[k], &s);
        fprintf(f, "%s{\"seq\":%d,\"stats\":", k ? "," : "", seqs[k]);
        stats_json(f, &s);
        fprintf(f, "}");
    }
    free(seqs);
    usp_pub_stats s;
    usp_pub_stats_make(t, 0, &s);
    fprintf(f, "],\"all\":");
    stats_json(f, &s);
    usp_pub_floor fl;
    usp_pub_floor_make(t, 0, &fl);
    fprintf(f, ",\"floor\":{\"groups\":%d,\"rows\":%d,\"counted\":%d,\"spread\":", fl.groups, fl.rows, fl.counted);
    num(f, fl.spread);
    fprintf(f, ",\"mean_abs_pct\":");
    num(f, fl.mean_abs_pct);
    fprintf(f, ",\"max_abs_pct\":");
    num(f, fl.max_abs_pct);
    fprintf(f, ",\"widest\":");
    if (fl.widest >= 0) usp_json_write_string(f, t->rows[fl.widest].label);
    else fprintf(f, "null");
    fprintf(f, "}}");
}

void usp_pub_print_json(FILE *f, const usp_pub_table *tables, int count) {
    fprintf(f, "{\"held_out\":true,\"tables\":[");
    for (int i = 0; i < count; i++) {
        if (i) fprintf(f, ",\n");
        table_json(f, &tables[i]);
    }
    fprintf(f, "]}\n");
}
