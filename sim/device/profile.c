/* profile.c: device profiles, and how long a compute step takes.
 *
 * A profile (sim/profiles/<gpu>.json, also compiled in) gives the achieved
 * attention TFLOP/s by dtype, head dim and direction, the efficiency of
 * partial (masked) blocks, the HBM bandwidth of memory-bound steps (one
 * figure, and optionally one per step kind), the launch overhead, the memory capacity and the dense peak for MFU. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "usp/dispatch.h"
#include "usp/json.h"

/* -------------------------------------------------------------- loading */

static const char *const DTYPE_KEYS[SIM_NDTYPES] = {
    [USP_F64] = "fp64", [USP_F32] = "fp32", [USP_F16] = "fp16", [USP_BF16] = "bf16"};

static usp_status member(const usp_json *obj, const char *key, usp_json_type type, const usp_json **out) {
    *out = usp_json_get(obj, key);
    if (!*out) return usp_fail(USP_EINVAL, "line %d: missing '%s'", obj->line, key);
    if ((*out)->type != type)
        return usp_fail(USP_EINVAL, "line %d: '%s' must be an %s", (*out)->line, key, usp_json_type_name(type));
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
 * visible pair than a full one, or 100x slower, is not a kernel. */
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

/* Optional, 0 when absent: microseconds in, seconds out. */
static usp_status fixed_time(const usp_json *obj, const char *key, double *seconds) {
    const usp_json *v = usp_json_get(obj, key);
    if (v && v->type != USP_JSON_NUMBER)
        return usp_fail(USP_EINVAL, "line %d: '%s' must be a number >= 0", v->line, key);
    if (v) USP_TRY(in_range(v, key, &MICROSECONDS_RANGE));
    *seconds = v ? v->number * 1e-6 : 0;
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

/* Optional, 1 when absent: a per-row-mask efficiency, in the masked-block range. */
static usp_status rowmask_eff(const usp_json *obj, const char *key, const char *name, double *eff) {
    *eff = 1.0;
    return usp_json_get(obj, key) ? ranged_as(obj, key, name, &MASKED_RANGE, eff) : USP_OK;
}

/* "128": {"fwd": 352, "bwd": 304} (and optionally "fwd_fixed_us", "bwd_fixed_us",
 * "fwd_short_keys", "bwd_short_rows", "fwd_rowmask_efficiency", "bwd_rowmask_efficiency") */
static usp_status load_head_dims(const usp_json *by_dim, sim_profile *p, int d) {
    if (by_dim->count == 0 || by_dim->count > SIM_MAX_HEAD_DIMS)
        return usp_fail(USP_EINVAL, "line %d: 1 to %d head dims per dtype", by_dim->line, SIM_MAX_HEAD_DIMS);
    for (size_t i = 0; i < by_dim->count; i++) {
        char *end;
        long hd = strtol(by_dim->keys[i], &end, 10);
        if (*end || hd < 1 || hd > (1L << 20)) return usp_fail(USP_EINVAL, "line %d: head dim '%s' is not a positive integer",
                                            by_dim->items[i].line, by_dim->keys[i]);
        sim_attention_rate *r = &p->rates[d][i];
        r->head_dim = (int)hd;
        char name[2][96];
        snprintf(name[0], sizeof name[0], "attention_tflops.%s.%ld.fwd", DTYPE_KEYS[d], hd);
        snprintf(name[1], sizeof name[1], "attention_tflops.%s.%ld.bwd", DTYPE_KEYS[d], hd);
        USP_TRY(ranged_as(&by_dim->items[i], "fwd", name[0], &TFLOPS_RANGE, &r->fwd_flops));
        USP_TRY(ranged_as(&by_dim->items[i], "bwd", name[1], &TFLOPS_RANGE, &r->bwd_flops));
        r->fwd_flops *= 1e12;
        r->bwd_flops *= 1e12;
        USP_TRY(fixed_time(&by_dim->items[i], "fwd_fixed_us", &r->fwd_fixed_s));
        USP_TRY(fixed_time(&by_dim->items[i], "bwd_fixed_us", &r->bwd_fixed_s));
        USP_TRY(short_len(&by_dim->items[i], "fwd_short_keys", &r->fwd_short));
        USP_TRY(short_len(&by_dim->items[i], "bwd_short_rows", &r->bwd_short));
        snprintf(name[0], sizeof name[0], "attention_tflops.%s.%ld.fwd_rowmask_efficiency", DTYPE_KEYS[d], hd);
        snprintf(name[1], sizeof name[1], "attention_tflops.%s.%ld.bwd_rowmask_efficiency", DTYPE_KEYS[d], hd);
        USP_TRY(rowmask_eff(&by_dim->items[i], "fwd_rowmask_efficiency", name[0], &r->fwd_rowmask));
        USP_TRY(rowmask_eff(&by_dim->items[i], "bwd_rowmask_efficiency", name[1], &r->bwd_rowmask));
    }
    p->nrates[d] = (int)by_dim->count;
    return USP_OK;
}

static usp_status dtype_index(const char *key, int line, int *d) {
    usp_dtype dt;
    if (usp_parse_dtype(key, &dt) != USP_OK)
        return usp_fail(USP_EINVAL, "line %d: unknown dtype '%s' (bf16, fp16, fp32, fp64)", line, key);
    *d = (int)dt;
    return USP_OK;
}

static usp_status load_rates(const usp_json *root, sim_profile *p) {
    const usp_json *att, *peak;
    USP_TRY(member(root, "attention_tflops", USP_JSON_OBJECT, &att));
    USP_TRY(member(root, "peak_dense_tflops", USP_JSON_OBJECT, &peak));
    if (att->count == 0) return usp_fail(USP_EINVAL, "line %d: 'attention_tflops' names no dtype", att->line);
    for (size_t i = 0; i < att->count; i++) {
        int d = 0;
        USP_TRY(dtype_index(att->keys[i], att->items[i].line, &d));
        if (att->items[i].type != USP_JSON_OBJECT)
            return usp_fail(USP_EINVAL, "line %d: 'attention_tflops.%s' must be an object",
                            att->items[i].line, att->keys[i]);
        USP_TRY(load_head_dims(&att->items[i], p, d));
        char name[64];
        snprintf(name, sizeof name, "peak_dense_tflops.%s", DTYPE_KEYS[d]);
        USP_TRY(ranged_as(peak, DTYPE_KEYS[d], name, &TFLOPS_RANGE, &p->peak_flops[d]));
        p->peak_flops[d] *= 1e12;
    }
    return USP_OK;
}

/* "memory_gbps": {"pack": 622, "merge": 1739}: the kinds it names run at
 * their own rate, the others at hbm_gbps. */
static usp_status load_memory_rates(const usp_json *root, double hbm_gbps, sim_profile *p) {
    for (int k = 0; k < USP_STEP_KIND_COUNT; k++)
        if (usp_step_memory_bound((usp_step_kind)k)) p->mem_bytes_per_s[k] = hbm_gbps * 1e9;
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
        p->mem_bytes_per_s[k] = v->number * 1e9;
    }
    return USP_OK;
}

/* Optional, 0 when absent; below 1, or the kernel would never finish. */
static usp_status load_comm_slowdown(const usp_json *root, sim_profile *p) {
    const usp_json *v = usp_json_get(root, "comm_overlap_slowdown");
    if (v && (v->type != USP_JSON_NUMBER || !(v->number >= 0 && v->number < 1)))
        return usp_fail(USP_EINVAL, "line %d: 'comm_overlap_slowdown' must be a number in [0, 1)", v->line);
    p->comm_slowdown = v ? v->number : 0;
    return USP_OK;
}

/* The card's memory: "memory_mib" (nvidia-smi's total, exact: 81920 for an
 * A100 80GB, which holds 80 GiB) or "memory_gb" (10^9 bytes); exactly one. */
static usp_status load_capacity(const usp_json *root, sim_profile *p) {
    const usp_json *mib = usp_json_get(root, "memory_mib"), *gb = usp_json_get(root, "memory_gb");
    if (mib && gb)
        return usp_fail(USP_EINVAL, "line %d: give 'memory_mib' or 'memory_gb', not both", mib->line);
    if (!mib && !gb) return usp_fail(USP_EINVAL, "line %d: missing 'memory_mib' (or 'memory_gb')", root->line);
    double v;
    if (mib) {
        USP_TRY(ranged(root, "memory_mib", &MEMORY_MIB_RANGE, &v));
        p->capacity_bytes = v * 1048576.0;
    } else {
        USP_TRY(ranged(root, "memory_gb", &MEMORY_GB_RANGE, &v));
        p->capacity_bytes = v * 1e9;
    }
    p->usable_bytes = USP_MEMORY_USABLE_FRACTION * p->capacity_bytes;
    return USP_OK;
}

static usp_status load_tree(const usp_json *root, sim_profile *p) {
    const usp_json *masked;
    const char *name;
    double hbm, launch_us;
    if (root->type != USP_JSON_OBJECT) return usp_fail(USP_EINVAL, "line %d: a profile is a JSON object", root->line);
    USP_TRY(usp_json_get_string(root, "name", &name));
    snprintf(p->name, sizeof p->name, "%s", name);
    const usp_json *kernel = usp_json_get(root, "kernel");
    if (kernel && kernel->type != USP_JSON_STRING)
        return usp_fail(USP_EINVAL, "line %d: 'kernel' must be a string (the attention kernel the rates are of)",
                        kernel->line);
    if (kernel) snprintf(p->kernel, sizeof p->kernel, "%s", kernel->string);
    USP_TRY(load_rates(root, p));
    USP_TRY(member(root, "masked_block_efficiency", USP_JSON_OBJECT, &masked));
    USP_TRY(ranged_as(masked, "fwd", "masked_block_efficiency.fwd", &MASKED_RANGE, &p->masked_fwd));
    USP_TRY(ranged_as(masked, "bwd", "masked_block_efficiency.bwd", &MASKED_RANGE, &p->masked_bwd));
    USP_TRY(ranged(root, "hbm_gbps", &GBPS_RANGE, &hbm));
    USP_TRY(load_memory_rates(root, hbm, p));
    USP_TRY(ranged(root, "launch_overhead_us", &MICROSECONDS_RANGE, &launch_us));
    USP_TRY(load_capacity(root, p));
    USP_TRY(load_comm_slowdown(root, p));
    p->hbm_bytes_per_s = hbm * 1e9;
    p->launch_s = launch_us * 1e-6;
    return USP_OK;
}

static const char *embedded(const char *name) {
    for (int i = 0; i < SIM_NEMBEDDED_PROFILES; i++)
        if (strcmp(SIM_EMBEDDED_PROFILES[i].name, name) == 0) return SIM_EMBEDDED_PROFILES[i].json;
    return NULL;
}

const char *const *usp_profile_names(void) {
    static const char *names[16];
    for (int i = 0; i < SIM_NEMBEDDED_PROFILES && i < 15; i++) names[i] = SIM_EMBEDDED_PROFILES[i].name;
    return names;
}

usp_status sim_profile_load(const char *name_or_file, sim_profile *p) {
    memset(p, 0, sizeof *p);
    const char *text = embedded(name_or_file);
    usp_json *root = NULL;
    usp_status st = text ? usp_json_parse(text, strlen(text), &root) : usp_json_parse_file(name_or_file, &root);
    if (st == USP_OK) st = load_tree(root, p);
    usp_json_free(root);
    if (st != USP_OK) usp_error_prefix("profile %s: ", name_or_file);
    return st;
}

usp_status usp_profile_check(const char *name_or_file) {
    sim_profile p;
    return sim_profile_load(name_or_file, &p);
}

const char *sim_profile_for(const usp_sim_options *o) {
    if (o && o->profile) return o->profile;
    const char *spec = o && o->platform ? o->platform : "h200x8";
    char name[64];
    usp_platform_params params;
    if (usp_platform_is_preset(spec) && usp_platform_parse_spec(spec, name, sizeof name, &params) == USP_OK)
        return usp_platform_gpu(name);
    return "h200";
}

/* ------------------------------------------------------------- timing */

usp_status sim_profile_supports(const sim_profile *p, const usp_config *c) {
    if (p->nrates[c->dtype] == 0)
        return usp_fail(USP_EINVAL, "profile %s has no %s attention figures", p->name, usp_dtype_name(c->dtype));
    return USP_OK;
}

/* The listed head dim nearest to the config's (the larger on a tie):
 * kernels of neighbouring head dims run at similar rates. */
static const sim_attention_rate *rate_for(const sim_profile *p, const usp_config *c) {
    const sim_attention_rate *best = NULL;
    for (int i = 0; i < p->nrates[c->dtype]; i++) {
        const sim_attention_rate *r = &p->rates[c->dtype][i];
        int dist = abs(r->head_dim - c->head_dim);
        if (!best || dist < abs(best->head_dim - c->head_dim) ||
            (dist == abs(best->head_dim - c->head_dim) && r->head_dim > best->head_dim))
            best = r;
    }
    return best;
}

/* fixed + FLOPs / rate, the rate lowered for partially masked blocks and for
 * short blocks: the forward kernel loops over the block's keys for each tile
 * of query rows, the backward over its query rows for each tile of keys, and
 * each loop pays a setup (load, rescale, write) that a short loop does not
 * amortize: n / (n + short) of the rate for a loop of n tokens. Under per-row
 * masks (packed documents, windows, slices) the kernel's own work instead: the
 * tiles it visits, whole, and each unit's loop setup, short tokens of loop at
 * the rate (the same model on a full block; on one H100 it predicts masked
 * kernels within 3% forward, 7-13% backward, where visible pairs at the masked
 * efficiency were 16-20% fast: gpu/NOTES.md v15), at the profile's per-row-mask
 * efficiency (usp calibrate measures it on packed documents: the kernels that run
 * per-row masks are not always those of full blocks). */
static double attention_seconds(const sim_profile *p, const usp_config *c, const usp_step *st) {
    const sim_attention_rate *r = rate_for(p, c);
    int fwd = st->kind == USP_STEP_ATTN_FWD;
    double rate = fwd ? r->fwd_flops : r->bwd_flops;
    if (st->tile_flops <= 0 && usp_step_partial(c, st)) rate *= fwd ? p->masked_fwd : p->masked_bwd;
    double flops = usp_rated_flops(st->flops, fwd ? st->blk.kv_len : st->blk.q_len, st->tile_flops, st->loop_flops,
                                   fwd ? r->fwd_short : r->bwd_short, fwd ? r->fwd_rowmask : r->bwd_rowmask);
    return (fwd ? r->fwd_fixed_s : r->bwd_fixed_s) + flops / rate;
}

double sim_step_seconds(const sim_profile *p, const usp_config *c, const usp_step *st) {
    switch (st->kind) {
    case USP_STEP_ATTN_FWD:
    case USP_STEP_ATTN_BWD:
        return p->launch_s + attention_seconds(p, c, st);
    case USP_STEP_PACK:
    case USP_STEP_UNPACK:
    case USP_STEP_MERGE:
    case USP_STEP_INIT:
    case USP_STEP_BWD_PREP:
    case USP_STEP_ACCUM:
        return p->launch_s + st->bytes_mem / p->mem_bytes_per_s[st->kind];
    default:
        return 0;
    }
}
