/* usp run: one sharded attention, checked against the fp64 reference. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "cli.h"
#include "run_report.h"
#include "runcase.h"
#include "usp/json.h"
#include "usp/npy.h"
#ifdef USP_HAVE_GPU_EXEC
#include "run_gpu.h"
#endif
#ifdef USP_HAVE_SIM
#include "usp/sim.h"
#endif

typedef struct {
    const char *backend, *input_dir, *dump_dir, *trace_path;
    int json, backward;
    int dtype_given;          /* --dtype was on the command line */
    usp_dtype time_dtype;     /* sim: the dtype the prediction is for */
    const usp_case *timing;   /* sim: the timed run when it is not the checked one */
#ifdef USP_HAVE_SIM
    usp_sim_options sim;
#endif
} run_options;


#ifdef USP_HAVE_SIM
#define USP_DEFAULT_BACKEND "sim"
#else
#define USP_DEFAULT_BACKEND "ref"
#endif

static void help(void) {
    printf("usage: usp run [options] [problem options]\n\n"
           "Runs the USP schedule of one problem, checks every output (O, LSE, dQ, dK,\n"
           "dV) against the exact fp64 dense reference (norm-wise and element-wise\n"
           "relative error, each within its tolerance), and reports what each rank\n"
           "sent and held. Exit 0 when every tensor passes, 1 when one does not,\n"
           "2 on bad input.\n\n"
           "  --backend B       sim (SimGrid, the default when built with it) or ref\n"
           "                    (in-process: all ranks in this process, no time model)\n"
           "  --platform P      sim: a preset (h200x8, h200x2, a100x8, l20x8, a800-2n,\n"
           "                    h100-fattree, torus, dragonfly) or a SimGrid XML file\n"
           "                    (default h200x8; usp platform --help lists the presets)\n"
           "  --hostmap FILE    sim: host names of ranks 0, 1, ... one per line\n"
           "  --profile P       sim: device profile, JSON file or built-in name\n"
           "  --no-numerics     sim: time only; no tensors, no check (thousands of ranks)\n"
           "                    sim: without --dtype the check runs on the CPU in fp64\n"
           "                    and the time is predicted for bf16, the dtype a GPU run\n"
           "                    uses (the trace is the timed run); --dtype D does both in D\n"
           "  --cfg NAME:VALUE  sim: a SimGrid setting (repeatable)\n"
           "  --no-fold         sim: an actor for every rank, even where one per ulysses\n"
           "                    group gives the same times (timing only; sim/README.md)\n"
           "  --input DIR       read DIR/q.npy k.npy v.npy [do.npy], (B, L, H, D)\n"
           "  --dump DIR        write o lse dq dk dv and ref_o ... ref_dv as .npy\n"
           "  --trace FILE      write a Chrome trace (Perfetto) of every step\n"
           "  --forward-only    skip the backward pass\n"
           "  --json            one JSON object instead of the text summary\n"
           "  --backend gpu     one process per GPU over NCCL (usp run --backend gpu --help)\n\n");
    usp_cli_config_help(stdout);
}

/* ------------------------------------------------------------ output */

#ifdef USP_HAVE_SIM
/* The simulated time comes from the timed run (o->timing) when it is not
 * the checked one: numerics were on in this command all the same. */
static int sim_report(const usp_case *c, const run_options *o, usp_sim_report *rep) {
    if (strcmp(o->backend, "sim") != 0) return 0;
    const usp_case *timed = o->timing ? o->timing : c;
    if (usp_sim_report_make(&timed->sched, &timed->res, &o->sim, rep) != USP_OK) return 0;
    rep->numerics = o->sim.numerics;
    return 1;
}

/* What the prediction is of, beside what was checked. */
static void print_dtypes(const usp_case *c, const run_options *o) {
    if (c->ntensors)
        printf("  timed dtype      %s%s; checked in %s on the CPU\n", usp_dtype_name(o->time_dtype),
               o->dtype_given ? " (--dtype)" : ", as a GPU run (--dtype to change it)", usp_dtype_name(c->cfg.dtype));
    else
        printf("  timed dtype      %s%s\n", usp_dtype_name(o->time_dtype),
               o->dtype_given ? "" : ", as a GPU run (--dtype to change it)");
}
#endif

static void json_number(double x) { usp_json_write_number(stdout, x); }

static int computes_on_cpu(const run_options *o);

static void print_text(const usp_case *c, const run_options *o) {
    char desc[256];
    usp_config_describe(&c->cfg, desc, sizeof desc);
    printf("usp run: %s\nbackend %s, world %d = ulysses %d x ring %d, work imbalance %.4f "
           "(max/mean attention pairs per rank)\n\n", desc, o->backend, c->sched.world, c->cfg.ulysses,
           c->cfg.ring, usp_schedule_imbalance(&c->sched));
    if (computes_on_cpu(o) && usp_dtype_size(c->cfg.dtype) == 2)
        printf("%s on the CPU: fp32 arithmetic emulating the GPU's around its kernels: inputs in %s,\n"
               "O, dQ, dK, dV all-to-alls in %s (the kernels' own 16-bit products are not emulated)\n\n",
               usp_dtype_name(c->cfg.dtype), usp_dtype_name(c->cfg.dtype), usp_dtype_name(usp_wire_dtype(&c->cfg)));
    printf("%-6s %12s %12s %10s %12s %10s  %s\n", "tensor", "max_abs_err", "rel_err", "tolerance",
           "elem_rel_err", "tolerance", "result");
    for (int t = 0; t < c->ntensors; t++) {
        const usp_error_stats *e = &c->err[t];
        printf("%-6s %12.3e %12.3e %10.0e %12.3e %10.0e  %s", usp_tensor_names[t], e->max_abs, e->rel,
               c->tol[t], e->elem_rel, c->elem_tol[t], e->pass ? "pass" : "FAIL");
        if (e->nan_count) printf(" (%ld NaN)", e->nan_count);
        if (e->inf_mismatch) printf(" (%ld -inf mismatches)", e->inf_mismatch);
        printf("\n");
    }
    printf("\n%-5s %12s %12s %12s %12s %12s\n", "rank", "a2a MiB", "ring MiB", "allgather",
           "red_scatter", "peak MiB");
    int world = c->sched.world, shown = world <= 16 ? world : 4;
    for (int g = 0; g < shown; g++) {
        const usp_rank_stats *r = &c->res.ranks[g];
        printf("%-5d %12.3f %12.3f %12.3f %12.3f %12.3f\n", g,
               r->bytes_sent[USP_STEP_ALL_TO_ALL] / 1048576, r->bytes_sent[USP_STEP_SENDRECV] / 1048576,
               r->bytes_sent[USP_STEP_ALLGATHER] / 1048576,
               r->bytes_sent[USP_STEP_REDUCE_SCATTER] / 1048576, r->peak_bytes / 1048576);
    }
    if (shown < world) printf("... (%d more ranks; --json lists all)\n", world - shown);
#ifdef USP_HAVE_SIM
    usp_sim_report rep;
    if (sim_report(c, o, &rep)) {
        printf("\n");
        usp_sim_report_print(stdout, &rep);
        print_dtypes(c, o);
    }
#endif
    if (!strcmp(o->backend, "gpu"))
        printf("\ntime: forward %.3f ms, backward %.3f ms (CUDA events, median of the timed runs)\n",
               c->res.time_fwd_s * 1e3, c->res.time_bwd_s * 1e3);
    if (o->trace_path) printf("\ntrace: %s (open in ui.perfetto.dev)\n", o->trace_path);
    if (!c->ntensors) { printf("\nresult: timing only (--no-numerics), nothing checked\n"); return; }
    printf("\nresult: %s\n", c->pass ? "PASS" : "FAIL");
}


static void print_json(const usp_case *c, const run_options *o) {
    char desc[256];
    const usp_config *k = &c->cfg;
    usp_config_describe(k, desc, sizeof desc);
    printf("{\"config\": {\"batch\": %d, \"seq\": %d, \"heads\": %d, \"kv_heads\": %d, "
           "\"head_dim\": %d, \"causal\": %s, \"scale\": %.17g, \"dtype\": \"%s\", \"ulysses\": %d, "
           "\"ring\": %d, \"ring_impl\": \"%s\", \"layout\": \"%s\", \"seed\": %llu},\n",
           k->batch, k->seq, k->heads, k->kv_heads, k->head_dim, k->causal ? "true" : "false",
           usp_scale(k), usp_dtype_name(k->dtype), k->ulysses, k->ring,
           usp_ring_impl_name(k->ring_impl), usp_layout_name(k->layout), (unsigned long long)k->seed);
    if (k->mask) {
        printf(" \"mask\": ");
        usp_json_write_string(stdout, usp_mask_describe(k->mask));
        printf(",\n");
    }
    printf(" \"backend\": \"%s\", \"world\": %d, \"imbalance\": %.6f,\n \"tensors\": {", o->backend,
           c->sched.world, usp_schedule_imbalance(&c->sched));
    for (int t = 0; t < c->ntensors; t++) {
        const usp_error_stats *e = &c->err[t];
        printf("%s\"%s\": {\"max_abs_err\": ", t ? ", " : "", usp_tensor_names[t]);
        json_number(e->max_abs);
        printf(", \"rel_err\": ");
        json_number(e->rel);
        printf(", \"elem_rel_err\": ");
        json_number(e->elem_rel);
        printf(", \"elem_tolerance\": %g", c->elem_tol[t]);
        printf(", \"tolerance\": %g, \"nan\": %ld, \"inf_mismatch\": %ld, \"pass\": %s}", c->tol[t],
               e->nan_count, e->inf_mismatch, e->pass ? "true" : "false");
    }
    printf("},\n \"ranks\": [");
    for (int g = 0; g < c->sched.world; g++) {
        const usp_rank_stats *r = &c->res.ranks[g];
        printf("%s\n  {\"rank\": %d, \"peak_bytes\": %.0f, \"flops\": %.0f, \"bytes_sent\": {", g ? "," : "",
               g, r->peak_bytes, r->flops);
        int listed = 0; /* a comma before every kind but the first listed */
        for (int kind = 0; kind < USP_STEP_KIND_COUNT; kind++)
            if (r->bytes_sent[kind] > 0)
                printf("%s\"%s\": %.0f", listed++ ? ", " : "",
                       usp_step_kind_name((usp_step_kind)kind), r->bytes_sent[kind]);
        printf("}}");
    }
    printf("\n ],\n");
#ifdef USP_HAVE_SIM
    usp_sim_report rep;
    if (sim_report(c, o, &rep)) {
        printf(" \"sim\": ");
        usp_sim_report_json(stdout, &rep);
        printf(",\n \"time_dtype\": \"%s\", \"check_dtype\": ", usp_dtype_name(o->time_dtype));
        if (c->ntensors) printf("\"%s\",\n", usp_dtype_name(c->cfg.dtype));
        else printf("null,\n");
    }
#endif
    if (!strcmp(o->backend, "gpu"))
        printf(" \"time_fwd_s\": %.6g, \"time_bwd_s\": %.6g,\n", c->res.time_fwd_s, c->res.time_bwd_s);
    if (c->ntensors) printf(" \"pass\": %s}\n", c->pass ? "true" : "false");
    else printf(" \"pass\": null}\n");
}

/* ------------------------------------------------------------ dump */

static usp_status make_dir(const char *dir) {
    if (mkdir(dir, 0777) == 0 || errno == EEXIST) return USP_OK;
    return usp_fail(USP_EINVAL, "cannot create directory '%s': %s", dir, strerror(errno));
}

static void tensor_shape(const usp_config *k, int t, long shape[4], int *ndim) {
    if (t == USP_T_LSE) { shape[0] = k->batch; shape[1] = k->heads; shape[2] = k->seq; *ndim = 3; return; }
    int nh = (t == USP_T_DK || t == USP_T_DV) ? k->kv_heads : k->heads;
    shape[0] = k->batch; shape[1] = k->seq; shape[2] = nh; shape[3] = k->head_dim;
    *ndim = 4;
}

static usp_status dump(const usp_case *c, const char *dir) {
    USP_TRY(make_dir(dir));
    for (int t = 0; t < c->ntensors; t++) {
        long shape[4];
        int ndim;
        char path[4096];
        tensor_shape(&c->cfg, t, shape, &ndim);
        snprintf(path, sizeof path, "%s/%s.npy", dir, usp_tensor_names[t]);
        USP_TRY(usp_npy_write(path, ndim, shape, usp_case_output(c, t), 0));
        snprintf(path, sizeof path, "%s/ref_%s.npy", dir, usp_tensor_names[t]);
        USP_TRY(usp_npy_write(path, ndim, shape, c->ref[t], 0));
    }
    return USP_OK;
}

void usp_run_print(const usp_case *c, const char *backend, int json) {
    run_options o = {.backend = backend, .json = json};
    if (json) print_json(c, &o); else print_text(c, &o);
}

usp_status usp_run_dump(const usp_case *c, const char *dir) { return dump(c, dir); }

/* ------------------------------------------------------------ main */

enum {
    OPT_PLATFORM = RUN_OPT_OWN_FIRST, OPT_HOSTMAP, OPT_PROFILE, OPT_NO_NUMERICS, OPT_CFG, OPT_NO_FOLD
};

/* Options of the simulator; without SimGrid they are refused by name. */
static int parse_sim_option(int opt, const char *arg, run_options *o) {
#ifdef USP_HAVE_SIM
    usp_sim_options *s = &o->sim;
    switch (opt) {
    case OPT_PLATFORM: s->platform = arg; return 0;
    case OPT_HOSTMAP: s->hostmap = arg; return 0;
    case OPT_PROFILE: s->profile = arg; return 0;
    case OPT_NO_NUMERICS: s->numerics = 0; return 0;
    case OPT_NO_FOLD: s->no_fold = 1; return 0;
    case OPT_CFG:
        if (s->ncfg == USP_SIM_MAX_CFG)
            return usp_cli_bad_input("run", "at most %d --cfg settings", USP_SIM_MAX_CFG);
        if (!strchr(arg, ':'))
            return usp_cli_bad_input("run", "--cfg '%s' is not NAME:VALUE", arg);
        s->cfg_overrides[s->ncfg++] = arg;
        return 0;
    default: break;
    }
#else
    (void)arg; (void)o;
    if (opt >= OPT_PLATFORM && opt <= OPT_CFG)
        return usp_cli_bad_input("run", "this usp was built without SimGrid: no simulator options");
#endif
    return usp_cli_bad_input("run", "unknown option (usp run --help)");
}

/* The simulator predicts the time of the run a GPU backend would make: in
 * bf16 unless --dtype says otherwise. Without --dtype its numerics (the
 * check) run on the CPU in fp64 while bf16 is timed, in a second simulation
 * without numerics; with --dtype D both are D (a 16-bit D checked as the
 * CPU emulation of usp verify). */
static void choose_dtypes(run_options *o, usp_config *cfg) {
    o->time_dtype = cfg->dtype;
#ifdef USP_HAVE_SIM
    if (strcmp(o->backend, "sim") != 0 || o->dtype_given) return;
    o->time_dtype = USP_BF16;
    if (!o->sim.numerics) cfg->dtype = USP_BF16;
#endif
}

/* Whether the run moves real numbers on the CPU (ref, or sim with numerics). */
static int computes_on_cpu(const run_options *o) {
    if (!strcmp(o->backend, "ref")) return 1;
#ifdef USP_HAVE_SIM
    if (!strcmp(o->backend, "sim")) return o->sim.numerics;
#endif
    return 0;
}

static int check_backend(const run_options *o, const usp_config *cfg) {
    (void)cfg;
    if (!strcmp(o->backend, "ref")) return 0;
#ifdef USP_HAVE_SIM
    if (!strcmp(o->backend, "sim")) return 0;
    return usp_cli_bad_input("run", "unknown backend '%s' (sim, ref)", o->backend);
#else
    if (!strcmp(o->backend, "sim"))
        return usp_cli_bad_input("run", "backend sim: this usp was built without SimGrid");
    return usp_cli_bad_input("run", "unknown backend '%s' (ref)", o->backend);
#endif
}

typedef struct {
    usp_config *cfg;
    run_options *o;
} parse_target;

/* A problem option, one that every backend takes, or one of the simulator. */
static int apply_option(int opt, const char *arg, void *ctx) {
    parse_target *t = ctx;
    if (opt == USP_OPT_DTYPE) t->o->dtype_given = 1;
    int r = usp_cli_config_option("run", opt, arg, t->cfg);
    if (r) return r < 0 ? 2 : 0;
    run_options *o = t->o;
    switch (opt) {
    case RUN_OPT_BACKEND: o->backend = arg; return 0;
    case RUN_OPT_INPUT: o->input_dir = arg; return 0;
    case RUN_OPT_DUMP: o->dump_dir = arg; return 0;
    case RUN_OPT_TRACE: o->trace_path = arg; return 0;
    case RUN_OPT_FWD: o->backward = 0; return 0;
    case RUN_OPT_JSON: o->json = 1; return 0;
    default: return parse_sim_option(opt, arg, o) != 0 ? 2 : 0;
    }
}

static int parse(int argc, char **argv, usp_config *cfg, run_options *o) {
    static const struct option opts[] = {
        USP_CLI_CONFIG_LONGOPTS,
        {"platform", required_argument, 0, OPT_PLATFORM}, {"hostmap", required_argument, 0, OPT_HOSTMAP},
        {"profile", required_argument, 0, OPT_PROFILE}, {"no-numerics", no_argument, 0, OPT_NO_NUMERICS},
        {"cfg", required_argument, 0, OPT_CFG}, {"no-fold", no_argument, 0, OPT_NO_FOLD},
        USP_RUN_LONGOPTS, {0, 0, 0, 0}};
    parse_target t = {cfg, o};
    int rc = usp_cli_parse("run", argc, argv, opts, RUN_OPT_HELP, help, apply_option, &t);
    if (rc) return rc;
    if ((rc = usp_cli_config_finish("run", cfg))) return rc;
    choose_dtypes(o, cfg);
    return check_backend(o, cfg);
}

#ifdef USP_HAVE_SIM
static usp_status exec_sim(const usp_schedule *s, const usp_inputs *in, usp_result *out,
                           usp_trace *trace, void *ctx) {
    return usp_sim_execute(s, in, ctx, out, trace);
}

/* Timing only: no inputs, no reference, no outputs. */
static usp_status run_timing_only(usp_case *c, const run_options *o, usp_trace *tp) {
    USP_TRY(usp_schedule_build(&c->cfg, c->backward, &c->sched));
    USP_TRY(usp_result_init(&c->res, &c->sched, 0));
    usp_sim_options timing_only = o->sim;
    timing_only.numerics = 0;
    USP_TRY(usp_sim_execute(&c->sched, NULL, &timing_only, &c->res, tp));
    c->ntensors = 0;
    c->pass = 1;
    return USP_OK;
}
#endif

static usp_status run_case(usp_case *c, usp_case *timing, const run_options *o, usp_trace *tp) {
#ifdef USP_HAVE_SIM
    if (!strcmp(o->backend, "sim")) {
        USP_TRY(usp_sim_check_options(&o->sim, &c->cfg)); /* before any schedule or tensor */
        if (!o->sim.numerics) return run_timing_only(c, o, tp);
        if (o->time_dtype == c->cfg.dtype) return usp_case_run(c, o->input_dir, exec_sim, (void *)&o->sim, tp);
        /* checked in fp64, timed (and traced) in the GPU's dtype */
        timing->cfg = c->cfg;
        timing->cfg.dtype = o->time_dtype;
        timing->backward = c->backward;
        USP_TRY(usp_sim_check_options(&o->sim, &timing->cfg));
        USP_TRY(usp_case_run(c, o->input_dir, exec_sim, (void *)&o->sim, NULL));
        return run_timing_only(timing, o, tp);
    }
#else
    (void)timing;
#endif
    return usp_case_run(c, o->input_dir, usp_exec_ref, NULL, tp);
}

/* --backend gpu has its own process model and options (run_gpu.c). */
static int wants_gpu(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--backend=gpu")) return 1;
        if (!strcmp(argv[i], "--backend") && i + 1 < argc && !strcmp(argv[i + 1], "gpu")) return 1;
    }
    return 0;
}

int cmd_run(int argc, char **argv) {
    if (wants_gpu(argc, argv)) {
#ifdef USP_HAVE_GPU_EXEC
        return usp_run_gpu_main(argc, argv);
#else
        return usp_cli_bad_input("run", "backend gpu: this usp was built without CUDA and NCCL");
#endif
    }
    usp_config cfg = usp_config_default();
    cfg.kv_heads = 0;
    run_options o = {.backend = USP_DEFAULT_BACKEND, .backward = 1};
#ifdef USP_HAVE_SIM
    o.sim.numerics = 1;
#endif
    int rc = parse(argc, argv, &cfg, &o);
    if (rc) return rc < 0 ? 0 : rc;

    usp_case c = {.cfg = cfg, .backward = o.backward}, timing = {.cfg = cfg};
    usp_config timed_cfg = cfg; /* what the trace shows: the timed run */
    timed_cfg.dtype = o.time_dtype;
    usp_trace trace, *tp = NULL;
    usp_status st = USP_OK;
#ifdef USP_HAVE_SIM
    /* a timing-only run that cannot fit is refused before anything is
     * allocated (with numerics, usp_case_run checks the tensors) */
    if (!strcmp(o.backend, "sim") && !o.sim.numerics && (st = usp_config_validate(&cfg)) == USP_OK)
        st = usp_sim_check_memory(&cfg, o.backward);
    if (st != USP_OK) return usp_cli_report("run", st);
#endif
    if (o.trace_path) { usp_trace_init(&trace, o.backend, &timed_cfg); tp = &trace; }
    /* the simulator adds its events rank by rank: written as they come */
    int streamed = tp && !strcmp(o.backend, "sim");
    if (streamed) st = usp_trace_stream_to(tp, o.trace_path);
    if (st == USP_OK) st = run_case(&c, &timing, &o, tp);
    if (timing.sched.world) o.timing = &timing;
    if (st == USP_OK && o.dump_dir && c.ntensors) st = dump(&c, o.dump_dir);
    if (st == USP_OK && tp) st = streamed ? usp_trace_finish(tp) : usp_trace_write(tp, o.trace_path);
    if (st == USP_OK) {
        if (o.json) print_json(&c, &o); else print_text(&c, &o);
        rc = c.pass ? 0 : 1;
    } else {
        rc = usp_cli_report("run", st);
    }
    if (tp) usp_trace_free(tp);
    usp_case_free(&c);
    usp_case_free(&timing);
    return rc;
}
