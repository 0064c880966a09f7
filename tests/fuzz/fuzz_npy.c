/* fuzz_npy: the .npy reader (core/npy.c) on any bytes: refuses or reads,
 * never crashes, leaks or reads out of bounds. */
#include "fuzz_util.h"
#include "usp/npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    usp_npy a;
    if (usp_npy_read_any(fuzz_file(data, size, ".npy"), &a) == USP_OK) {
        /* touch every element the header promised */
        volatile double sum = 0;
        long n = 1;
        for (int i = 0; i < a.ndim; i++) n *= a.shape[i];
        for (long i = 0; i < n; i++) sum += a.data[i];
        (void)sum;
        usp_npy_free(&a);
    }
    return 0;
}
