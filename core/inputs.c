/* inputs.c: the global Q, K, V, dO, generated or read from .npy files.
 *
 * Generated values come from a counter-based hash of (seed, tensor, index):
 * no state is carried from one element to the next, so any rank (or a GPU
 * thread) can make any element on its own and every executor agrees. */
#define _POSIX_C_SOURCE 200809L
#include "usp/inputs.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "usp/npy.h"

/* ---------- counter-based normal values ---------- */

/* splitmix64's finaliser: a bijection on 64 bits whose output bits each
 * depend on every input bit, so consecutive counters give unrelated values. */
static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* A uniform double in the open interval (0, 1): 53 random bits, centred in
 * their cell, so neither 0 (log(0) below) nor 1 can come out. */
static double uniform_open(uint64_t bits) {
    return ((double)(bits >> 11) + 0.5) * 0x1.0p-53;
}

double usp_input_value(uint64_t seed, usp_tensor_id t, uint64_t index) {
    const uint64_t golden = 0x9e3779b97f4a7c15ULL;
    const double two_pi = 6.283185307179586476925286766559;
    uint64_t stream = mix64(seed ^ mix64(golden * ((uint64_t)t + 1)));
    uint64_t counter = 2 * index;   /* two draws per element: 2i and 2i+1 */
    double u1 = uniform_open(mix64(stream ^ mix64(counter)));
    double u2 = uniform_open(mix64(stream ^ mix64(counter + 1)));
    /* Box-Muller, cosine branch only: one normal per element index. */
    return sqrt(-2.0 * log(u1)) * cos(two_pi * u2);
}

void usp_input_fill(uint64_t seed, usp_tensor_id t, double *x, long elems) {
    for (long i = 0; i < elems; i++) x[i] = usp_input_value(seed, t, (uint64_t)i);
}

/* ---------- rounding to a narrower floating-point format ---------- */

typedef struct {
    int fraction_bits;   /* stored mantissa bits */
    int min_exponent;    /* exponent of the smallest normal number */
    int max_exponent;    /* exponent of the largest finite number */
} float_format;

static const float_format format_f32 = {23, -126, 127};
static const float_format format_f16 = {10, -14, 15};
static const float_format format_bf16 = {7, -126, 127};

/* Rounds a finite nonzero normal double to `fmt`, to nearest with ties to
 * even, on the integer significand: independent of the FPU rounding mode and
 * exact for the format's subnormals (where fewer bits survive). */
static double round_normal(double x, const float_format *fmt) {
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    int exponent = (int)((bits >> 52) & 0x7ff) - 1023;
    uint64_t significand = (bits & ((1ULL << 52) - 1)) | (1ULL << 52);
    int below_normal = exponent < fmt->min_exponent ? fmt->min_exponent - exponent : 0;
    int drop = 52 - fmt->fraction_bits + below_normal;
    double magnitude;
    if (drop > 53) {
        magnitude = 0.0;   /* under half the smallest subnormal */
    } else {
        uint64_t kept = significand >> drop;
        uint64_t rest = significand & ((1ULL << drop) - 1);
        uint64_t half = 1ULL << (drop - 1);
        if (rest > half || (rest == half && (kept & 1))) kept++;
        magnitude = ldexp((double)kept, exponent - 52 + drop);
    }
    double largest = ldexp((double)((1ULL << (fmt->fraction_bits + 1)) - 1),
                           fmt->max_exponent - fmt->fraction_bits);
    if (magnitude > largest) magnitude = INFINITY;
    return signbit(x) ? -magnitude : magnitude;
}

static double round_to_format(double x, const float_format *fmt) {
    /* NaN, inf and zero are kept; double subnormals are far below the
     * smallest subnormal of every target format and become signed zero. */
    if (!isfinite(x) || x == 0.0) return x;
    if (fpclassify(x) == FP_SUBNORMAL) return signbit(x) ? -0.0 : 0.0;
    return round_normal(x, fmt);
}

void usp_round_to_dtype(usp_dtype dtype, double *x, long n) {
    const float_format *fmt = dtype == USP_F32 ? &format_f32
                            : dtype == USP_F16 ? &format_f16
                            : dtype == USP_BF16 ? &format_bf16 : NULL;
    if (!fmt) return;
    for (long i = 0; i < n; i++) x[i] = round_to_format(x[i], fmt);
}

void usp_round_to_dtype_f32(usp_dtype dtype, float *x, long n) {
    const float_format *fmt = dtype == USP_F16 ? &format_f16 : dtype == USP_BF16 ? &format_bf16 : NULL;
    if (!fmt) return;
    for (long i = 0; i < n; i++) x[i] = (float)round_to_format((double)x[i], fmt); /* exact in fp32 */
}

/* ---------- the global problem ---------- */

static usp_status checked_product(const long *dims, int n, long *out) {
    long p = 1;
    for (int i = 0; i < n; i++) {
        if (dims[i] <= 0)
            return usp_fail(USP_EINVAL, "inputs: dimension %ld must be positive", dims[i]);
        if (p > LONG_MAX / (long)sizeof(double) / dims[i])
            return usp_fail(USP_EINVAL, "inputs: tensor of %d dimensions too large", n);
        p *= dims[i];
    }
    *out = p;
    return USP_OK;
}

static void shapes_of(const usp_config *cfg, long q_shape[4], long kv_shape[4]) {
    q_shape[0] = kv_shape[0] = cfg->batch;
    q_shape[1] = kv_shape[1] = cfg->seq;
    q_shape[2] = cfg->heads;
    kv_shape[2] = cfg->kv_heads;
    q_shape[3] = kv_shape[3] = cfg->head_dim;
}

static usp_status generated(const usp_config *cfg, usp_tensor_id t, long elems,
                            double **out) {
    *out = usp_malloc((size_t)elems * sizeof(double));
    if (!*out) return USP_EINTERNAL;
    usp_input_fill(cfg->seed, t, *out, elems);
    return USP_OK;
}

/* "(0, 9, 5, 2)": the position of a flat index in a 4-d row-major tensor. */
static void format_index(char *buf, size_t n, long index, const long shape[4]) {
    long pos[4];
    for (int d = 3; d >= 0; d--) {
        pos[d] = index % shape[d];
        index /= shape[d];
    }
    snprintf(buf, n, "(%ld, %ld, %ld, %ld)", pos[0], pos[1], pos[2], pos[3]);
}

static usp_status check_finite(const char *path, const double *x, long n,
                               const long shape[4]) {
    for (long i = 0; i < n; i++) {
        if (isfinite(x[i])) continue;
        char where[128];
        format_index(where, sizeof where, i, shape);
        return usp_fail(USP_EINVAL, "%s: element %ld %s is %s", path, i, where,
                        isnan(x[i]) ? "nan" : x[i] > 0 ? "inf" : "-inf");
    }
    return USP_OK;
}

/* A finite user value can still overflow a 16-bit dtype (above 65504 in f16). */
static usp_status check_representable(const char *path, const double *x, long n,
                                      const long shape[4], usp_dtype dtype) {
    for (long i = 0; i < n; i++) {
        double r = x[i];
        usp_round_to_dtype(dtype, &r, 1);
        if (isfinite(r)) continue;
        char where[128];
        format_index(where, sizeof where, i, shape);
        return usp_fail(USP_EINVAL, "%s: element %ld %s = %g overflows %s", path, i, where,
                        x[i], usp_dtype_name(dtype));
    }
    return USP_OK;
}

static usp_status read_tensor(const usp_config *cfg, const char *dir, const char *file,
                              const long shape[4], long elems, double **out) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    USP_TRY(usp_npy_read_shape(path, 4, shape, out));
    usp_status st = check_finite(path, *out, elems, shape);
    if (st == USP_OK) st = check_representable(path, *out, elems, shape, cfg->dtype);
    if (st != USP_OK) {
        free(*out);
        *out = NULL;
    }
    return st;
}

/* do.npy is optional: generated when absent, read (and checked) when present. */
static usp_status read_or_generate_dout(const usp_config *cfg, const char *dir,
                                        const long shape[4], long elems, double **out) {
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/do.npy", dir);
    if (stat(path, &st) != 0 && errno == ENOENT)
        return generated(cfg, USP_TENSOR_DO, elems, out);
    return read_tensor(cfg, dir, "do.npy", shape, elems, out);
}

static usp_status fill_tensors(const usp_config *cfg, const char *dir, usp_inputs *in) {
    long q_shape[4], kv_shape[4];
    shapes_of(cfg, q_shape, kv_shape);
    if (!dir) {
        USP_TRY(generated(cfg, USP_TENSOR_Q, in->q_elems, &in->q));
        USP_TRY(generated(cfg, USP_TENSOR_K, in->kv_elems, &in->k));
        USP_TRY(generated(cfg, USP_TENSOR_V, in->kv_elems, &in->v));
        return generated(cfg, USP_TENSOR_DO, in->q_elems, &in->dout);
    }
    USP_TRY(read_tensor(cfg, dir, "q.npy", q_shape, in->q_elems, &in->q));
    USP_TRY(read_tensor(cfg, dir, "k.npy", kv_shape, in->kv_elems, &in->k));
    USP_TRY(read_tensor(cfg, dir, "v.npy", kv_shape, in->kv_elems, &in->v));
    return read_or_generate_dout(cfg, dir, q_shape, in->q_elems, &in->dout);
}

usp_status usp_inputs_make(const usp_config *cfg, const char *dir, usp_inputs *out) {
    memset(out, 0, sizeof *out);
    long q_shape[4], kv_shape[4];
    shapes_of(cfg, q_shape, kv_shape);
    USP_TRY(checked_product(q_shape, 4, &out->q_elems));
    USP_TRY(checked_product(kv_shape, 4, &out->kv_elems));
    usp_status st = fill_tensors(cfg, dir, out);
    if (st != USP_OK) {
        usp_inputs_free(out);
        return st;
    }
    usp_round_to_dtype(cfg->dtype, out->q, out->q_elems);
    usp_round_to_dtype(cfg->dtype, out->k, out->kv_elems);
    usp_round_to_dtype(cfg->dtype, out->v, out->kv_elems);
    usp_round_to_dtype(cfg->dtype, out->dout, out->q_elems);
    return USP_OK;
}

void usp_inputs_free(usp_inputs *in) {
    if (!in) return;
    free(in->q);
    free(in->k);
    free(in->v);
    free(in->dout);
    memset(in, 0, sizeof *in);
}
