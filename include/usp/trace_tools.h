/* usp/trace_tools.h: comparing two traces of one schedule, and drawing them.
 *
 * Every executor writes the same trace (usp/trace.h), so a trace of the
 * simulator and one of the GPU can be matched step by step: which steps the
 * model gets wrong, which kinds of step, and by how much the whole run.
 *
 * Matching: by (rank, step index) when both traces carry unique,
 * non-negative step indices; otherwise by (rank, name, occurrence), the
 * occurrence counted in start order. Traces whose ranks or steps do not pair
 * up are refused (USP_EINVAL) with the first mismatch: comparing them would
 * compare two different schedules.
 *
 * Times are in microseconds. A relative difference is (B - A) / A in
 * percent, NAN when A is 0 and B is not (JSON null, "n/a" in text). */
#ifndef USP_TRACE_TOOLS_H
#define USP_TRACE_TOOLS_H

#include <stdio.h>
#include "usp/trace.h"

/* One step found in both traces. */
typedef struct {
    int rank, step;             /* step index of A */
    usp_stream stream;
    usp_step_kind kind;
    char name[40];
    double start_a_us, start_b_us;
    double dur_a_us, dur_b_us;
} usp_trace_match;

/* Sum of the durations of every step of one kind on one stream. */
typedef struct {
    usp_step_kind kind;
    usp_stream stream;
    long steps;                 /* in each trace: they pair up one to one */
    double a_us, b_us;
} usp_trace_total;

typedef struct {
    int ranks;                  /* distinct ranks, the same in both */
    int by_step_index;          /* 1: matched by (rank, step); 0: by (rank, name, occurrence) */
    long count;
    usp_trace_match *matches;   /* [count], largest |B - A| duration first */
    int ntotals;
    usp_trace_total totals[2 * USP_STEP_KIND_COUNT]; /* kinds present, by kind then stream */
    double makespan_a_us, makespan_b_us; /* latest end time of any rank */
    char executor_a[16], executor_b[16];
    char config_a[256], config_b[256];
} usp_trace_diff;

/* Matches the steps of `a` and `b` and fills *out (release with
 * usp_trace_diff_free). Refuses empty traces and traces of different
 * schedules (USP_EINVAL: "different schedules: ..."). */
usp_status usp_trace_diff_compute(const usp_trace *a, const usp_trace *b, usp_trace_diff *out);
void usp_trace_diff_free(usp_trace_diff *d);

/* (b - a) / a in percent; 0 when both are 0, NAN when only a is. */
double usp_trace_rel_pct(double a, double b);

/* The report: makespans, the `top` largest step differences, the totals by
 * kind and stream. label_a/label_b name the traces (their file names). */
void usp_trace_diff_print(const usp_trace_diff *d, const char *label_a, const char *label_b,
                          long top, FILE *f);
/* The same as one JSON object (one line per list entry). */
void usp_trace_diff_print_json(const usp_trace_diff *d, const char *label_a,
                               const char *label_b, long top, FILE *f);

/* ---------- timeline picture ---------- */

#define USP_TRACE_SVG_MAX_RANKS 64
#define USP_TRACE_SVG_MAX_TRACES 2

typedef struct {
    const usp_trace *trace;
    const char *label;          /* shown after the executor name: the file name */
} usp_trace_svg_input;

/* Writes an SVG 1.1 timeline of one or two traces, stacked on one time
 * scale: a lane per rank and stream, a rectangle per step coloured by its
 * kind, a legend and a time axis in ms. Shows the lowest
 * USP_TRACE_SVG_MAX_RANKS ranks of each trace and says so when there are
 * more. `title` may be NULL. The output is a pure function of the inputs. */
usp_status usp_trace_svg_write(const usp_trace_svg_input *inputs, int count, const char *title,
                               FILE *f);
/* The same into a file at `path`. */
usp_status usp_trace_svg_save(const usp_trace_svg_input *inputs, int count, const char *title,
                              const char *path);

#endif
