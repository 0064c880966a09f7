/* trace.c: executed steps as Chrome trace-event JSON, written and read back.
 *
 * One process per rank ("rank N"), two threads per process (tid 0 "compute",
 * tid 1 "comm"), one complete event ("ph": "X") per executed step; each rank's
 * names come just before its events, so a trace can be streamed rank by rank
 * (usp_trace_stream_to) with the bytes usp_trace_write gives. The output
 * is a pure function of the events: they are sorted on a full key, times are
 * printed with a fixed "%.3f" (nanosecond resolution) and other numbers in
 * their shortest exact form, so the same run gives the same bytes and traces
 * of two executors can be diffed line by line. */
#define _POSIX_C_SOURCE 200809L /* strdup */
#include "usp/trace.h"
#include "usp/trace_read.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "usp/fileio.h"
#include "usp/json.h"

/* ---------- building ---------- */

void usp_trace_init(usp_trace *t, const char *executor, const usp_config *cfg) {
    memset(t, 0, sizeof *t);
    snprintf(t->executor, sizeof t->executor, "%s", executor ? executor : "");
    if (cfg) usp_config_describe(cfg, t->config, sizeof t->config);
}

static usp_status reserve_event(usp_trace *t) {
    if (t->count < t->cap) return USP_OK;
    long cap = t->cap ? 2 * t->cap : 256;
    usp_trace_event *events = realloc(t->events, (size_t)cap * sizeof *events);
    if (!events) return usp_fail(USP_EINTERNAL, "out of memory growing a trace to %ld events", cap);
    t->events = events;
    t->cap = cap;
    return USP_OK;
}

static usp_status flush_rank(usp_trace *t);

static usp_status append_event(usp_trace *t, const usp_trace_event *e) {
    if (!isfinite(e->start_us) || !isfinite(e->dur_us) || e->dur_us < 0)
        return usp_fail(USP_EINTERNAL, "trace: step %d of rank %d has start %g us, "
                        "duration %g us", e->step, e->rank, e->start_us, e->dur_us);
    if (t->out && e->rank != t->out_rank) {
        if (e->rank < t->out_rank)
            return usp_fail(USP_EINTERNAL, "trace: an event of rank %d after those of rank %d "
                            "(a streamed trace takes ranks in order)", e->rank, t->out_rank);
        USP_TRY(flush_rank(t));
        t->out_rank = e->rank;
    }
    USP_TRY(reserve_event(t));
    t->events[t->count++] = *e;
    return USP_OK;
}

usp_status usp_trace_add(usp_trace *t, int rank, int step, const usp_step *s,
                         double start_us, double dur_us) {
    usp_trace_event e = {
        .rank = rank, .step = step, .stream = s->stream, .kind = s->kind,
        .start_us = start_us, .dur_us = dur_us,
        /* the traffic that bounds the step: link bytes for communication,
         * device-memory bytes for compute (0 for attention, which is FLOP-bound) */
        .bytes = s->stream == USP_STREAM_COMM ? s->bytes_sent : s->bytes_mem,
        .flops = s->flops,
    };
    snprintf(e.name, sizeof e.name, "%s", s->name);
    return append_event(t, &e);
}

void usp_trace_free(usp_trace *t) {
    if (!t) return;
    if (t->out) fclose(t->out);
    free(t->out_path);
    free(t->events);
    memset(t, 0, sizeof *t);
}

/* ---------- writing ---------- */

typedef struct {
    const usp_trace_event *event;
    long position;   /* in the trace, the last tie-breaker */
} sorted_event;

static int compare_events(const void *pa, const void *pb) {
    const sorted_event *a = pa, *b = pb;
    const usp_trace_event *x = a->event, *y = b->event;
    if (x->rank != y->rank) return x->rank < y->rank ? -1 : 1;
    if (x->start_us != y->start_us) return x->start_us < y->start_us ? -1 : 1;
    if (x->step != y->step) return x->step < y->step ? -1 : 1;
    if (x->stream != y->stream) return x->stream < y->stream ? -1 : 1;
    return a->position < b->position ? -1 : a->position > b->position;
}

static sorted_event *sort_events(const usp_trace *t) {
    sorted_event *order = usp_malloc((size_t)t->count * sizeof *order);
    if (!order) return NULL;
    for (long i = 0; i < t->count; i++) order[i] = (sorted_event){&t->events[i], i};
    if (t->count > 1) qsort(order, (size_t)t->count, sizeof *order, compare_events);
    return order;
}

/* Items of the event list are separated by ",\n"; `*first` is set while
 * none has been written. */
static void separate(FILE *f, int *first) {
    if (!*first) fputs(",\n", f);
    *first = 0;
}

static void write_metadata_event(FILE *f, const char *what, int pid, int tid,
                                 const char *label, int *first) {
    separate(f, first);
    fprintf(f, "{\"name\":\"%s\",\"ph\":\"M\",\"pid\":%d,\"tid\":%d,\"args\":{\"name\":",
            what, pid, tid);
    usp_json_write_string(f, label);
    fputs("}}", f);
}

/* Names a rank and its two streams. */
static void write_rank_names(FILE *f, int rank, int *first) {
    char label[32];
    snprintf(label, sizeof label, "rank %d", rank);
    write_metadata_event(f, "process_name", rank, 0, label, first);
    write_metadata_event(f, "thread_name", rank, USP_STREAM_COMPUTE, "compute", first);
    write_metadata_event(f, "thread_name", rank, USP_STREAM_COMM, "comm", first);
}

static void write_step_event(FILE *f, const usp_trace_event *e, int *first) {
    separate(f, first);
    fputs("{\"name\":", f);
    usp_json_write_string(f, e->name);
    fputs(",\"cat\":", f);
    usp_json_write_string(f, usp_step_kind_name(e->kind));
    fprintf(f, ",\"ph\":\"X\",\"pid\":%d,\"tid\":%d,\"ts\":%.3f,\"dur\":%.3f,"
            "\"args\":{\"step\":%d,\"bytes\":", e->rank, (int)e->stream, e->start_us,
            e->dur_us, e->step);
    usp_json_write_number(f, e->bytes);
    fputs(",\"flops\":", f);
    usp_json_write_number(f, e->flops);
    fputs("}}", f);
}

/* Sorted events: each rank's names, then its events. */
static void write_events(FILE *f, const sorted_event *order, long count, int *first) {
    for (long i = 0; i < count; i++) {
        if (i == 0 || order[i - 1].event->rank != order[i].event->rank)
            write_rank_names(f, order[i].event->rank, first);
        write_step_event(f, order[i].event, first);
    }
}

static void write_head(FILE *f) { fputs("{\"traceEvents\":[\n", f); }

static void write_tail(FILE *f, const usp_trace *t, int first) {
    fputs(first ? "],\n" : "\n],\n", f);
    fputs("\"displayTimeUnit\":\"ms\",\n\"otherData\":{\"executor\":", f);
    usp_json_write_string(f, t->executor);
    fputs(",\"config\":", f);
    usp_json_write_string(f, t->config);
    fputs("}}\n", f);
}

static void write_document(FILE *f, const usp_trace *t, const sorted_event *order) {
    int first = 1;
    write_head(f);
    write_events(f, order, t->count, &first);
    write_tail(f, t, first);
}

/* Streaming: the held events (one rank's) are sorted and written. */
static usp_status flush_rank(usp_trace *t) {
    if (!t->count) return USP_OK;
    sorted_event *order = sort_events(t);
    if (!order) return USP_EINTERNAL;
    int first = t->written == 0;
    write_events(t->out, order, t->count, &first);
    t->written += t->count;
    t->count = 0;
    free(order);
    return ferror(t->out) ? usp_fail(USP_EINTERNAL, "%s: %s", t->out_path, strerror(errno)) : USP_OK;
}

usp_status usp_trace_stream_to(usp_trace *t, const char *path) {
    if (!(t->out_path = strdup(path))) return usp_fail(USP_EINTERNAL, "out of memory");
    if (!(t->out = fopen(path, "w"))) return usp_fail(USP_EINTERNAL, "%s: %s", path, strerror(errno));
    t->out_rank = -1;
    write_head(t->out);
    return USP_OK;
}

usp_status usp_trace_finish(usp_trace *t) {
    if (!t->out) return USP_OK;
    USP_TRY(flush_rank(t));
    write_tail(t->out, t, t->written == 0);
    FILE *f = t->out;
    t->out = NULL;
    return usp_close_written(f, ferror(f), t->out_path);
}

usp_status usp_trace_write(const usp_trace *t, const char *path) {
    sorted_event *order = sort_events(t);
    if (!order) return USP_EINTERNAL;
    FILE *f = fopen(path, "w");
    if (!f) {
        free(order);
        return usp_fail(USP_EINTERNAL, "%s: %s", path, strerror(errno));
    }
    write_document(f, t, order);
    free(order);
    return usp_close_written(f, ferror(f), path);
}

/* ---------- reading ---------- */

static usp_status kind_from_name(const usp_json *ev, const char *name, usp_step_kind *out) {
    for (int k = 0; k < USP_STEP_KIND_COUNT; k++) {
        if (strcmp(usp_step_kind_name((usp_step_kind)k), name) == 0) {
            *out = (usp_step_kind)k;
            return USP_OK;
        }
    }
    return usp_fail(USP_EINVAL, "line %d: category '%s' is not a usp step kind", ev->line, name);
}

/* An optional number in args; absent means 0. */
static usp_status optional_number(const usp_json *args, const char *key, double *out) {
    *out = 0;
    if (!usp_json_get(args, key)) return USP_OK;
    return usp_json_get_number(args, key, out);
}

static usp_status read_ids(const usp_json *ev, usp_trace_event *e) {
    int tid = 0;
    USP_TRY(usp_json_get_int(ev, "pid", &e->rank));
    USP_TRY(usp_json_get_int(ev, "tid", &tid));
    if (e->rank < 0)
        return usp_fail(USP_EINVAL, "line %d: pid %d is not a rank", ev->line, e->rank);
    if (tid != USP_STREAM_COMPUTE && tid != USP_STREAM_COMM)
        return usp_fail(USP_EINVAL, "line %d: tid %d is not a usp stream (0 compute, 1 comm)",
                        ev->line, tid);
    e->stream = (usp_stream)tid;
    return USP_OK;
}

/* Times a trace may hold, microseconds: 1e15 us is 31 years. Beyond it a
 * timestamp is garbage, and differences of such numbers (spans, axis ticks)
 * lose every digit or overflow to infinity. */
#define USP_TRACE_MAX_US 1e15

static usp_status read_times(const usp_json *ev, usp_trace_event *e) {
    USP_TRY(usp_json_get_number(ev, "ts", &e->start_us));
    USP_TRY(usp_json_get_number(ev, "dur", &e->dur_us));
    if (e->dur_us < 0)
        return usp_fail(USP_EINVAL, "line %d: negative duration %g", ev->line, e->dur_us);
    if (fabs(e->start_us) > USP_TRACE_MAX_US || e->dur_us > USP_TRACE_MAX_US)
        return usp_fail(USP_EINVAL, "line %d: ts %g us, dur %g us: beyond %g us (31 years)", ev->line,
                        e->start_us, e->dur_us, USP_TRACE_MAX_US);
    return USP_OK;
}

static usp_status read_args(const usp_json *ev, usp_trace_event *e) {
    const usp_json *args = usp_json_get(ev, "args");
    if (!args || args->type != USP_JSON_OBJECT)
        return usp_fail(USP_EINVAL, "line %d: event '%s' has no \"args\" object with its step",
                        ev->line, e->name);
    USP_TRY(usp_json_get_int(args, "step", &e->step));
    USP_TRY(optional_number(args, "bytes", &e->bytes));
    return optional_number(args, "flops", &e->flops);
}

static usp_status read_complete_event(const usp_json *ev, usp_trace_event *e) {
    const char *name = NULL, *cat = NULL;
    memset(e, 0, sizeof *e);
    USP_TRY(usp_json_get_string(ev, "name", &name));
    snprintf(e->name, sizeof e->name, "%s", name);
    USP_TRY(usp_json_get_string(ev, "cat", &cat));
    USP_TRY(kind_from_name(ev, cat, &e->kind));
    USP_TRY(read_ids(ev, e));
    USP_TRY(read_times(ev, e));
    return read_args(ev, e);
}

static usp_status read_event(const usp_json *ev, usp_trace *t) {
    if (ev->type != USP_JSON_OBJECT)
        return usp_fail(USP_EINVAL, "line %d: trace event must be an object, found %s",
                        ev->line, usp_json_type_name(ev->type));
    const usp_json *phase = usp_json_get(ev, "ph");
    if (!phase || phase->type != USP_JSON_STRING)
        return usp_fail(USP_EINVAL, "line %d: trace event without a \"ph\" string", ev->line);
    if (strcmp(phase->string, "X") != 0) return USP_OK;
    usp_trace_event e;
    USP_TRY(read_complete_event(ev, &e));
    return append_event(t, &e);
}

static void read_other_data(const usp_json *root, usp_trace *t) {
    const usp_json *other = usp_json_get(root, "otherData");
    const usp_json *executor = usp_json_get(other, "executor");
    const usp_json *config = usp_json_get(other, "config");
    if (executor && executor->type == USP_JSON_STRING)
        snprintf(t->executor, sizeof t->executor, "%s", executor->string);
    if (config && config->type == USP_JSON_STRING)
        snprintf(t->config, sizeof t->config, "%s", config->string);
}

/* The object form keeps the events under "traceEvents"; the array form is them. */
static usp_status find_events(const usp_json *root, const usp_json **events) {
    *events = root->type == USP_JSON_ARRAY ? root : usp_json_get(root, "traceEvents");
    if (!*events || (*events)->type != USP_JSON_ARRAY)
        return usp_fail(USP_EINVAL, "line %d: no \"traceEvents\" array (not a Chrome trace)",
                        root->line);
    return USP_OK;
}

static usp_status read_document(const usp_json *root, usp_trace *t) {
    const usp_json *events = NULL;
    USP_TRY(find_events(root, &events));
    read_other_data(root, t);
    for (size_t i = 0; i < events->count; i++) USP_TRY(read_event(&events->items[i], t));
    return USP_OK;
}

usp_status usp_trace_read(const char *path, usp_trace *t) {
    usp_trace_init(t, "", NULL);
    usp_json *root = NULL;
    USP_TRY(usp_json_parse_file(path, &root));
    usp_status st = read_document(root, t);
    usp_json_free(root);
    if (st != USP_OK) {
        usp_trace_free(t);
        /* an internal failure from append_event already says what it was */
        if (st == USP_EINVAL) usp_error_prefix("%s: ", path);
    }
    return st;
}
