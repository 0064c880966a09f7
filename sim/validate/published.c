/* published.c: published measurements re-predicted (usp/published.h).
 *
 * Reading a table (one JSON file of traces/published/), re-predicting each
 * row with the simulator (attention rows) or the planner (training rows),
 * and the statistics: mean and largest |error|, Spearman's rank correlation.
 * Printing is in published_print.c. Needs usp_sim (the simulator, planner). */
#define _POSIX_C_SOURCE 200809L
#include "usp/published.h"
#include "usp/progress.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "usp/json.h"
#include "usp/schedule.h"
#include "usp/executor.h"
#include "usp/sim.h"
#include "usp/trace.h"

/* ------------------------------------------------------------ reading */

static usp_status copy_string(const usp_json *obj, const char *key, char *out, size_t n) {
    const char *s;
    USP_TRY(usp_json_get_string(obj, key, &s));
    snprintf(out, n, "%s", s);
    return USP_OK;
}

/* "paper, table (url)" from the source object. */
static usp_status read_source(const usp_json *root, usp_pub_table *t) {
    const usp_json *src = usp_json_get(root, "source");
    if (!src || src->type != USP_JSON_OBJECT)
        return usp_fail(USP_EINVAL, "line %d: 'source' must be an object (paper, url, table, read)", root->line);
    const char *paper, *table, *url;
    USP_TRY(usp_json_get_string(src, "paper", &paper));
    USP_TRY(usp_json_get_string(src, "table", &table));
    USP_TRY(usp_json_get_string(src, "url", &url));
    snprintf(t->source, sizeof t->source, "%s; %s", paper, table);
    return USP_OK;
}

static usp_status object_of(const usp_json *root, const char *key, const usp_json **out) {
    *out = usp_json_get(root, key);
    if (!*out || (*out)->type != USP_JSON_OBJECT)
        return usp_fail(USP_EINVAL, "line %d: '%s' must be an object", root->line, key);
    return USP_OK;
}

static usp_status read_attention_problem(const usp_json *p, usp_config *cfg, int *backward) {
    const char *dtype, *layout;
    *cfg = usp_config_default();
    USP_TRY(usp_json_get_int(p, "batch", &cfg->batch));
    USP_TRY(usp_json_get_int(p, "heads", &cfg->heads));
    USP_TRY(usp_json_get_int(p, "kv_heads", &cfg->kv_heads));
    USP_TRY(usp_json_get_int(p, "head_dim", &cfg->head_dim));
    USP_TRY(usp_json_get_bool(p, "causal", &cfg->causal));
    USP_TRY(usp_json_get_bool(p, "backward", backward));
    USP_TRY(usp_json_get_string(p, "dtype", &dtype));
    USP_TRY(usp_json_get_string(p, "layout", &layout));
    if (usp_parse_dtype(dtype, &cfg->dtype) != USP_OK || usp_parse_layout(layout, &cfg->layout) != USP_OK)
        return usp_fail(USP_EINVAL, "line %d: %s", p->line, usp_error());
    return USP_OK;
}

/* A row's throughput as the source prints it; null for a skipped row whose
 * cell holds no number (an out-of-memory mark). */
static usp_status read_measured(const usp_json *r, int skip, double *out) {
    const usp_json *v = usp_json_get(r, "measured");
    if (skip && v && v->type == USP_JSON_NULL) { *out = NAN; return USP_OK; }
    USP_TRY(usp_json_get_number(r, "measured", out));
    if (!(*out > 0)) return usp_fail(USP_EINVAL, "line %d: 'measured' must be positive", r->line);
    return USP_OK;
}

/* A row the source reports but the simulator cannot take ("skip": "why"):
 * carried, printed with its reason, left out of the statistics. */
static usp_status read_skip(const usp_json *r, usp_pub_row *row) {
    const usp_json *v = usp_json_get(r, "skip");
    if (!v) return USP_OK;
    if (v->type != USP_JSON_STRING || !v->string[0])
        return usp_fail(USP_EINVAL, "line %d: 'skip' must be a reason (a non-empty string)", v->line);
    row->skip = 1;
    snprintf(row->why, sizeof row->why, "%s", v->string);
    return USP_OK;
}

/* "varlen_cu_seqlens": [[0, ..., L], ...], every list ending at the same L. */
static usp_status read_varlen_lists(const usp_json *p, usp_pub_table *t) {
    const usp_json *v = usp_json_get(p, "varlen_cu_seqlens");
    if (!v) return USP_OK;
    if (v->type != USP_JSON_ARRAY || v->count == 0)
        return usp_fail(USP_EINVAL, "line %d: 'varlen_cu_seqlens' must be a non-empty array of lists", v->line);
    size_t total = 0;
    for (size_t k = 0; k < v->count; k++) {
        if (v->items[k].type != USP_JSON_ARRAY || v->items[k].count < 2)
            return usp_fail(USP_EINVAL, "line %d: a cu_seqlens list holds 0, ..., L", v->items[k].line);
        total += v->items[k].count;
    }
    t->varlen_cu = usp_malloc(total * sizeof *t->varlen_cu);
    t->varlen_first = usp_malloc((v->count + 1) * sizeof *t->varlen_first);
    if (!t->varlen_cu || !t->varlen_first) return USP_EINTERNAL;
    int at = 0;
    for (size_t k = 0; k < v->count; k++) {
        t->varlen_first[k] = at;
        for (size_t i = 0; i < v->items[k].count; i++) {
            const usp_json *x = &v->items[k].items[i];
            if (x->type != USP_JSON_NUMBER || x->number != (double)(long)x->number || x->number < 0 ||
                (i > 0 && x->number <= t->varlen_cu[at - 1]) || (i == 0 && x->number != 0))
                return usp_fail(USP_EINVAL, "line %d: cu_seqlens must be integers 0 < ... ascending", x->line);
            t->varlen_cu[at++] = (long)x->number;
        }
        if (t->varlen_cu[at - 1] != t->varlen_cu[t->varlen_first[0] + v->items[0].count - 1])
            return usp_fail(USP_EINVAL, "line %d: every cu_seqlens list must end at the same length",
                            v->items[k].line);
    }
    t->varlen_first[v->count] = at;
    t->nvarlen = (int)v->count;
    return USP_OK;
}

/* A varlen row: its reading of the lists, and the tokens they cover. */
static usp_status read_varlen_row(const usp_json *r, const usp_pub_table *t, usp_pub_row *row) {
    const char *api;
    if (!usp_json_get(r, "varlen")) return USP_OK;
    USP_TRY(usp_json_get_string(r, "varlen", &api));
    if (usp_pub_varlen_parse(api, &row->varlen) != USP_OK) return usp_fail(USP_EINVAL, "line %d: %s", r->line, usp_error());
    if (!t->nvarlen) return usp_fail(USP_EINVAL, "line %d: a varlen row needs the problem's varlen_cu_seqlens", r->line);
    long local = t->varlen_cu[t->varlen_first[1] - 1];
    long want = row->varlen == USP_VARLEN_LOCAL ? local : local * row->cfg.ring;
    if (row->cfg.seq != want)
        return usp_fail(USP_EINVAL, "line %d: varlen %s over ring %d covers %ld tokens, not seq %d", r->line, api,
                        row->cfg.ring, want, row->cfg.seq);
    if (row->varlen == USP_VARLEN_LOCAL ? row->cfg.ring * row->cfg.ulysses != 1 : row->cfg.ulysses != 1)
        return usp_fail(USP_EINVAL, "line %d: varlen %s: ulysses 1 and ring %s", r->line, api,
                        row->varlen == USP_VARLEN_LOCAL ? "1" : "R");
    static const usp_ring_impl impl_of[] = {USP_RING_BASIC, USP_RING_BASIC, USP_RING_BASIC, USP_RING_ZIGZAG,
                                            USP_RING_ALLGATHER};
    if (row->cfg.ring > 1 && row->cfg.ring_impl != impl_of[row->varlen])
        return usp_fail(USP_EINVAL, "line %d: varlen %s goes with ring_impl %s", r->line, api,
                        usp_ring_impl_name(impl_of[row->varlen]));
    size_t n = strlen(row->label);
    snprintf(row->label + n, sizeof row->label - n, " varlen %s", api);
    return USP_OK;
}

static usp_status read_attention_row(const usp_json *r, const usp_config *base, int backward, usp_pub_row *row) {
    const char *impl, *column;
    row->cfg = *base;
    row->backward = backward;
    if (usp_json_get(r, "backward")) USP_TRY(usp_json_get_bool(r, "backward", &row->backward));
    USP_TRY(read_skip(r, row));
    if (usp_json_get(r, "qkv_packed")) USP_TRY(usp_json_get_bool(r, "qkv_packed", &row->qkv_packed));
    /* the problem's dimensions, unless the row gives its own */
    static const char *const DIMS[] = {"batch", "heads", "kv_heads", "head_dim"};
    int *dst[] = {&row->cfg.batch, &row->cfg.heads, &row->cfg.kv_heads, &row->cfg.head_dim};
    for (int k = 0; k < 4; k++)
        if (usp_json_get(r, DIMS[k])) USP_TRY(usp_json_get_int(r, DIMS[k], dst[k]));
    USP_TRY(usp_json_get_int(r, "seq", &row->cfg.seq));
    row->seq = row->cfg.seq;
    /* "seq_run": the tokens the harness actually ran where the source's label
     * says otherwise (the table's "remarks" say why); the row keeps its label
     * and its group, the simulator runs seq_run */
    if (usp_json_get(r, "seq_run")) {
        USP_TRY(usp_json_get_int(r, "seq_run", &row->cfg.seq));
        if (row->cfg.seq <= 0) return usp_fail(USP_EINVAL, "line %d: 'seq_run' must be positive", r->line);
    }
    USP_TRY(usp_json_get_int(r, "ulysses", &row->cfg.ulysses));
    USP_TRY(usp_json_get_int(r, "ring", &row->cfg.ring));
    if (usp_json_get(r, "kernel_only")) {
        USP_TRY(usp_json_get_bool(r, "kernel_only", &row->kernel_only));
        if (row->kernel_only && row->cfg.ulysses * row->cfg.ring != 1)
            return usp_fail(USP_EINVAL, "line %d: 'kernel_only' is a row of one GPU (ulysses 1, ring 1)", r->line);
    }
    USP_TRY(usp_json_get_string(r, "ring_impl", &impl));
    USP_TRY(usp_json_get_string(r, "column", &column));
    USP_TRY(read_measured(r, row->skip, &row->measured));
    if (usp_parse_ring_impl(impl, &row->cfg.ring_impl) != USP_OK)
        return usp_fail(USP_EINVAL, "line %d: %s", r->line, usp_error());
    char dims[48] = "";
    if (row->cfg.heads != base->heads || row->cfg.kv_heads != base->kv_heads || row->cfg.head_dim != base->head_dim ||
        row->cfg.batch != base->batch)
        snprintf(dims, sizeof dims, "b%d h%d/%d d%d ", row->cfg.batch, row->cfg.heads, row->cfg.kv_heads,
                 row->cfg.head_dim);
    char seq[40], run[16] = "";
    if (row->cfg.seq != row->seq) {
        if (row->cfg.seq % 1024) snprintf(run, sizeof run, "%d", row->cfg.seq);
        else snprintf(run, sizeof run, "%dK", row->cfg.seq / 1024);
    }
    if (row->seq % 1024) snprintf(seq, sizeof seq, "%d", row->seq);
    else snprintf(seq, sizeof seq, "%dK", row->seq / 1024);
    if (run[0]) snprintf(seq + strlen(seq), sizeof seq - strlen(seq), " (ran %s)", run);
    snprintf(row->label, sizeof row->label, "%s %su%d r%d %s %s(%s)", seq, dims, row->cfg.ulysses, row->cfg.ring,
             column, row->backward != backward ? (row->backward ? "fwd+bwd " : "fwd ") : "", impl);
    return USP_OK;
}

/* Optional "micro_batch" (>= 1): sequences per DP rank per micro-batch, as
 * the source states or the file's remarks assume; absent: 0 (no accumulation,
 * or the problem's). */
static usp_status read_micro_batch(const usp_json *obj, int *out) {
    const usp_json *mb = usp_json_get(obj, "micro_batch");
    if (!mb) return USP_OK;
    if (mb->type != USP_JSON_NUMBER || mb->number < 1 || mb->number > (1 << 20) || mb->number != (int)mb->number)
        return usp_fail(USP_EINVAL, "line %d: 'micro_batch' must be an integer >= 1", mb->line);
    *out = (int)mb->number;
    return USP_OK;
}

static usp_status read_training_problem(const usp_json *p, const char *dir, usp_pub_table *t) {
    const char *model, *dtype, *impl;
    USP_TRY(usp_json_get_string(p, "model", &model));
    USP_TRY(usp_json_get_int(p, "gpus", &t->gpus));
    USP_TRY(usp_json_get_string(p, "dtype", &dtype));
    USP_TRY(usp_json_get_string(p, "ring_impl", &impl));
    USP_TRY(usp_json_get_bool(p, "causal", &t->work.causal));
    USP_TRY(usp_json_get_int(p, "zero", &t->base_mix.zero));
    USP_TRY(usp_json_get_bool(p, "recompute", &t->base_mix.recompute));
    USP_TRY(usp_json_get_bool(p, "tp_sp", &t->base_mix.tp_sp));
    const usp_json *ov = usp_json_get(p, "tp_overlap"); /* optional: none (default) or backward */
    if (ov && (ov->type != USP_JSON_STRING || (strcmp(ov->string, "none") && strcmp(ov->string, "backward"))))
        return usp_fail(USP_EINVAL, "line %d: 'tp_overlap' must be \"none\" or \"backward\"", ov->line);
    t->base_mix.tp_overlap = ov && !strcmp(ov->string, "backward");
    const usp_json *gs = usp_json_get(p, "grad_sync"); /* optional: layer (default) or step */
    if (gs && (gs->type != USP_JSON_STRING || (strcmp(gs->string, "layer") && strcmp(gs->string, "step"))))
        return usp_fail(USP_EINVAL, "line %d: 'grad_sync' must be \"layer\" or \"step\"", gs->line);
    t->work.grad_sync_step = gs && !strcmp(gs->string, "step");
    const usp_json *gd = usp_json_get(p, "grad_dtype"); /* optional: dtype (default) or fp32 */
    if (gd && (gd->type != USP_JSON_STRING || (strcmp(gd->string, "dtype") && strcmp(gd->string, "fp32"))))
        return usp_fail(USP_EINVAL, "line %d: 'grad_dtype' must be \"dtype\" or \"fp32\"", gd->line);
    t->work.grad_fp32 = gd && !strcmp(gd->string, "fp32");
    USP_TRY(read_micro_batch(p, &t->work.micro_batch));
    if (usp_parse_dtype(dtype, &t->work.dtype) != USP_OK || usp_parse_ring_impl(impl, &t->work.ring_impl) != USP_OK)
        return usp_fail(USP_EINVAL, "line %d: %s", p->line, usp_error());
    char path[1100];
    snprintf(path, sizeof path, "%s/%s", dir, model);
    int is_file = strstr(model, ".json") && access(path, R_OK) == 0;
    return usp_model_load(is_file ? path : model, &t->work.model);
}

static usp_status read_training_row(const usp_json *r, const usp_pub_table *t, usp_pub_row *row) {
    row->mix = t->base_mix;
    USP_TRY(read_skip(r, row));
    USP_TRY(usp_json_get_int(r, "seq", &row->seq));
    USP_TRY(usp_json_get_int(r, "global_batch", &row->global_batch));
    row->micro_batch = t->work.micro_batch;
    USP_TRY(read_micro_batch(r, &row->micro_batch));
    USP_TRY(usp_json_get_int(r, "dp", &row->mix.dp));
    USP_TRY(usp_json_get_int(r, "tp", &row->mix.tp));
    USP_TRY(usp_json_get_int(r, "ulysses", &row->mix.ulysses));
    USP_TRY(usp_json_get_int(r, "ring", &row->mix.ring));
    USP_TRY(read_measured(r, row->skip, &row->measured));
    snprintf(row->label, sizeof row->label, "%dK b%d dp%d tp%d u%d r%d", row->seq / 1024, row->global_batch,
             row->mix.dp, row->mix.tp, row->mix.ulysses, row->mix.ring);
    if (row->micro_batch > 0 && row->micro_batch * row->mix.dp < row->global_batch)
        snprintf(row->label + strlen(row->label), sizeof row->label - strlen(row->label), " mb%d", row->micro_batch);
    return USP_OK;
}

static usp_status read_rows(const usp_json *root, const char *dir, usp_pub_table *t) {
    const usp_json *p, *rows = usp_json_get(root, "rows");
    USP_TRY(object_of(root, "problem", &p));
    if (!rows || rows->type != USP_JSON_ARRAY || rows->count == 0)
        return usp_fail(USP_EINVAL, "line %d: 'rows' must be a non-empty array", root->line);
    usp_config base;
    int backward = 0;
    if (t->kind == USP_PUB_ATTENTION) {
        USP_TRY(read_attention_problem(p, &base, &backward));
        USP_TRY(read_varlen_lists(p, t));
    }
    else USP_TRY(read_training_problem(p, dir, t));
    t->rows = usp_calloc(rows->count, sizeof *t->rows);
    if (!t->rows) return USP_EINTERNAL;
    for (size_t i = 0; i < rows->count; i++) {
        const usp_json *r = &rows->items[i];
        usp_pub_row *row = &t->rows[t->nrows++];
        row->predicted = row->predicted_s = row->error_pct = NAN;
        if (r->type != USP_JSON_OBJECT) return usp_fail(USP_EINVAL, "line %d: a row must be an object", r->line);
        if (t->kind == USP_PUB_ATTENTION) {
            USP_TRY(read_attention_row(r, &base, backward, row));
            USP_TRY(read_varlen_row(r, t, row));
        }
        else USP_TRY(read_training_row(r, t, row));
    }
    return USP_OK;
}

static usp_status read_tree(const usp_json *root, const char *dir, usp_pub_table *t) {
    const char *kind;
    if (root->type != USP_JSON_OBJECT) return usp_fail(USP_EINVAL, "line %d: a table must be an object", root->line);
    USP_TRY(copy_string(root, "table", t->name, sizeof t->name));
    USP_TRY(copy_string(root, "title", t->title, sizeof t->title));
    USP_TRY(copy_string(root, "metric", t->metric, sizeof t->metric));
    USP_TRY(copy_string(root, "hardware", t->hardware, sizeof t->hardware));
    USP_TRY(copy_string(root, "platform", t->platform, sizeof t->platform));
    USP_TRY(copy_string(root, "profile", t->profile, sizeof t->profile));
    USP_TRY(usp_json_get_string(root, "kind", &kind));
    USP_TRY(read_source(root, t));
    const usp_json *h = usp_json_get(root, "harness");
    if (h && (h->type != USP_JSON_STRING || usp_pub_harness_parse(h->string, &t->harness) != USP_OK))
        return usp_fail(USP_EINVAL, "line %d: 'harness' must be none or yunchang-2024", h->line);
    if (!strcmp(kind, "attention")) t->kind = USP_PUB_ATTENTION;
    else if (!strcmp(kind, "training")) t->kind = USP_PUB_TRAINING;
    else return usp_fail(USP_EINVAL, "line %d: 'kind' must be attention or training, not '%s'", root->line, kind);
    const char *want = t->kind == USP_PUB_ATTENTION ? "iters_per_s" : "tflops_per_gpu";
    if (strcmp(t->metric, want))
        return usp_fail(USP_EINVAL, "line %d: 'metric' of a %s table must be %s", root->line, kind, want);
    return read_rows(root, dir, t);
}

usp_status usp_pub_table_read(const char *path, usp_pub_table *t) {
    memset(t, 0, sizeof *t);
    snprintf(t->file, sizeof t->file, "%s", path);
    t->work = usp_workload_default();
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    usp_json *root = NULL;
    usp_status st = usp_json_parse_file(path, &root);
    if (st == USP_OK) {
        st = read_tree(root, dir, t);
        if (st != USP_OK) usp_error_prefix("%s: ", path);
    }
    usp_json_free(root);
    if (st != USP_OK) usp_pub_table_free(t);
    return st;
}

void usp_pub_table_free(usp_pub_table *t) {
    free(t->varlen_cu);
    free(t->varlen_first);
    t->varlen_cu = NULL;
    t->varlen_first = NULL;
    t->nvarlen = 0;
    free(t->rows);
    t->rows = NULL;
    t->nrows = 0;
}

static int by_file(const void *a, const void *b) {
    return strcmp(((const usp_pub_table *)a)->file, ((const usp_pub_table *)b)->file);
}

usp_status usp_pub_tables_read(const char *dir, usp_pub_table **tables, int *count) {
    *tables = NULL;
    *count = 0;
    DIR *d = opendir(dir);
    if (!d) return usp_fail(USP_EINVAL, "cannot read directory %s", dir);
    usp_status st = USP_OK;
    int cap = 0;
    struct dirent *e;
    while (st == USP_OK && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < 6 || strcmp(e->d_name + n - 5, ".json") || e->d_name[0] == '.') continue;
        if (*count == cap) {
            cap = cap ? 2 * cap : 8;
            usp_pub_table *grown = realloc(*tables, (size_t)cap * sizeof **tables);
            if (!grown) { st = USP_EINTERNAL; break; }
            *tables = grown;
        }
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        st = usp_pub_table_read(path, &(*tables)[*count]);
        if (st == USP_OK) (*count)++;
    }
    closedir(d);
    if (st == USP_OK && *count == 0) st = usp_fail(USP_EINVAL, "no table (*.json) in %s", dir);
    if (st != USP_OK) {
        usp_pub_tables_free(*tables, *count);
        *tables = NULL;
        *count = 0;
        return st;
    }
    qsort(*tables, (size_t)*count, sizeof **tables, by_file);
    return USP_OK;
}

void usp_pub_tables_free(usp_pub_table *tables, int count) {
    for (int i = 0; i < count; i++) usp_pub_table_free(&tables[i]);
    free(tables);
}

/* ------------------------------------------------------------ FLOPs */

double usp_megatron_flops(const usp_model *m, int seq, int batch) {
    double h = m->hidden, L = seq, layers = m->layers;
    double q_ratio = (double)m->heads * m->head_dim / h;
    double attention = (1.0 + (double)m->kv_heads / m->heads + L / h) * q_ratio;
    double mlp = (double)m->ffn / h * (m->gated_mlp ? 1.5 : 1.0);
    double logit = (double)m->vocab / (2.0 * layers * h);
    return 12.0 * batch * L * layers * h * h * (attention + mlp + logit);
}

/* ------------------------------------------------------------ predicting */

static void row_refused(usp_pub_row *row) {
    row->status = USP_EINVAL;
    snprintf(row->why, sizeof row->why, "%s", usp_error());
}

/* The simulated start of the first attention block: per rank its earliest
 * attention event, the latest of those over the ranks (the all-to-alls
 * before it hold the ranks together). */
static double first_attention_s(const usp_trace *tr, int world) {
    double latest = 0;
    for (int g = 0; g < world; g++) {
        double first = INFINITY;
        for (long i = 0; i < tr->count; i++)
            if (tr->events[i].rank == g && tr->events[i].kind == USP_STEP_ATTN_FWD && tr->events[i].start_us < first)
                first = tr->events[i].start_us;
        if (isfinite(first) && first > latest) latest = first;
    }
    return latest * 1e-6;
}

/* The seconds of a one-rank trace's attention steps, forward and backward:
 * a kernel-only row's time (usp/published.h). */
static double attention_s(const usp_trace *tr) {
    double us = 0;
    for (long i = 0; i < tr->count; i++)
        if (tr->events[i].kind == USP_STEP_ATTN_FWD || tr->events[i].kind == USP_STEP_ATTN_BWD)
            us += tr->events[i].dur_us;
    return us * 1e-6;
}

/* One call of cfg (row's, or one of a varlen row's): sets row's times and
 * prediction, or its reason. */
static usp_status predict_one(const usp_pub_table *t, const char *platform, const char *profile,
                              const usp_config *cfg, usp_pub_row *row) {
    if (usp_config_validate(cfg) != USP_OK) { row_refused(row); return USP_OK; }
    usp_schedule s;
    if (usp_schedule_build(cfg, row->backward, &s) != USP_OK) { row_refused(row); return USP_OK; }
    usp_sim_options o = {.platform = platform ? platform : t->platform, .profile = profile ? profile : t->profile};
    usp_result r;
    /* a harness that synchronizes after every call: the trace gives the
     * simulated start of the first attention; a kernel-only row, the
     * attention steps' times */
    int synced = !row->backward && usp_pub_harness_synced(t->harness, row->qkv_packed);
    int traced = synced || row->kernel_only;
    usp_trace tr;
    usp_trace_init(&tr, "sim", cfg);
    usp_status st = usp_result_init(&r, &s, 0);
    if (st == USP_OK) {
        st = usp_sim_execute(&s, NULL, &o, &r, traced ? &tr : NULL);
        if (st == USP_OK) {
            /* the GPU-bound time (delayed by a synchronized harness's prefix),
             * or the harness's host-bound one, the longer */
            row->sim_s = row->kernel_only ? attention_s(&tr) : r.time_fwd_s + (row->backward ? r.time_bwd_s : 0);
            row->host_s = row->backward ? 0 : usp_pub_harness_host_s(t->harness, &row->cfg, row->qkv_packed, NULL, NULL);
            row->delay_s = 0;
            if (synced) {
                double first = first_attention_s(&tr, s.world);
                row->delay_s = fmax(0, usp_pub_harness_prefix_s(t->harness, &row->cfg, row->qkv_packed) - first);
            }
            row->predicted_s = fmax(row->sim_s + row->delay_s, row->host_s);
            row->predicted = 1.0 / row->predicted_s;
        } else row_refused(row);
        usp_result_free(&r);
    }
    usp_trace_free(&tr);
    usp_schedule_free(&s);
    return st == USP_EINTERNAL ? st : USP_OK;
}

/* One call, or (varlen) the mean over the calls with each list: iterations
 * per second of a loop that cycles through the lists. */
static usp_status predict_attention(const usp_pub_table *t, const char *platform, const char *profile,
                                    usp_pub_row *row) {
    if (!row->varlen) return predict_one(t, platform, profile, &row->cfg, row);
    double pred = 0, sim = 0, delay = 0;
    for (int k = 0; k < t->nvarlen; k++) {
        usp_config cfg = row->cfg;
        usp_mask *m = NULL;
        const long *cu = t->varlen_cu + t->varlen_first[k];
        int ndocs = t->varlen_first[k + 1] - t->varlen_first[k] - 1;
        usp_status st = usp_pub_varlen_mask(row->varlen, cu, ndocs, cfg.ring, &m);
        if (st == USP_EINTERNAL) return st;
        if (st != USP_OK) { row_refused(row); return USP_OK; }
        cfg.mask = m;
        cfg.contiguous = row->varlen == USP_VARLEN_LLAMA3;
        row->predicted_s = NAN;
        st = predict_one(t, platform, profile, &cfg, row);
        usp_mask_free(m);
        if (st != USP_OK) return st;
        if (row->status != USP_OK || isnan(row->predicted_s)) { /* refused: row says why */
            row->predicted = row->predicted_s = NAN;
            return USP_OK;
        }
        pred += row->predicted_s;
        sim += row->sim_s;
        delay += row->delay_s;
    }
    row->predicted_s = pred / t->nvarlen;
    row->sim_s = sim / t->nvarlen;
    row->delay_s = delay / t->nvarlen;
    row->predicted = 1.0 / row->predicted_s;
    return USP_OK;
}

static usp_status predict_training(const usp_pub_table *t, const char *platform, const char *profile,
                                   usp_pub_row *row) {
    usp_workload w = t->work;
    w.seq = row->seq;
    w.global_batch = row->global_batch;
    w.micro_batch = row->micro_batch;
    usp_plan_options o;
    usp_plan_options_init(&o);
    o.platform = platform ? platform : t->platform;
    o.profile = profile ? profile : t->profile;
    o.gpus = t->gpus;
    usp_plan p;
    usp_status st = usp_plan_one(&w, &o, &row->mix, &p);
    if (st == USP_EINTERNAL) return st;
    if (st != USP_OK) { row_refused(row); return USP_OK; }
    const usp_plan_point *pt = &p.points[0];
    if (pt->status != USP_OK) {
        row->status = pt->status;
        snprintf(row->why, sizeof row->why, "%s", pt->why);
    } else {
        row->predicted_s = pt->step_s;
        row->oom = pt->oom;
        row->predicted = usp_megatron_flops(&w.model, w.seq, w.global_batch) / (t->gpus * pt->step_s) / 1e12;
    }
    usp_plan_free(&p);
    return USP_OK;
}

usp_status usp_pub_predict(usp_pub_table *t, const char *platform, const char *profile, FILE *progress) {
    for (int i = 0; i < t->nrows; i++) {
        usp_pub_row *row = &t->rows[i];
        usp_progress(progress, "%s: row %d of %d (%s)", t->name, i + 1, t->nrows, row->label);
        row->predicted = row->predicted_s = row->error_pct = row->sim_s = NAN;
        row->host_s = row->delay_s = 0;
        if (row->skip) { /* its reason stays in why */
            row->status = USP_EINVAL;
            continue;
        }
        row->status = USP_OK;
        row->why[0] = 0;
        usp_status st = t->kind == USP_PUB_ATTENTION ? predict_attention(t, platform, profile, row)
                                                     : predict_training(t, platform, profile, row);
        if (st != USP_OK) {
            usp_error_prefix("%s, row %d (%s): ", t->name, i + 1, row->label);
            return st;
        }
        if (row->status == USP_OK) row->error_pct = 100 * (row->predicted - row->measured) / row->measured;
    }
    usp_progress_end(progress, 0);
    return USP_OK;
}

/* ------------------------------------------------------------ statistics */

/* Average ranks (1-based) of x into r; ties share the mean of their ranks. */
static void ranks_of(const double *x, int n, double *r) {
    for (int i = 0; i < n; i++) {
        int less = 0, equal = 0;
        for (int j = 0; j < n; j++) {
            if (x[j] < x[i]) less++;
            else if (x[j] == x[i]) equal++;
        }
        r[i] = less + (equal + 1) / 2.0;
    }
}

double usp_spearman(const double *x, const double *y, int n) {
    if (n < 2) return NAN;
    double *rx = malloc((size_t)n * sizeof *rx), *ry = malloc((size_t)n * sizeof *ry);
    if (!rx || !ry) { free(rx); free(ry); return NAN; }
    ranks_of(x, n, rx);
    ranks_of(y, n, ry);
    double mx = 0, my = 0;
    for (int i = 0; i < n; i++) { mx += rx[i]; my += ry[i]; }
    mx /= n;
    my /= n;
    double sxy = 0, sxx = 0, syy = 0;
    for (int i = 0; i < n; i++) {
        sxy += (rx[i] - mx) * (ry[i] - my);
        sxx += (rx[i] - mx) * (rx[i] - mx);
        syy += (ry[i] - my) * (ry[i] - my);
    }
    free(rx);
    free(ry);
    return sxx > 0 && syy > 0 ? sxy / sqrt(sxx * syy) : NAN;
}

void usp_pub_stats_make(const usp_pub_table *t, int seq, usp_pub_stats *s) {
    memset(s, 0, sizeof *s);
    s->spearman = NAN;
    double *m = malloc((size_t)t->nrows * sizeof *m), *p = malloc((size_t)t->nrows * sizeof *p);
    if (!m || !p) { free(m); free(p); return; }
    for (int i = 0; i < t->nrows; i++) {
        const usp_pub_row *row = &t->rows[i];
        if (seq > 0 && row->seq != seq) continue;
        s->rows++;
        if (isnan(row->error_pct)) continue;
        double e = fabs(row->error_pct);
        m[s->predicted] = row->measured;
        p[s->predicted] = row->predicted;
        s->predicted++;
        s->mean_abs_pct += e;
        if (e > s->max_abs_pct) s->max_abs_pct = e;
    }
    if (s->predicted) s->mean_abs_pct /= s->predicted;
    s->spearman = usp_spearman(p, m, s->predicted);
    free(m);
    free(p);
}
