/* profile.c: device profiles, and how long a compute step takes.
 *
 * A profile (sim/profiles/<gpu>.json, also compiled in; the format and its
 * one reader: usp/profile.h) gives the achieved attention TFLOP/s by dtype,
 * head dim and direction, the efficiency of partial (masked) blocks, the HBM
 * bandwidth of memory-bound steps (one figure, and optionally one per step
 * kind), the launch overhead, the memory capacity and the dense peak for MFU. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "usp/dispatch.h"
#include "usp/json.h"
#include "usp/profile.h"

/* -------------------------------------------------------------- loading */

/* The file's figures (usp/profile.h reads and range-checks them) in the
 * simulator's units: FLOP/s, seconds, bytes. */
static void from_desc(const usp_profile_desc *d, sim_profile *p) {
    snprintf(p->name, sizeof p->name, "%.63s", d->name);
    snprintf(p->kernel, sizeof p->kernel, "%.95s", d->kernel);
    for (int i = 0; i < d->nrates; i++) {
        const usp_profile_rate *in = &d->rates[i];
        sim_attention_rate *r = &p->rates[in->dtype][p->nrates[in->dtype]++];
        r->head_dim = in->head_dim;
        r->fwd_flops = in->fwd_tflops * 1e12;
        r->bwd_flops = in->bwd_tflops * 1e12;
        r->fwd_fixed_s = in->fwd_fixed_us * 1e-6;
        r->bwd_fixed_s = in->bwd_fixed_us * 1e-6;
        r->fwd_short = in->fwd_short_keys;
        r->bwd_short = in->bwd_short_rows;
        r->fwd_rowmask = in->fwd_rowmask_eff > 0 ? in->fwd_rowmask_eff : 1.0;
        r->bwd_rowmask = in->bwd_rowmask_eff > 0 ? in->bwd_rowmask_eff : 1.0;
    }
    for (int t = 0; t < SIM_NDTYPES; t++) p->peak_flops[t] = d->peak_tflops[t] * 1e12;
    p->masked_fwd = d->masked_fwd;
    p->masked_bwd = d->masked_bwd;
    p->hbm_bytes_per_s = d->hbm_gbps * 1e9;
    for (int k = 0; k < USP_STEP_KIND_COUNT; k++)
        if (usp_step_memory_bound((usp_step_kind)k))
            p->mem_bytes_per_s[k] = (d->memory_gbps[k] > 0 ? d->memory_gbps[k] : d->hbm_gbps) * 1e9;
    p->launch_s = d->launch_us * 1e-6;
    p->capacity_bytes = d->memory_bytes;
    p->usable_bytes = USP_MEMORY_USABLE_FRACTION * p->capacity_bytes;
    p->comm_slowdown = d->comm_slowdown;
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
    usp_profile_desc *d = malloc(sizeof *d);
    if (!d) return usp_fail(USP_EINTERNAL, "out of memory");
    usp_status st = text ? usp_json_parse(text, strlen(text), &root) : usp_json_parse_file(name_or_file, &root);
    if (st == USP_OK) st = usp_profile_desc_from_json(root, d);
    if (st == USP_OK) from_desc(d, p);
    usp_json_free(root);
    free(d);
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
