/* validate_io.c: device profiles, calibration measurements and fitted
 * platforms, read and written (usp/validate.h). Plain C on usp_core, so
 * `usp calibrate` writes them on a GPU machine that has no simulator. */
#define _POSIX_C_SOURCE 200809L
#include "usp/validate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "usp/json.h"

/* Profile and measurement files name dtypes as the profiles do. */
static const char *const DTYPE_KEYS[4] = {[USP_F64] = "fp64", [USP_F32] = "fp32", [USP_F16] = "fp16",
                                          [USP_BF16] = "bf16"};
/* The order the built-in profiles list them in. */
static const usp_dtype DTYPE_ORDER[4] = {USP_BF16, USP_F16, USP_F32, USP_F64};

/* ------------------------------------------------------- profile: reading */

const usp_profile_rate *usp_profile_rate_find(const usp_profile_desc *p, usp_dtype dt, int head_dim) {
    for (int i = 0; i < p->nrates; i++)
        if (p->rates[i].dtype == dt && p->rates[i].head_dim == head_dim) return &p->rates[i];
    return NULL;
}

usp_profile_rate *usp_profile_rate_of(usp_profile_desc *p, usp_dtype dt, int head_dim) {
    const usp_profile_rate *found = usp_profile_rate_find(p, dt, head_dim);
    if (found) return &p->rates[found - p->rates];
    if (p->nrates == USP_PROFILE_MAX_RATES) return NULL;
    usp_profile_rate *r = &p->rates[p->nrates++];
    *r = (usp_profile_rate){dt, head_dim, 0, 0, 0, 0, 0, 0, 0, 0};
    return r;
}

static usp_status read_head_dims(const usp_json *by_dim, usp_dtype dt, usp_profile_desc *p) {
    for (size_t i = 0; i < by_dim->count; i++) {
        int d = atoi(by_dim->keys[i]);
        usp_profile_rate *r = d > 0 ? usp_profile_rate_of(p, dt, d) : NULL;
        if (!r) return usp_fail(USP_EINVAL, "line %d: head dim '%s' (a positive integer, at most %d entries)",
                                by_dim->items[i].line, by_dim->keys[i], USP_PROFILE_MAX_RATES);
        USP_TRY(usp_json_get_number(&by_dim->items[i], "fwd", &r->fwd_tflops));
        USP_TRY(usp_json_get_number(&by_dim->items[i], "bwd", &r->bwd_tflops));
        if (usp_json_get(&by_dim->items[i], "fwd_fixed_us"))
            USP_TRY(usp_json_get_number(&by_dim->items[i], "fwd_fixed_us", &r->fwd_fixed_us));
        if (usp_json_get(&by_dim->items[i], "bwd_fixed_us"))
            USP_TRY(usp_json_get_number(&by_dim->items[i], "bwd_fixed_us", &r->bwd_fixed_us));
        if (usp_json_get(&by_dim->items[i], "fwd_short_keys"))
            USP_TRY(usp_json_get_number(&by_dim->items[i], "fwd_short_keys", &r->fwd_short_keys));
        if (usp_json_get(&by_dim->items[i], "bwd_short_rows"))
            USP_TRY(usp_json_get_number(&by_dim->items[i], "bwd_short_rows", &r->bwd_short_rows));
        if (!(r->fwd_fixed_us >= 0 && r->bwd_fixed_us >= 0 && r->fwd_short_keys >= 0 && r->bwd_short_rows >= 0))
            return usp_fail(USP_EINVAL, "line %d: fixed times and short-block lengths must not be negative",
                            by_dim->items[i].line);
        static const char *const eff_keys[2] = {"fwd_rowmask_efficiency", "bwd_rowmask_efficiency"};
        double *effs[2] = {&r->fwd_rowmask_eff, &r->bwd_rowmask_eff};
        for (int k = 0; k < 2; k++) {
            if (!usp_json_get(&by_dim->items[i], eff_keys[k])) continue;
            USP_TRY(usp_json_get_number(&by_dim->items[i], eff_keys[k], effs[k]));
            if (!(*effs[k] > 0))
                return usp_fail(USP_EINVAL, "line %d: '%s' must be positive", by_dim->items[i].line, eff_keys[k]);
        }
    }
    return USP_OK;
}

static usp_status read_rates(const usp_json *root, usp_profile_desc *p) {
    const usp_json *att = usp_json_get(root, "attention_tflops"), *peak = usp_json_get(root, "peak_dense_tflops");
    if (!att || att->type != USP_JSON_OBJECT || !peak || peak->type != USP_JSON_OBJECT)
        return usp_fail(USP_EINVAL, "needs objects 'attention_tflops' and 'peak_dense_tflops'");
    for (size_t i = 0; i < att->count; i++) {
        usp_dtype dt;
        USP_TRY(usp_parse_dtype(att->keys[i], &dt));
        if (att->items[i].type != USP_JSON_OBJECT)
            return usp_fail(USP_EINVAL, "line %d: '%s' must be an object", att->items[i].line, att->keys[i]);
        USP_TRY(read_head_dims(&att->items[i], dt, p));
        USP_TRY(usp_json_get_number(peak, DTYPE_KEYS[dt], &p->peak_tflops[dt]));
    }
    return USP_OK;
}

/* Optional "memory_gbps": {"pack": 622, ...}; kinds it does not name stay 0. */
static usp_status read_memory_rates(const usp_json *root, usp_profile_desc *p) {
    const usp_json *by_kind = usp_json_get(root, "memory_gbps");
    if (!by_kind) return USP_OK;
    if (by_kind->type != USP_JSON_OBJECT)
        return usp_fail(USP_EINVAL, "line %d: 'memory_gbps' must be an object", by_kind->line);
    for (size_t i = 0; i < by_kind->count; i++) {
        usp_step_kind k = usp_step_kind_of(by_kind->keys[i]);
        if (k == USP_STEP_KIND_COUNT || !usp_step_memory_bound(k))
            return usp_fail(USP_EINVAL, "line %d: 'memory_gbps.%s' is not a memory-bound step kind",
                            by_kind->items[i].line, by_kind->keys[i]);
        USP_TRY(usp_json_get_number(by_kind, by_kind->keys[i], &p->memory_gbps[k]));
    }
    return USP_OK;
}

static usp_status read_profile_tree(const usp_json *root, usp_profile_desc *p) {
    const char *name, *kernel = "", *source = "";
    USP_TRY(usp_json_get_string(root, "name", &name));
    if (usp_json_get(root, "kernel")) USP_TRY(usp_json_get_string(root, "kernel", &kernel));
    if (usp_json_get(root, "source")) USP_TRY(usp_json_get_string(root, "source", &source));
    snprintf(p->name, sizeof p->name, "%s", name);
    snprintf(p->kernel, sizeof p->kernel, "%s", kernel);
    snprintf(p->source, sizeof p->source, "%s", source);
    USP_TRY(read_rates(root, p));
    const usp_json *masked = usp_json_get(root, "masked_block_efficiency");
    if (!masked) return usp_fail(USP_EINVAL, "missing 'masked_block_efficiency'");
    USP_TRY(usp_json_get_number(masked, "fwd", &p->masked_fwd));
    USP_TRY(usp_json_get_number(masked, "bwd", &p->masked_bwd));
    USP_TRY(usp_json_get_number(root, "hbm_gbps", &p->hbm_gbps));
    USP_TRY(read_memory_rates(root, p));
    USP_TRY(usp_json_get_number(root, "launch_overhead_us", &p->launch_us));
    if (usp_json_get(root, "comm_overlap_slowdown"))
        USP_TRY(usp_json_get_number(root, "comm_overlap_slowdown", &p->comm_slowdown));
    if (!(p->comm_slowdown >= 0 && p->comm_slowdown < 1))
        return usp_fail(USP_EINVAL, "'comm_overlap_slowdown' must be in [0, 1)");
    if (usp_json_get(root, "memory_mib")) { /* nvidia-smi's MiB: written back as GB */
        USP_TRY(usp_json_get_number(root, "memory_mib", &p->memory_gb));
        p->memory_gb *= 1048576.0 / 1e9;
        return USP_OK;
    }
    return usp_json_get_number(root, "memory_gb", &p->memory_gb);
}

usp_status usp_profile_desc_read(const char *path, usp_profile_desc *p) {
    memset(p, 0, sizeof *p);
    usp_json *root = NULL;
    usp_status st = usp_json_parse_file(path, &root); /* its reasons name the file */
    if (st != USP_OK) return st;
    st = root->type != USP_JSON_OBJECT ? usp_fail(USP_EINVAL, "a profile is a JSON object") : read_profile_tree(root, p);
    usp_json_free(root);
    if (st != USP_OK) usp_error_prefix("profile %s: ", path);
    return st;
}

/* ------------------------------------------------------- profile: writing */

static int has_dtype(const usp_profile_desc *p, usp_dtype dt) {
    for (int i = 0; i < p->nrates; i++)
        if (p->rates[i].dtype == dt) return 1;
    return 0;
}

static int by_head_dim(const void *a, const void *b) {
    return ((const usp_profile_rate *)a)->head_dim - ((const usp_profile_rate *)b)->head_dim;
}

/* "bf16": {"64": {"fwd": 304.0, "bwd": 285.0}, "128": {...}} */
static void write_dtype_rates(FILE *f, const usp_profile_desc *p, usp_dtype dt) {
    usp_profile_rate sorted[USP_PROFILE_MAX_RATES];
    int n = 0;
    for (int i = 0; i < p->nrates; i++)
        if (p->rates[i].dtype == dt) sorted[n++] = p->rates[i];
    qsort(sorted, (size_t)n, sizeof *sorted, by_head_dim);
    fprintf(f, "    \"%s\": {", DTYPE_KEYS[dt]);
    for (int i = 0; i < n; i++) {
        fprintf(f, "%s\"%d\": {\"fwd\": %.1f, \"bwd\": %.1f", i ? ", " : "", sorted[i].head_dim,
                sorted[i].fwd_tflops, sorted[i].bwd_tflops);
        if (sorted[i].fwd_fixed_us > 0 || sorted[i].bwd_fixed_us > 0)
            fprintf(f, ", \"fwd_fixed_us\": %.1f, \"bwd_fixed_us\": %.1f", sorted[i].fwd_fixed_us,
                    sorted[i].bwd_fixed_us);
        if (sorted[i].fwd_short_keys > 0 || sorted[i].bwd_short_rows > 0)
            fprintf(f, ", \"fwd_short_keys\": %.0f, \"bwd_short_rows\": %.0f", sorted[i].fwd_short_keys,
                    sorted[i].bwd_short_rows);
        if (sorted[i].fwd_rowmask_eff > 0 || sorted[i].bwd_rowmask_eff > 0)   /* 0: none, 1 */
            fprintf(f, ", \"fwd_rowmask_efficiency\": %.3f, \"bwd_rowmask_efficiency\": %.3f",
                    sorted[i].fwd_rowmask_eff > 0 ? sorted[i].fwd_rowmask_eff : 1.0,
                    sorted[i].bwd_rowmask_eff > 0 ? sorted[i].bwd_rowmask_eff : 1.0);
        fprintf(f, "}");
    }
    fprintf(f, "}");
}

static usp_status check_writable(const usp_profile_desc *p) {
    if (p->nrates == 0) return usp_fail(USP_EINVAL, "profile %s has no attention rates", p->name);
    for (int i = 0; i < p->nrates; i++)
        if (!(p->rates[i].fwd_tflops > 0 && p->rates[i].bwd_tflops > 0 && p->peak_tflops[p->rates[i].dtype] > 0))
            return usp_fail(USP_EINVAL, "profile %s: %s D=%d needs positive rates and a peak", p->name,
                            DTYPE_KEYS[p->rates[i].dtype], p->rates[i].head_dim);
    if (!(p->masked_fwd > 0 && p->masked_bwd > 0 && p->hbm_gbps > 0 && p->launch_us >= 0 && p->memory_gb > 0))
        return usp_fail(USP_EINVAL, "profile %s: efficiencies, bandwidth and memory must be positive", p->name);
    return USP_OK;
}

/* ,"memory_gbps": {"pack": 622, "merge": 1739}: only the kinds that have one. */
static void write_memory_rates(FILE *f, const usp_profile_desc *p) {
    int first = 1;
    for (int k = 0; k < USP_STEP_KIND_COUNT; k++) {
        if (!(p->memory_gbps[k] > 0)) continue;
        fprintf(f, "%s\"%s\": %.0f", first ? "  \"memory_gbps\": {" : ", ", usp_step_kind_name((usp_step_kind)k),
                p->memory_gbps[k]);
        first = 0;
    }
    if (!first) fprintf(f, "},\n");
}

usp_status usp_profile_desc_write(const usp_profile_desc *p, FILE *f) {
    USP_TRY(check_writable(p));
    fprintf(f, "{\n  \"name\": ");
    usp_json_write_string(f, p->name);
    fprintf(f, ",\n  \"kernel\": ");
    usp_json_write_string(f, p->kernel);
    fprintf(f, ",\n  \"source\": ");
    usp_json_write_string(f, p->source);
    fprintf(f, ",\n  \"attention_tflops\": {\n");
    int first = 1;
    for (int k = 0; k < 4; k++) {
        if (!has_dtype(p, DTYPE_ORDER[k])) continue;
        fprintf(f, "%s", first ? "" : ",\n");
        write_dtype_rates(f, p, DTYPE_ORDER[k]);
        first = 0;
    }
    fprintf(f, "\n  },\n  \"masked_block_efficiency\": {\"fwd\": %.3f, \"bwd\": %.3f},\n", p->masked_fwd,
            p->masked_bwd);
    fprintf(f, "  \"hbm_gbps\": %.0f,\n", p->hbm_gbps);
    write_memory_rates(f, p);
    fprintf(f, "  \"launch_overhead_us\": %.2f,\n  \"memory_gb\": %.1f,\n", p->launch_us, p->memory_gb);
    if (p->comm_slowdown > 0) fprintf(f, "  \"comm_overlap_slowdown\": %.3f,\n", p->comm_slowdown);
    fprintf(f, "  \"peak_dense_tflops\": {");
    first = 1;
    for (int k = 0; k < 4; k++) {
        if (!has_dtype(p, DTYPE_ORDER[k])) continue;
        fprintf(f, "%s\"%s\": %.0f", first ? "" : ", ", DTYPE_KEYS[DTYPE_ORDER[k]], p->peak_tflops[DTYPE_ORDER[k]]);
        first = 0;
    }
    fprintf(f, "}\n}\n");
    return USP_OK;
}

usp_status usp_profile_desc_save(const usp_profile_desc *p, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) return usp_fail(USP_EINVAL, "cannot write %s", path);
    usp_status st = usp_profile_desc_write(p, f);
    if (fclose(f) != 0 && st == USP_OK) st = usp_fail(USP_EINTERNAL, "cannot write %s", path);
    return st;
}

/* ------------------------------------------------------------ platform */

static void write_link(FILE *f, const char *id, double gbps, double lat_us) {
    fprintf(f, "    <link id=\"%s\" bandwidth=\"%.6gGBps\" latency=\"%.6gus\" sharing_policy=\"SPLITDUPLEX\"/>\n",
            id, gbps, lat_us);
}

static void write_route(FILE *f, const char *src, const char *dst, const char *l0, const char *l1) {
    fprintf(f, "    <route src=\"%s\" dst=\"%s\" symmetrical=\"YES\"><link_ctn id=\"%s\" direction=\"UP\"/>", src,
            dst, l0);
    if (l1) fprintf(f, "<link_ctn id=\"%s\" direction=\"DOWN\"/>", l1);
    fprintf(f, "</route>\n");
}

/* More than two GPUs: one router, each GPU's link carrying half the latency,
 * so that every GPU-to-GPU route costs lat + bytes / bw. */
static void write_star(FILE *f, int gpus, double lat_us, double gbps) {
    char a[32], b[32], la[32], lb[32];
    fprintf(f, "    <router id=\"switch\"/>\n");
    for (int g = 0; g < gpus; g++) {
        snprintf(a, sizeof a, "gpu%d-link", g);
        write_link(f, a, gbps, lat_us / 2);
    }
    for (int g = 0; g < gpus; g++)
        for (int h = g + 1; h < gpus; h++) {
            snprintf(a, sizeof a, "gpu%d", g);
            snprintf(b, sizeof b, "gpu%d", h);
            snprintf(la, sizeof la, "gpu%d-link", g);
            snprintf(lb, sizeof lb, "gpu%d-link", h);
            write_route(f, a, b, la, lb);
        }
}

usp_status usp_platform_write_fitted(FILE *f, const char *id, int gpus, double lat_us, double gbps,
                                     const char *comment) {
    if (gpus < 2 || !(lat_us >= 0) || !(gbps > 0))
        return usp_fail(USP_EINVAL, "a fitted platform needs 2 or more GPUs, latency >= 0 and bandwidth > 0");
    fprintf(f, "<?xml version='1.0'?>\n<!DOCTYPE platform SYSTEM \"https://simgrid.org/simgrid.dtd\">\n");
    fprintf(f, "<!-- %s -->\n<platform version=\"4.1\">\n  <zone id=\"%s\" routing=\"Full\">\n",
            comment ? comment : "", id);
    for (int g = 0; g < gpus; g++) fprintf(f, "    <host id=\"gpu%d\" speed=\"1Gf\"/>\n", g);
    if (gpus == 2) {
        write_link(f, "link", gbps, lat_us);
        write_route(f, "gpu0", "gpu1", "link", NULL);
    } else {
        write_star(f, gpus, lat_us, gbps);
    }
    fprintf(f, "  </zone>\n</platform>\n");
    return USP_OK;
}

/* ----------------------------------------------- measurements: writing */

/* mask: "full", "causal" or "docs:N" (packed documents of N tokens, with the kernels' tile
 * and loop FLOPs) */
static void write_attn(FILE *f, const usp_calib_attn *a, int last) {
    char mask[32];
    if (a->doc > 0)
        snprintf(mask, sizeof mask, "docs:%d", a->doc);
    else
        snprintf(mask, sizeof mask, "%s", a->causal ? "causal" : "full");
    fprintf(f, "    {\"dtype\": \"%s\", \"head_dim\": %d, \"seq\": %d, \"heads\": %d, \"dir\": \"%s\", "
               "\"mask\": \"%s\", \"flops\": %.6e, \"seconds\": %.6e",
            DTYPE_KEYS[a->dtype], a->head_dim, a->seq, a->heads, a->backward ? "bwd" : "fwd", mask, a->flops,
            a->seconds);
    if (a->doc > 0) fprintf(f, ", \"tile_flops\": %.6e, \"loop_flops\": %.6e", a->tile_flops, a->loop_flops);
    fprintf(f, "}%s\n", last ? "" : ",");
}

usp_status usp_calib_write(const usp_calib *m, FILE *f) {
    fprintf(f, "{\n  \"device\": ");
    usp_json_write_string(f, m->device);
    fprintf(f, ",\n  \"source\": ");
    usp_json_write_string(f, m->source);
    fprintf(f, ",\n  \"gpus\": %d,\n  \"nccl_version\": %d,\n  \"memory_gb\": %.1f,\n  \"launch_us\": %.3f,\n",
            m->gpus, m->nccl_version, m->memory_gb, m->launch_us);
    fprintf(f, "  \"attention\": [\n");
    for (int i = 0; i < m->nattn; i++) write_attn(f, &m->attn[i], i == m->nattn - 1);
    fprintf(f, "  ],\n  \"memory\": [\n");
    for (int i = 0; i < m->nmem; i++)
        fprintf(f, "    {\"kind\": \"%s\", \"bytes\": %.6e, \"seconds\": %.6e}%s\n", m->mem[i].kind,
                m->mem[i].bytes, m->mem[i].seconds, i == m->nmem - 1 ? "" : ",");
    fprintf(f, "  ],\n  \"comm\": [\n");
    for (int i = 0; i < m->ncomm; i++)
        fprintf(f, "    {\"op\": \"%s\", \"bytes\": %.0f, \"seconds\": %.6e}%s\n", m->comm[i].op,
                m->comm[i].bytes, m->comm[i].seconds, i == m->ncomm - 1 ? "" : ",");
    fprintf(f, "  ]\n}\n");
    return USP_OK;
}

usp_status usp_calib_save(const usp_calib *m, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) return usp_fail(USP_EINVAL, "cannot write %s", path);
    usp_status st = usp_calib_write(m, f);
    if (fclose(f) != 0 && st == USP_OK) st = usp_fail(USP_EINTERNAL, "cannot write %s", path);
    return st;
}

/* ----------------------------------------------- measurements: reading */

static usp_status array_of(const usp_json *root, const char *key, const usp_json **out) {
    *out = usp_json_get(root, key);
    if (!*out || (*out)->type != USP_JSON_ARRAY) return usp_fail(USP_EINVAL, "missing array '%s'", key);
    if ((*out)->count > USP_CALIB_MAX) return usp_fail(USP_EINVAL, "'%s' has more than %d entries", key, USP_CALIB_MAX);
    return USP_OK;
}

static usp_status read_attn_entry(const usp_json *e, usp_calib_attn *a) {
    const char *dt, *dir, *mask;
    USP_TRY(usp_json_get_string(e, "dtype", &dt));
    USP_TRY(usp_parse_dtype(dt, &a->dtype));
    USP_TRY(usp_json_get_int(e, "head_dim", &a->head_dim));
    USP_TRY(usp_json_get_int(e, "seq", &a->seq));
    USP_TRY(usp_json_get_int(e, "heads", &a->heads));
    USP_TRY(usp_json_get_string(e, "dir", &dir));
    USP_TRY(usp_json_get_string(e, "mask", &mask));
    USP_TRY(usp_json_get_number(e, "flops", &a->flops));
    USP_TRY(usp_json_get_number(e, "seconds", &a->seconds));
    a->backward = !strcmp(dir, "bwd");
    a->causal = !strcmp(mask, "causal");
    a->doc = 0;
    a->tile_flops = a->loop_flops = 0;
    if (!strncmp(mask, "docs:", 5)) {   /* packed documents: the kernels' tiles and loop too */
        char *end;
        long n = strtol(mask + 5, &end, 10);
        if (*end || n < 1 || n > a->seq)
            return usp_fail(USP_EINVAL, "line %d: mask '%s' (docs:N, 1 <= N <= seq)", e->line, mask);
        a->doc = (int)n;
        a->causal = 1;
        USP_TRY(usp_json_get_number(e, "tile_flops", &a->tile_flops));
        USP_TRY(usp_json_get_number(e, "loop_flops", &a->loop_flops));
        if (!(a->tile_flops > 0 && a->loop_flops >= 0))
            return usp_fail(USP_EINVAL, "line %d: tile_flops must be positive, loop_flops not negative", e->line);
    } else if (strcmp(mask, "full") && strcmp(mask, "causal")) {
        return usp_fail(USP_EINVAL, "line %d: mask '%s' (full, causal or docs:N)", e->line, mask);
    }
    return USP_OK;
}

static usp_status read_named(const usp_json *e, const char *key, char *out, size_t n) {
    const char *s;
    USP_TRY(usp_json_get_string(e, key, &s));
    snprintf(out, n, "%s", s);
    return USP_OK;
}

static usp_status read_calib_tree(const usp_json *root, usp_calib *m) {
    const usp_json *att, *mem, *comm;
    USP_TRY(read_named(root, "device", m->device, sizeof m->device));
    if (usp_json_get(root, "source")) USP_TRY(read_named(root, "source", m->source, sizeof m->source));
    USP_TRY(usp_json_get_int(root, "gpus", &m->gpus));
    USP_TRY(usp_json_get_int(root, "nccl_version", &m->nccl_version));
    USP_TRY(usp_json_get_number(root, "memory_gb", &m->memory_gb));
    USP_TRY(usp_json_get_number(root, "launch_us", &m->launch_us));
    USP_TRY(array_of(root, "attention", &att));
    USP_TRY(array_of(root, "memory", &mem));
    USP_TRY(array_of(root, "comm", &comm));
    if (mem->count > sizeof m->mem / sizeof m->mem[0]) return usp_fail(USP_EINVAL, "too many memory entries");
    for (size_t i = 0; i < att->count; i++) USP_TRY(read_attn_entry(&att->items[i], &m->attn[m->nattn++]));
    for (size_t i = 0; i < mem->count; i++, m->nmem++) {
        USP_TRY(read_named(&mem->items[i], "kind", m->mem[i].kind, sizeof m->mem[i].kind));
        USP_TRY(usp_json_get_number(&mem->items[i], "bytes", &m->mem[i].bytes));
        USP_TRY(usp_json_get_number(&mem->items[i], "seconds", &m->mem[i].seconds));
    }
    for (size_t i = 0; i < comm->count; i++, m->ncomm++) {
        USP_TRY(read_named(&comm->items[i], "op", m->comm[i].op, sizeof m->comm[i].op));
        USP_TRY(usp_json_get_number(&comm->items[i], "bytes", &m->comm[i].bytes));
        USP_TRY(usp_json_get_number(&comm->items[i], "seconds", &m->comm[i].seconds));
    }
    return USP_OK;
}

usp_status usp_calib_read(const char *path, usp_calib *m) {
    memset(m, 0, sizeof *m);
    usp_json *root = NULL;
    usp_status st = usp_json_parse_file(path, &root); /* its reasons name the file */
    if (st != USP_OK) return st;
    st = root->type != USP_JSON_OBJECT ? usp_fail(USP_EINVAL, "not a JSON object") : read_calib_tree(root, m);
    usp_json_free(root);
    if (st != USP_OK) usp_error_prefix("%s: ", path);
    return st;
}
