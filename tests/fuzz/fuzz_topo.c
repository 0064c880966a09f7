/* fuzz_topo: real servers' topologies (sim/network/from_topo.c): the text
 * of `nvidia-smi topo -m` or an NCCL topology dump (XML), from any bytes;
 * the first byte picks which the file claims to be. Refused with a reason or
 * written as a platform, never a crash. */
#include "fuzz_util.h"
#include "usp/sim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static FILE *sink;
    if (!sink && !(sink = fopen("/dev/null", "w"))) abort();
    if (size < 1) return 0;
    usp_topo_options o;
    memset(&o, 0, sizeof o);
    o.pcie_gen = (data[0] & 1) ? 5 : 0;
    o.nodes = (data[0] >> 2) & 3;
    o.p2p_sys = (data[0] >> 4) & 1;
    const char *path = fuzz_file(data + 1, size - 1, (data[0] & 2) ? ".xml" : ".txt");
    usp_platform_from_topo(path, &o, sink);
    return 0;
}
