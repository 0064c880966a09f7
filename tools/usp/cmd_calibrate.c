/* usp calibrate: a device profile and a platform measured on this machine.
 *
 *   usp calibrate --gpus N                  measure (GPU machine), fit, write
 *   usp calibrate --measurements FILE       fit again from saved measurements
 *   ... --traces DIR                        and refine with the calibration cases
 *
 * Measuring needs the GPU executor; fitting is plain C and runs anywhere, so
 * the measurements taken on a GPU machine are refitted where the simulator
 * and the recorded traces are. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "usp/json.h"
#include "usp/validate.h"
#ifdef USP_HAVE_GPU_EXEC
#include "../../gpu/calibrate/calibrate.h"
#endif

/* Comm points below this are left out of the link fit: the schedules of the
 * validated configurations move 1 MiB and more per message. */
#define DEFAULT_MIN_BYTES 1048576.0

typedef struct {
    const char *measurements, *traces, *base, *profile_out, *platform_out, *measurements_out;
    int gpus, quick, json, link_from_traces, short_blocks;
    double min_bytes, timeout_s;
} calibrate_options;

static void help(void) {
    printf("usage: usp calibrate --gpus N [--quick] [--base PROFILE.json] [outputs]\n"
           "       usp calibrate --measurements FILE [--traces DIR] [--base PROFILE.json] [outputs]\n"
           "       usp calibrate --traces DIR --base PROFILE.json --profile-out FILE\n\n"
           "Measures, on this machine's GPUs, the attention kernels' TFLOP/s (bf16 and fp16,\n"
           "head dims 64 and 128, blocks of 2K to 16K tokens, full and causal-diagonal,\n"
           "forward and backward; and the largest block as packed documents of 512 and 2048\n"
           "tokens under per-row masks: the profile's per-row-mask efficiency), the\n"
           "memory-bound kernels' GB/s (pack, unpack, merge, init, bwd_prep) and NCCL\n"
           "send/recv and all-to-all from 64 KiB to 1 GiB; fits\n"
           "time = fixed + size / rate to each, prints the fits with their residuals, and\n"
           "writes a device profile (the format of sim/profiles/*.json: usp run --profile;\n"
           "memory_gbps gives each memory-bound kind its own GB/s, hbm_gbps all of them)\n"
           "and a SimGrid platform whose GPU-to-GPU link is the fitted NCCL latency and\n"
           "bandwidth (usp run --platform FILE.xml).\n\n"
           "  --gpus N              measure with N ranks on this machine (GPU executor builds);\n"
           "                        1: the kernels alone (no link, no platform written)\n"
           "  --quick               fewer kernel sizes, head dim 128 only\n"
           "  --measurements FILE   fit from measurements saved by an earlier run instead\n"
           "  --traces DIR          refine the profile from the step durations of the\n"
           "                        calibration cases recorded in DIR (usp validate); a\n"
           "                        memory-bound kind with %d steps or more there gets\n"
           "                        their GB/s, one with fewer keeps its measured figure\n"
           "  --link-from-traces    without NCCL measurements, fit the platform's link to the\n"
           "                        calibration traces' transfers (few points: a fallback)\n"
           "  --base PROFILE.json   figures not measured (fp64, dense peaks) come from it\n"
           "  --short-blocks        write each full-block fit of the short-block model (rate,\n"
           "                        fixed time and the loop length a unit's setup costs,\n"
           "                        printed beside the affine fits) instead of the affine fit:\n"
           "                        the simulator then times blocks under per-row masks by the\n"
           "                        kernels' tiles and units (sim/README.md)\n"
           "  --min-bytes B         smallest message of the link fit (default %.0f)\n"
           "  --profile-out FILE    the profile (default profile-calibrated.json)\n"
           "  --platform-out FILE   the platform (default platform-calibrated.xml)\n"
           "  --measurements-out F  where --gpus saves its measurements (default calibration.json)\n"
           "  --timeout S           a rank that takes longer fails the run (default 300)\n"
           "  --json                the fitted profile and link as one JSON object\n",
           USP_REFINE_MIN_MEM_STEPS, DEFAULT_MIN_BYTES);
}

/* ------------------------------------------------------------ options */

enum {
    OPT_GPUS = USP_OPT_CMD_FIRST, OPT_QUICK, OPT_MEAS, OPT_TRACES, OPT_BASE, OPT_MIN_BYTES, OPT_PROFILE_OUT,
    OPT_PLATFORM_OUT, OPT_MEAS_OUT, OPT_TIMEOUT, OPT_JSON, OPT_LINK_TRACES, OPT_SHORT, OPT_HELP
};

static int number_arg(const char *name, const char *arg, double lo, double *out) {
    if (usp_parse_double(arg, out) || !(*out >= lo))
        return usp_cli_bad_input("calibrate", "--%s '%s' is not a number >= %g", name, arg, lo);
    return 0;
}

static int apply_option(int opt, const char *arg, void *ctx) {
    calibrate_options *o = ctx;
    long v;
    switch (opt) {
    case OPT_GPUS:
        if (usp_parse_int(arg, 1, 4096, &v)) return usp_cli_bad_input("calibrate", "--gpus '%s' is not 1..4096", arg);
        o->gpus = (int)v;
        return 0;
    case OPT_QUICK: o->quick = 1; return 0;
    case OPT_MEAS: o->measurements = arg; return 0;
    case OPT_TRACES: o->traces = arg; return 0;
    case OPT_BASE: o->base = arg; return 0;
    case OPT_MIN_BYTES: return number_arg("min-bytes", arg, 1, &o->min_bytes);
    case OPT_PROFILE_OUT: o->profile_out = arg; return 0;
    case OPT_PLATFORM_OUT: o->platform_out = arg; return 0;
    case OPT_MEAS_OUT: o->measurements_out = arg; return 0;
    case OPT_TIMEOUT: return number_arg("timeout", arg, 1, &o->timeout_s);
    case OPT_JSON: o->json = 1; return 0;
    case OPT_LINK_TRACES: o->link_from_traces = 1; return 0;
    case OPT_SHORT: o->short_blocks = 1; return 0;
    default: return usp_cli_bad_input("calibrate", "unknown option or missing value (usp calibrate --help)");
    }
}

static int check_modes(const calibrate_options *o) {
    if (o->gpus && o->measurements)
        return usp_cli_bad_input("calibrate", "--gpus measures, --measurements reads: one or the other");
    if (!o->gpus && !o->measurements && !o->traces)
        return usp_cli_bad_input("calibrate", "nothing to do: --gpus N, --measurements FILE or --traces DIR");
    if (!o->gpus && !o->measurements && !o->base)
        return usp_cli_bad_input("calibrate", "--traces alone refines a profile: name it with --base PROFILE.json");
    if (o->link_from_traces && !o->traces)
        return usp_cli_bad_input("calibrate", "--link-from-traces needs --traces DIR");
    return 0;
}

/* 0: go on; -1: --help was printed; else the exit code. */
static int parse(int argc, char **argv, calibrate_options *o) {
    static const struct option opts[] = {
        {"gpus", required_argument, 0, OPT_GPUS}, {"quick", no_argument, 0, OPT_QUICK},
        {"measurements", required_argument, 0, OPT_MEAS}, {"traces", required_argument, 0, OPT_TRACES},
        {"base", required_argument, 0, OPT_BASE}, {"min-bytes", required_argument, 0, OPT_MIN_BYTES},
        {"profile-out", required_argument, 0, OPT_PROFILE_OUT}, {"platform-out", required_argument, 0, OPT_PLATFORM_OUT},
        {"measurements-out", required_argument, 0, OPT_MEAS_OUT}, {"timeout", required_argument, 0, OPT_TIMEOUT},
        {"json", no_argument, 0, OPT_JSON}, {"link-from-traces", no_argument, 0, OPT_LINK_TRACES},
        {"short-blocks", no_argument, 0, OPT_SHORT},
        {"help", no_argument, 0, OPT_HELP}, {0, 0, 0, 0}};
    int rc = usp_cli_parse("calibrate", argc, argv, opts, OPT_HELP, help, apply_option, o);
    return rc ? rc : check_modes(o);
}

/* ------------------------------------------------------------ fitting */

static void print_json(const usp_calib_fit *fit, int has_link) {
    printf("{\"profile\": ");
    usp_profile_desc_write(&fit->profile, stdout);
    printf(", \"link\": ");
    if (!has_link) { printf("null}\n"); return; }
    printf("{\"latency_us\": ");
    usp_json_write_number(stdout, fit->lat_us);
    printf(", \"bandwidth_gbps\": ");
    usp_json_write_number(stdout, fit->gbps);
    printf(", \"rms_pct\": ");
    usp_json_write_number(stdout, fit->link.rms_pct);
    printf(", \"max_pct\": ");
    usp_json_write_number(stdout, fit->link.max_pct);
    printf(", \"points\": %d}}\n", fit->link.points);
}

/* The platform's id: the file name without directory and extension. */
static void platform_id(const char *path, char *id, size_t n) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(id, n, "%.*s", (int)strcspn(base, "."), base);
}

/* source: where the link's figures come from, for the file's comment. */
static usp_status write_platform(const calibrate_options *o, int gpus, const char *source, const usp_calib_fit *fit) {
    char id[128], comment[1024];
    platform_id(o->platform_out, id, sizeof id);
    snprintf(comment, sizeof comment,
             "usp calibrate: %d GPUs. Every GPU-to-GPU transfer takes %.1f us + bytes / %.1f GB/s, fitted to %s "
             "of %.0f bytes and more (residual rms %.1f%%, max %+.1f%%)",
             gpus, fit->lat_us, fit->gbps, source, o->min_bytes, fit->link.rms_pct, fit->link.max_pct);
    FILE *f = fopen(o->platform_out, "w");
    if (!f) return usp_fail(USP_EINVAL, "cannot write %s", o->platform_out);
    usp_status st = usp_platform_write_fitted(f, id, gpus, fit->lat_us, fit->gbps, comment);
    if (fclose(f) != 0 && st == USP_OK) st = usp_fail(USP_EINTERNAL, "cannot write %s", o->platform_out);
    return st;
}

static usp_status load_base(const calibrate_options *o, usp_profile_desc *base, int *has) {
    *has = o->base != NULL;
    return o->base ? usp_profile_desc_read(o->base, base) : USP_OK;
}

/* Refines fit->profile from the calibration cases of --traces; without a
 * NCCL sweep, the link comes from their transfers too (*gpus set then). */
static usp_status refine(const calibrate_options *o, usp_calib_fit *fit, int need_link, int *gpus, FILE *report) {
    usp_vcase *cases;
    int n;
    USP_TRY(usp_vcase_list(o->traces, &cases, &n));
    usp_status st = usp_profile_refine(&fit->profile, cases, n, report);
    if (st == USP_OK && need_link) st = usp_link_fit_traces(cases, n, o->min_bytes, report, &fit->link, gpus);
    if (st == USP_OK && need_link) {
        fit->lat_us = fit->link.intercept * 1e6;
        fit->gbps = 1e-9 / fit->link.slope;
    }
    free(cases);
    return st;
}

/* "send/recv", "all-to-all" or both: what the measurements hold. */
static const char *comm_ops(const usp_calib *m) {
    int sr = 0, a2a = 0;
    for (int i = 0; i < m->ncomm; i++) {
        sr |= !strcmp(m->comm[i].op, "sendrecv");
        a2a |= !strcmp(m->comm[i].op, "all_to_all");
    }
    return sr && a2a ? "send/recv and all-to-all" : sr ? "send/recv" : "all-to-all";
}

/* The link comes from the NCCL sweep when there was one, else from the traces. */
static usp_status write_outputs(const calibrate_options *o, const usp_calib *m, int trace_gpus, const usp_calib_fit *fit) {
    char source[512];
    USP_TRY(usp_profile_desc_save(&fit->profile, o->profile_out));
    if (m && m->ncomm) {
        snprintf(source, sizeof source, "NCCL %s between %d x %s (NCCL %d%s%s)", comm_ops(m), m->gpus, m->device,
                 m->nccl_version, m->source[0] ? "; " : "", m->source);
        return write_platform(o, m->gpus, source, fit);
    }
    if (trace_gpus < 2) return USP_OK;
    snprintf(source, sizeof source, "the send/recv and all-to-all steps of the calibration traces in %s", o->traces);
    return write_platform(o, trace_gpus, source, fit);
}

/* From measurements (m may be NULL: --traces alone), the outputs. */
static int fit_and_write(const calibrate_options *o, const usp_calib *m) {
    usp_profile_desc *base = malloc(sizeof *base);
    usp_calib_fit *fit = calloc(1, sizeof *fit);
    FILE *report = o->json ? NULL : stdout;
    int has_base = 0, trace_gpus = 0, has_link = m && m->ncomm > 0;
    usp_status st = base && fit ? load_base(o, base, &has_base) : USP_EINTERNAL;
    if (st == USP_OK && m) st = usp_calib_fit_run(m, has_base ? base : NULL, o->min_bytes, o->short_blocks, report, fit);
    if (st == USP_OK && !m) fit->profile = *base;
    if (st == USP_OK && o->traces) st = refine(o, fit, !has_link && o->link_from_traces, &trace_gpus, report);
    has_link = has_link || trace_gpus >= 2;
    if (st == USP_OK) st = write_outputs(o, m, trace_gpus, fit);
    if (st == USP_OK && o->json) print_json(fit, has_link);
    if (st == USP_OK && !o->json)
        printf("wrote %s%s%s\n", o->profile_out, has_link ? " and " : "", has_link ? o->platform_out : "");
    free(base);
    free(fit);
    return st == USP_OK ? 0 : usp_cli_report("calibrate", st);
}

static int fit_saved(const calibrate_options *o) {
    usp_calib *m = NULL;
    if (o->measurements) {
        m = malloc(sizeof *m);
        if (!m) return 1;
        usp_status st = usp_calib_read(o->measurements, m);
        if (st != USP_OK) { free(m); return usp_cli_report("calibrate", st); }
    }
    int rc = fit_and_write(o, m);
    free(m);
    return rc;
}

/* ------------------------------------------------------------ measuring */

#ifdef USP_HAVE_GPU_EXEC

static usp_calib_grid grid_of(int quick) {
    usp_calib_grid full = {{2048, 4096, 8192, 16384}, 4, {64, 128}, 2, 16, 1, 5};
    usp_calib_grid small = {{4096, 16384}, 2, {128}, 1, 16, 1, 3};
    return quick ? small : full;
}

/* Message sizes from 64 KiB to 1 GiB, doubling. */
static int comm_sizes(double *sizes) {
    int n = 0;
    for (double b = 65536; b <= 1073741824.0; b *= 2) sizes[n++] = b;
    return n;
}

static usp_status measure(usp_gpu_ctx *ctx, const calibrate_options *o, usp_calib *m) {
    usp_calib_grid g = grid_of(o->quick);
    double sizes[32];
    int nsizes = comm_sizes(sizes);
    /* with --json, stdout carries the result alone */
    FILE *progress = usp_gpu_rank(ctx) != 0 ? NULL : o->json ? stderr : stdout;
    USP_TRY(usp_calib_measure_kernels(ctx, &g, m, progress));
    if (usp_gpu_world(ctx) < 2) {   /* one GPU: the kernels alone, no link to measure */
        m->gpus = 1;
        if (progress) fprintf(progress, "one rank: no NCCL measurements, so no link fit and no platform\n");
        return USP_OK;
    }
    USP_TRY(usp_calib_measure_comm(ctx, sizes, nsizes, o->quick ? 3 : 7, m));
    if (progress) fflush(progress);
    return USP_OK;
}

static int measure_rank(const usp_gpu_env *env, const calibrate_options *o) {
    usp_gpu_ctx *ctx = NULL;
    usp_calib *m = calloc(1, sizeof *m);
    if (!m) return 1;
    usp_status st = usp_gpu_open(env, o->timeout_s, &ctx);
    if (st == USP_OK) st = measure(ctx, o, m);
    int root = ctx && usp_gpu_rank(ctx) == 0, rc;
    if (st == USP_OK) {
        usp_gpu_close(ctx);
        rc = 0;
        if (root) {
            st = usp_calib_save(m, o->measurements_out);
            rc = st == USP_OK ? fit_and_write(o, m) : usp_cli_report("calibrate", st);
        }
    } else {
        rc = usp_cli_report("calibrate", st);
        if (ctx) usp_gpu_abort(ctx);
    }
    free(m);
    return rc;
}

static int measure_here(int argc, char **argv, const calibrate_options *o) {
    int found;
    usp_gpu_env env;
    if (usp_gpu_env_read(&env, &found) != USP_OK) return usp_cli_report("calibrate", USP_EINVAL);
    if (found) return measure_rank(&env, o);
    char **full = calloc((size_t)argc + 2, sizeof *full);
    if (!full) return 1;
    full[0] = "usp";
    for (int i = 0; i < argc; i++) full[i + 1] = argv[i];
    int rc = usp_gpu_launch_local(o->gpus, full, o->timeout_s);
    free(full);
    return rc;
}

#else

static int measure_here(int argc, char **argv, const calibrate_options *o) {
    (void)argc; (void)argv; (void)o;
    return usp_cli_bad_input("calibrate", "this usp was built without the GPU executor (CUDA and NCCL): "
                                          "--gpus cannot run; --measurements FILE fits saved measurements");
}

#endif

int cmd_calibrate(int argc, char **argv) {
    calibrate_options o = {.min_bytes = DEFAULT_MIN_BYTES, .timeout_s = 300, .profile_out = "profile-calibrated.json",
                           .platform_out = "platform-calibrated.xml", .measurements_out = "calibration.json"};
    int rc = parse(argc, argv, &o);
    if (rc) return rc < 0 ? 0 : rc;
    return o.gpus ? measure_here(argc, argv, &o) : fit_saved(&o);
}
