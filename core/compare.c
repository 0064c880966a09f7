/* compare.c: error of an output against the fp64 reference (usp/compare.h). */
#include "usp/compare.h"

#include <math.h>

double usp_tolerance(usp_dtype dtype, int backward_tensor) {
    switch (dtype) {
    case USP_F64: return USP_TOL_F64;
    case USP_F32: return USP_TOL_F32;
    case USP_F16: return backward_tensor ? 2.5 * USP_TOL_F16 : USP_TOL_F16;
    default: return backward_tensor ? 2 * USP_TOL_BF16 : USP_TOL_BF16;
    }
}

double usp_elem_tolerance(usp_dtype dtype, int backward_tensor) {
    switch (dtype) {
    case USP_F64: return USP_ELEM_TOL_F64;
    case USP_F32: return USP_ELEM_TOL_F32;
    case USP_F16: return backward_tensor ? 2.5 * USP_ELEM_TOL_F16 : USP_ELEM_TOL_F16;
    default: return backward_tensor ? 2 * USP_ELEM_TOL_BF16 : USP_ELEM_TOL_BF16;
    }
}

usp_error_stats usp_compare2(const double *x, const double *ref, long n, double tol, double elem_tol) {
    usp_error_stats e = {0, 0, 0, 0, 0, 0};
    double diff2 = 0, ref2 = 0, ref_max = 0;
    for (long i = 0; i < n; i++) {
        if (isnan(x[i])) { e.nan_count++; continue; }
        if (isinf(ref[i]) || isinf(x[i])) {
            if (x[i] != ref[i]) e.inf_mismatch++;
            continue;
        }
        double d = x[i] - ref[i];
        diff2 += d * d;
        ref2 += ref[i] * ref[i];
        if (fabs(d) > e.max_abs) e.max_abs = fabs(d);
        if (fabs(ref[i]) > ref_max) ref_max = fabs(ref[i]);
    }
    e.rel = ref2 > 0 ? sqrt(diff2 / ref2) : sqrt(diff2);
    e.elem_rel = ref_max > 0 ? e.max_abs / ref_max : e.max_abs;
    e.pass = e.nan_count == 0 && e.inf_mismatch == 0 && e.rel <= tol && e.elem_rel <= elem_tol;
    return e;
}

usp_error_stats usp_compare(const double *x, const double *ref, long n, double tol) {
    return usp_compare2(x, ref, n, tol, USP_ELEM_TOL_FACTOR * tol);
}
