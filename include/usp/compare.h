/* usp/compare.h: how far an output is from the fp64 reference.
 *
 * Two errors per tensor, over the finite entries of ref:
 *   rel       = ||x - ref||_2 / ||ref||_2            (norm-wise)
 *   elem_rel  = max_i |x_i - ref_i| / max_i |ref_i|  (element-wise, relative to
 *                                                    the tensor's scale)
 * and a tensor passes when both are within their tolerance. The norm-wise
 * error averages: one wrong element among N weighs 1/sqrt(N) of what it
 * weighs element-wise, so a single bad value (a lost block row, a stale
 * element) hides in it; the element-wise error catches it.
 * Entries where ref is -inf (LSE of a row that sees no key) must be -inf in
 * x too; any NaN in x fails. Where ref is all zero the errors are absolute. */
#ifndef USP_COMPARE_H
#define USP_COMPARE_H

#include "usp/config.h"

/* Norm-wise relative-error tolerances against the fp64 reference, by dtype
 * of the run. fp64: a different summation order costs a few ulps per merge;
 * 1e-12 leaves three orders of magnitude. fp32: one rounding per operation
 * at 6e-8 over sums of a few thousand terms stays below 1e-5. fp16/bf16: the
 * GPU kernels' bars (forward; backward is twice as loose). */
#define USP_TOL_F64 1e-12
#define USP_TOL_F32 1e-5
#define USP_TOL_F16 2e-3
#define USP_TOL_BF16 1e-2

/* Element-wise tolerances: USP_ELEM_TOL_FACTOR times the norm-wise one.
 * When the error is spread like the values (rounding), the largest error
 * over the largest value is about the norm-wise error: both maxima are
 * about sqrt(2 ln N) times their RMS (4-5 for N = 1e4..1e8), so 4x leaves
 * headroom for an unlucky element; measured fp64 runs sit at 1e-16..1e-15
 * element-wise against 4e-12. One wrong element of size d on a tensor of
 * N elements moves elem_rel by d / max|ref| but rel only by about
 * d / (sqrt(N) rms(ref)). */
#define USP_ELEM_TOL_FACTOR 4.0
#define USP_ELEM_TOL_F64 (USP_ELEM_TOL_FACTOR * USP_TOL_F64)
#define USP_ELEM_TOL_F32 (USP_ELEM_TOL_FACTOR * USP_TOL_F32)
#define USP_ELEM_TOL_F16 (USP_ELEM_TOL_FACTOR * USP_TOL_F16)
#define USP_ELEM_TOL_BF16 (USP_ELEM_TOL_FACTOR * USP_TOL_BF16)

typedef struct {
    double max_abs;      /* max |x - ref| */
    double rel;          /* norm-wise relative error */
    double elem_rel;     /* max |x - ref| / max |ref| */
    long nan_count, inf_mismatch;
    int pass;            /* no NaN, no -inf mismatch, rel <= tol, elem_rel <= elem_tol */
} usp_error_stats;

/* Norm-wise tolerance of a tensor of a run in `dtype` (backward tensors: dQ, dK, dV). */
double usp_tolerance(usp_dtype dtype, int backward_tensor);
/* Element-wise tolerance of the same tensor. */
double usp_elem_tolerance(usp_dtype dtype, int backward_tensor);

/* Both errors, judged against tol (norm-wise) and elem_tol (element-wise). */
usp_error_stats usp_compare2(const double *x, const double *ref, long n, double tol, double elem_tol);
/* The same with elem_tol = USP_ELEM_TOL_FACTOR * tol. */
usp_error_stats usp_compare(const double *x, const double *ref, long n, double tol);

#endif
