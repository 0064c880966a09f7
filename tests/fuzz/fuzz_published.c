/* fuzz_published: published tables (sim/validate/published.c, usp validate --published)
 * from any bytes: refused with a reason, or read with every row's configuration valid
 * or the row marked as one the simulator refuses; nothing is simulated here. */
#include "fuzz_util.h"
#include "usp/published.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    usp_pub_table t;
    if (usp_pub_table_read(fuzz_file(data, size, ".json"), &t) == USP_OK) {
        usp_pub_stats s;
        usp_pub_stats_make(&t, 0, &s); /* nothing predicted: no row counted */
        if (s.predicted != 0) abort();
        usp_pub_table_free(&t);
    }
    return 0;
}
