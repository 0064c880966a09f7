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

usp_error_stats usp_compare(const double *x, const double *ref, long n, double tol) {
    usp_error_stats e = {0, 0, 0, 0, 0};
    double diff2 = 0, ref2 = 0;
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
    }
    e.rel = ref2 > 0 ? sqrt(diff2 / ref2) : sqrt(diff2);
    e.pass = e.nan_count == 0 && e.inf_mismatch == 0 && e.rel <= tol;
    return e;
}
