/* usp/config.h: one attention problem and how it is sharded.
 *
 * A configuration names the global problem (batch, seq, heads, kv_heads,
 * head_dim, causal, scale, dtype), the 2-D mesh world = ulysses x ring, the
 * ring variant and the rank placement, and the seed of the generated inputs.
 * usp_config_validate() is the one place that decides whether it can run. */
#ifndef USP_CONFIG_H
#define USP_CONFIG_H

#include <stdint.h>
#include <stddef.h>
#include <math.h>
#include "usp/error.h"
#include "usp/mask.h"

typedef enum { USP_F64, USP_F32, USP_F16, USP_BF16 } usp_dtype;

typedef enum {
    USP_RING_BASIC,     /* contiguous chunks, K/V rotate around the ring */
    USP_RING_ZIGZAG,    /* ring rank r holds chunks r and 2R-1-r (causal balance) */
    USP_RING_STRIPE,    /* token t lives on ring rank t mod R (causal balance) */
    USP_RING_ALLGATHER, /* K/V all-gathered in the ring group (llama3-style) */
    USP_RING_BALANCED   /* as basic, tokens dispatched in chunks to balance the mask's work */
} usp_ring_impl;

typedef enum {
    USP_LAYOUT_ULYSSES_INNER, /* g = ring_rank * ulysses + ulysses_rank */
    USP_LAYOUT_RING_INNER     /* g = ulysses_rank * ring + ring_rank */
} usp_layout;

/* What the ulysses all-to-alls of O, dQ, dK, dV carry in a 16-bit run
 * (Q, K, V, dO always travel in the run's dtype, LSE in fp32). */
typedef enum {
    USP_WIRE_DTYPE,     /* the run's dtype: O, dQ, dK, dV rounded to it when packed */
    USP_WIRE_FP32       /* fp32, as the accumulators hold them */
} usp_wire;

typedef struct {
    int batch, seq, heads, kv_heads, head_dim;
    int causal;          /* 0 or 1; with a mask: inside each document */
    double scale;        /* softmax scale; 0 means 1/sqrt(head_dim) */
    usp_dtype dtype;
    int ulysses, ring;   /* world = ulysses * ring */
    usp_ring_impl ring_impl;
    usp_layout layout;
    uint64_t seed;
    /* NULL: one document, causal or full by `causal`. Otherwise which keys
     * each query sees (usp/mask.h), owned by the caller, seq tokens long. */
    const usp_mask *mask;
    usp_wire wire;       /* 16-bit runs only; fp32 and fp64 runs send their dtype */
    int contiguous;      /* 1: allgather with a mask keeps each ring rank's tokens one
                          * contiguous chunk (llama3's context parallel), not the balanced
                          * dispatch of the work */
    int dkv_serial;      /* 1: the backward ring without separate dK/dV accumulators, where
                          * each attention adds into the dK/dV the previous hop delivered and
                          * so waits for it (kept to re-simulate traces recorded with it) */
} usp_config;

/* batch 1, seq 4096, 8 heads (8 kv), D 64, causal, fp64, ulysses 2 x ring 2,
 * zigzag, ulysses-inner, seed 1234, wire in the dtype, dK/dV overlapped. */
usp_config usp_config_default(void);

/* USP_OK, or USP_EINVAL with a reason naming the constraint and the numbers,
 * e.g. "seq 1000 is not divisible by 2*ring*ulysses = 16 (zigzag)". */
usp_status usp_config_validate(const usp_config *cfg);

static inline int usp_world(const usp_config *c) { return c->ulysses * c->ring; }
static inline double usp_scale(const usp_config *c) {
    return c->scale > 0 ? c->scale : 1.0 / sqrt((double)c->head_dim);
}

/* Names <-> enums ("f64" "fp64" "float64"; "zigzag"; "ulysses-inner"). */
enum { USP_RING_IMPL_COUNT = USP_RING_BALANCED + 1 };
const char *usp_dtype_name(usp_dtype d);
const char *usp_ring_impl_name(usp_ring_impl r);
const char *usp_layout_name(usp_layout l);
usp_status usp_parse_dtype(const char *s, usp_dtype *out);
usp_status usp_parse_ring_impl(const char *s, usp_ring_impl *out);
usp_status usp_parse_layout(const char *s, usp_layout *out);
/* "dtype" (the run's) or "fp32" (also "f32", "float32"). */
const char *usp_wire_name(usp_wire w);
usp_status usp_parse_wire(const char *s, usp_wire *out);
/* The element type of the O, dQ, dK, dV all-to-all pieces: the dtype when it
 * is 16-bit and the wire is USP_WIRE_DTYPE, else fp32 (fp64 in fp64 runs). */
usp_dtype usp_wire_dtype(const usp_config *c);
size_t usp_dtype_size(usp_dtype d);

/* One line "B=1 L=4096 H=8 Hkv=8 D=64 causal fp64 ulysses=2 ring=2 zigzag ulysses-inner seed=1234",
 * " wire=fp32" (16-bit runs), " contiguous" and " dkv-serial" when set, and the mask when
 * there is one: " mask: 3 documents (..), causal". */
void usp_config_describe(const usp_config *c, char *buf, size_t n);

#endif
