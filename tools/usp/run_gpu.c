/* run_gpu.c: `usp run --backend gpu`: one process per GPU.
 *
 * Under a launcher (torchrun, srun, mpirun: RANK or its equivalents set)
 * this process is one rank. Without one, it starts the ranks itself on this
 * machine (--gpus N, default ulysses x ring) and only waits for them.
 *
 * A rank runs the schedule on its GPU; rank 0 gathers the outputs and the
 * step times, lets the other ranks go, and only then computes the fp64
 * reference and compares (through the runcase machinery), so no GPU waits
 * for the CPU reference. */
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "usp/layout.h"
#include "run_gpu.h"
#include "run_report.h"
#include "runcase.h"
#include "usp/gpu_exec.h"

typedef struct {
    const char *input_dir, *dump_dir, *trace_path, *kernel_path;
    int json, backward, check, gpus, warmup, iters;
    double timeout_s;
} gpu_options;

static void help(void) {
    printf("usage: usp run --backend gpu [options] [problem options]\n\n"
           "Runs the USP schedule with one process per GPU: NCCL all-to-all (ulysses),\n"
           "ring send/recv, all-gather / reduce-scatter; attention through the kernel ABI.\n"
           "Rank 0 gathers O, LSE, dQ, dK, dV and checks them against the fp64 reference\n"
           "(bf16 1e-2 forward, 2e-2 backward; fp16 2e-3 / 5e-3). Every step is timed\n"
           "with CUDA events. Exit 0 when every tensor passes, 1 when one does not or a\n"
           "rank failed, 2 on bad input.\n\n"
           "Ranks: under torchrun, srun or mpirun each process is one rank (RANK,\n"
           "WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT or the launcher's own\n"
           "variables). Without a launcher usp starts the ranks itself on this machine.\n\n"
           "  --gpus N          ranks to start here (default ulysses x ring)\n"
           "  --kernel PATH.so  attention kernels from a plugin (default: built in)\n"
           "  --no-check        no reference, no gathering; inputs made on the GPU\n"
           "  --timeout S       a peer or a step that takes longer fails the run (default 120)\n"
           "  --warmup N        untimed runs first (default 1)\n"
           "  --iters N         timed runs; times are their median (default 1)\n"
           "  --input DIR       read DIR/q.npy k.npy v.npy [do.npy], (B, L, H, D)\n"
           "  --dump DIR        write o lse dq dk dv and ref_o ... ref_dv as .npy\n"
           "  --trace FILE      Chrome trace (Perfetto) of the last timed run, every rank\n"
           "  --forward-only    skip the backward pass\n"
           "  --json            one JSON object instead of the text summary\n\n"
           "Transport: NCCL, one rank per GPU; ranks that share a GPU of one machine\n"
           "(more ranks than GPUs here, which NCCL refuses) talk through CUDA IPC\n"
           "instead. USP_TRANSPORT=nccl or ipc forces one (with nccl, ranks sharing a\n"
           "GPU are refused, exit 2). Times of ranks sharing a GPU are not those of\n"
           "separate GPUs. Head counts the ulysses degree does not divide run too, each\n"
           "rank its own share (heads 6 over ulysses 4: 2, 2, 1, 1).\n\n");
    usp_cli_config_help(stdout);
}

/* ------------------------------------------------------------ options */

enum {
    OPT_GPUS = RUN_OPT_OWN_FIRST, OPT_KERNEL, OPT_NO_CHECK, OPT_TIMEOUT, OPT_WARMUP, OPT_ITERS
};

static int int_arg(const char *name, const char *arg, long lo, long hi, int *out) {
    return usp_cli_int_option("run", name, arg, lo, hi, out);
}

static int own_option(int opt, const char *arg, gpu_options *o) {
    switch (opt) {
    case RUN_OPT_BACKEND:
        if (strcmp(arg, "gpu") != 0) return usp_cli_bad_input("run", "--backend %s cannot follow --backend gpu", arg);
        return 0;
    case RUN_OPT_INPUT: o->input_dir = arg; return 0;
    case RUN_OPT_DUMP: o->dump_dir = arg; return 0;
    case RUN_OPT_TRACE: o->trace_path = arg; return 0;
    case RUN_OPT_FWD: o->backward = 0; return 0;
    case RUN_OPT_JSON: o->json = 1; return 0;
    case OPT_GPUS: return int_arg("gpus", arg, 1, 4096, &o->gpus);
    case OPT_KERNEL: o->kernel_path = arg; return 0;
    case OPT_NO_CHECK: o->check = 0; return 0;
    case OPT_WARMUP: return int_arg("warmup", arg, 0, 1000, &o->warmup);
    case OPT_ITERS: return int_arg("iters", arg, 1, 1000, &o->iters);
    case OPT_TIMEOUT: return usp_cli_seconds_option("run", "timeout", arg, &o->timeout_s);
    default: return usp_cli_bad_input("run", "unknown option for --backend gpu (usp run --backend gpu --help)");
    }
}

typedef struct {
    usp_config *cfg;
    gpu_options *o;
} parse_target;

/* A problem option, else one of --backend gpu's own. */
static int apply_option(int opt, const char *arg, void *ctx) {
    parse_target *t = ctx;
    int r = usp_cli_config_option("run", opt, arg, t->cfg);
    if (r) return r < 0 ? 2 : 0;
    return own_option(opt, arg, t->o) ? 2 : 0;
}

/* 0: go on; -1: --help was printed; else the exit code. */
static int parse(int argc, char **argv, usp_config *cfg, gpu_options *o) {
    static const struct option opts[] = {
        USP_CLI_CONFIG_LONGOPTS,
        USP_RUN_LONGOPTS, {"gpus", required_argument, 0, OPT_GPUS},
        {"kernel", required_argument, 0, OPT_KERNEL}, {"no-check", no_argument, 0, OPT_NO_CHECK},
        {"timeout", required_argument, 0, OPT_TIMEOUT}, {"warmup", required_argument, 0, OPT_WARMUP},
        {"iters", required_argument, 0, OPT_ITERS}, {0, 0, 0, 0}};
    parse_target t = {cfg, o};
    int rc = usp_cli_parse("run", argc, argv, opts, RUN_OPT_HELP, help, apply_option, &t);
    if (rc) return rc;
    if ((rc = usp_cli_config_finish("run", cfg))) return rc;
    if (usp_config_validate(cfg) != USP_OK) return usp_cli_report("run", USP_EINVAL);
    if (!o->check && (o->dump_dir || o->input_dir))
        return usp_cli_bad_input("run", "--no-check makes its inputs on the GPU: no --input or --dump");
    return 0;
}

/* ------------------------------------------------------------ one rank */

/* usp_case_run's executor on rank 0: the GPU run is over, hand its result on. */
static usp_status hand_over(const usp_schedule *s, const usp_inputs *in, usp_result *out, usp_trace *trace,
                            void *done) {
    (void)s; (void)in; (void)trace;
    usp_result_free(out);
    *out = *(usp_result *)done;
    memset(done, 0, sizeof(usp_result));
    return USP_OK;
}

typedef struct {
    usp_schedule sched;
    usp_inputs in;
    usp_result res;
    usp_trace trace;
    int has_inputs, has_trace;
} gpu_job;

static void job_free(gpu_job *j) {
    usp_result_free(&j->res);
    if (j->has_inputs) usp_inputs_free(&j->in);
    if (j->has_trace) usp_trace_free(&j->trace);
    usp_schedule_free(&j->sched);
}

/* Every rank: the schedule, its inputs, the GPU run. */
static usp_status run_on_gpu(const usp_config *cfg, const gpu_options *o, usp_gpu_ctx *ctx,
                             const usp_kernel *k, gpu_job *j) {
    int root = usp_gpu_rank(ctx) == 0;
    USP_TRY(usp_schedule_build(cfg, o->backward, &j->sched));
    if (o->check) {
        USP_TRY(usp_inputs_make(cfg, o->input_dir, &j->in));
        j->has_inputs = 1;
    }
    USP_TRY(usp_result_init(&j->res, &j->sched, root && o->check));
    if (root && o->trace_path) {
        usp_trace_init(&j->trace, "gpu", cfg);
        j->has_trace = 1;
    }
    usp_gpu_options go = {.ctx = ctx, .kernel = k, .warmup = o->warmup, .iters = o->iters,
                          .gather_outputs = o->check};
    return usp_gpu_execute(&j->sched, j->has_inputs ? &j->in : NULL, &go, &j->res,
                           j->has_trace ? &j->trace : NULL);
}

/* Rank 0, after the other ranks are gone: reference, comparison, report. */
static int report(const usp_config *cfg, const gpu_options *o, gpu_job *j) {
    usp_case c = {.cfg = *cfg, .backward = o->backward};
    usp_status st = USP_OK;
    if (o->check) {
        st = usp_case_run(&c, o->input_dir, hand_over, &j->res, NULL);
    } else {
        c.sched = j->sched;       /* the case owns them from here */
        c.res = j->res;
        memset(&j->sched, 0, sizeof j->sched);
        memset(&j->res, 0, sizeof j->res);
        c.ntensors = 0;
        c.pass = 1;
    }
    if (st == USP_OK && o->dump_dir) st = usp_run_dump(&c, o->dump_dir);
    if (st == USP_OK && j->has_trace) st = usp_trace_write(&j->trace, o->trace_path);
    int rc;
    if (st == USP_OK) {
        usp_run_print(&c, "gpu", o->json);
        rc = c.pass ? 0 : 1;
    } else {
        rc = usp_cli_report("run", st);
    }
    usp_case_free(&c);
    return rc;
}

static int run_rank(const usp_gpu_env *env, const usp_config *cfg, const gpu_options *o) {
    usp_gpu_ctx *ctx = NULL;
    const usp_kernel *k = NULL;
    void *plugin = NULL;
    if (o->kernel_path && usp_kernel_load(o->kernel_path, &k, &plugin) != USP_OK)
        return usp_cli_report("run", USP_EINVAL);
    usp_status st = usp_gpu_open(env, o->timeout_s, &ctx);
    if (st != USP_OK) {
        if (plugin) usp_kernel_unload(plugin);
        return usp_cli_report("run", st);
    }
    gpu_job j;
    memset(&j, 0, sizeof j);
    st = run_on_gpu(cfg, o, ctx, k, &j);
    int root = usp_gpu_rank(ctx) == 0, rc = 0;
    if (st == USP_OK) {
        usp_gpu_close(ctx);
        if (root) rc = report(cfg, o, &j);
    } else {
        rc = usp_cli_report("run", st);
        usp_gpu_abort(ctx);
    }
    job_free(&j);
    if (plugin) usp_kernel_unload(plugin);
    return rc;
}

/* ------------------------------------------------------------ entry */

/* Self-launch: this same command again, as `usp run ...` in every rank. */
static int launch_here(int argc, char **argv, int nranks, double timeout_s) {
    char **full = calloc((size_t)argc + 2, sizeof *full);
    if (!full) return 1;
    full[0] = "usp";
    for (int i = 0; i < argc; i++) full[i + 1] = argv[i];
    int rc = usp_gpu_launch_local(nranks, full, timeout_s);
    free(full);
    return rc;
}

int usp_run_gpu_main(int argc, char **argv) {
    usp_config cfg = usp_config_default();
    cfg.kv_heads = 0;
    gpu_options o = {.backward = 1, .check = 1, .warmup = 1, .iters = 1, .timeout_s = 120};
    int rc = parse(argc, argv, &cfg, &o);
    if (rc) return rc < 0 ? 0 : rc;
    int world = usp_world(&cfg), found;
    usp_gpu_env env;
    if (usp_gpu_env_read(&env, &found) != USP_OK) return usp_cli_report("run", USP_EINVAL);
    if (!found) {
        int n = o.gpus ? o.gpus : world;
        if (n != world)
            return usp_cli_bad_input("run", "--gpus %d but ulysses %d x ring %d = %d ranks", n, cfg.ulysses,
                                     cfg.ring, world);
        return launch_here(argc, argv, n, o.timeout_s);
    }
    if (env.world != world)
        return usp_cli_bad_input("run", "the launcher started %d ranks (%s) but ulysses %d x ring %d = %d",
                                 env.world, env.source, cfg.ulysses, cfg.ring, world);
    return run_rank(&env, &cfg, &o);
}
