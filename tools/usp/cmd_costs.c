/* usp costs: the per-layer communication and memory of each parallelism. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "usp/plan.h"

static void help(void) {
    printf(
        "usage: usp costs [--model M] [--seq L] [--degree N] [dimension options] [--json]\n\n"
        "The USP paper's table of communication and memory costs (arXiv 2405.07719,\n"
        "Table 2) computed exactly at given dimensions: for SP-Ulysses, SP-Ring, USP,\n"
        "DP, ZeRO-1/2/3, TP and TP-sp, each of degree N, the bytes one GPU sends per\n"
        "transformer layer (forward + backward) for parameters/gradients and for\n"
        "activations, and the memory it holds per layer: parameters + gradients,\n"
        "optimizer states, saved activations. These closed forms are the ones the\n"
        "simulator's byte counts are tested against (usp plan --explain shows both).\n\n"
        "Options:\n"
        "  --model M          llama2-7b, llama3-8b, llama3-70b, gpt or a .json (default llama3-8b)\n"
        "  --hidden/--heads/--kv-heads/--head-dim/--ffn/--vocab K   override a dimension\n"
        "  --mlp swiglu|gelu  MLP kind\n"
        "  --seq L            tokens per sequence, K suffix x1024 (default 64K)\n"
        "  --batch B          sequences (default N, so that DP and ZeRO rows can split them)\n"
        "  --degree N         parallel degree of every row (default 8)\n"
        "  --ulysses U        ulysses degree of the USP row (default: the divisor of N nearest\n"
        "                     sqrt(N), not above it); ring = N / U\n"
        "  --dtype T          bf16 or fp16 (default bf16)\n"
        "  --ring-impl I      zigzag, stripe, basic, allgather (default zigzag)\n"
        "  --json             one JSON object\n");
}

enum {
    OPT_MODEL = USP_OPT_CMD_FIRST, OPT_HIDDEN, OPT_HEADS, OPT_KV, OPT_HEAD_DIM, OPT_FFN, OPT_VOCAB, OPT_MLP, OPT_SEQ,
    OPT_BATCH, OPT_DEGREE, OPT_ULYSSES, OPT_DTYPE, OPT_RING_IMPL, OPT_JSON, OPT_HELP
};

typedef struct {
    usp_workload w;
    const char *model;
    int dims[OPT_MLP - OPT_HIDDEN]; /* overrides, 0: the model's */
    int mlp;                        /* -1 the model's, 0 gelu, 1 swiglu */
    int degree, ulysses, json;
} costs_args;

static int int_opt(const char *name, const char *arg, long lo, long hi, int *out) {
    long v;
    char buf[32];
    size_t n = strlen(arg);
    int k = !strcmp(name, "seq") && n > 0 && n < sizeof buf && (arg[n - 1] == 'K' || arg[n - 1] == 'k');
    snprintf(buf, sizeof buf, "%s", arg);
    if (k) buf[n - 1] = '\0';
    if (usp_parse_int(buf, lo, hi, &v) != 0 || (k && v > hi / 1024))
        return usp_cli_bad_input("costs", "--%s '%s' is not an integer in %ld..%ld", name, arg, lo, hi);
    *out = (int)(k ? v * 1024 : v);
    return 0;
}

static int apply_option(int opt, const char *arg, void *ctx) {
    costs_args *a = ctx;
    static const char *dim_names[] = {"hidden", "heads", "kv-heads", "head-dim", "ffn", "vocab"};
    if (opt >= OPT_HIDDEN && opt < OPT_MLP)
        return int_opt(dim_names[opt - OPT_HIDDEN], arg, 1, 1 << 24, &a->dims[opt - OPT_HIDDEN]);
    switch (opt) {
    case OPT_MODEL: a->model = arg; return 0;
    case OPT_MLP:
        if (strcmp(arg, "swiglu") && strcmp(arg, "gelu"))
            return usp_cli_bad_input("costs", "--mlp '%s' is not swiglu or gelu", arg);
        a->mlp = strcmp(arg, "swiglu") == 0;
        return 0;
    case OPT_SEQ: return int_opt("seq", arg, 1, (1L << 31) - 1, &a->w.seq);
    case OPT_BATCH: return int_opt("batch", arg, 1, 1 << 20, &a->w.global_batch);
    case OPT_DEGREE: return int_opt("degree", arg, 1, 4096, &a->degree);
    case OPT_ULYSSES: return int_opt("ulysses", arg, 1, 4096, &a->ulysses);
    case OPT_DTYPE:
        if (usp_parse_dtype(arg, &a->w.dtype) != USP_OK) return usp_cli_report("costs", USP_EINVAL);
        return 0;
    case OPT_RING_IMPL:
        if (usp_parse_ring_impl(arg, &a->w.ring_impl) != USP_OK) return usp_cli_report("costs", USP_EINVAL);
        return 0;
    case OPT_JSON: a->json = 1; return 0;
    default: return usp_cli_bad_input("costs", "unknown option (usp costs --help)");
    }
}

static int parse(int argc, char **argv, costs_args *a) {
    static const struct option opts[] = {
        {"model", required_argument, 0, OPT_MODEL}, {"hidden", required_argument, 0, OPT_HIDDEN},
        {"heads", required_argument, 0, OPT_HEADS}, {"kv-heads", required_argument, 0, OPT_KV},
        {"head-dim", required_argument, 0, OPT_HEAD_DIM}, {"ffn", required_argument, 0, OPT_FFN},
        {"vocab", required_argument, 0, OPT_VOCAB}, {"mlp", required_argument, 0, OPT_MLP},
        {"seq", required_argument, 0, OPT_SEQ}, {"batch", required_argument, 0, OPT_BATCH},
        {"degree", required_argument, 0, OPT_DEGREE}, {"ulysses", required_argument, 0, OPT_ULYSSES},
        {"dtype", required_argument, 0, OPT_DTYPE}, {"ring-impl", required_argument, 0, OPT_RING_IMPL},
        {"json", no_argument, 0, OPT_JSON}, {"help", no_argument, 0, OPT_HELP}, {0, 0, 0, 0}};
    return usp_cli_parse("costs", argc, argv, opts, OPT_HELP, help, apply_option, a);
}

/* The divisor of n nearest sqrt(n) from below: 16 -> 4, 8 -> 2. */
static int default_ulysses(int n) {
    int best = 1;
    for (int u = 1; u * u <= n; u++)
        if (n % u == 0) best = u;
    return best;
}

static usp_status load_model(costs_args *a) {
    USP_TRY(usp_model_load(a->model, &a->w.model));
    usp_model *m = &a->w.model;
    int *fields[] = {&m->hidden, &m->heads, &m->kv_heads, &m->head_dim, &m->ffn, &m->vocab};
    for (int i = 0; i < 6; i++)
        if (a->dims[i]) *fields[i] = a->dims[i];
    if (a->dims[0] || a->dims[1]) m->head_dim = a->dims[3] ? a->dims[3] : m->hidden / m->heads;
    if (a->dims[1] && !a->dims[2]) m->kv_heads = m->heads;
    if (a->mlp >= 0) m->gated_mlp = a->mlp;
    return usp_model_validate(m);
}

int cmd_costs(int argc, char **argv) {
    costs_args a;
    memset(&a, 0, sizeof a);
    a.w = usp_workload_default();
    a.w.global_batch = 0;
    a.model = "llama3-8b";
    a.mlp = -1;
    a.degree = 8;
    int rc = parse(argc, argv, &a);
    if (rc) return rc < 0 ? 0 : rc;
    if (a.w.dtype != USP_BF16 && a.w.dtype != USP_F16)
        return usp_cli_bad_input("costs", "--dtype %s: training costs are for bf16 or fp16", usp_dtype_name(a.w.dtype));
    usp_status st = load_model(&a);
    if (st != USP_OK) return usp_cli_report("costs", st);
    if (!a.w.global_batch) a.w.global_batch = a.degree;
    if (!a.ulysses) a.ulysses = default_ulysses(a.degree);
    usp_cost rows[USP_COST_ROWS];
    usp_status row_status[USP_COST_ROWS];
    char why[USP_COST_ROWS][200];
    st = usp_costs(&a.w, a.degree, a.ulysses, rows, row_status, why);
    if (st != USP_OK) return usp_cli_report("costs", st);
    if (a.json) usp_costs_print_json(stdout, &a.w, a.degree, rows, row_status, why);
    else usp_costs_print(stdout, &a.w, a.degree, rows, row_status, why);
    return 0;
}
