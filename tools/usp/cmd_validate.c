/* usp validate: the simulator's predictions against measured GPU runs.
 *
 *   usp validate --traces DIR [--check]          re-simulates every recorded case of DIR
 *   usp validate --gpus N --cases FILE --record DIR   runs the cases on the GPUs first
 *   usp validate --published [DIR]               re-predicts published measurements
 *
 * A recorded case is a GPU trace and its sidecar (usp/validate.h). Each is
 * re-simulated with its device profile and platform and compared phase by
 * phase; the summary keeps the calibration cases apart from the held-out
 * ones. With --check the exit code is 1 when a case's total misses its
 * recorded bound, or the held-out cases miss the acceptance bars below. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "cli.h"
#include "validate_published.h"
#include "usp/json.h"
#include "usp/validate.h"
#ifdef USP_HAVE_SIM
#include "usp/sim.h"
#endif
#ifdef USP_HAVE_GPU_EXEC
#include "../../gpu/calibrate/calibrate.h"
#endif

/* The acceptance bars of the held-out cases on the calibrated 2x H200
 * (traces/README.md): mean and largest |error| of the predicted total. */
#define HELD_OUT_MEAN_BOUND_PCT 5.0
#define HELD_OUT_MAX_BOUND_PCT 10.0
/* What a case line does not say: bf16, D = 128, and the bound a new case gets. */
#define CASE_DEFAULT_BOUND_PCT 10.0
#define CASE_DEFAULT_PROFILE "h200-calibrated"
#define CASE_DEFAULT_PLATFORM "../sim/platforms/h200x2-calibrated.xml"

enum { ROLE_ALL = -1 };

typedef struct {
    const char *traces, *cases_file, *record_dir, *profile, *platform, *predicted_dir, *published;
    const char *case_profile, *case_platform;
    int gpus, warmup, iters, check, json, verbose, role, quiet;
    double timeout_s;
} validate_options;

static void help(void) {
    printf("usage: usp validate --traces DIR [--check] [--json] [--role R] [--verbose]\n"
           "                    [--profile P] [--platform X] [--predicted-dir D]\n"
           "       usp validate --published [DIR] [--json] [--quiet] [--profile P] [--platform X]\n"
           "       usp validate --gpus N --cases FILE --record DIR [--warmup W] [--iters I]\n"
           "                    [--case-profile P] [--case-platform X] [--timeout S]\n\n"
           "Compares the simulator with measured GPU runs. Every recorded case of DIR, a\n"
           "sidecar <name>.case.json (configuration, role, profile, platform, bound) and\n"
           "the GPU trace it names, <name>.trace.json, is re-simulated, timing only, and\n"
           "compared phase by phase: fwd.a2a (forward pack, all-to-all, unpack), fwd.ring\n"
           "(the rest of the forward), bwd (total - forward) and total, with bwd.a2a and\n"
           "bwd.ring in --verbose and --json; each a2a/ring phase is the time the union\n"
           "of a rank's steps covers, the largest over ranks; the error is\n"
           "(predicted - measured) / measured. A case\n"
           "without a trace (\"trace\": null) is compared on fwd, bwd and total only.\n"
           "Calibration cases (used to fit the profile) and held-out cases are summarized\n"
           "apart.\n\n"
           "  --traces DIR        the recorded cases to re-simulate\n"
           "  --check             exit 1 when a case's |total error| exceeds its bound_pct, or\n"
           "                      the held-out cases' mean |error| exceeds %.0f%% or one exceeds %.0f%%\n"
           "  --role R            all (default), held-out or calibration\n"
           "  --profile P         re-simulate with this profile instead of the sidecars'\n"
           "  --platform X        re-simulate on this platform instead of the sidecars'\n"
           "  --predicted-dir D   write each simulated trace as D/<name>.sim.json\n"
           "  --verbose           measured and predicted ms of every phase\n"
           "  --json              one JSON object instead of the tables\n\n"
           "Published measurements (--published, default DIR %s): every table of\n"
           "DIR (one JSON file each: source, hardware, every row) re-predicted, timing only,\n"
           "on the table's platform and profile: each row measured vs predicted throughput\n"
           "and its error, and per table (and per sequence length) the mean and largest\n"
           "|error| and the Spearman rank correlation of predicted vs measured. These rows\n"
           "are held out: nothing is fitted to them (traces/README.md). A table's \"harness\"\n"
           "(yunchang-2024) makes a call last at least the host time of the operations its\n"
           "benchmark issues; a row's \"seq_run\" is the tokens its benchmark ran, and a\n"
           "\"kernel_only\" row (one GPU's flash_attn call) is its attention kernels alone. Where\n"
           "rows ran one program (a ring of one rank under several ring-variant columns),\n"
           "their measured spread is printed as the table's noise floor: the least error\n"
           "any prediction can have (--json: \"floor\").\n"
           "  --quiet             no progress line on stderr\n\n"
           "Recording (GPU executor builds): runs each case of FILE on N GPUs, writes\n"
           "DIR/<name>.trace.json (last timed run) and DIR/<name>.case.json (median times),\n"
           "then, where the simulator is built, validates DIR.\n"
           "  --gpus N            ranks to start on this machine\n"
           "  --cases FILE        one case a line: NAME ROLE [options]; ROLE is calibration or\n"
           "                      held-out; options are usp run's problem options plus\n"
           "                      --forward-only and --bound PCT (defaults: bf16, head dim 128,\n"
           "                      bound %.0f%%); '#' starts a comment\n"
           "  --record DIR        where the traces and sidecars go (created)\n"
           "  --warmup W          untimed runs per case (default 2)\n"
           "  --iters I           timed runs per case, median kept (default 5)\n"
           "  --case-profile P    the profile sidecars name (default %s)\n"
           "  --case-platform X   the platform sidecars name, relative to DIR\n"
           "                      (default %s)\n"
           "  --timeout S         a rank or step that takes longer fails (default 300)\n",
           HELD_OUT_MEAN_BOUND_PCT, HELD_OUT_MAX_BOUND_PCT, USP_PUBLISHED_DEFAULT_DIR, CASE_DEFAULT_BOUND_PCT,
           CASE_DEFAULT_PROFILE,
           CASE_DEFAULT_PLATFORM);
}

/* ------------------------------------------------------------ options */

enum {
    OPT_TRACES = USP_OPT_CMD_FIRST, OPT_CHECK, OPT_JSON, OPT_ROLE, OPT_PROFILE, OPT_PLATFORM, OPT_PREDICTED,
    OPT_VERBOSE, OPT_GPUS, OPT_CASES, OPT_RECORD, OPT_WARMUP, OPT_ITERS, OPT_CASE_PROFILE, OPT_CASE_PLATFORM,
    OPT_TIMEOUT, OPT_PUBLISHED, OPT_QUIET, OPT_HELP
};

static int int_arg(const char *name, const char *arg, long lo, long hi, int *out) {
    return usp_cli_int_option("validate", name, arg, lo, hi, out);
}

static int role_arg(const char *arg, int *role) {
    if (!strcmp(arg, "all")) *role = ROLE_ALL;
    else if (!strcmp(arg, "held-out")) *role = USP_VROLE_HELD_OUT;
    else if (!strcmp(arg, "calibration")) *role = USP_VROLE_CALIBRATION;
    else return usp_cli_bad_input("validate", "--role '%s': all, held-out or calibration", arg);
    return 0;
}

static int apply_option(int opt, const char *arg, void *ctx) {
    validate_options *o = ctx;
    switch (opt) {
    case OPT_TRACES: o->traces = arg; return 0;
    case OPT_CHECK: o->check = 1; return 0;
    case OPT_JSON: o->json = 1; return 0;
    case OPT_ROLE: return role_arg(arg, &o->role);
    case OPT_PROFILE: o->profile = arg; return 0;
    case OPT_PLATFORM: o->platform = arg; return 0;
    case OPT_PREDICTED: o->predicted_dir = arg; return 0;
    case OPT_VERBOSE: o->verbose = 1; return 0;
    case OPT_GPUS: return int_arg("gpus", arg, 2, 4096, &o->gpus);
    case OPT_CASES: o->cases_file = arg; return 0;
    case OPT_RECORD: o->record_dir = arg; return 0;
    case OPT_WARMUP: return int_arg("warmup", arg, 0, 100, &o->warmup);
    case OPT_ITERS: return int_arg("iters", arg, 1, 100, &o->iters);
    case OPT_CASE_PROFILE: o->case_profile = arg; return 0;
    case OPT_CASE_PLATFORM: o->case_platform = arg; return 0;
    case OPT_TIMEOUT: return usp_cli_seconds_option("validate", "timeout", arg, &o->timeout_s);
    case OPT_PUBLISHED: o->published = arg && *arg ? arg : USP_PUBLISHED_DEFAULT_DIR; return 0;
    case OPT_QUIET: o->quiet = 1; return 0;
    default: return usp_cli_bad_input("validate", "unknown option or missing value (usp validate --help)");
    }
}

static int check_modes(const validate_options *o) {
    int live = o->gpus || o->cases_file || o->record_dir;
    if (o->published && (live || o->traces))
        return usp_cli_bad_input("validate", "--published excludes --traces and --gpus/--cases/--record");
    if (o->published) return 0;
    if (live && o->traces) return usp_cli_bad_input("validate", "--traces and --gpus/--cases/--record exclude each other");
    if (!live && !o->traces) return usp_cli_bad_input("validate", "nothing to do: --traces DIR, or --gpus N --cases FILE --record DIR");
    if (live && (!o->gpus || !o->cases_file || !o->record_dir))
        return usp_cli_bad_input("validate", "recording needs --gpus N, --cases FILE and --record DIR");
    return 0;
}

/* 0: go on; -1: --help was printed; else the exit code. */
static int parse(int argc, char **argv, validate_options *o) {
    static const struct option opts[] = {
        {"traces", required_argument, 0, OPT_TRACES}, {"check", no_argument, 0, OPT_CHECK},
        {"json", no_argument, 0, OPT_JSON}, {"role", required_argument, 0, OPT_ROLE},
        {"profile", required_argument, 0, OPT_PROFILE}, {"platform", required_argument, 0, OPT_PLATFORM},
        {"predicted-dir", required_argument, 0, OPT_PREDICTED}, {"verbose", no_argument, 0, OPT_VERBOSE},
        {"gpus", required_argument, 0, OPT_GPUS}, {"cases", required_argument, 0, OPT_CASES},
        {"record", required_argument, 0, OPT_RECORD}, {"warmup", required_argument, 0, OPT_WARMUP},
        {"iters", required_argument, 0, OPT_ITERS}, {"case-profile", required_argument, 0, OPT_CASE_PROFILE},
        {"case-platform", required_argument, 0, OPT_CASE_PLATFORM}, {"timeout", required_argument, 0, OPT_TIMEOUT},
        {"published", optional_argument, 0, OPT_PUBLISHED}, {"quiet", no_argument, 0, OPT_QUIET},
        {"help", no_argument, 0, OPT_HELP}, {0, 0, 0, 0}};
    int rc = usp_cli_parse("validate", argc, argv, opts, OPT_HELP, help, apply_option, o);
    return rc ? rc : check_modes(o);
}

/* ------------------------------------------------------------ case files */

enum { CASE_OPT_FWD = USP_OPT_CMD_FIRST, CASE_OPT_BOUND };

static int valid_name(const char *s) {
    if (!*s || strlen(s) >= sizeof ((usp_vcase *)0)->name) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '-' ||
              *s == '_' || *s == '.'))
            return 0;
    return 1;
}

static void case_defaults(usp_vcase *c, const validate_options *o) {
    memset(c, 0, sizeof *c);
    c->cfg = usp_config_default();
    c->cfg.dtype = USP_BF16;
    c->cfg.head_dim = 128;
    c->cfg.kv_heads = 0;
    c->backward = 1;
    c->bound_pct = CASE_DEFAULT_BOUND_PCT;
    snprintf(c->profile_raw, sizeof c->profile_raw, "%s", o->case_profile);
    snprintf(c->platform_raw, sizeof c->platform_raw, "%s", o->case_platform);
}

/* The options of one case line (argv[0] is a placeholder). */
static int case_options(int argc, char **argv, usp_vcase *c, const char *where) {
    static const struct option opts[] = {USP_CLI_CONFIG_LONGOPTS, {"forward-only", no_argument, 0, CASE_OPT_FWD},
                                         {"bound", required_argument, 0, CASE_OPT_BOUND}, {0, 0, 0, 0}};
    int opt;
    optind = 0; /* glibc: start over with a new argv */
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int r = usp_cli_config_option("validate", opt, optarg, &c->cfg);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (opt == CASE_OPT_FWD) { c->backward = 0; continue; }
        if (opt == CASE_OPT_BOUND && !usp_parse_double(optarg, &c->bound_pct) && c->bound_pct > 0) continue;
        return usp_cli_bad_input("validate", "%s: bad option '%s'", where, argv[optind - 1]);
    }
    if (optind < argc) return usp_cli_bad_input("validate", "%s: unexpected '%s'", where, argv[optind]);
    if (usp_cli_config_finish("validate", &c->cfg)) return 2;
    if (usp_config_validate(&c->cfg) != USP_OK) return usp_cli_bad_input("validate", "%s: %s", where, usp_error());
    if (c->cfg.mask) /* a sidecar can carry a mask (usp/validate.h), the recorder does not write one yet */
        return usp_cli_bad_input("validate", "%s: cases with a mask are not recorded (write the sidecar's \"mask\" "
                                 "by hand)", where);
    return 0;
}

enum { MAX_CASE_WORDS = 64 };

static int parse_case_line(char *line, usp_vcase *c, const validate_options *o, const char *where) {
    char *words[MAX_CASE_WORDS + 1], *save = NULL;
    int n = 0;
    for (char *w = strtok_r(line, " \t\r\n", &save); w && n < MAX_CASE_WORDS; w = strtok_r(NULL, " \t\r\n", &save))
        words[n++] = w;
    if (n < 2) return usp_cli_bad_input("validate", "%s: a case is NAME ROLE [options]", where);
    case_defaults(c, o);
    if (!valid_name(words[0]))
        return usp_cli_bad_input("validate", "%s: name '%s' (letters, digits, '-', '_', '.')", where, words[0]);
    snprintf(c->name, sizeof c->name, "%s", words[0]);
    if (!strcmp(words[1], "calibration")) c->role = USP_VROLE_CALIBRATION;
    else if (!strcmp(words[1], "held-out")) c->role = USP_VROLE_HELD_OUT;
    else return usp_cli_bad_input("validate", "%s: role '%s' (calibration or held-out)", where, words[1]);
    words[1] = "case";
    words[n] = NULL;
    return case_options(n - 1, words + 1, c, where);
}

static int read_cases(const validate_options *o, usp_vcase **cases, int *count) {
    FILE *f = fopen(o->cases_file, "r");
    if (!f) return usp_cli_bad_input("validate", "%s: %s", o->cases_file, strerror(errno));
    char line[4096], where[600];
    int n = 0, cap = 0, rc = 0, lineno = 0;
    *cases = NULL;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "#")] = '\0';
        if (strspn(line, " \t\r\n") == strlen(line)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            usp_vcase *more = realloc(*cases, (size_t)cap * sizeof *more);
            if (!more) { rc = 1; break; }
            *cases = more;
        }
        snprintf(where, sizeof where, "%s:%d", o->cases_file, lineno);
        rc = parse_case_line(line, &(*cases)[n++], o, where);
    }
    fclose(f);
    if (rc == 0 && n == 0) rc = usp_cli_bad_input("validate", "%s: no case", o->cases_file);
    if (rc != 0) { free(*cases); *cases = NULL; return rc; }
    *count = n;
    return 0;
}

/* ------------------------------------------------------------ re-simulation */

#if defined(USP_HAVE_SIM) || defined(USP_HAVE_GPU_EXEC)
/* A directory the command writes into (one level; an existing one is fine). */
static int make_dir(const char *dir) {
    if (mkdir(dir, 0777) == 0 || errno == EEXIST) return 0;
    return usp_cli_bad_input("validate", "cannot create %s: %s", dir, strerror(errno));
}
#endif

#ifdef USP_HAVE_SIM

/* The phases a table shows; the JSON has them all. */
static const usp_vphase SHOWN[] = {USP_VPHASE_FWD_A2A, USP_VPHASE_FWD_RING, USP_VPHASE_BWD, USP_VPHASE_TOTAL};
enum { NSHOWN = sizeof SHOWN / sizeof SHOWN[0] };

static void print_err(double e) {
    if (isnan(e)) printf(" %9s", "-");
    else if (isinf(e)) printf(" %9s", "n/a");
    else printf(" %+8.1f%%", e);
}

static void print_case_line(const usp_vcase *c, const usp_vcompare *m) {
    printf("%-40s %-11s %10.3f %10.3f", c->name, usp_vrole_name(c->role), m->measured_us[USP_VPHASE_TOTAL] / 1e3,
           m->predicted_us[USP_VPHASE_TOTAL] / 1e3);
    print_err(m->error_pct[USP_VPHASE_TOTAL]);
    printf(" %5.0f%%", c->bound_pct);
    for (int k = 0; k < NSHOWN - 1; k++) print_err(m->error_pct[SHOWN[k]]);
    printf("\n");
}

static void print_case_phases(const usp_vcompare *m) {
    for (int p = 0; p < USP_VPHASE_COUNT; p++) {
        if (isnan(m->error_pct[p])) continue;
        printf("    %-9s measured %10.3f ms  predicted %10.3f ms", usp_vphase_name((usp_vphase)p),
               m->measured_us[p] / 1e3, m->predicted_us[p] / 1e3);
        print_err(m->error_pct[p]);
        printf("\n");
    }
}

static void print_summary(const char *title, const usp_vsummary *s) {
    if (!s->cases) return;
    printf("\n%s: %d cases, |error| of the prediction\n  %-9s %6s %9s %9s\n", title, s->cases, "phase", "cases",
           "mean", "max");
    for (int p = 0; p < USP_VPHASE_COUNT; p++)
        if (s->count[p])
            printf("  %-9s %6d %8.1f%% %8.1f%%\n", usp_vphase_name((usp_vphase)p), s->count[p], s->mean_abs_pct[p],
                   s->max_abs_pct[p]);
}

static void print_tables(const usp_vcase *cases, const usp_vcompare *cmp, int n, int verbose) {
    printf("%-40s %-11s %10s %10s %9s %6s %9s %9s %9s\n", "case", "role", "meas. ms", "pred. ms", "total",
           "bound", "fwd.a2a", "fwd.ring", "bwd");
    for (int i = 0; i < n; i++) {
        print_case_line(&cases[i], &cmp[i]);
        if (verbose) print_case_phases(&cmp[i]);
    }
}

static void json_number_or_null(double x) {
    usp_json_write_number(stdout, x); /* non-finite: null */
}

static void print_case_json(const usp_vcase *c, const usp_vcompare *m, int last) {
    char desc[512];
    usp_config cfg = c->cfg;
    usp_mask *mask = NULL;
    if (usp_vcase_mask(c, &mask) == USP_OK) cfg.mask = mask; /* read before: it builds */
    usp_config_describe(&cfg, desc, sizeof desc);
    usp_mask_free(mask);
    printf("    {\"name\": ");
    usp_json_write_string(stdout, c->name);
    printf(", \"role\": \"%s\", \"backward\": %s, \"config\": ", usp_vrole_name(c->role),
           c->backward ? "true" : "false");
    usp_json_write_string(stdout, desc);
    printf(", \"bound_pct\": ");
    json_number_or_null(c->bound_pct);
    printf(", \"phases\": {");
    for (int p = 0; p < USP_VPHASE_COUNT; p++) {
        printf("%s\"%s\": {\"measured_ms\": ", p ? ", " : "", usp_vphase_name((usp_vphase)p));
        json_number_or_null(m->measured_us[p] / 1e3);
        printf(", \"predicted_ms\": ");
        json_number_or_null(m->predicted_us[p] / 1e3);
        printf(", \"error_pct\": ");
        json_number_or_null(m->error_pct[p]);
        printf("}");
    }
    printf("}}%s\n", last ? "" : ",");
}

static void print_summary_json(const char *name, const usp_vsummary *s, int last) {
    printf("    \"%s\": {\"cases\": %d", name, s->cases);
    for (int p = 0; p < USP_VPHASE_COUNT; p++) {
        if (!s->count[p]) continue;
        printf(", \"%s\": {\"cases\": %d, \"mean_abs_pct\": ", usp_vphase_name((usp_vphase)p), s->count[p]);
        json_number_or_null(s->mean_abs_pct[p]);
        printf(", \"max_abs_pct\": ");
        json_number_or_null(s->max_abs_pct[p]);
        printf("}");
    }
    printf("}%s\n", last ? "" : ",");
}

/* Bounds of --check: every case within its own, the held-out set within the bars. */
static int check_failures(const usp_vcase *cases, const usp_vcompare *cmp, int n, const usp_vsummary *held,
                          FILE *f) {
    int failures = 0;
    for (int i = 0; i < n; i++) {
        double e = fabs(cmp[i].error_pct[USP_VPHASE_TOTAL]);
        if (!(e <= cases[i].bound_pct)) {
            failures++;
            if (f) fprintf(f, "check: %s: |total error| %.1f%% exceeds its bound %.1f%%\n", cases[i].name, e,
                           cases[i].bound_pct);
        }
    }
    if (held->cases && held->mean_abs_pct[USP_VPHASE_TOTAL] > HELD_OUT_MEAN_BOUND_PCT) {
        failures++;
        if (f) fprintf(f, "check: held-out mean |total error| %.1f%% exceeds %.0f%%\n",
                       held->mean_abs_pct[USP_VPHASE_TOTAL], HELD_OUT_MEAN_BOUND_PCT);
    }
    if (held->cases && held->max_abs_pct[USP_VPHASE_TOTAL] > HELD_OUT_MAX_BOUND_PCT) {
        failures++;
        if (f) fprintf(f, "check: held-out max |total error| %.1f%% exceeds %.0f%%\n",
                       held->max_abs_pct[USP_VPHASE_TOTAL], HELD_OUT_MAX_BOUND_PCT);
    }
    return failures;
}

static void print_json(const usp_vcase *cases, const usp_vcompare *cmp, int n, const usp_vsummary *held,
                       const usp_vsummary *cal, int check, int failures) {
    printf("{\n  \"cases\": [\n");
    for (int i = 0; i < n; i++) print_case_json(&cases[i], &cmp[i], i == n - 1);
    printf("  ],\n  \"summary\": {\n");
    print_summary_json("held-out", held, 0);
    print_summary_json("calibration", cal, 1);
    printf("  },\n  \"check\": %s\n}\n", !check ? "null" : failures ? "\"fail\"" : "\"pass\"");
}

static usp_status save_predicted(const char *dir, const usp_vcase *c, usp_trace *t) {
    char path[2048];
    snprintf(path, sizeof path, "%s/%s.sim.json", dir, c->name);
    usp_status st = usp_trace_write(t, path);
    usp_trace_free(t);
    return st;
}

/* Keeps the cases of the role asked for; the others are dropped. */
static int filter_role(usp_vcase *cases, int n, int role) {
    int kept = 0;
    for (int i = 0; i < n; i++)
        if (role == ROLE_ALL || (int)cases[i].role == role) cases[kept++] = cases[i];
    return kept;
}

static int compare_all(const validate_options *o, const usp_vcase *cases, int n, usp_vcompare *cmp) {
    if (o->predicted_dir && make_dir(o->predicted_dir)) return 2;
    for (int i = 0; i < n; i++) {
        usp_trace t;
        usp_status st = usp_vcase_validate(&cases[i], o->profile, o->platform, &cmp[i], o->predicted_dir ? &t : NULL);
        if (st == USP_OK && o->predicted_dir) st = save_predicted(o->predicted_dir, &cases[i], &t);
        if (st != USP_OK) return usp_cli_report("validate", st);
    }
    return 0;
}

static int report(const validate_options *o, const usp_vcase *cases, const usp_vcompare *cmp, int n) {
    int *held_mask = calloc((size_t)n, sizeof *held_mask), *cal_mask = calloc((size_t)n, sizeof *cal_mask);
    if (!held_mask || !cal_mask) { free(held_mask); free(cal_mask); return 1; }
    for (int i = 0; i < n; i++) {
        held_mask[i] = cases[i].role == USP_VROLE_HELD_OUT;
        cal_mask[i] = !held_mask[i];
    }
    usp_vsummary held, cal;
    usp_vsummary_make(cmp, held_mask, n, &held);
    usp_vsummary_make(cmp, cal_mask, n, &cal);
    free(held_mask);
    free(cal_mask);
    int failures = o->check ? check_failures(cases, cmp, n, &held, o->json ? NULL : stdout) : 0;
    if (o->json) {
        print_json(cases, cmp, n, &held, &cal, o->check, failures);
    } else {
        print_tables(cases, cmp, n, o->verbose);
        print_summary("held-out", &held);
        print_summary("calibration (fitted to these)", &cal);
        if (o->check) printf("\ncheck: %s\n", failures ? "FAIL" : "PASS");
    }
    return failures ? 1 : 0;
}

static int validate_traces(const validate_options *o) {
    usp_vcase *cases;
    int n;
    usp_status st = usp_vcase_list(o->traces, &cases, &n);
    if (st != USP_OK) return usp_cli_report("validate", st);
    n = filter_role(cases, n, o->role);
    if (n == 0) { free(cases); return usp_cli_bad_input("validate", "%s: no recorded case to validate", o->traces); }
    usp_vcompare *cmp = calloc((size_t)n, sizeof *cmp);
    int rc = cmp ? compare_all(o, cases, n, cmp) : 1;
    if (rc == 0) rc = report(o, cases, cmp, n);
    free(cmp);
    free(cases);
    return rc;
}

#else

static int validate_traces(const validate_options *o) {
    (void)o;
    return usp_cli_bad_input("validate", "this usp was built without SimGrid: it records cases (--gpus), "
                                         "it cannot re-simulate them (install libsimgrid-dev and rebuild)");
}

#endif

/* ------------------------------------------------------------ recording */

#ifdef USP_HAVE_GPU_EXEC

static int record_rank(const usp_gpu_env *env, const validate_options *o, usp_vcase *cases, int n) {
    usp_gpu_ctx *ctx = NULL;
    usp_status st = usp_gpu_open(env, o->timeout_s, &ctx);
    if (st != USP_OK) return usp_cli_report("validate", st);
    st = usp_calib_record_cases(ctx, cases, n, o->record_dir, o->warmup, o->iters, stdout);
    if (st == USP_OK) {
        usp_gpu_close(ctx);
        return 0;
    }
    int rc = usp_cli_report("validate", st);
    usp_gpu_abort(ctx);
    return rc;
}

static int record(int argc, char **argv, const validate_options *o, usp_vcase *cases, int n) {
    int found;
    usp_gpu_env env;
    if (usp_gpu_env_read(&env, &found) != USP_OK) return usp_cli_report("validate", USP_EINVAL);
    if (found) return record_rank(&env, o, cases, n);
    if (make_dir(o->record_dir)) return 2;
    char **full = calloc((size_t)argc + 2, sizeof *full);
    if (!full) return 1;
    full[0] = "usp";
    for (int i = 0; i < argc; i++) full[i + 1] = argv[i];
    int rc = usp_gpu_launch_local(o->gpus, full, o->timeout_s);
    free(full);
#ifdef USP_HAVE_SIM
    if (rc == 0) {
        validate_options v = *o;
        v.traces = o->record_dir;
        printf("\n");
        rc = validate_traces(&v);
    }
#endif
    return rc;
}

#else

static int record(int argc, char **argv, const validate_options *o, usp_vcase *cases, int n) {
    (void)argc; (void)argv; (void)o; (void)cases; (void)n;
    return usp_cli_bad_input("validate", "this usp was built without the GPU executor (CUDA and NCCL): "
                                         "--gpus cannot run; --traces DIR re-simulates recorded cases");
}

#endif

/* The mode the options chose: published tables, recorded traces, or recording. */
static int run_mode(int argc, char **argv, const validate_options *o) {
    if (o->published) return usp_validate_published(o->published, o->profile, o->platform, o->json, o->quiet);
    if (o->traces) return validate_traces(o);
    usp_vcase *cases;
    int n, rc;
    if ((rc = read_cases(o, &cases, &n)) != 0) return rc;
    for (int i = 0; i < n && rc == 0; i++)
        if (usp_world(&cases[i].cfg) != o->gpus)
            rc = usp_cli_bad_input("validate", "case %s has ulysses %d x ring %d = %d ranks, --gpus is %d",
                                   cases[i].name, cases[i].cfg.ulysses, cases[i].cfg.ring,
                                   usp_world(&cases[i].cfg), o->gpus);
    if (rc == 0) rc = record(argc, argv, o, cases, n);
    free(cases);
    return rc;
}

int cmd_validate(int argc, char **argv) {
    validate_options o = {.warmup = 2, .iters = 5, .role = ROLE_ALL, .timeout_s = 300,
                          .case_profile = CASE_DEFAULT_PROFILE, .case_platform = CASE_DEFAULT_PLATFORM};
    int jargc;
    char **joined = usp_validate_join_published(argc, argv, &jargc); /* "--published DIR" as one argument */
    if (!joined) return 1;
    int rc = parse(jargc, joined, &o);
    if (rc == 0) rc = run_mode(jargc, joined, &o);
    usp_validate_free_joined(joined);
    return rc < 0 ? 0 : rc;
}
