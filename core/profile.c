/* profile.c: device profiles read and written (usp/profile.h). The one reader
 * of the format: the simulator times steps with what it returns, `usp
 * calibrate` refines it and writes it back. */
#define _POSIX_C_SOURCE 200809L
#include "usp/profile.h"

#include <stdlib.h>
#include <string.h>

/* The order the built-in profiles list them in. */
static const usp_dtype DTYPE_ORDER[4] = {USP_BF16, USP_F16, USP_F32, USP_F64};

/* ------------------------------------------------------------- reading */

static usp_status member(const usp_json *obj, const char *key, usp_json_type type, const usp_json **out) {
    *out = usp_json_get(obj, key);
    if (!*out) return usp_fail(USP_EINVAL, "line %d: missing '%s'", obj->line, key);
    if ((*out)->type != type)
        return usp_fail(USP_EINVAL, "line %d: '%s' must be an %s", (*out)->line, key, usp_json_type_name(type));
    return USP_OK;
}

/* Optional string member: "" when absent. */
static usp_status optional_string(const usp_json *obj, const char *key, const char *what, char *out, size_t size) {
    const usp_json *v = usp_json_get(obj, key);
    if (v && v->type != USP_JSON_STRING)
        return usp_fail(USP_EINVAL, "line %d: '%s' must be a string (%s)", v->line, key, what);
    snprintf(out, size, "%s", v ? v->string : "");
    return USP_OK;
}

/* Physical ranges of a profile's figures. A figure outside its range is a
 * typo or a unit mix-up (TFLOP/s given in FLOP/s, GB in bytes), and the
 * simulator would print a confident, absurd time from it: refused with the
 * range. Each range holds every GPU of sim/SOURCES.md with an order of
 * magnitude or more to spare on both sides. */
typedef struct { double lo, hi; const char *unit; } phys_range;
/* Achieved or peak TFLOP/s of one GPU: 0.31 (L20 fp64 attention) to 989
 * (H100/H200 dense bf16); dense fp8/fp4 peaks of newer GPUs are below 1e4. */
static const phys_range TFLOPS_RANGE = {1e-3, 1e5, "TFLOP/s"};
/* Device-memory GB/s: 750 (L20 GDDR6) to 4800 (H200 HBM3e); 8 TB/s parts. */
static const phys_range GBPS_RANGE = {1.0, 1e6, "GB/s"};
/* Causal-block rate over the full-block rate: 0.895 (H200 flash forward) to
 * 1.02 (usp's kernels, measured); a masked block many times faster per
 * visible pair than a full one, or 100x slower, is not a kernel. The same
 * range holds the per-row-mask efficiencies. */
static const phys_range MASKED_RANGE = {0.01, 10.0, ""};
/* Launch overhead and fixed kernel cost, microseconds: 3 to 30 measured. */
static const phys_range MICROSECONDS_RANGE = {0.0, 1e5, "us"};
/* GPU memory, GB: 48 (L20) to 150 (H200); 288 GB parts exist. */
static const phys_range MEMORY_GB_RANGE = {0.1, 1e5, "GB"};
/* The same in MiB, as nvidia-smi prints the total: 46068 (L20) to 143771 (H200). */
static const phys_range MEMORY_MIB_RANGE = {100, 1e8, "MiB"};

static usp_status in_range(const usp_json *v, const char *key, const phys_range *r) {
    if (v->number >= r->lo && v->number <= r->hi) return USP_OK;
    return usp_fail(USP_EINVAL, "line %d: '%s' is %g, outside the physical range [%g, %g]%s%s", v->line, key,
                    v->number, r->lo, r->hi, r->unit[0] ? " " : "", r->unit);
}

/* obj[key], a number within r; refusals name it `name` (its path in the profile). */
static usp_status ranged_as(const usp_json *obj, const char *key, const char *name, const phys_range *r,
                            double *out) {
    USP_TRY(usp_json_get_number(obj, key, out));
    return in_range(usp_json_get(obj, key), name, r);
}

static usp_status ranged(const usp_json *obj, const char *key, const phys_range *r, double *out) {
    return ranged_as(obj, key, key, r, out);
}

/* Optional, 0 when absent: microseconds. */
static usp_status fixed_us(const usp_json *obj, const char *key, double *us) {
    const usp_json *v = usp_json_get(obj, key);
    if (v && v->type != USP_JSON_NUMBER)
        return usp_fail(USP_EINVAL, "line %d: '%s' must be a number >= 0", v->line, key);
    if (v) USP_TRY(in_range(v, key, &MICROSECONDS_RANGE));
    *us = v ? v->number : 0;
    return USP_OK;
}

/* Optional, 0 when absent: a length in tokens. */
static usp_status short_len(const usp_json *obj, const char *key, double *tokens) {
    const usp_json *v = usp_json_get(obj, key);
    if (v && (v->type != USP_JSON_NUMBER || !(v->number >= 0)))
        return usp_fail(USP_EINVAL, "line %d: '%s' must be a number >= 0", v->line, key);
    *tokens = v ? v->number : 0;
    return USP_OK;
}

/* Optional, 0 (none) when absent: a per-row-mask efficiency, in the masked-block range. */
static usp_status rowmask_eff(const usp_json *obj, const char *key, const char *name, double *eff) {
    *eff = 0;
    return usp_json_get(obj, key) ? ranged_as(obj, key, name, &MASKED_RANGE, eff) : USP_OK;
}

/* "128": {"fwd": 352, "bwd": 304} (and optionally "fwd_fixed_us", "bwd_fixed_us",
 * "fwd_short_keys", "bwd_short_rows", "fwd_rowmask_efficiency", "bwd_rowmask_efficiency") */
static usp_status read_head_dims(const usp_json *by_dim, usp_dtype dt, usp_profile_desc *p) {
    if (by_dim->count == 0 || by_dim->count > USP_PROFILE_MAX_HEAD_DIMS)
        return usp_fail(USP_EINVAL, "line %d: 1 to %d head dims per dtype", by_dim->line, USP_PROFILE_MAX_HEAD_DIMS);
    for (size_t i = 0; i < by_dim->count; i++) {
        const usp_json *e = &by_dim->items[i];
        char *end;
        long hd = strtol(by_dim->keys[i], &end, 10);
        if (*end || end == by_dim->keys[i] || hd < 1 || hd > (1L << 20))
            return usp_fail(USP_EINVAL, "line %d: head dim '%s' is not a positive integer", e->line,
                            by_dim->keys[i]);
        if (usp_profile_rate_find(p, dt, (int)hd))
            return usp_fail(USP_EINVAL, "line %d: head dim %ld is given twice", e->line, hd);
        usp_profile_rate *r = usp_profile_rate_of(p, dt, (int)hd); /* room: checked above */
        char name[2][96];
        snprintf(name[0], sizeof name[0], "attention_tflops.%s.%ld.fwd", usp_dtype_name(dt), hd);
        snprintf(name[1], sizeof name[1], "attention_tflops.%s.%ld.bwd", usp_dtype_name(dt), hd);
        USP_TRY(ranged_as(e, "fwd", name[0], &TFLOPS_RANGE, &r->fwd_tflops));
        USP_TRY(ranged_as(e, "bwd", name[1], &TFLOPS_RANGE, &r->bwd_tflops));
        USP_TRY(fixed_us(e, "fwd_fixed_us", &r->fwd_fixed_us));
        USP_TRY(fixed_us(e, "bwd_fixed_us", &r->bwd_fixed_us));
        USP_TRY(short_len(e, "fwd_short_keys", &r->fwd_short_keys));
        USP_TRY(short_len(e, "bwd_short_rows", &r->bwd_short_rows));
        snprintf(name[0], sizeof name[0], "attention_tflops.%s.%ld.fwd_rowmask_efficiency", usp_dtype_name(dt), hd);
        snprintf(name[1], sizeof name[1], "attention_tflops.%s.%ld.bwd_rowmask_efficiency", usp_dtype_name(dt), hd);
        USP_TRY(rowmask_eff(e, "fwd_rowmask_efficiency", name[0], &r->fwd_rowmask_eff));
        USP_TRY(rowmask_eff(e, "bwd_rowmask_efficiency", name[1], &r->bwd_rowmask_eff));
    }
    return USP_OK;
}

static usp_status read_rates(const usp_json *root, usp_profile_desc *p) {
    const usp_json *att, *peak;
    USP_TRY(member(root, "attention_tflops", USP_JSON_OBJECT, &att));
    USP_TRY(member(root, "peak_dense_tflops", USP_JSON_OBJECT, &peak));
    if (att->count == 0) return usp_fail(USP_EINVAL, "line %d: 'attention_tflops' names no dtype", att->line);
    for (size_t i = 0; i < att->count; i++) {
        usp_dtype dt;
        if (usp_parse_dtype(att->keys[i], &dt) != USP_OK)
            return usp_fail(USP_EINVAL, "line %d: unknown dtype '%s' (bf16, fp16, fp32, fp64)", att->items[i].line,
                            att->keys[i]);
        if (att->items[i].type != USP_JSON_OBJECT)
            return usp_fail(USP_EINVAL, "line %d: 'attention_tflops.%s' must be an object",
                            att->items[i].line, att->keys[i]);
        USP_TRY(read_head_dims(&att->items[i], dt, p));
        char name[64];
        snprintf(name, sizeof name, "peak_dense_tflops.%s", usp_dtype_name(dt));
        USP_TRY(ranged_as(peak, usp_dtype_name(dt), name, &TFLOPS_RANGE, &p->peak_tflops[dt]));
    }
    return USP_OK;
}

/* Optional "memory_gbps": {"pack": 622, "merge": 1739}; kinds it does not name stay 0. */
static usp_status read_memory_rates(const usp_json *root, usp_profile_desc *p) {
    const usp_json *by_kind = usp_json_get(root, "memory_gbps");
    if (!by_kind) return USP_OK;
    if (by_kind->type != USP_JSON_OBJECT)
        return usp_fail(USP_EINVAL, "line %d: 'memory_gbps' must be an object", by_kind->line);
    for (size_t i = 0; i < by_kind->count; i++) {
        const usp_json *v = &by_kind->items[i];
        usp_step_kind k = usp_step_kind_of(by_kind->keys[i]);
        if (k == USP_STEP_KIND_COUNT || !usp_step_memory_bound(k))
            return usp_fail(USP_EINVAL, "line %d: 'memory_gbps.%s' is not a memory-bound step kind "
                            "(pack, unpack, merge, init, bwd_prep, accum)", v->line, by_kind->keys[i]);
        if (v->type != USP_JSON_NUMBER)
            return usp_fail(USP_EINVAL, "line %d: 'memory_gbps.%s' must be a positive number", v->line,
                            by_kind->keys[i]);
        char name[64];
        snprintf(name, sizeof name, "memory_gbps.%s", by_kind->keys[i]);
        USP_TRY(in_range(v, name, &GBPS_RANGE));
        p->memory_gbps[k] = v->number;
    }
    return USP_OK;
}

/* Optional, 0 when absent; below 1, or the kernel would never finish. */
static usp_status read_comm_slowdown(const usp_json *root, usp_profile_desc *p) {
    const usp_json *v = usp_json_get(root, "comm_overlap_slowdown");
    if (v && (v->type != USP_JSON_NUMBER || !(v->number >= 0 && v->number < 1)))
        return usp_fail(USP_EINVAL, "line %d: 'comm_overlap_slowdown' must be a number in [0, 1)", v->line);
    p->comm_slowdown = v ? v->number : 0;
    return USP_OK;
}

/* The card's memory: "memory_mib" (nvidia-smi's total, exact: 81920 for an
 * A100 80GB, which holds 80 GiB) or "memory_gb" (10^9 bytes); exactly one. */
static usp_status read_capacity(const usp_json *root, usp_profile_desc *p) {
    const usp_json *mib = usp_json_get(root, "memory_mib"), *gb = usp_json_get(root, "memory_gb");
    if (mib && gb)
        return usp_fail(USP_EINVAL, "line %d: give 'memory_mib' or 'memory_gb', not both", mib->line);
    if (!mib && !gb) return usp_fail(USP_EINVAL, "line %d: missing 'memory_mib' (or 'memory_gb')", root->line);
    double v;
    if (mib) {
        USP_TRY(ranged(root, "memory_mib", &MEMORY_MIB_RANGE, &v));
        p->memory_bytes = v * 1048576.0;
    } else {
        USP_TRY(ranged(root, "memory_gb", &MEMORY_GB_RANGE, &v));
        p->memory_bytes = v * 1e9;
    }
    return USP_OK;
}

usp_status usp_profile_desc_from_json(const usp_json *root, usp_profile_desc *p) {
    memset(p, 0, sizeof *p);
    const usp_json *masked;
    const char *name;
    if (root->type != USP_JSON_OBJECT) return usp_fail(USP_EINVAL, "line %d: a profile is a JSON object", root->line);
    USP_TRY(usp_json_get_string(root, "name", &name));
    snprintf(p->name, sizeof p->name, "%s", name);
    USP_TRY(optional_string(root, "kernel", "the attention kernel the rates are of", p->kernel, sizeof p->kernel));
    USP_TRY(optional_string(root, "source", "where the figures come from", p->source, sizeof p->source));
    USP_TRY(read_rates(root, p));
    USP_TRY(member(root, "masked_block_efficiency", USP_JSON_OBJECT, &masked));
    USP_TRY(ranged_as(masked, "fwd", "masked_block_efficiency.fwd", &MASKED_RANGE, &p->masked_fwd));
    USP_TRY(ranged_as(masked, "bwd", "masked_block_efficiency.bwd", &MASKED_RANGE, &p->masked_bwd));
    USP_TRY(ranged(root, "hbm_gbps", &GBPS_RANGE, &p->hbm_gbps));
    USP_TRY(read_memory_rates(root, p));
    USP_TRY(ranged(root, "launch_overhead_us", &MICROSECONDS_RANGE, &p->launch_us));
    USP_TRY(read_capacity(root, p));
    return read_comm_slowdown(root, p);
}

usp_status usp_profile_desc_read(const char *path, usp_profile_desc *p) {
    memset(p, 0, sizeof *p);
    usp_json *root = NULL;
    usp_status st = usp_json_parse_file(path, &root); /* its reasons name the file */
    if (st != USP_OK) return st;
    st = usp_profile_desc_from_json(root, p);
    usp_json_free(root);
    if (st != USP_OK) usp_error_prefix("profile %s: ", path);
    return st;
}

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

/* ------------------------------------------------------------- writing */

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
    fprintf(f, "    \"%s\": {", usp_dtype_name(dt));
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

/* What the reader would refuse is not written (a profile nothing could load). */
static usp_status check_writable(const usp_profile_desc *p) {
    if (p->nrates == 0) return usp_fail(USP_EINVAL, "profile %s has no attention rates", p->name);
    for (int i = 0; i < p->nrates; i++)
        if (!(p->rates[i].fwd_tflops > 0 && p->rates[i].bwd_tflops > 0 && p->peak_tflops[p->rates[i].dtype] > 0))
            return usp_fail(USP_EINVAL, "profile %s: %s D=%d needs positive rates and a peak", p->name,
                            usp_dtype_name(p->rates[i].dtype), p->rates[i].head_dim);
    if (!(p->masked_fwd > 0 && p->masked_bwd > 0 && p->hbm_gbps > 0 && p->launch_us >= 0 && p->memory_bytes > 0))
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
    fprintf(f, "  \"launch_overhead_us\": %.2f,\n  \"memory_gb\": %.1f,\n", p->launch_us, p->memory_bytes / 1e9);
    if (p->comm_slowdown > 0) fprintf(f, "  \"comm_overlap_slowdown\": %.3f,\n", p->comm_slowdown);
    fprintf(f, "  \"peak_dense_tflops\": {");
    first = 1;
    for (int k = 0; k < 4; k++) {
        if (!has_dtype(p, DTYPE_ORDER[k])) continue;
        fprintf(f, "%s\"%s\": %.0f", first ? "" : ", ", usp_dtype_name(DTYPE_ORDER[k]), p->peak_tflops[DTYPE_ORDER[k]]);
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
