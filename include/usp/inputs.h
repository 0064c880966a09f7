/* usp/inputs.h: deterministic inputs any rank can make on its own.
 *
 * Value (seed, tensor, index) is a standard normal drawn from a counter-based
 * hash of the three, so a rank makes its shard without the whole tensor and
 * every executor sees the same numbers. `index` is the row-major index in the
 * global tensor: (B, L, H, D) for Q and dO, (B, L, Hkv, D) for K and V. */
#ifndef USP_INPUTS_H
#define USP_INPUTS_H

#include <stdint.h>
#include "usp/config.h"

typedef enum { USP_TENSOR_Q, USP_TENSOR_K, USP_TENSOR_V, USP_TENSOR_DO } usp_tensor_id;

double usp_input_value(uint64_t seed, usp_tensor_id t, uint64_t index);

/* Fills a whole global tensor (elems values). */
void usp_input_fill(uint64_t seed, usp_tensor_id t, double *x, long elems);

/* The global problem in fp64: q, k, v and dout, owned by the struct. */
typedef struct {
    double *q, *k, *v, *dout;
    long q_elems, kv_elems;   /* B*L*H*D and B*L*Hkv*D */
} usp_inputs;

/* Generated from cfg->seed, rounded to cfg->dtype (so the reference sees
 * exactly what the executors see), or read from DIR/q.npy k.npy v.npy
 * [do.npy] when dir is not NULL (do.npy generated when absent). */
usp_status usp_inputs_make(const usp_config *cfg, const char *dir, usp_inputs *out);
void usp_inputs_free(usp_inputs *in);

/* Rounds x in place to the precision of dtype (f64: nothing), to nearest even. */
void usp_round_to_dtype(usp_dtype dtype, double *x, long n);
/* The same for fp32 values (f64 and f32: nothing): what a GPU's conversion
 * to fp16 or bf16 and back to fp32 gives. */
void usp_round_to_dtype_f32(usp_dtype dtype, float *x, long n);

#endif
