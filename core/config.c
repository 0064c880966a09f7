/* config.c: defaults, names and the one validation of a configuration. */
#include "usp/config.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include "usp/dispatch.h"
#include "usp/layout.h"

usp_config usp_config_default(void) {
    usp_config c = {
        .batch = 1, .seq = 4096, .heads = 8, .kv_heads = 8, .head_dim = 64,
        .causal = 1, .scale = 0, .dtype = USP_F64,
        .ulysses = 2, .ring = 2, .ring_impl = USP_RING_ZIGZAG,
        .layout = USP_LAYOUT_ULYSSES_INNER, .seed = 1234,
    };
    return c;
}

static const char *dtype_names[] = {"fp64", "fp32", "fp16", "bf16"};
static const char *ring_impl_names[] = {"basic", "zigzag", "stripe", "allgather", "balanced"};
static const char *layout_names[] = {"ulysses-inner", "ring-inner"};

const char *usp_dtype_name(usp_dtype d) { return dtype_names[d]; }
const char *usp_ring_impl_name(usp_ring_impl r) { return ring_impl_names[r]; }
const char *usp_layout_name(usp_layout l) { return layout_names[l]; }

size_t usp_dtype_size(usp_dtype d) {
    static const size_t sizes[] = {8, 4, 2, 2};
    return sizes[d];
}

usp_status usp_parse_dtype(const char *s, usp_dtype *out) {
    static const struct { const char *name; usp_dtype d; } names[] = {
        {"fp64", USP_F64}, {"f64", USP_F64}, {"float64", USP_F64}, {"double", USP_F64},
        {"fp32", USP_F32}, {"f32", USP_F32}, {"float32", USP_F32}, {"float", USP_F32},
        {"fp16", USP_F16}, {"f16", USP_F16}, {"float16", USP_F16}, {"half", USP_F16},
        {"bf16", USP_BF16}, {"bfloat16", USP_BF16},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcasecmp(s, names[i].name) == 0) { *out = names[i].d; return USP_OK; }
    return usp_fail(USP_EINVAL, "unknown dtype '%s' (fp64, fp32, fp16, bf16)", s);
}

usp_status usp_parse_ring_impl(const char *s, usp_ring_impl *out) {
    for (int i = 0; i < USP_RING_IMPL_COUNT; i++)
        if (strcasecmp(s, ring_impl_names[i]) == 0) { *out = (usp_ring_impl)i; return USP_OK; }
    return usp_fail(USP_EINVAL, "unknown ring_impl '%s' (basic, zigzag, stripe, allgather, balanced)", s);
}

const char *usp_wire_name(usp_wire w) { return w == USP_WIRE_FP32 ? "fp32" : "dtype"; }

usp_status usp_parse_wire(const char *s, usp_wire *out) {
    if (strcasecmp(s, "dtype") == 0) { *out = USP_WIRE_DTYPE; return USP_OK; }
    if (!strcasecmp(s, "fp32") || !strcasecmp(s, "f32") || !strcasecmp(s, "float32")) {
        *out = USP_WIRE_FP32;
        return USP_OK;
    }
    return usp_fail(USP_EINVAL, "unknown wire '%s' (dtype, fp32)", s);
}

usp_dtype usp_wire_dtype(const usp_config *c) {
    if (c->dtype == USP_F64) return USP_F64;
    return usp_dtype_size(c->dtype) == 2 && c->wire == USP_WIRE_DTYPE ? c->dtype : USP_F32;
}

usp_status usp_parse_layout(const char *s, usp_layout *out) {
    for (int i = 0; i < 2; i++)
        if (strcasecmp(s, layout_names[i]) == 0) { *out = (usp_layout)i; return USP_OK; }
    return usp_fail(USP_EINVAL, "unknown layout '%s' (ulysses-inner, ring-inner)", s);
}

void usp_config_describe(const usp_config *c, char *buf, size_t n) {
    int len = snprintf(buf, n,
             "B=%d L=%d H=%d Hkv=%d D=%d %s %s scale=%.6g ulysses=%d ring=%d %s %s seed=%llu%s%s%s",
             c->batch, c->seq, c->heads, c->kv_heads, c->head_dim,
             c->causal ? "causal" : "non-causal", usp_dtype_name(c->dtype), usp_scale(c),
             c->ulysses, c->ring, usp_ring_impl_name(c->ring_impl),
             usp_layout_name(c->layout), (unsigned long long)c->seed,
             usp_dtype_size(c->dtype) == 2 && c->wire == USP_WIRE_FP32 ? " wire=fp32" : "",
             c->contiguous ? " contiguous" : "", c->dkv_serial ? " dkv-serial" : "");
    if (c->mask && len >= 0 && (size_t)len < n)
        snprintf(buf + len, n - (size_t)len, " mask: %s", usp_mask_describe(c->mask));
}

/* The problem itself, independent of sharding. */
static usp_status validate_problem(const usp_config *c) {
    if (c->batch < 1) return usp_fail(USP_EINVAL, "batch %d must be >= 1", c->batch);
    if (c->seq < 1) return usp_fail(USP_EINVAL, "seq %d must be >= 1", c->seq);
    if (c->heads < 1) return usp_fail(USP_EINVAL, "heads %d must be >= 1", c->heads);
    if (c->kv_heads < 1) return usp_fail(USP_EINVAL, "kv_heads %d must be >= 1", c->kv_heads);
    if (c->head_dim < 1 || c->head_dim > 256)
        return usp_fail(USP_EINVAL, "head_dim %d is outside 1..256", c->head_dim);
    if (c->heads % c->kv_heads != 0)
        return usp_fail(USP_EINVAL, "heads %d is not divisible by kv_heads %d (GQA needs H %% Hkv == 0)",
                        c->heads, c->kv_heads);
    if (!(c->scale >= 0) || c->scale > 1e6)
        return usp_fail(USP_EINVAL, "scale %g must be > 0 (or 0 for 1/sqrt(head_dim))", c->scale);
    if ((unsigned)c->dtype > USP_BF16) return usp_fail(USP_EINVAL, "unknown dtype %d", (int)c->dtype);
    double elems = (double)c->batch * c->seq * c->heads * c->head_dim;
    if (elems > 4e12)
        return usp_fail(USP_EINVAL, "batch*seq*heads*head_dim = %.3g elements is too large", elems);
    return USP_OK;
}

/* Token counts each layout needs to split evenly. */
static usp_status validate_tokens(const usp_config *c) {
    int world = c->ulysses * c->ring;
    const char *impl = usp_ring_impl_name(c->ring_impl);
    int balanced = c->ring_impl == USP_RING_ZIGZAG ||
                   (c->ring_impl == USP_RING_ALLGATHER && c->causal && !c->mask);
    if (balanced) {
        long need = 2L * c->ring * c->ulysses;
        if (c->seq % need != 0)
            return usp_fail(USP_EINVAL, "seq %d is not divisible by 2*ring*ulysses = %ld (%s)",
                            c->seq, need, impl);
    } else if (c->seq % world != 0) {
        return usp_fail(USP_EINVAL, "seq %d is not divisible by ulysses*ring = %d (%s)",
                        c->seq, world, impl);
    }
    if ((c->ring_impl == USP_RING_ZIGZAG || c->ring_impl == USP_RING_STRIPE) && !c->causal && !c->mask)
        return usp_fail(USP_EINVAL, "ring_impl %s balances causal work only; use basic or "
                        "allgather for non-causal attention", impl);
    return USP_OK;
}

/* A mask must describe this problem's sequence and batch. */
static usp_status validate_mask(const usp_config *c) {
    if (!c->mask) {
        if (c->ring_impl == USP_RING_BALANCED)
            return usp_fail(USP_EINVAL, "ring_impl balanced dispatches the work of a mask "
                            "(--seqlens, --seqlens-file, --window or --mask)");
        return USP_OK;
    }
    if (usp_mask_seq(c->mask) != c->seq)
        return usp_fail(USP_EINVAL, "the mask covers %ld tokens but seq is %d", usp_mask_seq(c->mask), c->seq);
    int lists = usp_mask_lists(c->mask);
    if (lists != 1 && lists != c->batch)
        return usp_fail(USP_EINVAL, "the mask has %d per-element lists but batch is %d", lists, c->batch);
    return USP_OK;
}

/* Any head count splits over the ulysses ranks (unevenly when U does not
 * divide it, usp/layout.h) as long as every rank gets a query head. */
static usp_status validate_heads(const usp_config *c) {
    if (c->heads < c->ulysses)
        return usp_fail(USP_EINVAL, "heads %d < ulysses %d: ulysses rank %d would hold no query head",
                        c->heads, c->ulysses, c->heads);
    return USP_OK;
}

usp_status usp_config_validate(const usp_config *c) {
    USP_TRY(validate_problem(c));
    if (c->ulysses < 1) return usp_fail(USP_EINVAL, "ulysses %d must be >= 1", c->ulysses);
    if (c->ring < 1) return usp_fail(USP_EINVAL, "ring %d must be >= 1", c->ring);
    if ((long)c->ulysses * c->ring > 65536)
        return usp_fail(USP_EINVAL, "ulysses*ring = %ld ranks is more than 65536",
                        (long)c->ulysses * c->ring);
    if ((unsigned)c->ring_impl > USP_RING_BALANCED)
        return usp_fail(USP_EINVAL, "unknown ring_impl %d", (int)c->ring_impl);
    if ((unsigned)c->layout > USP_LAYOUT_RING_INNER)
        return usp_fail(USP_EINVAL, "unknown layout %d", (int)c->layout);
    if ((unsigned)c->wire > USP_WIRE_FP32) return usp_fail(USP_EINVAL, "unknown wire %d", (int)c->wire);
    if (c->contiguous != 0 && c->contiguous != 1)
        return usp_fail(USP_EINVAL, "contiguous %d must be 0 or 1", c->contiguous);
    if (c->contiguous && (c->ring_impl != USP_RING_ALLGATHER || !c->mask))
        return usp_fail(USP_EINVAL, "contiguous chunks are a placement of allgather with a mask");
    if (c->dkv_serial != 0 && c->dkv_serial != 1)
        return usp_fail(USP_EINVAL, "dkv_serial %d must be 0 or 1", c->dkv_serial);
    USP_TRY(validate_heads(c));
    USP_TRY(validate_mask(c));
    USP_TRY(validate_tokens(c));
    if (c->mask && usp_token_layout(c) == USP_RING_BALANCED && !usp_dispatch_tokens(c))
        return USP_EINTERNAL; /* out of memory, reason set */
    return USP_OK;
}
