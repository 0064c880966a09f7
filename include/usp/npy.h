/* usp/npy.h: NumPy .npy files in and out (format versions 1.0 to 3.0).
 *
 * Reads little-endian float64 ('<f8'), float32 ('<f4') and float16 ('<f2')
 * arrays in C order and hands them back as float64 (usp_npy_read_any also
 * int64 '<i8' and int32 '<i4' ones, for cumulative sequence lengths). Anything else (another
 * dtype, Fortran order, a shape other than expected, a truncated or garbled
 * file) is refused with USP_EINVAL and a one-line reason. */
#ifndef USP_NPY_H
#define USP_NPY_H

#include "usp/error.h"

#define USP_NPY_MAX_DIMS 8

typedef struct {
    int ndim;
    long shape[USP_NPY_MAX_DIMS];
    double *data;           /* malloc'd, product(shape) values */
} usp_npy;

usp_status usp_npy_read(const char *path, usp_npy *out);
usp_status usp_npy_read_any(const char *path, usp_npy *out);
void usp_npy_free(usp_npy *a);

/* Reads and checks the shape: "q.npy: shape (1, 100, 8, 64) but (1, 128, 8, 64) expected". */
usp_status usp_npy_read_shape(const char *path, int ndim, const long *shape, double **data);

/* Writes '<f8' (as_f32 = 0) or '<f4' (as_f32 = 1), C order, format 1.0. */
usp_status usp_npy_write(const char *path, int ndim, const long *shape,
                         const double *data, int as_f32);

#endif
