/* fuzz_profile: device profiles (sim/device/profile.c) from any bytes:
 * refused with a reason or loaded with every figure in its physical range. */
#include "fuzz_util.h"
#include "usp/sim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    usp_profile_check(fuzz_file(data, size, ".json"));
    return 0;
}
