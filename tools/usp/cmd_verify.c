/* usp verify: the built-in matrix of shardings, each against the reference.
 *
 * World 1, 2, 4, 8 with every ulysses x ring factorization; every ring_impl
 * (zigzag and stripe causal only) and both layouts; kv_heads = heads, fewer,
 * and 1 (so ulysses 8 replicates K/V); sequence lengths that are not powers
 * of two where the layout allows; forward and backward. */
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "runcase.h"

typedef struct { usp_ring_impl impl; int causal; } impl_case;
static const impl_case impls[] = {
    {USP_RING_BASIC, 0}, {USP_RING_BASIC, 1}, {USP_RING_ZIGZAG, 1},
    {USP_RING_STRIPE, 1}, {USP_RING_ALLGATHER, 0}, {USP_RING_ALLGATHER, 1}};
static const int worlds[] = {1, 2, 4, 8};
static const int kv_heads[] = {8, 2, 1};

/* Zigzag-like layouts need seq % (2*world) == 0; the others only seq % world. */
static int case_seq(const usp_config *c, int world) {
    int balanced = c->ring_impl == USP_RING_ZIGZAG || (c->ring_impl == USP_RING_ALLGATHER && c->causal);
    return balanced ? 2 * world * (24 / world) : world * (47 / world);
}

static void help(void) {
    printf("usage: usp verify [--dtype fp64|fp32] [--quick] [--json]\n\n"
           "Runs the built-in matrix: world 1, 2, 4, 8 with every ulysses x ring split,\n"
           "every ring_impl and layout, causal and not, kv_heads 8, 2 and 1, forward and\n"
           "backward; each case against the fp64 dense reference (tolerance 1e-12 in\n"
           "fp64, 1e-5 in fp32). One line per case, a summary; exit 1 on any failure.\n"
           "  --quick   one layout and kv_heads 8 and 1 only\n");
}

static void print_case(const usp_case *c, int index, int json) {
    const usp_config *k = &c->cfg;
    double worst = 0;
    for (int t = 0; t < c->ntensors; t++)
        if (c->err[t].rel / c->tol[t] > worst) worst = c->err[t].rel / c->tol[t];
    if (json) {
        printf("%s\n  {\"case\": %d, \"ulysses\": %d, \"ring\": %d, \"ring_impl\": \"%s\", "
               "\"layout\": \"%s\", \"causal\": %s, \"kv_heads\": %d, \"seq\": %d, \"batch\": %d, \"rel_err\": {",
               index ? "," : "", index, k->ulysses, k->ring, usp_ring_impl_name(k->ring_impl),
               usp_layout_name(k->layout), k->causal ? "true" : "false", k->kv_heads, k->seq, k->batch);
        for (int t = 0; t < c->ntensors; t++)
            printf("%s\"%s\": %.3e", t ? ", " : "", usp_tensor_names[t], c->err[t].rel);
        printf("}, \"pass\": %s}", c->pass ? "true" : "false");
        return;
    }
    printf("%4d  U%d x R%d %-9s %-13s %-10s kv=%d L=%-3d B=%d  max rel/tol %.2e  %s\n", index,
           k->ulysses, k->ring, usp_ring_impl_name(k->ring_impl), usp_layout_name(k->layout),
           k->causal ? "causal" : "non-causal", k->kv_heads, k->seq, k->batch, worst,
           c->pass ? "pass" : "FAIL");
}

typedef struct { int run, failed, json; usp_dtype dtype; } tally;

static int run_one(usp_config cfg, tally *t) {
    usp_case c = {.cfg = cfg, .backward = 1};
    usp_status st = usp_case_run(&c, NULL, usp_exec_ref, NULL, NULL);
    if (st != USP_OK) {
        fprintf(stderr, "usp: verify: case %d: %s\n", t->run, usp_error());
        usp_case_free(&c);
        return 1;
    }
    print_case(&c, t->run, t->json);
    t->run++;
    if (!c.pass) t->failed++;
    usp_case_free(&c);
    return 0;
}

static int run_matrix(tally *t, int quick) {
    for (size_t w = 0; w < sizeof worlds / sizeof worlds[0]; w++)
        for (int u = 1; u <= worlds[w]; u *= 2)
            for (size_t i = 0; i < sizeof impls / sizeof impls[0]; i++)
                for (int lay = 0; lay < (quick ? 1 : 2); lay++)
                    for (size_t kv = 0; kv < sizeof kv_heads / sizeof kv_heads[0]; kv++) {
                        if (quick && kv == 1) continue;
                        usp_config c = usp_config_default();
                        c.ulysses = u; c.ring = worlds[w] / u;
                        c.ring_impl = impls[i].impl; c.causal = impls[i].causal;
                        c.layout = (usp_layout)lay; c.kv_heads = kv_heads[kv];
                        c.heads = 8; c.head_dim = 16; c.dtype = t->dtype;
                        c.batch = 1 + (int)(kv % 2);
                        c.seed = 100 + t->run;
                        c.seq = case_seq(&c, worlds[w]);
                        if (run_one(c, t)) return 1;
                    }
    return 0;
}

int cmd_verify(int argc, char **argv) {
    enum { OPT_DTYPE = USP_OPT_CMD_FIRST, OPT_QUICK, OPT_JSON, OPT_HELP };
    static const struct option opts[] = {
        {"dtype", required_argument, 0, OPT_DTYPE}, {"quick", no_argument, 0, OPT_QUICK},
        {"json", no_argument, 0, OPT_JSON}, {"help", no_argument, 0, OPT_HELP}, {0, 0, 0, 0}};
    tally t = {0, 0, 0, USP_F64};
    int quick = 0, opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case OPT_DTYPE:
            if (usp_parse_dtype(optarg, &t.dtype) != USP_OK) return usp_cli_report("verify", USP_EINVAL);
            if (t.dtype != USP_F64 && t.dtype != USP_F32)
                return usp_cli_bad_input("verify", "--dtype %s: the in-process executor runs fp64 or fp32", optarg);
            break;
        case OPT_QUICK: quick = 1; break;
        case OPT_JSON: t.json = 1; break;
        case OPT_HELP: help(); return 0;
        default: return usp_cli_bad_input("verify", "unknown option (usp verify --help)");
        }
    }
    if (optind < argc) return usp_cli_bad_input("verify", "unexpected argument '%s'", argv[optind]);
    if (t.json) printf("{\"dtype\": \"%s\", \"cases\": [", usp_dtype_name(t.dtype));
    if (run_matrix(&t, quick)) return 1;
    if (t.json)
        printf("\n], \"run\": %d, \"failed\": %d, \"pass\": %s}\n", t.run, t.failed, t.failed ? "false" : "true");
    else
        printf("\n%d cases, %d passed, %d failed (%s, tolerance %.0e)\n", t.run, t.run - t.failed,
               t.failed, usp_dtype_name(t.dtype), usp_tolerance(t.dtype, 0));
    return t.failed ? 1 : 0;
}
