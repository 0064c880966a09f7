/* validate_case.c: recorded cases (sidecar files) and the phases of a trace
 * (usp/validate.h). Plain C on usp_core: it builds where the GPU executor
 * records cases and where the simulator re-simulates them. */
#define _POSIX_C_SOURCE 200809L
#include "usp/validate.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "usp/json.h"

/* ---------------------------------------------------------------- names */

static const char *const PHASE_NAMES[USP_VPHASE_COUNT] = {
    [USP_VPHASE_FWD_A2A] = "fwd.a2a", [USP_VPHASE_FWD_RING] = "fwd.ring",
    [USP_VPHASE_BWD_A2A] = "bwd.a2a", [USP_VPHASE_BWD_RING] = "bwd.ring",
    [USP_VPHASE_FWD] = "fwd", [USP_VPHASE_BWD] = "bwd", [USP_VPHASE_TOTAL] = "total"};

const char *usp_vphase_name(usp_vphase p) {
    return p >= 0 && p < USP_VPHASE_COUNT ? PHASE_NAMES[p] : "?";
}

const char *usp_vrole_name(usp_vrole r) { return r == USP_VROLE_CALIBRATION ? "calibration" : "held-out"; }

/* ------------------------------------------------------ steps of a trace */

void usp_vsteps_free(usp_vsteps *v) {
    for (int g = 0; v->ev && g < v->world; g++) free(v->ev[g]);
    free(v->ev);
    memset(v, 0, sizeof *v);
}

static usp_status place_event(const usp_schedule *s, const usp_trace_event *e, usp_vsteps *v) {
    if (e->rank < 0 || e->rank >= s->world)
        return usp_fail(USP_EINVAL, "rank %d of step '%s' is not one of the %d ranks of the configuration",
                        e->rank, e->name, s->world);
    const usp_rank_schedule *rs = &s->ranks[e->rank];
    if (e->step < 0 || e->step >= rs->nsteps || usp_rank_step(rs, e->step)->kind != e->kind)
        return usp_fail(USP_EINVAL, "rank %d step %d '%s' (%s) is not in the schedule of the configuration",
                        e->rank, e->step, e->name, usp_step_kind_name(e->kind));
    if (v->ev[e->rank][e->step])
        return usp_fail(USP_EINVAL, "rank %d step %d '%s' appears twice", e->rank, e->step, e->name);
    v->ev[e->rank][e->step] = e;
    return USP_OK;
}

static usp_status check_complete(const usp_schedule *s, const usp_vsteps *v) {
    for (int g = 0; g < s->world; g++)
        for (int i = 0; i < s->ranks[g].nsteps; i++)
            if (!v->ev[g][i])
                return usp_fail(USP_EINVAL, "rank %d step %d '%s' is missing from the trace", g, i,
                                usp_rank_step(&s->ranks[g], i)->name);
    return USP_OK;
}

usp_status usp_vsteps_index(const usp_schedule *s, const usp_trace *t, usp_vsteps *out) {
    memset(out, 0, sizeof *out);
    out->ev = usp_calloc((size_t)s->world, sizeof *out->ev);
    if (!out->ev) return USP_EINTERNAL;
    out->world = s->world;
    usp_status st = USP_OK;
    for (int g = 0; g < s->world && st == USP_OK; g++)
        if (!(out->ev[g] = usp_calloc((size_t)s->ranks[g].nsteps + 1, sizeof **out->ev))) st = USP_EINTERNAL;
    for (long k = 0; k < t->count && st == USP_OK; k++) st = place_event(s, &t->events[k], out);
    if (st == USP_OK) st = check_complete(s, out);
    if (st != USP_OK) usp_vsteps_free(out);
    return st;
}

/* ---------------------------------------------------------------- phases */

typedef struct { double a, b; } interval;

static int by_start(const void *x, const void *y) {
    const interval *p = x, *q = y;
    return p->a < q->a ? -1 : p->a > q->a;
}

/* Time covered by the union of n intervals (sorted here). */
static double union_length(interval *iv, int n) {
    qsort(iv, (size_t)n, sizeof *iv, by_start);
    double covered = 0, lo = 0, hi = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (iv[i].a > hi) {
            if (hi > lo) covered += hi - lo;
            lo = iv[i].a;
            hi = iv[i].b;
        } else if (iv[i].b > hi) {
            hi = iv[i].b;
        }
    }
    if (hi > lo) covered += hi - lo;
    return covered;
}

static int is_a2a(usp_step_kind k) {
    return k == USP_STEP_PACK || k == USP_STEP_ALL_TO_ALL || k == USP_STEP_UNPACK;
}

/* Which of the four interval phases a step belongs to. */
static usp_vphase interval_phase(const usp_rank_schedule *rs, int i) {
    int fwd = i < rs->nfwd;
    if (is_a2a(usp_rank_step(rs, i)->kind)) return fwd ? USP_VPHASE_FWD_A2A : USP_VPHASE_BWD_A2A;
    return fwd ? USP_VPHASE_FWD_RING : USP_VPHASE_BWD_RING;
}

/* One rank's four union lengths and its forward and last ends. */
static usp_status rank_phases(const usp_rank_schedule *rs, const usp_trace_event *const *ev, double us[USP_VPHASE_COUNT]) {
    interval *iv = usp_malloc(((size_t)rs->nsteps + 1) * sizeof *iv);
    if (!iv) return USP_EINTERNAL;
    for (int p = USP_VPHASE_FWD_A2A; p <= USP_VPHASE_BWD_RING; p++) {
        int n = 0;
        for (int i = 0; i < rs->nsteps; i++)
            if (interval_phase(rs, i) == (usp_vphase)p)
                iv[n++] = (interval){ev[i]->start_us, ev[i]->start_us + ev[i]->dur_us};
        us[p] = union_length(iv, n);
    }
    free(iv);
    us[USP_VPHASE_FWD] = us[USP_VPHASE_TOTAL] = 0;
    for (int i = 0; i < rs->nsteps; i++) {
        double end = ev[i]->start_us + ev[i]->dur_us;
        if (i < rs->nfwd && end > us[USP_VPHASE_FWD]) us[USP_VPHASE_FWD] = end;
        if (end > us[USP_VPHASE_TOTAL]) us[USP_VPHASE_TOTAL] = end;
    }
    return USP_OK;
}

usp_status usp_vphases_of_trace(const usp_schedule *s, const usp_trace *t, double us[USP_VPHASE_COUNT]) {
    usp_vsteps v;
    USP_TRY(usp_vsteps_index(s, t, &v));
    memset(us, 0, USP_VPHASE_COUNT * sizeof *us);
    usp_status st = USP_OK;
    for (int g = 0; g < s->world && st == USP_OK; g++) {
        double r[USP_VPHASE_COUNT];
        st = rank_phases(&s->ranks[g], v.ev[g], r);
        for (int p = 0; st == USP_OK && p < USP_VPHASE_COUNT; p++)
            if (r[p] > us[p]) us[p] = r[p];
    }
    us[USP_VPHASE_BWD] = s->backward ? us[USP_VPHASE_TOTAL] - us[USP_VPHASE_FWD] : 0;
    usp_vsteps_free(&v);
    return st;
}

/* ---------------------------------------------------------------- paths */

static void dir_of(const char *path, char *dir, size_t n) {
    const char *slash = strrchr(path, '/');
    if (!slash) { snprintf(dir, n, "."); return; }
    size_t len = (size_t)(slash - path);
    if (len == 0) len = 1; /* "/file" */
    snprintf(dir, n, "%.*s", (int)len, path);
}

/* A relative name that exists as a file beside the sidecar is that file;
 * anything else (a preset spec, a built-in profile) stays as it is. */
static void resolve(const char *dir, const char *raw, char *out, size_t n) {
    if (raw[0] != '/') {
        int len = snprintf(out, n, "%s/%s", dir, raw);
        if (len > 0 && (size_t)len < n && access(out, R_OK) == 0) return;
    }
    snprintf(out, n, "%s", raw);
}

/* ---------------------------------------------------------- masks */

int usp_vcase_has_mask(const usp_vcase *c) {
    const usp_vcase_mask_spec *m = &c->mask;
    return m->ndocs || m->nslices || m->seqlens_file[0] || m->mask_file[0] || m->has_window;
}

usp_status usp_vcase_mask(const usp_vcase *c, usp_mask **out) {
    const usp_vcase_mask_spec *m = &c->mask;
    *out = NULL;
    if (!usp_vcase_has_mask(c)) return USP_OK;
    long left = m->has_window ? m->left : -1, right = m->has_window ? m->right : -1;
    if (m->ndocs) {
        long cu[USP_VCASE_MAX_DOCS + 1];
        cu[0] = 0;
        for (int d = 0; d < m->ndocs; d++) cu[d + 1] = cu[d] + m->docs[d];
        if (cu[m->ndocs] != c->cfg.seq)
            return usp_fail(USP_EINVAL, "mask: seqlens add up to %ld tokens, not seq %d", cu[m->ndocs], c->cfg.seq);
        return usp_mask_from_documents(c->cfg.seq, 1, m->ndocs, cu, c->cfg.causal, left, right, out);
    }
    if (m->nslices) {
        long first[2] = {0, m->nslices};
        return usp_mask_from_slices(c->cfg.seq, 1, m->slices, first, left, right, out);
    }
    char window[64];
    snprintf(window, sizeof window, "%ld,%ld", left, right);
    usp_mask_spec spec = {.seqlens_file = m->seqlens_file[0] ? m->seqlens_file : NULL,
                          .mask_file = m->mask_file[0] ? m->mask_file : NULL,
                          .window = m->has_window ? window : NULL, .causal = c->cfg.causal};
    return usp_mask_build(&spec, c->cfg.seq, c->cfg.batch, out);
}

usp_status usp_vcase_schedule(const usp_vcase *c, usp_schedule *s, usp_mask **mask) {
    USP_TRY(usp_vcase_mask(c, mask));
    usp_config cfg = c->cfg;
    cfg.mask = *mask;
    usp_status st = usp_schedule_build(&cfg, c->backward, s);
    if (st != USP_OK) { usp_mask_free(*mask); *mask = NULL; }
    return st;
}

/* An integer field of a mask: [lo, hi]. */
static usp_status mask_long(const usp_json *v, long lo, long hi, const char *what, long *out) {
    if (v->type != USP_JSON_NUMBER || v->number != floor(v->number) || v->number < lo || v->number > hi)
        return usp_fail(USP_EINVAL, "line %d: mask: %s must be an integer in %ld..%ld", v->line, what, lo, hi);
    *out = (long)v->number;
    return USP_OK;
}

static usp_status read_slices(const usp_json *v, usp_vcase_mask_spec *m) {
    if (v->type != USP_JSON_ARRAY || v->count < 1 || v->count > USP_VCASE_MAX_SLICES)
        return usp_fail(USP_EINVAL, "line %d: mask: 'slices' must be a list of 1..%d slices (more: 'mask_file')",
                        v->line, USP_VCASE_MAX_SLICES);
    for (size_t i = 0; i < v->count; i++) {
        const usp_json *s = &v->items[i], *q = usp_json_get(s, "q"), *k = usp_json_get(s, "k");
        const char *type;
        if (s->type != USP_JSON_OBJECT || !q || !k || q->type != USP_JSON_ARRAY || k->type != USP_JSON_ARRAY ||
            q->count != 2 || k->count != 2)
            return usp_fail(USP_EINVAL, "line %d: mask: a slice is {\"q\": [q0, q1], \"k\": [k0, k1], \"type\": ...}",
                            s->line);
        usp_slice *sl = &m->slices[i];
        USP_TRY(mask_long(&q->items[0], 0, 1L << 30, "q0", &sl->q0));
        USP_TRY(mask_long(&q->items[1], 0, 1L << 30, "q1", &sl->q1));
        USP_TRY(mask_long(&k->items[0], 0, 1L << 30, "k0", &sl->k0));
        USP_TRY(mask_long(&k->items[1], 0, 1L << 30, "k1", &sl->k1));
        USP_TRY(usp_json_get_string(s, "type", &type));
        if (!strcmp(type, "full")) sl->type = USP_SLICE_FULL;
        else if (!strcmp(type, "causal")) sl->type = USP_SLICE_CAUSAL;
        else if (!strcmp(type, "bicausal") || !strcmp(type, "bi-causal")) sl->type = USP_SLICE_BICAUSAL;
        else return usp_fail(USP_EINVAL, "line %d: mask: slice type '%s' (full, causal, bicausal)", s->line, type);
    }
    m->nslices = (int)v->count;
    return USP_OK;
}

/* "mask" of "config" (usp/validate.h), file names resolved beside the sidecar. */
static usp_status read_mask(const usp_json *cj, usp_vcase *c) {
    const usp_json *mj = usp_json_get(cj, "mask");
    usp_vcase_mask_spec *m = &c->mask;
    if (!mj) return USP_OK;
    if (mj->type != USP_JSON_OBJECT) return usp_fail(USP_EINVAL, "line %d: 'mask' must be an object", mj->line);
    int sources = 0;
    for (size_t i = 0; i < mj->count; i++) {
        const char *key = mj->keys[i];
        const usp_json *v = &mj->items[i];
        if (!strcmp(key, "seqlens")) {
            sources++;
            if (v->type != USP_JSON_ARRAY || v->count < 1 || v->count > USP_VCASE_MAX_DOCS)
                return usp_fail(USP_EINVAL, "line %d: mask: 'seqlens' must list 1..%d lengths (more: 'seqlens_file')",
                                v->line, USP_VCASE_MAX_DOCS);
            for (size_t d = 0; d < v->count; d++) USP_TRY(mask_long(&v->items[d], 1, 1L << 30, "a length", &m->docs[d]));
            m->ndocs = (int)v->count;
        } else if (!strcmp(key, "slices")) {
            sources++;
            USP_TRY(read_slices(v, m));
        } else if (!strcmp(key, "seqlens_file") || !strcmp(key, "mask_file")) {
            sources++;
            int cu = !strcmp(key, "seqlens_file");
            if (v->type != USP_JSON_STRING || !v->string[0])
                return usp_fail(USP_EINVAL, "line %d: mask: '%s' must be a file name", v->line, key);
            snprintf(cu ? m->seqlens_file_raw : m->mask_file_raw, sizeof m->mask_file_raw, "%s", v->string);
            resolve(c->dir, v->string, cu ? m->seqlens_file : m->mask_file, sizeof m->mask_file);
        } else if (!strcmp(key, "window")) {
            if (v->type != USP_JSON_ARRAY || v->count != 2)
                return usp_fail(USP_EINVAL, "line %d: mask: 'window' is [left, right], -1 unbounded", v->line);
            USP_TRY(mask_long(&v->items[0], -1, 1L << 30, "window left", &m->left));
            USP_TRY(mask_long(&v->items[1], -1, 1L << 30, "window right", &m->right));
            m->has_window = 1;
        } else {
            return usp_fail(USP_EINVAL, "line %d: mask: unknown key '%s' (seqlens, slices, seqlens_file, mask_file, "
                            "window)", v->line, key);
        }
    }
    if (sources > 1)
        return usp_fail(USP_EINVAL, "line %d: mask: seqlens, slices, seqlens_file and mask_file exclude each other",
                        mj->line);
    if (!usp_vcase_has_mask(c)) return usp_fail(USP_EINVAL, "line %d: 'mask' is empty", mj->line);
    return USP_OK;
}

/* ---------------------------------------------------------- reading */

static usp_status read_config(const usp_json *root, usp_vcase *vc) {
    usp_config *c = &vc->cfg;
    const usp_json *cj = usp_json_get(root, "config");
    if (!cj || cj->type != USP_JSON_OBJECT) return usp_fail(USP_EINVAL, "line %d: missing object 'config'", root->line);
    const char *dtype, *impl, *layout;
    double seed = 0, scale = 0;
    *c = usp_config_default();
    USP_TRY(usp_json_get_int(cj, "batch", &c->batch));
    USP_TRY(usp_json_get_int(cj, "seq", &c->seq));
    USP_TRY(usp_json_get_int(cj, "heads", &c->heads));
    USP_TRY(usp_json_get_int(cj, "kv_heads", &c->kv_heads));
    USP_TRY(usp_json_get_int(cj, "head_dim", &c->head_dim));
    USP_TRY(usp_json_get_bool(cj, "causal", &c->causal));
    USP_TRY(usp_json_get_int(cj, "ulysses", &c->ulysses));
    USP_TRY(usp_json_get_int(cj, "ring", &c->ring));
    USP_TRY(usp_json_get_string(cj, "dtype", &dtype));
    USP_TRY(usp_json_get_string(cj, "ring_impl", &impl));
    USP_TRY(usp_json_get_string(cj, "layout", &layout));
    if (usp_json_get(cj, "scale")) USP_TRY(usp_json_get_number(cj, "scale", &scale));
    if (usp_json_get(cj, "seed")) USP_TRY(usp_json_get_number(cj, "seed", &seed));
    if (usp_json_get(cj, "wire")) {
        const char *wire;
        USP_TRY(usp_json_get_string(cj, "wire", &wire));
        USP_TRY(usp_parse_wire(wire, &c->wire));
    }
    if (usp_json_get(cj, "dkv_serial")) USP_TRY(usp_json_get_bool(cj, "dkv_serial", &c->dkv_serial));
    USP_TRY(usp_parse_dtype(dtype, &c->dtype));
    USP_TRY(usp_parse_ring_impl(impl, &c->ring_impl));
    USP_TRY(usp_parse_layout(layout, &c->layout));
    c->scale = scale;
    /* a seed is an integer a double holds exactly: [0, 2^53] */
    if (!(seed >= 0 && seed <= 9007199254740992.0 && seed == floor(seed)))
        return usp_fail(USP_EINVAL, "line %d: 'seed' must be an integer in [0, 2^53], found %g",
                        usp_json_get(cj, "seed")->line, seed);
    c->seed = (uint64_t)seed;
    USP_TRY(read_mask(cj, vc));
    /* validated with its mask, which is then let go (usp_vcase_mask rebuilds it) */
    usp_mask *m = NULL;
    USP_TRY(usp_vcase_mask(vc, &m));
    c->mask = m;
    usp_status st = usp_config_validate(c);
    c->mask = NULL;
    usp_mask_free(m);
    return st;
}

static usp_status read_role(const usp_json *root, usp_vrole *role) {
    const char *r;
    USP_TRY(usp_json_get_string(root, "role", &r));
    if (!strcmp(r, "calibration")) *role = USP_VROLE_CALIBRATION;
    else if (!strcmp(r, "held-out")) *role = USP_VROLE_HELD_OUT;
    else return usp_fail(USP_EINVAL, "line %d: role '%s' is neither 'calibration' nor 'held-out'",
                         usp_json_get(root, "role")->line, r);
    return USP_OK;
}

/* "measured_ms": {"fwd": ..., "bwd": ..., "iters": ...}, optional. */
static usp_status read_measured(const usp_json *root, usp_vcase *c) {
    const usp_json *m = usp_json_get(root, "measured_ms");
    if (!m) return USP_OK;
    USP_TRY(usp_json_get_number(m, "fwd", &c->measured_fwd_ms));
    USP_TRY(usp_json_get_number(m, "bwd", &c->measured_bwd_ms));
    return usp_json_get_int(m, "iters", &c->iters);
}

static usp_status read_strings(const usp_json *root, usp_vcase *c) {
    const char *trace = NULL, *profile, *platform, *device = "";
    const usp_json *tj = usp_json_get(root, "trace");
    if (!tj) return usp_fail(USP_EINVAL, "line %d: missing 'trace' (a file name, or null)", root->line);
    if (tj->type != USP_JSON_NULL) USP_TRY(usp_json_get_string(root, "trace", &trace));
    USP_TRY(usp_json_get_string(root, "profile", &profile));
    USP_TRY(usp_json_get_string(root, "platform", &platform));
    if (usp_json_get(root, "device")) USP_TRY(usp_json_get_string(root, "device", &device));
    snprintf(c->profile_raw, sizeof c->profile_raw, "%s", profile);
    snprintf(c->platform_raw, sizeof c->platform_raw, "%s", platform);
    snprintf(c->device, sizeof c->device, "%s", device);
    if (trace) resolve(c->dir, trace, c->trace, sizeof c->trace);
    resolve(c->dir, profile, c->profile, sizeof c->profile);
    resolve(c->dir, platform, c->platform, sizeof c->platform);
    return USP_OK;
}

static usp_status read_tree(const usp_json *root, usp_vcase *c) {
    if (root->type != USP_JSON_OBJECT) return usp_fail(USP_EINVAL, "a case is a JSON object");
    USP_TRY(read_strings(root, c));
    USP_TRY(read_role(root, &c->role));
    USP_TRY(usp_json_get_bool(root, "backward", &c->backward));
    USP_TRY(usp_json_get_number(root, "bound_pct", &c->bound_pct));
    if (!(c->bound_pct > 0)) return usp_fail(USP_EINVAL, "'bound_pct' must be positive");
    USP_TRY(read_measured(root, c));
    if (!c->trace[0] && !(c->measured_fwd_ms > 0))
        return usp_fail(USP_EINVAL, "a case without a trace needs 'measured_ms' with a positive 'fwd'");
    return read_config(root, c);
}

static const char CASE_SUFFIX[] = ".case.json";
static const char TRACE_SUFFIX[] = ".trace.json";

static int has_suffix(const char *name, const char *suffix) {
    size_t n = strlen(name), s = strlen(suffix);
    return n > s && !strcmp(name + n - s, suffix);
}

/* The case name: the file name without directory and ".case.json" (or ".json"). */
static void stem_of(const char *path, char *out, size_t n) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t len = strlen(base);
    if (has_suffix(base, CASE_SUFFIX)) len -= sizeof CASE_SUFFIX - 1;
    else if (has_suffix(base, ".json")) len -= 5;
    snprintf(out, n, "%.*s", (int)len, base);
}

usp_status usp_vcase_read(const char *sidecar, usp_vcase *c) {
    memset(c, 0, sizeof *c);
    dir_of(sidecar, c->dir, sizeof c->dir);
    stem_of(sidecar, c->name, sizeof c->name);
    usp_json *root = NULL;
    usp_status st = usp_json_parse_file(sidecar, &root);
    if (st == USP_OK) {
        st = read_tree(root, c);
        if (st != USP_OK) usp_error_prefix("%s: ", sidecar);
    }
    usp_json_free(root);
    return st;
}

/* ---------------------------------------------------------- writing */

static void write_mask(FILE *f, const usp_vcase_mask_spec *m) {
    const char *sep = "";
    fprintf(f, ",\n             \"mask\": {");
    if (m->ndocs) {
        fprintf(f, "\"seqlens\": [");
        for (int d = 0; d < m->ndocs; d++) fprintf(f, "%s%ld", d ? ", " : "", m->docs[d]);
        fprintf(f, "]");
        sep = ", ";
    }
    if (m->nslices) {
        fprintf(f, "\"slices\": [");
        for (int i = 0; i < m->nslices; i++) {
            const usp_slice *s = &m->slices[i];
            fprintf(f, "%s{\"q\": [%ld, %ld], \"k\": [%ld, %ld], \"type\": \"%s\"}", i ? ", " : "", s->q0, s->q1,
                    s->k0, s->k1, usp_slice_type_name(s->type));
        }
        fprintf(f, "]");
        sep = ", ";
    }
    if (m->seqlens_file_raw[0] || m->mask_file_raw[0]) {
        fprintf(f, "\"%s\": ", m->seqlens_file_raw[0] ? "seqlens_file" : "mask_file");
        usp_json_write_string(f, m->seqlens_file_raw[0] ? m->seqlens_file_raw : m->mask_file_raw);
        sep = ", ";
    }
    if (m->has_window) fprintf(f, "%s\"window\": [%ld, %ld]", sep, m->left, m->right);
    fprintf(f, "}");
}

static void write_config(FILE *f, const usp_vcase *vc) {
    const usp_config *c = &vc->cfg;
    fprintf(f, "  \"config\": {\"batch\": %d, \"seq\": %d, \"heads\": %d, \"kv_heads\": %d, \"head_dim\": %d,\n"
               "             \"causal\": %s, \"scale\": ",
            c->batch, c->seq, c->heads, c->kv_heads, c->head_dim, c->causal ? "true" : "false");
    usp_json_write_number(f, c->scale);
    fprintf(f, ", \"dtype\": \"%s\", \"ulysses\": %d, \"ring\": %d,\n"
               "             \"ring_impl\": \"%s\", \"layout\": \"%s\", \"seed\": %llu",
            usp_dtype_name(c->dtype), c->ulysses, c->ring, usp_ring_impl_name(c->ring_impl),
            usp_layout_name(c->layout), (unsigned long long)c->seed);
    if (c->wire != USP_WIRE_DTYPE) fprintf(f, ", \"wire\": \"%s\"", usp_wire_name(c->wire));
    if (c->dkv_serial) fprintf(f, ", \"dkv_serial\": true");
    if (usp_vcase_has_mask(vc)) write_mask(f, &vc->mask);
    fprintf(f, "},\n");
}

static void write_case(FILE *f, const usp_vcase *c) {
    fprintf(f, "{\n  \"trace\": ");
    char trace[128];
    snprintf(trace, sizeof trace, "%s%s", c->name, TRACE_SUFFIX);
    if (c->trace[0]) usp_json_write_string(f, trace);
    else fprintf(f, "null");
    fprintf(f, ",\n  \"role\": \"%s\",\n  \"backward\": %s,\n", usp_vrole_name(c->role),
            c->backward ? "true" : "false");
    write_config(f, c);
    fprintf(f, "  \"profile\": ");
    usp_json_write_string(f, c->profile_raw);
    fprintf(f, ",\n  \"platform\": ");
    usp_json_write_string(f, c->platform_raw);
    fprintf(f, ",\n  \"bound_pct\": ");
    usp_json_write_number(f, c->bound_pct);
    fprintf(f, ",\n  \"measured_ms\": {\"fwd\": %.4f, \"bwd\": %.4f, \"iters\": %d},\n  \"device\": ",
            c->measured_fwd_ms, c->measured_bwd_ms, c->iters);
    usp_json_write_string(f, c->device);
    fprintf(f, "\n}\n");
}

usp_status usp_vcase_write(const usp_vcase *c, const char *sidecar) {
    FILE *f = fopen(sidecar, "w");
    if (!f) return usp_fail(USP_EINVAL, "cannot write %s", sidecar);
    write_case(f, c);
    if (fclose(f) != 0) return usp_fail(USP_EINTERNAL, "cannot write %s", sidecar);
    return USP_OK;
}

/* ---------------------------------------------------------- listing */

static int by_name(const void *a, const void *b) {
    return strcmp(((const usp_vcase *)a)->name, ((const usp_vcase *)b)->name);
}

static usp_status grow(usp_vcase **cases, int count, int *cap) {
    if (count < *cap) return USP_OK;
    int grown = *cap ? 2 * *cap : 16;
    usp_vcase *more = realloc(*cases, (size_t)grown * sizeof *more);
    if (!more) return usp_fail(USP_EINTERNAL, "out of memory listing cases");
    *cases = more;
    *cap = grown;
    return USP_OK;
}

/* A trace must have its sidecar: without it, its configuration is unknown. */
static usp_status check_sidecar(const char *dir, const char *trace_name) {
    char sidecar[2048];
    int stem = (int)(strlen(trace_name) - (sizeof TRACE_SUFFIX - 1));
    snprintf(sidecar, sizeof sidecar, "%s/%.*s%s", dir, stem, trace_name, CASE_SUFFIX);
    if (access(sidecar, R_OK) != 0)
        return usp_fail(USP_EINVAL, "%s/%s has no sidecar %s (its configuration is unknown)", dir, trace_name, sidecar);
    return USP_OK;
}

static usp_status add_entry(const char *dir, const char *name, usp_vcase **cases, int *count, int *cap) {
    if (has_suffix(name, TRACE_SUFFIX)) return check_sidecar(dir, name);
    if (!has_suffix(name, CASE_SUFFIX)) return USP_OK;
    char sidecar[2048];
    snprintf(sidecar, sizeof sidecar, "%s/%s", dir, name);
    USP_TRY(grow(cases, *count, cap));
    USP_TRY(usp_vcase_read(sidecar, &(*cases)[*count]));
    (*count)++;
    return USP_OK;
}

usp_status usp_vcase_list(const char *dir, usp_vcase **cases, int *count) {
    *cases = NULL;
    *count = 0;
    DIR *d = opendir(dir);
    if (!d) return usp_fail(USP_EINVAL, "cannot read directory %s", dir);
    usp_status st = USP_OK;
    int cap = 0;
    struct dirent *e;
    while (st == USP_OK && (e = readdir(d))) st = add_entry(dir, e->d_name, cases, count, &cap);
    closedir(d);
    if (st != USP_OK) { free(*cases); *cases = NULL; *count = 0; return st; }
    if (*count) qsort(*cases, (size_t)*count, sizeof **cases, by_name);
    return USP_OK;
}
