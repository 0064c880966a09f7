/* fuzz_trace: Chrome traces (core/trace.c) from any bytes, then drawn
 * (core/trace_tools.c: the SVG timeline, once a hang on far timestamps) and
 * diffed against themselves. */
#include "fuzz_util.h"
#include "usp/trace_read.h"
#include "usp/trace_tools.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static FILE *sink;
    if (!sink && !(sink = fopen("/dev/null", "w"))) abort();
    usp_trace t;
    if (usp_trace_read(fuzz_file(data, size, ".json"), &t) != USP_OK) return 0;
    if (t.count > 0) {
        usp_trace_svg_input in = {&t, "fuzz"};
        usp_trace_svg_write(&in, 1, NULL, sink);
        usp_trace_diff d;
        if (usp_trace_diff_compute(&t, &t, &d) == USP_OK) usp_trace_diff_free(&d);
    }
    usp_trace_free(&t);
    return 0;
}
