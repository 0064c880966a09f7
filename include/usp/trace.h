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
    /* streaming (usp_trace_stream_to): events arrive rank by rank, in
     * ascending rank order; each rank's are written when the next rank
     * starts, so only one rank's events are held */
    FILE *out;
    char *out_path;
    long written;           /* events written so far */
    int out_rank;           /* rank of the held events, -1 none */
} usp_trace;

void usp_trace_init(usp_trace *t, const char *executor, const usp_config *cfg);
usp_status usp_trace_add(usp_trace *t, int rank, int step, const usp_step *s,
                         double start_us, double dur_us);
/* Events sorted by (rank, start, step) so the same run gives the same bytes. */
usp_status usp_trace_write(const usp_trace *t, const char *path);
/* Streams the trace to `path` instead: the same bytes as usp_trace_write,
 * for executors that add every event of rank 0, then of rank 1, ... (an
 * event of a rank already written is an error). usp_trace_finish writes
 * the rest and closes the file. */
usp_status usp_trace_stream_to(usp_trace *t, const char *path);
usp_status usp_trace_finish(usp_trace *t);
void usp_trace_free(usp_trace *t);

#endif
