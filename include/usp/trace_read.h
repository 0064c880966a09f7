/* usp/trace_read.h: reading a trace back from its Chrome trace-event JSON.
 *
 * Reads what usp_trace_write() writes, and Chrome traces from elsewhere as
 * long as their complete events carry what a usp trace needs. Both the
 * object form {"traceEvents": [...], ...} and the bare array form are read.
 *
 * Every complete event ("ph": "X") becomes one usp_trace_event:
 *   pid -> rank, tid -> stream (0 compute, 1 comm), cat -> step kind
 *   (usp_step_kind_name), name, ts and dur in microseconds,
 *   args.step -> step (required), args.bytes and args.flops (0 when absent).
 * Other phases (metadata "M", instants, counters, ...) and unknown fields are
 * skipped. "otherData" gives executor and config when present.
 * Events keep their file order. An event that lacks a required field or
 * holds one usp cannot represent is refused (USP_EINVAL) with the path, the
 * line and the field. */
#ifndef USP_TRACE_READ_H
#define USP_TRACE_READ_H

#include "usp/trace.h"

/* Fills *t, initialised here; release it with usp_trace_free. On failure *t
 * holds no events (and usp_trace_free on it is harmless). */
usp_status usp_trace_read(const char *path, usp_trace *t);

#endif
