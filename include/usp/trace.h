/* usp/trace.h: one trace format for every executor.
 *
 * One event per executed step and rank: start and duration in microseconds,
 * its stream, bytes and FLOPs. Written as Chrome trace-event JSON (opens in
 * Perfetto and chrome://tracing): a process per rank, a thread per stream. */
#ifndef USP_TRACE_H
#define USP_TRACE_H

#include "usp/schedule.h"

typedef struct {
    int rank, step;
    usp_stream stream;
    usp_step_kind kind;
    double start_us, dur_us;
    double bytes, flops;
    char name[40];
} usp_trace_event;

typedef struct {
    usp_trace_event *events;
    long count, cap;
    char executor[16];      /* "ref", "sim", "gpu" */
    char config[256];       /* usp_config_describe() */
} usp_trace;

void usp_trace_init(usp_trace *t, const char *executor, const usp_config *cfg);
usp_status usp_trace_add(usp_trace *t, int rank, int step, const usp_step *s,
                         double start_us, double dur_us);
/* Events sorted by (rank, start, step) so the same run gives the same bytes. */
usp_status usp_trace_write(const usp_trace *t, const char *path);
void usp_trace_free(usp_trace *t);

#endif
