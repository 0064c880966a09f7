/* fuzz_nccl: published nccl-tests results (sim/network/compare.c, usp nccl
 * --compare) from any bytes: every table checked, refused with a reason or
 * read (usp_nccl_compare_check: the reading, without the simulations). */
#include "fuzz_util.h"
#include "usp/nccl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    usp_nccl_compare_check(fuzz_file(data, size, ".json"));
    return 0;
}
