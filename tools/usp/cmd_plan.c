/* usp plan: rank the DP x TP x ulysses x ring x ZeRO mixes of a training step. */
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "usp/plan.h"
#include "usp/progress.h"

/* ------------------------------------------------------------ progress */

/* One line on stderr says how far the simulation is (usp/progress.h: after a
 * few seconds, rewritten in place on a terminal, a line now and then in a log). */
static void progress_line(void *ctx, int simulated, int programs) {
    (void)ctx;
    usp_progress(stderr, "usp: plan: simulated %d of %d layer programs (%.0f s)", simulated, programs,
                 usp_progress_elapsed());
}

static void help(void) {
    printf(
        "usage: usp plan --model M --seq L --gpus N [--platform P] [options]\n\n"
        "Which mix of data parallelism (dp), tensor parallelism with sequence parallel\n"
        "(tp), Ulysses degree, ring degree and ZeRO stage trains a model fastest on a\n"
        "cluster without running out of memory? Every dp x tp x ulysses x ring = N is\n"
        "tried with ZeRO 0-3, with and without full activation recomputation; mixes\n"
        "that cannot run are refused with the reason. A recomputing mix is listed only\n"
        "where the same mix does not fit without recomputation (or --recompute yes).\n\n"
        "How a step is predicted: one representative transformer layer per mix is\n"
        "simulated in SimGrid on the platform (forward and backward on every GPU: the\n"
        "matrix products, the USP attention schedule of heads/tp, the TP all-gathers\n"
        "and reduce-scatters, and one layer's ZeRO/DP gradient and parameter\n"
        "collectives overlapped with the computation, as Megatron-LM overlaps them\n"
        "with --overlap-grad-reduce; --grad-sync step: none in the layers, all of them\n"
        "after the backward, as it does by default), then multiplied by the layer\n"
        "count; the embedding, LM head, the collectives nothing can hide and the\n"
        "optimizer step are simulated once. Compute times\n"
        "come from the device profile: attention at its measured rate, matrix\n"
        "products at the profile's \"matmul_tflops\" (a published measurement per GPU)\n"
        "for its measured reduction length, a product reducing over k at\n"
        "k / (k + matmul_short_k) of a long one's rate (--matmul-tflops: one rate for\n"
        "every shape; a profile without figures: 80%% of the dense peak), memory-bound\n"
        "kernels at its HBM rate, plus its launch overhead per kernel. TP collectives\n"
        "are exposed unless --tp-overlap backward.\n\n"
        "FLOPs (model FLOPs, the USP paper's MFU convention; recomputation is never\n"
        "counted): per step, linear 6 x (matrix parameters incl. the LM head) x tokens;\n"
        "attention 4 x B x L^2 x H x D per layer forward, halved when causal (causal\n"
        "attention counted once; with a mask, 4 x B x visible pairs x\n"
        "H x D), backward twice the forward. TFLOP/s per GPU = step\n"
        "FLOPs / GPUs / step time; MFU = that / the profile's dense peak.\n\n"
        "Memory per GPU: parameters and gradients (dtype), optimizer states (12 B per\n"
        "parameter), ZeRO-sharded over the dp x ulysses x ring GPUs of a TP shard;\n"
        "the activations every layer keeps for one micro-batch; the largest transient.\n"
        "OOM marks a mix whose peak exceeds the usable share of the card's memory\n"
        "(the profile's exact capacity x 0.95: the rest goes to the CUDA context, NCCL's\n"
        "buffers and the allocator's unused blocks; sim/SOURCES.md, GPU memory).\n\n"
        "Gradient accumulation (--micro-batch M): each DP rank runs global batch /\n"
        "(dp x M) micro-batches of M sequences, forward and backward, one after the\n"
        "other; gradients accumulate and are synchronized (--grad-sync) and the\n"
        "optimizer runs once, after the last (ZeRO-2/3 reduce every micro-batch's\n"
        "gradients, keeping only their shard; ZeRO-3 gathers parameters every time).\n"
        "A step is (n - 1) accumulating micro-batches + the last one, each simulated.\n\n"
        "Options:\n"
        "  --model M           llama2-7b, llama3-8b, llama3-70b, gpt, or a model .json\n"
        "  --seq L             tokens per sequence; a K suffix multiplies by 1024 (64K)\n"
        "  --gpus N            GPUs to use\n"
        "  --platform P        SimGrid preset or XML file (default h200x8; usp platform --list)\n"
        "  --profile F         device profile (default: the preset's GPU)\n"
        "  --global-batch B    sequences per step (default 1); dp must divide it\n"
        "  --micro-batch M     sequences per DP rank per forward/backward (default: global\n"
        "                      batch / dp, no accumulation); dp x M must divide B\n"
        "  --dtype T           bf16 or fp16 (default bf16)\n"
        "  --ring-impl I       zigzag, stripe, basic, allgather (default zigzag)\n"
        "  --no-causal         bidirectional attention (default causal)\n"
        "  --seqlens L1,L2,..  each sequence packs these documents (attention inside\n"
        "                      each, causal unless --no-causal; --seq defaults to their\n"
        "                      total; --ring-impl defaults to balanced)\n"
        "  --seqlens-file F    .npy of cumulative lengths (cu_seqlens, (n+1,)): the\n"
        "                      packing of every sequence (--seq defaults to its total)\n"
        "  --mask FILE.json    slices [{\"q\": [q0, q1], \"k\": [k0, k1], \"type\":\n"
        "                      \"full\" | \"causal\" | \"bicausal\"}, ...] over --seq tokens\n"
        "  --window LEFT,RIGHT sliding window, query i sees keys i-LEFT..i+RIGHT (-1: unbounded)\n"
        "                      (any of the four masks sets --ring-impl balanced by default)\n"
        "  --dp/--tp/--ulysses/--ring K   fix a degree\n"
        "  --zero S            fix the ZeRO stage (0-3)\n"
        "  --recompute yes|no  fix full activation recomputation\n"
        "  --matmul-tflops X   achieved TFLOP/s of the matrix products, every shape alike\n"
        "                      (default: the profile's matmul_tflops at its measured\n"
        "                      reduction length, shorter reductions slower)\n"
        "  --tp-overlap M      none (default: every TP collective exposed) or backward\n"
        "                      (Megatron-LM's asynchronous path: the backward's all-gather\n"
        "                      behind the data-gradient product, its reduce-scatter behind\n"
        "                      the weight-gradient product)\n"
        "  --grad-sync M       layer (default: each layer's gradient reduction and ZeRO\n"
        "                      parameter all-gather behind the computation) or step (one\n"
        "                      reduction of every gradient after the backward, the\n"
        "                      optimizer, one all-gather of the parameters, nothing\n"
        "                      overlapped: Megatron-LM without --overlap-grad-reduce)\n"
        "  --grad-dtype T      dtype (default: gradients in the data dtype) or fp32\n"
        "                      (kept and reduced in fp32, as Megatron-LM does in bf16)\n"
        "  --full-sim          simulate every GPU (default: where every GPU has links of\n"
        "                      its own, one per ring position stands for the GPUs doing\n"
        "                      the same work, which is much faster at scale)\n"
        "  --top K             show the K best mixes (default 10, 0: all)\n"
        "  --per-degrees       one row per dp x tp x ulysses x ring: its best ZeRO stage\n"
        "                      and recomputation\n"
        "  --all               also list the refused degrees with their reason\n"
        "  --explain[=K]       communication volume and memory of the mix ranked K (the\n"
        "                      rank column; default 1), term by term, closed form and\n"
        "                      simulated\n"
        "  --json              one JSON object (its fields: sim/plan/README.md, \"JSON\")\n");
}

typedef struct {
    usp_workload w;
    usp_plan_options o;
    const char *model;
    int top, all, distinct, explain, json;
    usp_mask_spec mask;
    int seq_given, impl_given;
} plan_args;

static int seq_option(const char *arg, int *out) {
    char buf[32];
    long v;
    size_t n = strlen(arg);
    int k = n > 0 && (arg[n - 1] == 'K' || arg[n - 1] == 'k');
    if (n >= sizeof buf) return -1;
    memcpy(buf, arg, n + 1);
    if (k) buf[n - 1] = '\0';
    if (usp_parse_int(buf, 1, k ? (1L << 21) : (1L << 31) - 1, &v) != 0) return -1;
    *out = (int)(k ? v * 1024 : v);
    return 0;
}

static int int_opt(const char *name, const char *arg, long lo, long hi, int *out) {
    return usp_cli_int_option("plan", name, arg, lo, hi, out);
}

enum {
    OPT_MODEL = USP_OPT_CMD_FIRST, OPT_SEQ, OPT_GPUS, OPT_PLATFORM, OPT_PROFILE, OPT_BATCH, OPT_DTYPE, OPT_RING_IMPL,
    OPT_NO_CAUSAL, OPT_DP, OPT_TP, OPT_ULYSSES, OPT_RING, OPT_ZERO, OPT_RECOMPUTE, OPT_MATMUL, OPT_TOP, OPT_ALL,
    OPT_EXPLAIN, OPT_DISTINCT, OPT_JSON, OPT_TP_OVERLAP, OPT_GRAD_SYNC, OPT_GRAD_DTYPE, OPT_SEQLENS, OPT_WINDOW,
    OPT_SEQLENS_FILE, OPT_MASK, OPT_MICRO, OPT_FULL, OPT_HELP
};

static int apply_option(int opt, const char *arg, void *ctx) {
    plan_args *a = ctx;
    switch (opt) {
    case OPT_MODEL: a->model = arg; return 0;
    case OPT_SEQLENS: a->mask.seqlens = arg; return 0;
    case OPT_WINDOW: a->mask.window = arg; return 0;
    case OPT_SEQLENS_FILE: a->mask.seqlens_file = arg; return 0;
    case OPT_MASK: a->mask.mask_file = arg; return 0;
    case OPT_SEQ:
        a->seq_given = 1;
        return seq_option(arg, &a->w.seq) ? usp_cli_bad_input("plan", "--seq '%s' is not a token count", arg) : 0;
    case OPT_GPUS: return int_opt("gpus", arg, 1, USP_PLAN_MAX_GPUS, &a->o.gpus);
    case OPT_PLATFORM: a->o.platform = arg; return 0;
    case OPT_PROFILE: a->o.profile = arg; return 0;
    case OPT_BATCH: return int_opt("global-batch", arg, 1, 1 << 20, &a->w.global_batch);
    case OPT_MICRO: return int_opt("micro-batch", arg, 1, 1 << 20, &a->w.micro_batch);
    case OPT_DTYPE:
        if (usp_parse_dtype(arg, &a->w.dtype) != USP_OK) return usp_cli_report("plan", USP_EINVAL);
        return 0;
    case OPT_RING_IMPL:
        a->impl_given = 1;
        if (usp_parse_ring_impl(arg, &a->w.ring_impl) != USP_OK) return usp_cli_report("plan", USP_EINVAL);
        return 0;
    case OPT_NO_CAUSAL: a->w.causal = 0; return 0;
    case OPT_DP: return int_opt("dp", arg, 1, USP_PLAN_MAX_GPUS, &a->o.dp);
    case OPT_TP: return int_opt("tp", arg, 1, USP_PLAN_MAX_GPUS, &a->o.tp);
    case OPT_ULYSSES: return int_opt("ulysses", arg, 1, USP_PLAN_MAX_GPUS, &a->o.ulysses);
    case OPT_RING: return int_opt("ring", arg, 1, USP_PLAN_MAX_GPUS, &a->o.ring);
    case OPT_ZERO: return int_opt("zero", arg, 0, 3, &a->o.zero);
    case OPT_RECOMPUTE:
        if (strcmp(arg, "yes") && strcmp(arg, "no"))
            return usp_cli_bad_input("plan", "--recompute '%s' is not yes or no", arg);
        a->o.recompute = strcmp(arg, "yes") == 0;
        return 0;
    case OPT_MATMUL:
        if (usp_parse_double(arg, &a->o.matmul_tflops) != 0 || !(a->o.matmul_tflops > 0))
            return usp_cli_bad_input("plan", "--matmul-tflops '%s' is not a positive number", arg);
        return 0;
    case OPT_TP_OVERLAP:
        if (!strcmp(arg, "none")) a->o.tp_overlap = 0;
        else if (!strcmp(arg, "backward")) a->o.tp_overlap = 1;
        else return usp_cli_bad_input("plan", "--tp-overlap '%s': none or backward", arg);
        return 0;
    case OPT_GRAD_SYNC:
        if (!strcmp(arg, "layer")) a->w.grad_sync_step = 0;
        else if (!strcmp(arg, "step")) a->w.grad_sync_step = 1;
        else return usp_cli_bad_input("plan", "--grad-sync '%s': layer or step", arg);
        return 0;
    case OPT_GRAD_DTYPE:
        if (!strcmp(arg, "dtype")) a->w.grad_fp32 = 0;
        else if (!strcmp(arg, "fp32")) a->w.grad_fp32 = 1;
        else return usp_cli_bad_input("plan", "--grad-dtype '%s': dtype or fp32", arg);
        return 0;
    case OPT_TOP: return int_opt("top", arg, 0, 1 << 20, &a->top);
    case OPT_ALL: a->all = 1; return 0;
    case OPT_EXPLAIN: return arg ? int_opt("explain", arg, 1, 1 << 20, &a->explain) : (a->explain = 1, 0);
    case OPT_DISTINCT: a->distinct = 1; return 0;
    case OPT_JSON: a->json = 1; return 0;
    case OPT_FULL: a->o.full = 1; return 0;
    default: return usp_cli_bad_input("plan", "unknown option (usp plan --help)");
    }
}

static int parse(int argc, char **argv, plan_args *a) {
    static const struct option opts[] = {
        {"model", required_argument, 0, OPT_MODEL}, {"seq", required_argument, 0, OPT_SEQ},
        {"gpus", required_argument, 0, OPT_GPUS}, {"platform", required_argument, 0, OPT_PLATFORM},
        {"profile", required_argument, 0, OPT_PROFILE}, {"global-batch", required_argument, 0, OPT_BATCH},
        {"micro-batch", required_argument, 0, OPT_MICRO},
        {"dtype", required_argument, 0, OPT_DTYPE}, {"ring-impl", required_argument, 0, OPT_RING_IMPL},
        {"no-causal", no_argument, 0, OPT_NO_CAUSAL}, {"dp", required_argument, 0, OPT_DP},
        {"tp", required_argument, 0, OPT_TP}, {"ulysses", required_argument, 0, OPT_ULYSSES},
        {"ring", required_argument, 0, OPT_RING}, {"zero", required_argument, 0, OPT_ZERO},
        {"recompute", required_argument, 0, OPT_RECOMPUTE}, {"matmul-tflops", required_argument, 0, OPT_MATMUL},
        {"top", required_argument, 0, OPT_TOP}, {"all", no_argument, 0, OPT_ALL},
        {"explain", optional_argument, 0, OPT_EXPLAIN}, {"per-degrees", no_argument, 0, OPT_DISTINCT},
        {"json", no_argument, 0, OPT_JSON}, {"tp-overlap", required_argument, 0, OPT_TP_OVERLAP},
        {"grad-sync", required_argument, 0, OPT_GRAD_SYNC}, {"grad-dtype", required_argument, 0, OPT_GRAD_DTYPE},
        {"seqlens", required_argument, 0, OPT_SEQLENS}, {"window", required_argument, 0, OPT_WINDOW},
        {"seqlens-file", required_argument, 0, OPT_SEQLENS_FILE}, {"mask", required_argument, 0, OPT_MASK},
        {"full-sim", no_argument, 0, OPT_FULL}, {"help", no_argument, 0, OPT_HELP}, {0, 0, 0, 0}};
    int rc = usp_cli_parse("plan", argc, argv, opts, OPT_HELP, help, apply_option, a);
    if (rc) return rc;
    if (a->o.gpus < 1) return usp_cli_bad_input("plan", "--gpus is required (how many GPUs to plan for)");
    if (a->w.dtype != USP_BF16 && a->w.dtype != USP_F16)
        return usp_cli_bad_input("plan", "--dtype %s: training mixes are planned in bf16 or fp16",
                                 usp_dtype_name(a->w.dtype));
    if (usp_mask_spec_given(&a->mask)) {
        usp_mask *m = NULL;
        a->mask.causal = a->w.causal;
        /* one list: every sequence of the step packs the same way */
        long seq = (a->mask.seqlens || a->mask.seqlens_file) && !a->seq_given ? 0 : a->w.seq;
        if (usp_mask_build(&a->mask, seq, 1, &m) != USP_OK)
            return usp_cli_report("plan", USP_EINVAL);
        a->w.seq = (int)usp_mask_seq(m);
        a->w.mask = m; /* freed by cmd_plan */
        if (!a->impl_given) a->w.ring_impl = USP_RING_BALANCED;
    }
    return 0;
}

/* Nothing can run: one reason when every refused mix has the same degrees. */
static int refuse_all(const usp_plan *p) {
    for (int i = 1; i < p->count; i++) {
        const usp_mix *a = &p->points[0].mix, *b = &p->points[i].mix;
        if (a->dp != b->dp || a->tp != b->tp || a->ulysses != b->ulysses || a->ring != b->ring)
            return usp_cli_bad_input("plan", "no mix can run (--all lists the reasons)");
    }
    return usp_cli_bad_input("plan", "%s", p->points[0].why);
}

static int plan_and_print(plan_args *pa);

int cmd_plan(int argc, char **argv) {
    plan_args a;
    memset(&a, 0, sizeof a);
    a.w = usp_workload_default();
    usp_plan_options_init(&a.o);
    a.model = "llama3-8b";
    a.top = 10;
    int rc = parse(argc, argv, &a);
    if (rc) return rc < 0 ? 0 : rc;
    rc = plan_and_print(&a);
    usp_mask_free((usp_mask *)a.w.mask); /* parse built it, NULL without one */
    return rc;
}

/* The plan of parsed options, printed: the exit code. */
static int plan_and_print(plan_args *pa) {
    plan_args a = *pa;
    usp_status st = usp_model_load(a.model, &a.w.model);
    if (st != USP_OK) return usp_cli_report("plan", st);
    usp_plan p;
    usp_progress_begin();
    a.o.progress = progress_line;
    a.o.progress_ctx = NULL;
    /* Only the rows shown need exact times: mixes that cannot reach them are not
     * simulated (with --per-degrees every degree combination's best is shown). */
    a.o.keep = a.distinct || a.top == 0 ? 0 : a.top > a.explain ? a.top : a.explain;
    st = usp_plan_run(&a.w, &a.o, &p);
    usp_progress_end(stderr, 1);
    if (st != USP_OK) return usp_cli_report("plan", st);
    if (p.runnable > 0 && a.explain > p.runnable) {
        usp_plan_free(&p);
        return usp_cli_bad_input("plan", "--explain=%d but only %d mixes can run", a.explain, p.runnable);
    }
    if (a.json) {
        usp_plan_print_json(stdout, &p, a.top, a.all, a.distinct, a.explain - 1);
    } else {
        usp_plan_print(stdout, &p, a.top, a.all, a.distinct);
        if (a.explain) usp_plan_explain(stdout, &p, a.explain - 1);
    }
    int rc = p.runnable == 0 ? refuse_all(&p) : 0;
    usp_plan_free(&p);
    return rc;
}
