/* usp trace: compare two traces of one schedule step by step (diff), or
 * draw one or two as a timeline (svg). */
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "usp/json.h"
#include "usp/trace_read.h"
#include "usp/trace_tools.h"

#define TRACE_DEFAULT_TOP 10

static void help(void) {
    printf("usage: usp trace diff A.json B.json [--top N] [--json]\n"
               "       usp trace svg A.json [B.json] -o FILE.svg [--title T] [--json]\n\n"
               "Traces are what `usp run --trace FILE` (and every other executor) writes.\n\n"
               "  diff   matches the steps of two traces of the same schedule (by rank and\n"
               "         step index, else by rank, name and occurrence) and prints the\n"
               "         steps whose duration differs most, the time by step kind and\n"
               "         stream, and the makespans. Traces of different schedules are\n"
               "         refused.\n"
               "  svg    draws a timeline: a lane per rank and stream, a rectangle per\n"
               "         step coloured by kind; with two traces, A above B on one scale.\n\n"
               "usp trace diff --help and usp trace svg --help list their options.\n");
}

static void help_diff(void) {
    printf("usage: usp trace diff A.json B.json [--top N] [--json]\n\n"
           "Compares the steps of two traces of the same schedule. Differences are\n"
           "B - A, in microseconds and in percent of A.\n\n"
           "  --top N    how many of the most different steps to list (default %d)\n"
           "  --json     one JSON object instead of the text report\n",
           TRACE_DEFAULT_TOP);
}

static void help_svg(void) {
    printf("usage: usp trace svg A.json [B.json] -o FILE.svg [--title T] [--json]\n\n"
           "Writes an SVG timeline: one lane per rank and stream (compute, comm), one\n"
           "rectangle per step coloured by its kind, time in ms. With two traces, A is\n"
           "drawn above B on the same time scale. Shows at most %d ranks per trace.\n\n"
           "  -o FILE    the SVG file to write ('-' for standard output)\n"
           "  --title T  the title (default: the configuration of A)\n"
           "  --json     after writing FILE.svg, one JSON object on standard output: the\n"
           "             file, and per trace its path, executor, events, ranks, first\n"
           "             start and last end (us); needs -o FILE (not '-')\n",
           USP_TRACE_SVG_MAX_RANKS);
}

/* Reads a trace; a file that holds no step at all is refused too. */
static int load_trace(const char *path, usp_trace *t) {
    usp_status st = usp_trace_read(path, t);
    if (st != USP_OK) return usp_cli_report("trace", st);
    if (t->count == 0) {
        usp_trace_free(t);
        return usp_cli_bad_input("trace", "%s: no step events (empty trace)", path);
    }
    return 0;
}

static int load_traces(char **paths, int count, usp_trace *traces) {
    for (int i = 0; i < count; i++) {
        int rc = load_trace(paths[i], &traces[i]);
        if (rc != 0) {
            while (i-- > 0) usp_trace_free(&traces[i]);
            return rc;
        }
    }
    return 0;
}

static int run_diff(char **paths, long top, int json) {
    usp_trace traces[2];
    int rc = load_traces(paths, 2, traces);
    if (rc != 0) return rc;
    usp_trace_diff d;
    usp_status st = usp_trace_diff_compute(&traces[0], &traces[1], &d);
    if (st == USP_OK) {
        if (json) usp_trace_diff_print_json(&d, paths[0], paths[1], top, stdout);
        else usp_trace_diff_print(&d, paths[0], paths[1], top, stdout);
        usp_trace_diff_free(&d);
    } else {
        usp_error_prefix("%s vs %s: ", paths[0], paths[1]);
        rc = usp_cli_report("trace", st);
    }
    usp_trace_free(&traces[0]);
    usp_trace_free(&traces[1]);
    return rc;
}

static int trace_diff(int argc, char **argv) {
    enum { OPT_TOP = USP_OPT_CMD_FIRST, OPT_JSON, OPT_HELP };
    static const struct option opts[] = {
        {"top", required_argument, 0, OPT_TOP},
        {"json", no_argument, 0, OPT_JSON},
        {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0}};
    long top = TRACE_DEFAULT_TOP;
    int json = 0, opt;
    optind = 1;
    while ((opt = usp_cli_getopt("trace", "trace diff", argc, argv, "", opts)) != -1) {
        switch (opt) {
        case OPT_TOP:
            if (usp_parse_int(optarg, 0, 1L << 30, &top) != 0)
                return usp_cli_bad_input("trace", "--top '%s' is not a count", optarg);
            break;
        case OPT_JSON: json = 1; break;
        case OPT_HELP: help_diff(); return 0;
        default: return 2; /* refused by usp_cli_getopt */
        }
    }
    if (argc - optind != 2)
        return usp_cli_bad_input("trace", "diff takes two traces, A.json and B.json, got %d",
                                 argc - optind);
    return run_diff(argv + optind, top, json);
}

static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash && slash[1] ? slash + 1 : path;
}

/* What --json says about a drawn trace. */
static void print_svg_json(char **paths, const usp_trace *traces, int count, const char *out) {
    printf("{\"svg\": ");
    usp_json_write_string(stdout, out);
    printf(", \"traces\": [");
    for (int i = 0; i < count; i++) {
        const usp_trace *t = &traces[i];
        double first = t->events[0].start_us, last = first;
        int ranks = 0;
        for (long e = 0; e < t->count; e++) {
            if (t->events[e].start_us < first) first = t->events[e].start_us;
            if (t->events[e].start_us + t->events[e].dur_us > last) last = t->events[e].start_us + t->events[e].dur_us;
            if (t->events[e].rank + 1 > ranks) ranks = t->events[e].rank + 1;
        }
        printf("%s{\"path\": ", i ? ", " : "");
        usp_json_write_string(stdout, paths[i]);
        printf(", \"executor\": ");
        usp_json_write_string(stdout, t->executor);
        printf(", \"events\": %ld, \"ranks\": %d, \"first_start_us\": ", t->count, ranks);
        usp_json_write_number(stdout, first);
        printf(", \"last_end_us\": ");
        usp_json_write_number(stdout, last);
        printf("}");
    }
    printf("]}\n");
}

static int run_svg(char **paths, int count, const char *out, const char *title, int json) {
    usp_trace traces[USP_TRACE_SVG_MAX_TRACES];
    int rc = load_traces(paths, count, traces);
    if (rc != 0) return rc;
    usp_trace_svg_input inputs[USP_TRACE_SVG_MAX_TRACES];
    for (int i = 0; i < count; i++) inputs[i] = (usp_trace_svg_input){&traces[i], base_name(paths[i])};
    usp_status st = !strcmp(out, "-") ? usp_trace_svg_write(inputs, count, title, stdout)
                                      : usp_trace_svg_save(inputs, count, title, out);
    if (st != USP_OK) rc = usp_cli_report("trace", st);
    else if (json) print_svg_json(paths, traces, count, out);
    for (int i = 0; i < count; i++) usp_trace_free(&traces[i]);
    return rc;
}

static int trace_svg(int argc, char **argv) {
    enum { OPT_TITLE = USP_OPT_CMD_FIRST, OPT_HELP, OPT_JSON };
    static const struct option opts[] = {
        {"output", required_argument, 0, 'o'},
        {"title", required_argument, 0, OPT_TITLE},
        {"json", no_argument, 0, OPT_JSON},
        {"help", no_argument, 0, OPT_HELP},
        {0, 0, 0, 0}};
    const char *out = NULL, *title = NULL;
    int opt, json = 0;
    optind = 1;
    while ((opt = usp_cli_getopt("trace", "trace svg", argc, argv, "o:", opts)) != -1) {
        switch (opt) {
        case 'o': out = optarg; break;
        case OPT_TITLE: title = optarg; break;
        case OPT_JSON: json = 1; break;
        case OPT_HELP: help_svg(); return 0;
        default: return 2; /* refused by usp_cli_getopt */
        }
    }
    int count = argc - optind;
    if (count < 1 || count > USP_TRACE_SVG_MAX_TRACES)
        return usp_cli_bad_input("trace", "svg takes one or two traces, got %d", count);
    if (!out) return usp_cli_bad_input("trace", "svg needs -o FILE.svg");
    if (json && !strcmp(out, "-"))
        return usp_cli_bad_input("trace", "svg --json needs -o FILE.svg: standard output carries the JSON");
    return run_svg(argv + optind, count, out, title, json);
}

int cmd_trace(int argc, char **argv) {
    if (argc < 2) return usp_cli_bad_input("trace", "missing verb: diff or svg (usp trace --help)");
    const char *verb = argv[1];
    if (!strcmp(verb, "--help") || !strcmp(verb, "-h") || !strcmp(verb, "help")) {
        help();
        return 0;
    }
    if (!strcmp(verb, "diff")) return trace_diff(argc - 1, argv + 1);
    if (!strcmp(verb, "svg")) return trace_svg(argc - 1, argv + 1);
    return usp_cli_bad_input("trace", "unknown verb '%s' (diff or svg; usp trace --help)", verb);
}
