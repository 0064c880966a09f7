/* fuzz_hostmap: host maps (sim/engine/execute.c) from any bytes, for a world
 * of 1 to 64 ranks chosen by the first byte: refused (too few names, a host
 * named twice) or accepted, never a crash. */
#include "fuzz_util.h"
#include "usp/sim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    usp_config c = usp_config_default();
    c.ulysses = 1 + (data[0] & 7);
    c.ring = 1 + ((data[0] >> 3) & 7);
    usp_sim_options o = {0};
    o.hostmap = fuzz_file(data + 1, size - 1, ".txt");
    usp_sim_check_options(&o, &c);
    return 0;
}
