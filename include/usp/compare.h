/* usp/compare.h: how far an output is from the fp64 reference.
 *
 * rel = ||x - ref||_2 / ||ref||_2 over the finite entries of ref; entries
 * where ref is -inf (LSE of a row that sees no key) must be -inf in x too;
 * any NaN in x fails. */
#ifndef USP_COMPARE_H
#define USP_COMPARE_H

#include "usp/config.h"

/* Relative-error tolerances against the fp64 reference, by dtype of the run.
 * fp64: a different summation order costs a few ulps per merge; 1e-12 leaves
 * three orders of magnitude. fp32: one rounding per operation at 6e-8 over
 * sums of a few thousand terms stays below 1e-5. fp16/bf16: the GPU kernels'
 * bars (forward; backward is twice as loose). */
#define USP_TOL_F64 1e-12
#define USP_TOL_F32 1e-5
#define USP_TOL_F16 2e-3
#define USP_TOL_BF16 1e-2

typedef struct {
    double max_abs, rel;
    long nan_count, inf_mismatch;
    int pass;
} usp_error_stats;

double usp_tolerance(usp_dtype dtype, int backward_tensor);
usp_error_stats usp_compare(const double *x, const double *ref, long n, double tol);

#endif
