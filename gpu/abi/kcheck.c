/* kcheck.c: the kernel conformance battery (usp/kcheck.h).
 *
 * Host side of every case: generate fp64 inputs, round them to the dtype,
 * run the fp64 CPU block kernels, upload the same values, call the kernel
 * through its usp_kernel struct, download and compare. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cuda_runtime_api.h>

#include "usp/a2a.h"
#include "usp/attention.h"
#include "usp/compare.h"
#include "usp/gpu_pack.h"
#include "usp/inputs.h"
#include "usp/kcheck.h"

/* Outputs start as POISON so that a write outside the block shows; gradients
 * start at GRAD_INIT so that "+=" is checked (and "=" caught). Both are exact
 * in every dtype. */
#define KC_POISON 7.0
#define KC_GRAD_INIT 0.25

#define WHOLE -1
#define BLK(qb, ql, kb, kl, ca, dg) {qb, ql, kb, kl, ca, dg}
#define NOMASK {USP_KC_MASK_NONE, NULL, 0, -1, -1, 0, 0}

static const usp_kcheck_case cases[] = {
    {"L1.bf16.d64", USP_KC_BLOCK, USP_BF16, 1, 1, 1, 2, 2, 64, BLK(0, WHOLE, 0, WHOLE, 0, 0), 1, 1,
     "one query, one key", NOMASK},
    {"L17.bf16.d64.causal", USP_KC_BLOCK, USP_BF16, 2, 17, 17, 3, 3, 64, BLK(0, WHOLE, 0, WHOLE, 1, 0), 1, 1,
     "lengths that fill no tile", NOMASK},
    {"L17.f16.d128", USP_KC_BLOCK, USP_F16, 1, 17, 17, 2, 2, 128, BLK(0, WHOLE, 0, WHOLE, 0, 0), 1, 1,
     "lengths that fill no tile", NOMASK},
    {"L128.bf16.d128.causal", USP_KC_BLOCK, USP_BF16, 1, 128, 128, 4, 4, 128, BLK(0, WHOLE, 0, WHOLE, 1, 0), 1, 1,
     "diagonal block (diag 0)", NOMASK},
    {"L128.f16.d64.gqa.diag-1", USP_KC_BLOCK, USP_F16, 1, 128, 128, 8, 2, 64, BLK(0, WHOLE, 0, WHOLE, 1, -1), 1, 1,
     "GQA 4:1, strictly below the diagonal (stripe steps)", NOMASK},
    {"L1000.bf16.d128.mqa", USP_KC_BLOCK, USP_BF16, 1, 1000, 1000, 4, 1, 128, BLK(0, WHOLE, 0, WHOLE, 0, 0), 1, 0,
     "MQA", NOMASK},
    {"L1000.f16.d64.causal", USP_KC_BLOCK, USP_F16, 2, 1000, 1000, 2, 2, 64, BLK(0, WHOLE, 0, WHOLE, 1, 0), 1, 0,
     "causal, batch 2", NOMASK},
    {"L4096.bf16.d128.causal", USP_KC_BLOCK, USP_BF16, 1, 4096, 4096, 2, 2, 128, BLK(0, WHOLE, 0, WHOLE, 1, 0), 1, 0,
     "causal", NOMASK},
    {"L4096.f16.d64.gqa", USP_KC_BLOCK, USP_F16, 1, 4096, 4096, 4, 2, 64, BLK(0, WHOLE, 0, WHOLE, 0, 0), 1, 0,
     "GQA 2:1", NOMASK},
    {"zigzag.kv-half.bf16", USP_KC_BLOCK, USP_BF16, 1, 1024, 1024, 2, 2, 128, BLK(0, WHOLE, 0, 512, 0, 0), 1, 0,
     "zigzag step from an earlier rank: every query, first half of the keys", NOMASK},
    {"zigzag.q-half.f16", USP_KC_BLOCK, USP_F16, 1, 1024, 1024, 2, 1, 128, BLK(512, 512, 0, WHOLE, 0, 0), 1, 0,
     "zigzag step from a later rank: second half of the queries, every key", NOMASK},
    {"slice.causal.bf16", USP_KC_BLOCK, USP_BF16, 2, 1000, 900, 4, 2, 64, BLK(100, 700, 37, 800, 1, 5), 1, 1,
     "query and key slices, diagonal offset 5", NOMASK},
    {"masked-rows.bf16", USP_KC_BLOCK, USP_BF16, 1, 256, 256, 2, 2, 128, BLK(0, WHOLE, 0, WHOLE, 1, -64), 1, 1,
     "rows 0..63 see no key: LSE -inf, O 0, no gradient", NOMASK},
    {"all-masked.f16", USP_KC_BLOCK, USP_F16, 1, 128, 128, 2, 2, 64, BLK(0, WHOLE, 0, WHOLE, 1, -200), 1, 1,
     "no row sees a key", NOMASK},
    {"ring2.bf16.causal", USP_KC_RING2, USP_BF16, 1, 512, 512, 2, 2, 128, BLK(0, WHOLE, 0, WHOLE, 1, 0), 1, 1,
     "two ring steps merged (fp32 O); rows 0..255 see nothing in the second", NOMASK},
    {"ring2.f16.gqa", USP_KC_RING2, USP_F16, 2, 300, 600, 4, 2, 64, BLK(0, WHOLE, 0, WHOLE, 0, 0), 1, 0,
     "two ring steps, GQA", NOMASK},
    {"long.bf16.d128", USP_KC_BLOCK, USP_BF16, 1, 16384, 16384, 1, 1, 128, BLK(15872, 512, 0, WHOLE, 1, 15872), 1, 0,
     "the last 512 rows of a causal 16K sequence", NOMASK},
    {"f32.d64", USP_KC_BLOCK, USP_F32, 1, 128, 128, 2, 1, 64, BLK(0, WHOLE, 0, WHOLE, 1, 0), 1, 1,
     "fp32 inputs", NOMASK},
    {"bf16.d96", USP_KC_BLOCK, USP_BF16, 1, 200, 200, 2, 2, 96, BLK(0, WHOLE, 0, WHOLE, 1, 0), 1, 0,
     "head dim 96", NOMASK},
    {"L17.bf16.d256", USP_KC_BLOCK, USP_BF16, 1, 17, 17, 2, 2, 256, BLK(0, WHOLE, 0, WHOLE, 0, 0), 1, 1,
     "head dim 256, lengths that fill no tile", NOMASK},
    {"L300.f16.d256.gqa.causal", USP_KC_BLOCK, USP_F16, 1, 300, 300, 4, 2, 256, BLK(0, WHOLE, 0, WHOLE, 1, 0), 1, 1,
     "head dim 256, GQA 2:1, causal", NOMASK},
    {"slice.causal.bf16.d256", USP_KC_BLOCK, USP_BF16, 2, 600, 500, 2, 1, 256, BLK(100, 400, 37, 450, 1, 5), 1, 0,
     "head dim 256, query and key slices, diagonal offset 5, MQA", NOMASK},
    {"masked-rows.f16.d256", USP_KC_BLOCK, USP_F16, 1, 256, 256, 2, 2, 256, BLK(0, WHOLE, 0, WHOLE, 1, -64), 1, 0,
     "head dim 256, rows 0..63 see no key", NOMASK},
    {"ring2.bf16.d256.causal", USP_KC_RING2, USP_BF16, 1, 1024, 1024, 2, 2, 256, BLK(0, WHOLE, 0, WHOLE, 1, 0), 1, 0,
     "head dim 256, two ring steps merged (fp32 O)", NOMASK},
    /* per-row key intervals (ABI 2): documents not aligned to the 64/128-row
     * tiles, windows smaller and larger than a tile, a window inside
     * documents, empty rows, GQA, slices, every kernel path */
    {"docs.causal.bf16.gqa", USP_KC_BLOCK, USP_BF16, 2, 1000, 1000, 4, 2, 128, BLK(0, WHOLE, 0, WHOLE, 0, 0), 1, 1,
     "packed documents, causal inside each, GQA 2:1", {USP_KC_MASK_DOCS, "100,37,300,211,5,600", 1, -1, -1, 0, 0}},
    {"docs.full.f16.d64", USP_KC_BLOCK, USP_F16, 1, 700, 700, 2, 2, 64, BLK(0, WHOLE, 0, WHOLE, 0, 0), 1, 0,
     "packed documents, bidirectional inside each", {USP_KC_MASK_DOCS, "129,64,1,250", 0, -1, -1, 0, 0}},
    {"window.40.bf16", USP_KC_BLOCK, USP_BF16, 1, 1000, 1000, 2, 2, 128, BLK(0, WHOLE, 0, WHOLE, 0, 0), 1, 1,
     "sliding window of 40 keys back, causal (smaller than a tile)", {USP_KC_MASK_DOCS, NULL, 1, 40, 0, 0, 0}},
    {"window.300+40.f16.gqa", USP_KC_BLOCK, USP_F16, 1, 1000, 1000, 8, 2, 64, BLK(0, WHOLE, 0, WHOLE, 0, 0), 1, 0,
     "window 300 back and 40 ahead (larger than a tile), GQA 4:1", {USP_KC_MASK_DOCS, NULL, 0, 300, 40, 0, 0}},
    {"docs.window.bf16.d64", USP_KC_BLOCK, USP_BF16, 2, 1000, 1000, 2, 2, 64, BLK(0, WHOLE, 0, WHOLE, 0, 0), 1, 0,
     "window of 100 inside causal documents", {USP_KC_MASK_DOCS, "500,123,377", 1, 100, -1, 0, 0}},
    {"docs.empty-rows.bf16", USP_KC_BLOCK, USP_BF16, 1, 512, 512, 2, 2, 128, BLK(0, WHOLE, 0, WHOLE, 0, 0), 1, 1,
     "causal documents, every 5th row sees no key", {USP_KC_MASK_DOCS, "77,200,35", 1, -1, -1, 5, 0}},
    {"scatter.f16.d128", USP_KC_BLOCK, USP_F16, 2, 600, 700, 2, 1, 128, BLK(0, WHOLE, 0, WHOLE, 0, 0), 1, 1,
     "seeded intervals: empty, short, past either end of the keys", {USP_KC_MASK_SCATTER, NULL, 0, -1, -1, 0, 0}},
    {"slice.docs.bf16", USP_KC_BLOCK, USP_BF16, 1, 1000, 900, 4, 2, 64, BLK(100, 700, 37, 800, 0, 0), 1, 0,
     "query and key slices of causal documents (local coordinates)", {USP_KC_MASK_DOCS, "90,333,50", 1, -1, -1, 0, 0}},
    {"docs.f32.d64", USP_KC_BLOCK, USP_F32, 1, 300, 300, 2, 1, 64, BLK(0, WHOLE, 0, WHOLE, 0, 0), 1, 1,
     "fp32 inputs, causal documents (simple kernels)", {USP_KC_MASK_DOCS, "70,111", 1, -1, -1, 0, 0}},
    {"docs.bf16.d96", USP_KC_BLOCK, USP_BF16, 1, 300, 300, 2, 2, 96, BLK(0, WHOLE, 0, WHOLE, 0, 0), 1, 0,
     "head dim 96, window inside documents (simple kernels)", {USP_KC_MASK_DOCS, "130,170", 1, 50, -1, 0, 0}},
    {"docs.L16384.bf16", USP_KC_BLOCK, USP_BF16, 1, 16384, 16384, 2, 2, 128, BLK(0, WHOLE, 0, WHOLE, 0, 0), 1, 0,
     "16K tokens of causal documents (257..3000 long)", {USP_KC_MASK_DOCS, "2049,257,3000,1100,700,1500", 1, -1, -1, 0, 0}},
    {"docs.units.f16.d64.gqa", USP_KC_BLOCK, USP_F16, 2, 2048, 2048, 8, 2, 64, BLK(0, WHOLE, 0, WHOLE, 0, 0), 1, 0,
     "more query tiles x heads than SMs (several work units a CTA under the mask plan), GQA 4:1, "
     "causal documents, empty rows", {USP_KC_MASK_DOCS, "700,37,300,900,111", 1, -1, -1, 9, 0}},
    {"window.units.bf16.slice", USP_KC_BLOCK, USP_BF16, 1, 3000, 3000, 8, 2, 128, BLK(200, 2600, 100, 2800, 0, 0), 1, 0,
     "window 200 back and 20 ahead on query and key slices, 168 work units", {USP_KC_MASK_DOCS, NULL, 0, 200, 20, 0, 0}},
    {"docs.empty-units.f16.d64.gqa", USP_KC_BLOCK, USP_F16, 2, 2048, 2048, 16, 4, 64, BLK(0, WHOLE, 0, WHOLE, 0, 0), 1, 1,
     "512 work units, query tiles 1, 4, 7, ... without keys (CTAs of the persistent forward run "
     "several full units, then empty ones), causal documents, GQA 4:1",
     {USP_KC_MASK_DOCS, "300,37,200,111,250", 1, -1, -1, 0, 128}},
    {"window.empty-units.bf16", USP_KC_BLOCK, USP_BF16, 1, 4096, 4096, 16, 4, 128, BLK(0, WHOLE, 0, WHOLE, 0, 0), 1, 0,
     "512 work units of 1 or 2 key tiles, query tiles 2-3, 8-9, ... without keys, window 100 back, causal, "
     "GQA 4:1", {USP_KC_MASK_DOCS, NULL, 1, 100, -1, 0, 256}},
    {"docs.f16.d256.gqa", USP_KC_BLOCK, USP_F16, 1, 700, 700, 4, 2, 256, BLK(0, WHOLE, 0, WHOLE, 0, 0), 1, 1,
     "head dim 256, causal documents, GQA 2:1", {USP_KC_MASK_DOCS, "300,77,323", 1, -1, -1, 0, 0}},
    {"window.bf16.d256", USP_KC_BLOCK, USP_BF16, 1, 900, 900, 2, 2, 256, BLK(0, WHOLE, 0, WHOLE, 0, 0), 1, 0,
     "head dim 256, window 100 back inside documents, empty rows", {USP_KC_MASK_DOCS, "450,450", 1, 100, -1, 7, 0}},
    {"a2a.pack", USP_KC_PACK, USP_F32, 0, 0, 0, 0, 0, 0, BLK(0, 0, 0, 0, 0, 0), 0, 1,
     "pack/unpack of every a2a pattern, even and uneven head splits, bit-identical to the host's", NOMASK},
};

int usp_kcheck_count(void) { return (int)(sizeof cases / sizeof cases[0]); }
const usp_kcheck_case *usp_kcheck_case_at(int i) {
    return i >= 0 && i < usp_kcheck_count() ? &cases[i] : NULL;
}

usp_status usp_kcheck_gpu_ready(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) return usp_fail(USP_EINTERNAL, "no usable CUDA device: %s", cudaGetErrorString(e));
    if (n == 0) return usp_fail(USP_EINTERNAL, "no CUDA device");
    return USP_OK;
}

/* ---- fp16 / bf16 on the host ------------------------------------------- */

static uint16_t f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);   /* rounds past the largest half */
    if (ax < 0x38800000u) {                                      /* subnormal half or zero */
        float a;
        memcpy(&a, &ax, 4);
        return (uint16_t)(sign | (uint32_t)lrintf(a * 16777216.0f));   /* units of 2^-24, ties to even */
    }
    uint32_t mant = ax & 0x7fffffu, exp = (ax >> 23) - 112;
    uint32_t h = (exp << 10) | (mant >> 13), rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1))) h++;   /* nearest, ties to even */
    return (uint16_t)(sign | h);
}

static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ffu;
    float f;
    if (exp == 0) {
        f = ldexpf((float)mant, -24);
        return sign ? -f : f;
    }
    uint32_t x = sign | (exp == 31 ? 0x7f800000u | (mant << 13) : ((exp + 112) << 23) | (mant << 13));
    memcpy(&f, &x, 4);
    return f;
}

static uint16_t f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1);   /* nearest, ties to even */
    return (uint16_t)(x >> 16);
}

static float bf16_to_f32(uint16_t h) {
    uint32_t x = (uint32_t)h << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

void usp_kcheck_encode(const double *x, long n, usp_dtype dt, void *out) {
    for (long i = 0; i < n; i++) {
        switch (dt) {
        case USP_F64: ((double *)out)[i] = x[i]; break;
        case USP_F32: ((float *)out)[i] = (float)x[i]; break;
        case USP_F16: ((uint16_t *)out)[i] = f32_to_f16((float)x[i]); break;
        default: ((uint16_t *)out)[i] = f32_to_bf16((float)x[i]);
        }
    }
}

void usp_kcheck_decode(const void *in, long n, usp_dtype dt, double *x) {
    for (long i = 0; i < n; i++) {
        switch (dt) {
        case USP_F64: x[i] = ((const double *)in)[i]; break;
        case USP_F32: x[i] = ((const float *)in)[i]; break;
        case USP_F16: x[i] = f16_to_f32(((const uint16_t *)in)[i]); break;
        default: x[i] = bf16_to_f32(((const uint16_t *)in)[i]);
        }
    }
}

/* ---- device buffers ------------------------------------------------------ */

#define KC_CUDA(call)                                                                        \
    do {                                                                                     \
        cudaError_t kc_e_ = (call);                                                          \
        if (kc_e_ != cudaSuccess) {                                                          \
            st = usp_fail(USP_EINTERNAL, "%s: %s (%s:%d)", #call, cudaGetErrorString(kc_e_), \
                          __FILE__, __LINE__);                                               \
            goto out;                                                                        \
        }                                                                                    \
    } while (0)

/* A device copy of x (n values, already representable in dt). */
static usp_status upload(const double *x, long n, usp_dtype dt, void **dev) {
    usp_status st = USP_OK;
    size_t bytes = (size_t)n * usp_dtype_size(dt);
    void *h = usp_malloc(bytes ? bytes : 1);
    *dev = NULL;
    if (!h) return USP_EINTERNAL;
    usp_kcheck_encode(x, n, dt, h);
    KC_CUDA(cudaMalloc(dev, bytes ? bytes : 16));
    KC_CUDA(cudaMemcpy(*dev, h, bytes, cudaMemcpyHostToDevice));
out:
    free(h);
    return st;
}

/* n device values of dt, all `value`. */
static usp_status upload_fill(double value, long n, usp_dtype dt, void **dev) {
    double *x = usp_malloc((size_t)(n ? n : 1) * sizeof(double));
    if (!x) return USP_EINTERNAL;
    for (long i = 0; i < n; i++) x[i] = value;
    usp_status st = upload(x, n, dt, dev);
    free(x);
    return st;
}

static usp_status download(const void *dev, long n, usp_dtype dt, double *x) {
    usp_status st = USP_OK;
    size_t bytes = (size_t)n * usp_dtype_size(dt);
    void *h = usp_malloc(bytes ? bytes : 1);
    if (!h) return USP_EINTERNAL;
    KC_CUDA(cudaMemcpy(h, dev, bytes, cudaMemcpyDeviceToHost));
    usp_kcheck_decode(h, n, dt, x);
out:
    free(h);
    return st;
}

/* ---- masks ------------------------------------------------------------------ */

/* Document lengths of "l1,l2,...": count, or -1 when malformed. */
static int parse_docs(const char *docs, int *len, int cap) {
    int n = 0;
    const char *p = docs;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 1 << 30 || n == cap) return -1;
        len[n++] = (int)v;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

usp_status usp_kcheck_mask_build(const usp_kcheck_mask *m, const usp_block *blk, int B, uint64_t seed,
                                 int32_t *lo, int32_t *hi) {
    int len[64], ndocs = 0;
    if (m->docs && (ndocs = parse_docs(m->docs, len, 64)) < 1)
        return usp_fail(USP_EINVAL, "mask documents '%s': lengths of at least 1, comma-separated", m->docs);
    uint64_t rng = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < blk->q_len; i++) {
            long at = (long)b * blk->q_len + i, pos = blk->q_begin + i;
            long a = 0, z = 1L << 30;
            if (ndocs) {   /* the document holding pos + 7b, walking the repeated lengths */
                long x = pos + 7L * b, start = 0;
                for (int d = 0;; d = (d + 1) % ndocs) {
                    if (x < start + len[d]) {
                        a = start - 7L * b;
                        z = start + len[d] - 7L * b;
                        break;
                    }
                    start += len[d];
                }
            }
            if (m->causal && pos + 1 < z) z = pos + 1;
            if (m->left >= 0 && pos - m->left > a) a = pos - m->left;
            if (m->right >= 0 && pos + m->right + 1 < z) z = pos + m->right + 1;
            if (m->kind == USP_KC_MASK_SCATTER) {   /* xorshift64* */
                rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
                uint64_t r = rng * 0x2545F4914F6CDD1Dull;
                a = blk->kv_begin - 20 + (long)(r % (uint64_t)(blk->kv_len + 40));
                z = a + (long)((r >> 32) % 300) - 40;
            }
            if (m->empty_every && i % m->empty_every == 3) a = z = blk->kv_begin;
            if (m->empty_span && (i / m->empty_span) % 3 == 1) a = z = blk->kv_begin;
            a -= blk->kv_begin;
            z -= blk->kv_begin;
            lo[at] = (int32_t)(a < -(1L << 30) ? -(1L << 30) : a);
            hi[at] = (int32_t)(z > (1L << 30) ? 1L << 30 : z);
        }
    return USP_OK;
}

/* ---- comparisons over a block's rows ------------------------------------- */

/* Relative error of rows [r0, r0+n) of (B, L, H, D) tensors, minus `base` in x. */
static usp_error_stats cmp_rows(const double *x, const double *ref, int B, int L, int H, int D, int r0, int n,
                                double base, double tol) {
    long per = (long)H * D, m = (long)B * n * per;
    double *a = malloc((size_t)(m ? m : 1) * sizeof(double)), *b = malloc((size_t)(m ? m : 1) * sizeof(double));
    usp_error_stats e = {.nan_count = 1}; /* a failed allocation fails the case */
    if (!a || !b) goto out;
    for (int bb = 0; bb < B; bb++)
        for (long i = 0; i < (long)n * per; i++) {
            long src = ((long)bb * L + r0) * per + i, dst = (long)bb * n * per + i;
            a[dst] = x[src] - base;
            b[dst] = ref[src];
        }
    e = usp_compare(a, b, m, tol);
out:
    free(a);
    free(b);
    return e;
}

/* The same for (B, H, L) statistics. */
static usp_error_stats cmp_stats(const double *x, const double *ref, int B, int H, int L, int r0, int n,
                                 double tol) {
    long m = (long)B * H * n;
    double *a = malloc((size_t)(m ? m : 1) * sizeof(double)), *b = malloc((size_t)(m ? m : 1) * sizeof(double));
    usp_error_stats e = {.nan_count = 1}; /* a failed allocation fails the case */
    if (!a || !b) goto out;
    for (long bh = 0; bh < (long)B * H; bh++)
        for (int i = 0; i < n; i++) {
            a[bh * n + i] = x[bh * L + r0 + i];
            b[bh * n + i] = ref[bh * L + r0 + i];
        }
    e = usp_compare(a, b, m, tol);
out:
    free(a);
    free(b);
    return e;
}

/* Elements of rows outside [r0, r0+n) that differ from `value`. */
static long touched_outside(const double *x, int B, int L, long per_row, int r0, int n, double value) {
    long bad = 0;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < L; i++) {
            if (i >= r0 && i < r0 + n) continue;
            for (long j = 0; j < per_row; j++)
                if (x[((long)b * L + i) * per_row + j] != value) bad++;
        }
    return bad;
}

static void note(usp_kcheck_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(usp_kcheck_result *r, const char *fmt, ...) {
    size_t len = strlen(r->note);
    if (len + 3 >= sizeof r->note) return;
    if (len) {
        strcat(r->note, "; ");
        len += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->note + len, sizeof r->note - len, fmt, ap);
    va_end(ap);
}

/* Records one error and its failures; returns 1 when it passes. */
static int judge(usp_kcheck_result *r, int which, const char *what, usp_error_stats e, double tol) {
    double elem_tol = USP_ELEM_TOL_FACTOR * tol;
    r->err[which] = e.rel;
    r->elem_err[which] = e.elem_rel;
    if (e.nan_count) note(r, "%s: %ld NaN", what, e.nan_count);
    if (e.inf_mismatch) note(r, "%s: %ld infinities where the reference has none, or the reverse", what,
                             e.inf_mismatch);
    if (e.rel > tol) note(r, "%s: error %.2e over tolerance %.1e", what, e.rel, tol);
    if (e.elem_rel > elem_tol)
        note(r, "%s: element-wise error %.2e over tolerance %.1e", what, e.elem_rel, elem_tol);
    return e.nan_count == 0 && e.inf_mismatch == 0 && e.rel <= tol && e.elem_rel <= elem_tol;
}

/* ---- one problem's buffers ------------------------------------------------ */

typedef struct {
    int B, Lq, Lk, H, Hk, D;
    usp_dtype dt, odt;
    long nq, nk, nl;
    double *q, *k, *v, *dout;                 /* inputs, rounded to dt */
    double *o, *lse, *delta, *dq, *dk, *dv;   /* reference */
    double *go, *glse, *gdq, *gdk, *gdv;      /* downloaded */
    void *dq_, *dk_, *dv_, *ddo;              /* device inputs (d prefix: device) */
    void *d_o, *d_lse, *d_delta, *d_dq, *d_dk, *d_dv, *d_ob, *d_lseb;
} problem;

static void problem_free(problem *p) {
    double *h[] = {p->q, p->k, p->v, p->dout, p->o, p->lse, p->delta, p->dq, p->dk, p->dv,
                   p->go, p->glse, p->gdq, p->gdk, p->gdv};
    for (size_t i = 0; i < sizeof h / sizeof h[0]; i++) free(h[i]);
    void *d[] = {p->dq_, p->dk_, p->dv_, p->ddo, p->d_o, p->d_lse, p->d_delta, p->d_dq, p->d_dk, p->d_dv,
                 p->d_ob, p->d_lseb};
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        if (d[i]) cudaFree(d[i]);
}

static usp_status problem_init(problem *p, const usp_kcheck_case *c, uint64_t seed, usp_dtype odt) {
    memset(p, 0, sizeof *p);
    p->B = c->batch; p->Lq = c->lq; p->Lk = c->lkv; p->H = c->heads; p->Hk = c->kv_heads; p->D = c->head_dim;
    p->dt = c->dtype;
    p->odt = odt;
    p->nq = (long)p->B * p->Lq * p->H * p->D;
    p->nk = (long)p->B * p->Lk * p->Hk * p->D;
    p->nl = (long)p->B * p->H * p->Lq;
    double **q_like[] = {&p->q, &p->dout, &p->o, &p->dq, &p->go, &p->gdq};
    double **k_like[] = {&p->k, &p->v, &p->dk, &p->dv, &p->gdk, &p->gdv};
    double **l_like[] = {&p->lse, &p->delta, &p->glse};
    for (size_t i = 0; i < 6; i++)
        if (!(*q_like[i] = usp_calloc((size_t)p->nq, sizeof(double)))) return USP_EINTERNAL;
    for (size_t i = 0; i < 6; i++)
        if (!(*k_like[i] = usp_calloc((size_t)p->nk, sizeof(double)))) return USP_EINTERNAL;
    for (size_t i = 0; i < 3; i++)
        if (!(*l_like[i] = usp_calloc((size_t)p->nl, sizeof(double)))) return USP_EINTERNAL;
    usp_input_fill(seed, USP_TENSOR_Q, p->q, p->nq);
    usp_input_fill(seed, USP_TENSOR_K, p->k, p->nk);
    usp_input_fill(seed, USP_TENSOR_V, p->v, p->nk);
    usp_input_fill(seed, USP_TENSOR_DO, p->dout, p->nq);
    usp_round_to_dtype(p->dt, p->q, p->nq);
    usp_round_to_dtype(p->dt, p->k, p->nk);
    usp_round_to_dtype(p->dt, p->v, p->nk);
    usp_round_to_dtype(p->dt, p->dout, p->nq);
    USP_TRY(upload(p->q, p->nq, p->dt, &p->dq_));
    USP_TRY(upload(p->k, p->nk, p->dt, &p->dk_));
    USP_TRY(upload(p->v, p->nk, p->dt, &p->dv_));
    USP_TRY(upload(p->dout, p->nq, p->dt, &p->ddo));
    USP_TRY(upload_fill(KC_POISON, p->nq, odt, &p->d_o));
    USP_TRY(upload_fill(KC_POISON, p->nl, USP_F32, &p->d_lse));
    USP_TRY(upload_fill(KC_POISON, p->nq, odt, &p->d_ob));
    USP_TRY(upload_fill(KC_POISON, p->nl, USP_F32, &p->d_lseb));
    USP_TRY(upload_fill(0.0, p->nl, USP_F32, &p->d_delta));
    USP_TRY(upload_fill(KC_GRAD_INIT, p->nq, USP_F32, &p->d_dq));
    USP_TRY(upload_fill(KC_GRAD_INIT, p->nk, USP_F32, &p->d_dk));
    USP_TRY(upload_fill(KC_GRAD_INIT, p->nk, USP_F32, &p->d_dv));
    return USP_OK;
}

static usp_attn_shape shape_of(const problem *p, double scale) {
    usp_attn_shape s = {0};
    s.batch = p->B; s.hq = p->H; s.hkv = p->Hk; s.d = p->D;
    s.lq = p->Lq; s.lkv = p->Lk; s.scale = scale;
    return s;
}

static usp_kfwd_args fwd_args(const problem *p, void *o, void *lse, usp_block blk, double scale) {
    usp_kfwd_args a;
    memset(&a, 0, sizeof a);
    a.q = usp_ktensor_bshd(p->dq_, p->dt, p->B, p->Lq, p->H, p->D);
    a.k = usp_ktensor_bshd(p->dk_, p->dt, p->B, p->Lk, p->Hk, p->D);
    a.v = usp_ktensor_bshd(p->dv_, p->dt, p->B, p->Lk, p->Hk, p->D);
    a.o = usp_ktensor_bshd(o, p->odt, p->B, p->Lq, p->H, p->D);
    a.lse = usp_kstats_bhl(lse, p->B, p->H, p->Lq);
    a.blk = blk;
    a.scale = (float)scale;
    return a;
}

static usp_kbwd_args bwd_args(const problem *p, usp_block blk, double scale) {
    usp_kbwd_args a;
    memset(&a, 0, sizeof a);
    a.q = usp_ktensor_bshd(p->dq_, p->dt, p->B, p->Lq, p->H, p->D);
    a.k = usp_ktensor_bshd(p->dk_, p->dt, p->B, p->Lk, p->Hk, p->D);
    a.v = usp_ktensor_bshd(p->dv_, p->dt, p->B, p->Lk, p->Hk, p->D);
    a.dout = usp_ktensor_bshd(p->ddo, p->dt, p->B, p->Lq, p->H, p->D);
    a.lse = usp_kstats_bhl(p->d_lse, p->B, p->H, p->Lq);
    a.delta = usp_kstats_bhl(p->d_delta, p->B, p->H, p->Lq);
    a.dq = usp_ktensor_bshd(p->d_dq, USP_F32, p->B, p->Lq, p->H, p->D);
    a.dk = usp_ktensor_bshd(p->d_dk, USP_F32, p->B, p->Lk, p->Hk, p->D);
    a.dv = usp_ktensor_bshd(p->d_dv, USP_F32, p->B, p->Lk, p->Hk, p->D);
    a.blk = blk;
    a.scale = (float)scale;
    return a;
}

/* A kernel call through the struct; a refusal or a CUDA failure fails the
 * case (with the kernel's reason) and leaves through `out`. */
#define KC_KERNEL(fn, args)                                                                    \
    do {                                                                                       \
        char why_[200] = "";                                                                   \
        int rc_ = k->fn(args, NULL, why_, sizeof why_);                                        \
        cudaError_t ce_ = rc_ == USP_KERNEL_OK ? cudaDeviceSynchronize() : cudaSuccess;         \
        if (rc_ != USP_KERNEL_OK || ce_ != cudaSuccess) {                                      \
            if (ce_ != cudaSuccess) snprintf(why_, sizeof why_, "%s", cudaGetErrorString(ce_)); \
            note(r, "%s: %s", #fn, why_);                                                      \
            r->pass = 0;                                                                       \
            goto out;                                                                          \
        }                                                                                      \
    } while (0)

static usp_block whole_block(const usp_kcheck_case *c) {
    usp_block b = c->blk;
    if (b.q_len == WHOLE) b.q_len = c->lq - b.q_begin;
    if (b.kv_len == WHOLE) b.kv_len = c->lkv - b.kv_begin;
    return b;
}

/* Forward checks: errors, masked rows exactly (O = 0, LSE = -inf), untouched rows. */
static usp_status check_forward(problem *p, usp_block blk, usp_kcheck_result *r) {
    USP_TRY(download(p->d_o, p->nq, p->odt, p->go));
    USP_TRY(download(p->d_lse, p->nl, USP_F32, p->glse));
    int ok = judge(r, USP_KC_O, "O",
                   cmp_rows(p->go, p->o, p->B, p->Lq, p->H, p->D, blk.q_begin, blk.q_len, 0.0, r->tol_fwd),
                   r->tol_fwd);
    ok &= judge(r, USP_KC_LSE, "LSE",
                cmp_stats(p->glse, p->lse, p->B, p->H, p->Lq, blk.q_begin, blk.q_len, r->tol_fwd), r->tol_fwd);
    long nonzero = 0;
    for (int b = 0; b < p->B; b++)
        for (int h = 0; h < p->H; h++)
            for (int i = blk.q_begin; i < blk.q_begin + blk.q_len; i++) {
                if (!isinf(p->lse[((long)b * p->H + h) * p->Lq + i])) continue;
                const double *row = p->go + (((long)b * p->Lq + i) * p->H + h) * p->D;
                for (int d = 0; d < p->D; d++) nonzero += row[d] != 0.0;
            }
    if (nonzero) note(r, "%s: %ld non-zero values in rows that see no key", "O", nonzero);
    long out_o = touched_outside(p->go, p->B, p->Lq, (long)p->H * p->D, blk.q_begin, blk.q_len, KC_POISON);
    long out_l = touched_outside(p->glse, p->B * p->H, p->Lq, 1, blk.q_begin, blk.q_len, KC_POISON);
    if (out_o + out_l) note(r, "%s: %ld values written outside the block's rows", "O/LSE", out_o + out_l);
    r->pass &= ok && nonzero == 0 && out_o + out_l == 0;
    return USP_OK;
}

/* Backward checks: dQ/dK/dV minus their start value, and untouched rows. */
static usp_status check_backward(problem *p, usp_block qrows, usp_block kvrows, usp_kcheck_result *r) {
    USP_TRY(download(p->d_dq, p->nq, USP_F32, p->gdq));
    USP_TRY(download(p->d_dk, p->nk, USP_F32, p->gdk));
    USP_TRY(download(p->d_dv, p->nk, USP_F32, p->gdv));
    double t = r->tol_bwd;
    int ok = judge(r, USP_KC_DQ, "dQ",
                   cmp_rows(p->gdq, p->dq, p->B, p->Lq, p->H, p->D, qrows.q_begin, qrows.q_len, KC_GRAD_INIT, t), t);
    ok &= judge(r, USP_KC_DK, "dK",
                cmp_rows(p->gdk, p->dk, p->B, p->Lk, p->Hk, p->D, kvrows.kv_begin, kvrows.kv_len, KC_GRAD_INIT, t), t);
    ok &= judge(r, USP_KC_DV, "dV",
                cmp_rows(p->gdv, p->dv, p->B, p->Lk, p->Hk, p->D, kvrows.kv_begin, kvrows.kv_len, KC_GRAD_INIT, t), t);
    long out = touched_outside(p->gdq, p->B, p->Lq, (long)p->H * p->D, qrows.q_begin, qrows.q_len, KC_GRAD_INIT) +
               touched_outside(p->gdk, p->B, p->Lk, (long)p->Hk * p->D, kvrows.kv_begin, kvrows.kv_len, KC_GRAD_INIT) +
               touched_outside(p->gdv, p->B, p->Lk, (long)p->Hk * p->D, kvrows.kv_begin, kvrows.kv_len, KC_GRAD_INIT);
    if (out) note(r, "%s: %ld values changed outside the block's rows", "dQ/dK/dV", out);
    r->pass &= ok && out == 0;
    return USP_OK;
}

static float elapsed_ms(cudaEvent_t a, cudaEvent_t b) {
    float ms = 0.0f;
    if (cudaEventElapsedTime(&ms, a, b) != cudaSuccess) return 0.0f;
    return ms;
}

static usp_status run_block(const usp_kernel *k, const usp_kcheck_case *c, uint64_t seed, usp_kcheck_result *r) {
    problem p;
    usp_status st = USP_OK;
    cudaEvent_t ev[4] = {0, 0, 0, 0};
    usp_dtype odt = c->dtype;   /* O in the input dtype, as a framework's output */
    double scale = 1.0 / sqrt((double)c->head_dim);
    usp_block blk = whole_block(c);
    usp_row_mask mask = {NULL, NULL};
    int32_t *mlo = NULL, *mhi = NULL, *d_mlo = NULL, *d_mhi = NULL;
    memset(&p, 0, sizeof p);
    if (c->mask.kind != USP_KC_MASK_NONE) {
        size_t n = (size_t)c->batch * (size_t)(blk.q_len > 0 ? blk.q_len : 1);
        mlo = usp_malloc(n * sizeof *mlo);
        mhi = usp_malloc(n * sizeof *mhi);
        if (!mlo || !mhi) {
            st = USP_EINTERNAL;
            goto out;
        }
        if ((st = usp_kcheck_mask_build(&c->mask, &blk, c->batch, seed, mlo, mhi)) != USP_OK) goto out;
        KC_CUDA(cudaMalloc((void **)&d_mlo, n * sizeof *mlo));
        KC_CUDA(cudaMalloc((void **)&d_mhi, n * sizeof *mhi));
        KC_CUDA(cudaMemcpy(d_mlo, mlo, n * sizeof *mlo, cudaMemcpyHostToDevice));
        KC_CUDA(cudaMemcpy(d_mhi, mhi, n * sizeof *mhi, cudaMemcpyHostToDevice));
        mask.lo = mlo;
        mask.hi = mhi;
    }
    if ((st = problem_init(&p, c, seed, odt)) != USP_OK) goto out;
    for (int i = 0; i < 4; i++) KC_CUDA(cudaEventCreate(&ev[i]));

    usp_attn_shape sh = shape_of(&p, scale);
    usp_attn_fwd_masked_f64(&sh, &blk, &mask, p.q, p.k, p.v, p.o, p.lse);
    usp_kfwd_args fa = fwd_args(&p, p.d_o, p.d_lse, blk, scale);
    fa.mask_lo = d_mlo;
    fa.mask_hi = d_mhi;
    KC_CUDA(cudaEventRecord(ev[0], NULL));
    KC_KERNEL(forward, &fa);
    KC_CUDA(cudaEventRecord(ev[1], NULL));
    KC_CUDA(cudaEventSynchronize(ev[1]));
    r->gpu_ms = elapsed_ms(ev[0], ev[1]);
    if ((st = check_forward(&p, blk, r)) != USP_OK) goto out;
    if (!c->backward) goto out;

    usp_attn_bwd_prep_f64(&sh, p.o, p.dout, p.delta);
    usp_attn_bwd_masked_f64(&sh, &blk, &mask, p.q, p.k, p.v, p.dout, p.lse, p.delta, p.dq, p.dk, p.dv);
    usp_kprep_args pa;
    pa.o = fa.o;
    pa.dout = usp_ktensor_bshd(p.ddo, p.dt, p.B, p.Lq, p.H, p.D);
    pa.delta = usp_kstats_bhl(p.d_delta, p.B, p.H, p.Lq);
    usp_kbwd_args ba = bwd_args(&p, blk, scale);
    ba.mask_lo = d_mlo;
    ba.mask_hi = d_mhi;
    KC_CUDA(cudaEventRecord(ev[2], NULL));
    KC_KERNEL(bwd_prep, &pa);
    KC_KERNEL(backward, &ba);
    KC_CUDA(cudaEventRecord(ev[3], NULL));
    KC_CUDA(cudaEventSynchronize(ev[3]));
    r->gpu_ms += elapsed_ms(ev[2], ev[3]);
    st = check_backward(&p, blk, blk, r);
out:
    for (int i = 0; i < 4; i++)
        if (ev[i]) cudaEventDestroy(ev[i]);
    problem_free(&p);
    free(mlo);
    free(mhi);
    if (d_mlo) cudaFree(d_mlo);
    if (d_mhi) cudaFree(d_mhi);
    return st;
}

/* Keys cut in two halves, as two ring steps: forward both into fp32 (O, LSE)
 * and (O_blk, LSE_blk), merge; backward both into the same dQ. */
static usp_status run_ring2(const usp_kernel *k, const usp_kcheck_case *c, uint64_t seed, usp_kcheck_result *r) {
    problem p;
    usp_status st = USP_OK;
    double scale = 1.0 / sqrt((double)c->head_dim);
    int half = c->lkv / 2;
    usp_block full = whole_block(c);
    usp_block b0 = {0, c->lq, 0, half, c->blk.causal, 0};
    usp_block b1 = {0, c->lq, half, c->lkv - half, c->blk.causal, -half};
    if ((st = problem_init(&p, c, seed, USP_F32)) != USP_OK) goto out;

    usp_attn_shape sh = shape_of(&p, scale);
    usp_attn_fwd_f64(&sh, &full, p.q, p.k, p.v, p.o, p.lse);
    usp_kfwd_args f0 = fwd_args(&p, p.d_o, p.d_lse, b0, scale);
    usp_kfwd_args f1 = fwd_args(&p, p.d_ob, p.d_lseb, b1, scale);
    usp_kmerge_args ma;
    ma.o_blk = f1.o;
    ma.lse_blk = f1.lse;
    ma.o = f0.o;
    ma.lse = f0.lse;
    ma.row_begin = 0;
    ma.rows = c->lq;
    KC_KERNEL(forward, &f0);
    KC_KERNEL(forward, &f1);
    KC_KERNEL(merge, &ma);
    if ((st = check_forward(&p, full, r)) != USP_OK) goto out;
    if (!c->backward) goto out;

    usp_attn_bwd_prep_f64(&sh, p.o, p.dout, p.delta);
    usp_attn_bwd_f64(&sh, &full, p.q, p.k, p.v, p.dout, p.lse, p.delta, p.dq, p.dk, p.dv);
    usp_kprep_args pa;
    pa.o = f0.o;
    pa.dout = usp_ktensor_bshd(p.ddo, p.dt, p.B, p.Lq, p.H, p.D);
    pa.delta = usp_kstats_bhl(p.d_delta, p.B, p.H, p.Lq);
    usp_kbwd_args a0 = bwd_args(&p, b0, scale), a1 = bwd_args(&p, b1, scale);
    KC_KERNEL(bwd_prep, &pa);
    KC_KERNEL(backward, &a0);
    KC_KERNEL(backward, &a1);
    st = check_backward(&p, full, full, r);
out:
    problem_free(&p);
    return st;
}

/* GPU pack/unpack against usp_a2a_pack/unpack, byte for byte, for every
 * pattern, two geometries (K/V heads replicated and split), fp32 and fp64;
 * O and DKV also through fp16 and bf16 wires (pack_to / unpack_from). */
static usp_status run_pack(usp_kcheck_result *r) {
    usp_status st = USP_OK;
    const int geo[2][4] = {{4, 8, 2, 2}, {2, 8, 4, 3}};   /* ulysses, heads, kv heads, ring */
    const usp_a2a pats[] = {USP_A2A_Q, USP_A2A_KV, USP_A2A_O, USP_A2A_LSE, USP_A2A_DKV};
    const char *pat_names[] = {"Q", "KV", "O", "LSE", "DKV"};
    char *hsrc = NULL, *hsend = NULL, *gsend = NULL, *hdst = NULL, *gdst = NULL;
    void *dsrc = NULL, *dsend = NULL, *ddst = NULL;
    for (int g = 0; g < 2; g++)
        for (int e = 0; e < 2; e++)
            for (int pi = 0; pi < 5; pi++) {
                usp_config c = usp_config_default();
                c.batch = 2; c.ulysses = geo[g][0]; c.heads = geo[g][1]; c.kv_heads = geo[g][2];
                c.ring = geo[g][3]; c.head_dim = 16; c.seq = 12 * c.ulysses * c.ring;
                usp_dtype dt = e ? USP_F64 : USP_F32;
                size_t el = usp_dtype_size(dt);
                usp_a2a a = pats[pi];
                long ns = usp_a2a_src_elems(&c, a), nd = usp_a2a_dst_elems(&c, a);
                long nsend = usp_a2a_piece_elems(&c, a) * c.ulysses;
                hsrc = malloc((size_t)ns * el); hsend = malloc((size_t)nsend * el); gsend = malloc((size_t)nsend * el);
                hdst = malloc((size_t)nd * el); gdst = malloc((size_t)nd * el);
                if (!hsrc || !hsend || !gsend || !hdst || !gdst) {
                    st = usp_fail(USP_EINTERNAL, "out of memory");
                    goto out;
                }
                for (long i = 0; i < ns; i++) {   /* distinct values: a misplaced element shows */
                    double x = usp_input_value(c.seed + (uint64_t)pi, USP_TENSOR_Q, (uint64_t)i);
                    if (e) ((double *)hsrc)[i] = x; else ((float *)hsrc)[i] = (float)x;
                }
                usp_a2a_pack(&c, a, hsrc, hsend, el);
                KC_CUDA(cudaMalloc(&dsrc, (size_t)ns * el));
                KC_CUDA(cudaMalloc(&dsend, (size_t)nsend * el));
                KC_CUDA(cudaMalloc(&ddst, (size_t)nd * el));
                KC_CUDA(cudaMemcpy(dsrc, hsrc, (size_t)ns * el, cudaMemcpyHostToDevice));
                usp_a2a_dims dims = usp_a2a_dims_of(&c);
                if ((st = usp_gpu_a2a_pack(a, &dims, dt, dsrc, dsend, NULL)) != USP_OK) goto out;
                KC_CUDA(cudaMemcpy(gsend, dsend, (size_t)nsend * el, cudaMemcpyDeviceToHost));
                int same_pack = memcmp(hsend, gsend, (size_t)nsend * el) == 0;
                /* unpack what was packed (a self all-to-all is enough to compare) */
                usp_a2a_unpack(&c, a, hsend, hdst, el);
                if ((st = usp_gpu_a2a_unpack(a, &dims, dt, dsend, ddst, NULL)) != USP_OK) goto out;
                KC_CUDA(cudaMemcpy(gdst, ddst, (size_t)nd * el, cudaMemcpyDeviceToHost));
                int same_unpack = memcmp(hdst, gdst, (size_t)nd * el) == 0;
                if (!same_pack || !same_unpack) {
                    r->pass = 0;
                    note(r, "%s (%s, ulysses %d): differs from the host", pat_names[pi], usp_dtype_name(dt), c.ulysses);
                }
                /* O and dK/dV of 16-bit runs go on a 16-bit wire: the GPU's round trip
                 * fp32 -> wire -> fp32 against the host's pack, rounding, unpack */
                for (int w = 0; !e && (a == USP_A2A_O || a == USP_A2A_DKV) && w < 2; w++) {
                    usp_dtype wire = w ? USP_BF16 : USP_F16;
                    usp_round_to_dtype_f32(wire, (float *)hsend, nsend);
                    usp_a2a_unpack(&c, a, hsend, hdst, el);
                    usp_a2a_pack(&c, a, hsrc, hsend, el); /* unrounded again for the next wire */
                    if ((st = usp_gpu_a2a_pack_to(a, &dims, USP_F32, wire, dsrc, dsend, NULL)) != USP_OK) goto out;
                    if ((st = usp_gpu_a2a_unpack_from(a, &dims, wire, USP_F32, dsend, ddst, NULL)) != USP_OK) goto out;
                    KC_CUDA(cudaMemcpy(gdst, ddst, (size_t)nd * el, cudaMemcpyDeviceToHost));
                    if (memcmp(hdst, gdst, (size_t)nd * el) != 0) {
                        r->pass = 0;
                        note(r, "%s (fp32 on a %s wire, ulysses %d): differs from the host", pat_names[pi],
                             usp_dtype_name(wire), c.ulysses);
                    }
                }
                free(hsrc); free(hsend); free(gsend); free(hdst); free(gdst);
                hsrc = hsend = gsend = hdst = gdst = NULL;
                cudaFree(dsrc); cudaFree(dsend); cudaFree(ddst);
                dsrc = dsend = ddst = NULL;
            }
out:
    free(hsrc); free(hsend); free(gsend); free(hdst); free(gdst);
    if (dsrc) cudaFree(dsrc);
    if (dsend) cudaFree(dsend);
    if (ddst) cudaFree(ddst);
    return st;
}

/* Uneven head splits (usp/layout.h): every ulysses rank's pack of its own
 * source and unpack of a RECV of its own layout (pieces of different sizes),
 * against usp_a2a_pack_rank / unpack_rank, byte for byte, fp32. */
static usp_status run_pack_uneven(usp_kcheck_result *r) {
    const int geo[4][4] = {{4, 6, 6, 1}, {2, 5, 5, 2}, {4, 6, 2, 1}, {3, 8, 2, 1}}; /* ulysses, heads, kv, ring */
    usp_status st = USP_OK;
    float *h = NULL, *g = NULL, *hout = NULL;
    void *din = NULL, *dout = NULL;
    for (int gi = 0; gi < 4 && st == USP_OK; gi++)
        for (int u = 0; u < geo[gi][0] && st == USP_OK; u++)
            for (usp_a2a a = USP_A2A_Q; a <= USP_A2A_DKV && st == USP_OK; a++)
                for (int unpack = 0; unpack < 2 && st == USP_OK; unpack++) {
                    usp_config c = usp_config_default();
                    c.batch = 2; c.ulysses = geo[gi][0]; c.heads = geo[gi][1]; c.kv_heads = geo[gi][2];
                    c.ring = geo[gi][3]; c.head_dim = 8; c.seq = 4 * c.ulysses * c.ring;
                    long nin = unpack ? usp_a2a_recv_offset(&c, a, u, c.ulysses) : usp_a2a_src_elems_rank(&c, a, u);
                    long nout = unpack ? usp_a2a_dst_elems_rank(&c, a, u) : usp_a2a_send_offset(&c, a, u, c.ulysses);
                    h = malloc((size_t)nin * sizeof *h);
                    g = malloc((size_t)nout * sizeof *g);
                    hout = calloc((size_t)nout, sizeof *hout);
                    if (!h || !g || !hout) { st = usp_fail(USP_EINTERNAL, "out of memory"); break; }
                    for (long i = 0; i < nin; i++) h[i] = (float)usp_input_value(c.seed + (uint64_t)a, USP_TENSOR_K, (uint64_t)i);
                    if (unpack) usp_a2a_unpack_rank(&c, u, a, h, hout, sizeof *h);
                    else usp_a2a_pack_rank(&c, u, a, h, hout, sizeof *h);
                    usp_a2a_dims dims = usp_a2a_dims_rank(&c, u);
                    if (cudaMalloc(&din, (size_t)nin * sizeof *h) != cudaSuccess ||
                        cudaMalloc(&dout, (size_t)nout * sizeof *h) != cudaSuccess ||
                        cudaMemcpy(din, h, (size_t)nin * sizeof *h, cudaMemcpyHostToDevice) != cudaSuccess)
                        st = usp_fail(USP_EINTERNAL, "a2a uneven: %s", cudaGetErrorString(cudaGetLastError()));
                    if (st == USP_OK)
                        st = unpack ? usp_gpu_a2a_unpack(a, &dims, USP_F32, din, dout, NULL)
                                    : usp_gpu_a2a_pack(a, &dims, USP_F32, din, dout, NULL);
                    if (st == USP_OK && cudaMemcpy(g, dout, (size_t)nout * sizeof *g, cudaMemcpyDeviceToHost) != cudaSuccess)
                        st = usp_fail(USP_EINTERNAL, "a2a uneven: %s", cudaGetErrorString(cudaGetLastError()));
                    if (st == USP_OK && memcmp(g, hout, (size_t)nout * sizeof *g) != 0) {
                        r->pass = 0;
                        note(r, "%s of pattern %d, heads %d kv %d over ulysses %d, rank %d: differs from the host",
                             unpack ? "unpack" : "pack", (int)a, c.heads, c.kv_heads, c.ulysses, u);
                    }
                    free(h); free(g); free(hout);
                    h = g = hout = NULL;
                    if (din) cudaFree(din);
                    if (dout) cudaFree(dout);
                    din = dout = NULL;
                }
    free(h); free(g); free(hout);
    if (din) cudaFree(din);
    if (dout) cudaFree(dout);
    return st;
}

usp_status usp_kcheck_run(const usp_kernel *k, const usp_kcheck_case *c, uint64_t seed, usp_kcheck_result *r) {
    memset(r, 0, sizeof *r);
    for (int i = 0; i < USP_KC_NERR; i++) r->err[i] = r->elem_err[i] = -1;
    r->tol_fwd = usp_tolerance(c->dtype, 0);
    r->tol_bwd = usp_tolerance(c->dtype, 1);
    r->pass = 1;
    if (c->kind == USP_KC_PACK) {
        usp_status st = run_pack(r);
        return st == USP_OK ? run_pack_uneven(r) : st;
    }
    if (!(k->dtypes & (1u << c->dtype))) {
        r->skipped = 1;
        snprintf(r->note, sizeof r->note, "the kernel does not take %s", usp_dtype_name(c->dtype));
        return USP_OK;
    }
    if (c->mask.kind != USP_KC_MASK_NONE && usp_kernel_mask_refusal(k)) {
        r->skipped = 1;
        snprintf(r->note, sizeof r->note, "skipped: %s", usp_kernel_mask_refusal(k));
        return USP_OK;
    }
    return c->kind == USP_KC_RING2 ? run_ring2(k, c, seed, r) : run_block(k, c, seed, r);
}
