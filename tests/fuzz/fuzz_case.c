/* fuzz_case: measured-case sidecars (sim/validate/validate_case.c, what
 * usp validate reads) from any bytes: refused with a reason or read. */
#include "fuzz_util.h"
#include "usp/validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    usp_vcase c;
    memset(&c, 0, sizeof c);
    usp_vcase_read(fuzz_file(data, size, ".case.json"), &c);
    return 0;
}
