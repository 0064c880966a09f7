/* validate_io.c: calibration measurements and fitted platforms, read and
 * written (usp/validate.h; device profiles: core/profile.c). Plain C on
 * usp_core, so `usp calibrate` writes them on a GPU machine that has no
 * simulator. */
#define _POSIX_C_SOURCE 200809L
#include "usp/validate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "usp/json.h"


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
            usp_dtype_name(a->dtype), a->head_dim, a->seq, a->heads, a->backward ? "bwd" : "fwd", mask, a->flops,
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
