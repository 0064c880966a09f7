/* usp verify: the built-in matrix of shardings, each against the reference.
 *
 * World 1, 2, 4, 8 with every ulysses x ring factorization; every ring_impl
 * (zigzag and stripe causal only) and both layouts; kv_heads = heads, fewer,
 * and 1 (so ulysses 8 replicates K/V); sequence lengths that are not powers
 * of two where the layout allows; forward and backward.
 *
 * Then the masks: packed documents that do not line up with rank
 * boundaries (causal and full, one packing per batch element too), windows
 * smaller and larger than a ring rank's share, documents with a window, and
 * a slice list that leaves gaps (rows with two key intervals); each on
 * worlds 4 and 8 with every ulysses x ring split, every ring_impl (balanced
 * included) and both layouts.
 *
 * Then uneven head splits (usp/layout.h): query heads the ulysses degree
 * does not divide (12 over 8), K/V heads that split across ranks unevenly or
 * are replicated (12 heads, 4 K/V over 8; 24, 8 over 16), on every
 * ring_impl and layout, with and without a mask.
 *
 * --dtype fp16/bf16 runs the same matrix in the CPU's emulation of the GPU's
 * 16-bit arithmetic (usp/rankmem.h); --wire-errors prints instead what the
 * 16-bit wire costs in accuracy, by mesh (verify_wire.c). */
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "runcase.h"
#include "verify_wire.h"
#include "usp/mask.h"

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
    printf("usage: usp verify [--dtype fp64|fp32|fp16|bf16] [--wire dtype|fp32] [--quick] [--masks] [--json]\n"
           "       usp verify --wire-errors [--dtype bf16|fp16] [--seq L] [--heads H] [--head-dim D] [--json]\n\n"
           "Runs the built-in matrix: world 1, 2, 4, 8 with every ulysses x ring split,\n"
           "every ring_impl and layout, causal and not, kv_heads 8, 2 and 1, forward and\n"
           "backward; each case against the fp64 dense reference (norm-wise tolerance\n"
           "1e-12 in fp64, 1e-5 in fp32; element-wise max|x-ref|/max|ref| within 4x\n"
           "that; max rel/tol is the worst of both over their tolerances). Then every\n"
           "mask (packed documents not aligned with the ranks, windows smaller and larger\n"
           "than a rank's share, slices with gaps) on worlds 4 and 8, every split,\n"
           "ring_impl (balanced too) and layout. Then head counts the ulysses degree does\n"
           "not divide (12 heads over 8; 12 heads, 4 K/V over 8; 24, 8 over 16) on every\n"
           "ring_impl and layout. One line per case, a summary with the\n"
           "worst error of each tensor; exit 1 on any failure.\n"
           "  --quick   one layout and kv_heads 8 and 1 only; masks on world 4\n"
           "  --masks   the mask cases only\n"
           "  --dtype   fp16 and bf16 are a CPU emulation of the GPU's arithmetic around its\n"
           "            kernels: fp32 arithmetic, inputs and the all-to-alls of O, dQ, dK, dV\n"
           "            rounded to the dtype (--wire fp32: those all-to-alls in fp32)\n\n"
           "--wire-errors: one causal zigzag problem (default bf16, L 2048, 8 heads, D 128)\n"
           "on ulysses 1 and 2 x ring 1, 2, 4, 8, with the 16-bit wire and with fp32: the\n"
           "relative error of O, LSE, dQ, dK, dV against the fp64 reference, in the CPU\n"
           "emulation (the kernels' own 16-bit products are not emulated).\n");
}

static void print_case(const usp_case *c, int index, int json, const char *mask) {
    const usp_config *k = &c->cfg;
    double worst = 0;
    for (int t = 0; t < c->ntensors; t++)
        for (int kind = 0; kind < 2; kind++) { /* norm-wise, element-wise */
            double r = kind ? c->err[t].elem_rel / c->elem_tol[t] : c->err[t].rel / c->tol[t];
            if (r > worst) worst = r;
        }
    if (json) {
        printf("%s\n  {\"case\": %d, \"ulysses\": %d, \"ring\": %d, \"ring_impl\": \"%s\", "
               "\"layout\": \"%s\", \"causal\": %s, \"heads\": %d, \"kv_heads\": %d, \"seq\": %d, "
               "\"batch\": %d, \"rel_err\": {",
               index ? "," : "", index, k->ulysses, k->ring, usp_ring_impl_name(k->ring_impl),
               usp_layout_name(k->layout), k->causal ? "true" : "false", k->heads, k->kv_heads, k->seq, k->batch);
        if (mask) printf("\"mask\": \"%s\", ", mask);
        for (int t = 0; t < c->ntensors; t++)
            printf("%s\"%s\": %.3e", t ? ", " : "", usp_tensor_names[t], c->err[t].rel);
        printf("}, \"elem_rel_err\": {");
        for (int t = 0; t < c->ntensors; t++)
            printf("%s\"%s\": %.3e", t ? ", " : "", usp_tensor_names[t], c->err[t].elem_rel);
        printf("}, \"worst_over_tol\": %.3e, \"pass\": %s}", worst, c->pass ? "true" : "false");
        return;
    }
    char heads[16] = "";
    if (k->heads != 8) snprintf(heads, sizeof heads, "H=%d ", k->heads);
    printf("%4d  U%d x R%d %-9s %-13s %-10s %skv=%d L=%-3d B=%d  max rel/tol %.2e  %s", index,
           k->ulysses, k->ring, usp_ring_impl_name(k->ring_impl), usp_layout_name(k->layout),
           mask ? mask : k->causal ? "causal" : "non-causal", heads, k->kv_heads, k->seq, k->batch, worst,
           c->pass ? "pass" : "FAIL");
    if (mask) printf("  imbalance %.3f", usp_schedule_imbalance(&c->sched));
    printf("\n");
}

typedef struct {
    int run, failed, json;
    usp_dtype dtype;
    usp_wire wire;
    const char *mask;              /* name of the current mask case, NULL for the plain matrix */
    int mask_run;
    int uneven_first, uneven_run;  /* the uneven head split cases */
    int in_uneven;
    double worst_uneven[USP_T_COUNT];
    double worst[USP_T_COUNT];     /* largest rel_err of each tensor over the mask cases */
} tally;

static int run_one(usp_config cfg, tally *t) {
    usp_case c = {.cfg = cfg, .backward = 1};
    usp_status st = usp_case_run(&c, NULL, usp_exec_ref, NULL, NULL);
    if (st != USP_OK) {
        fprintf(stderr, "usp: verify: case %d: %s\n", t->run, usp_error());
        usp_case_free(&c);
        return 1;
    }
    print_case(&c, t->run, t->json, t->mask);
    if (t->in_uneven) {
        for (int k = 0; k < c.ntensors; k++)
            if (c.err[k].rel > t->worst_uneven[k]) t->worst_uneven[k] = c.err[k].rel;
    } else if (t->mask) {
        t->mask_run++;
        for (int k = 0; k < c.ntensors; k++)
            if (c.err[k].rel > t->worst[k]) t->worst[k] = c.err[k].rel;
    }
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
                        c.heads = 8; c.head_dim = 16; c.dtype = t->dtype; c.wire = t->wire;
                        c.batch = 1 + (int)(kv % 2);
                        c.seed = 100 + t->run;
                        c.seq = case_seq(&c, worlds[w]);
                        if (run_one(c, t)) return 1;
                    }
    return 0;
}

/* ---- masks -------------------------------------------------------------- */

enum { MASK_SEQ = 96, MASK_BATCH = 2 };

/* Mask case k for a ring of R (NULL when k is past the last): its name and
 * the mask, built for MASK_SEQ tokens and MASK_BATCH elements. */
static const char *mask_case(int k, int R, usp_mask **m) {
    long share = MASK_SEQ / R, L = MASK_SEQ;
    long docs[] = {0, 37, 42, 72, 96};                   /* 37, 5, 30, 24: off rank boundaries */
    long per_element[] = {0, 11, 50, 96, 96, 0, 60, 61, 90, 96}; /* two packings, one padded */
    usp_slice gaps[] = {{0, 96, 0, 20, USP_SLICE_FULL}, {48, 96, 48, 96, USP_SLICE_CAUSAL},
                        {0, 48, 30, 48, USP_SLICE_BICAUSAL}, {50, 70, 21, 40, USP_SLICE_CAUSAL}};
    long gaps_first[] = {0, 4};
    usp_status st;
    const char *name;
    *m = NULL;
    switch (k) {
    case 0: name = "docs-causal"; st = usp_mask_from_documents(L, 1, 4, docs, 1, -1, -1, m); break;
    case 1: name = "docs-full"; st = usp_mask_from_documents(L, 1, 4, docs, 0, -1, -1, m); break;
    case 2: name = "docs-per-elem"; st = usp_mask_from_documents(L, MASK_BATCH, 4, per_element, 1, -1, -1, m); break;
    case 3: name = "window<share"; st = usp_mask_from_documents(L, 1, 1, (long[]){0, L}, 1, share / 2, 0, m); break;
    case 4: name = "window>share"; st = usp_mask_from_documents(L, 1, 1, (long[]){0, L}, 0, share + 5, share + 1, m); break;
    case 5: name = "docs+window"; st = usp_mask_from_documents(L, 1, 4, docs, 1, 7, -1, m); break;
    case 6: name = "slices-gaps"; st = usp_mask_from_slices(L, 1, gaps, gaps_first, -1, -1, m); break;
    default: return NULL;
    }
    return st == USP_OK ? name : NULL;
}

static int run_masks(tally *t, int quick) {
    static const int mesh[][2] = {{1, 4}, {2, 2}, {4, 1}, {1, 8}, {2, 4}, {4, 2}, {8, 1}};
    int meshes = quick ? 3 : (int)(sizeof mesh / sizeof mesh[0]);
    for (int mi = 0; mi < meshes; mi++)
        for (int k = 0;; k++) {
            usp_mask *m;
            const char *name = mask_case(k, mesh[mi][1], &m);
            if (!name) {
                if (k < 7) { fprintf(stderr, "usp: verify: mask case %d: %s\n", k, usp_error()); return 1; }
                break;
            }
            t->mask = name;
            for (int impl = 0; impl < USP_RING_IMPL_COUNT; impl++)
                for (int lay = 0; lay < (quick ? 1 : 2); lay++) {
                    usp_config c = usp_config_default();
                    c.ulysses = mesh[mi][0]; c.ring = mesh[mi][1];
                    c.ring_impl = (usp_ring_impl)impl; c.layout = (usp_layout)lay;
                    c.causal = k != 1 && k != 4; /* what the documents say; the mask decides */
                    c.heads = 8; c.kv_heads = 2; c.head_dim = 16; c.dtype = t->dtype; c.wire = t->wire;
                    c.batch = MASK_BATCH; c.seq = MASK_SEQ; c.seed = 500 + t->run; c.mask = m;
                    if (run_one(c, t)) { usp_mask_free(m); return 1; }
                }
            t->mask = NULL;
            usp_mask_free(m);
        }
    return 0;
}

/* ---- uneven head splits --------------------------------------------------- */

/* (ulysses, ring, heads, kv_heads): heads the degree does not divide, K/V
 * heads split unevenly, shared by neighbours or replicated. */
static const int uneven[][4] = {
    {8, 1, 12, 12}, {8, 1, 12, 4}, {8, 1, 12, 6}, {8, 1, 10, 2}, {8, 1, 11, 1},
    {4, 2, 6, 6}, {4, 2, 6, 2}, {4, 2, 12, 6}, {4, 2, 10, 5}, {2, 4, 3, 3}, {2, 4, 3, 1},
    {16, 1, 24, 8}, {16, 1, 20, 4}};

static int run_uneven(tally *t, int quick) {
    int shapes = (int)(sizeof uneven / sizeof uneven[0]);
    t->uneven_first = t->run;
    t->in_uneven = 1;
    for (int i = 0; i < shapes; i++) {
        if (quick && i % 3) continue;
        for (size_t m = 0; m < sizeof impls / sizeof impls[0]; m++)
            for (int lay = 0; lay < (quick ? 1 : 2); lay++) {
                usp_config c = usp_config_default();
                c.ulysses = uneven[i][0]; c.ring = uneven[i][1];
                c.heads = uneven[i][2]; c.kv_heads = uneven[i][3];
                c.ring_impl = impls[m].impl; c.causal = impls[m].causal;
                c.layout = (usp_layout)lay; c.head_dim = 16; c.dtype = t->dtype; c.wire = t->wire;
                c.batch = 1 + (int)(m % 2);
                c.seed = 900 + t->run;
                c.seq = case_seq(&c, c.ulysses * c.ring);
                if (run_one(c, t)) return 1;
            }
        /* packed documents, dispatched by their work */
        usp_mask *mask = NULL;
        long L = 4L * 2 * uneven[i][0] * uneven[i][1], docs[] = {0, L / 3, L / 3 + 5, L};
        if (usp_mask_from_documents(L, 1, 3, docs, 1, -1, -1, &mask) != USP_OK) {
            fprintf(stderr, "usp: verify: uneven mask: %s\n", usp_error());
            return 1;
        }
        t->mask = "docs-causal";
        usp_config c = usp_config_default();
        c.ulysses = uneven[i][0]; c.ring = uneven[i][1];
        c.heads = uneven[i][2]; c.kv_heads = uneven[i][3];
        c.ring_impl = USP_RING_BALANCED; c.head_dim = 16; c.dtype = t->dtype; c.wire = t->wire;
        c.batch = 2; c.seq = (int)L; c.seed = 900 + t->run; c.mask = mask;
        int rc = run_one(c, t);
        t->mask = NULL;
        usp_mask_free(mask);
        if (rc) return 1;
    }
    t->uneven_run = t->run - t->uneven_first;
    t->in_uneven = 0;
    return 0;
}

int cmd_verify(int argc, char **argv) {
    enum { OPT_DTYPE = USP_OPT_CMD_FIRST, OPT_QUICK, OPT_JSON, OPT_MASKS, OPT_WIRE, OPT_WIRE_ERRORS, OPT_SEQ,
           OPT_HEADS, OPT_HEAD_DIM, OPT_HELP };
    static const struct option opts[] = {
        {"dtype", required_argument, 0, OPT_DTYPE}, {"quick", no_argument, 0, OPT_QUICK},
        {"json", no_argument, 0, OPT_JSON}, {"masks", no_argument, 0, OPT_MASKS},
        {"wire", required_argument, 0, OPT_WIRE}, {"wire-errors", no_argument, 0, OPT_WIRE_ERRORS},
        {"seq", required_argument, 0, OPT_SEQ}, {"heads", required_argument, 0, OPT_HEADS},
        {"head-dim", required_argument, 0, OPT_HEAD_DIM}, {"help", no_argument, 0, OPT_HELP}, {0, 0, 0, 0}};
    tally t = {.dtype = USP_F64};
    usp_config wire_cfg = usp_config_default();
    wire_cfg.dtype = USP_BF16; wire_cfg.seq = 2048; wire_cfg.heads = 8; wire_cfg.head_dim = 128;
    int quick = 0, masks_only = 0, wire_errors = 0, dtype_given = 0, shape_given = 0, opt;
    usp_wire wire = USP_WIRE_DTYPE;
    optind = 1;
    while ((opt = usp_cli_getopt("verify", "verify", argc, argv, "", opts)) != -1) {
        switch (opt) {
        case '?': return 2;
        case OPT_DTYPE:
            if (usp_parse_dtype(optarg, &t.dtype) != USP_OK) return usp_cli_report("verify", USP_EINVAL);
            dtype_given = 1;
            break;
        case OPT_WIRE:
            if (usp_parse_wire(optarg, &wire) != USP_OK) return usp_cli_report("verify", USP_EINVAL);
            break;
        case OPT_WIRE_ERRORS: wire_errors = 1; break;
        case OPT_SEQ:
            if (usp_cli_int_option("verify", "seq", optarg, 1, 1 << 20, &wire_cfg.seq)) return 2;
            shape_given = 1;
            break;
        case OPT_HEADS:
            if (usp_cli_int_option("verify", "heads", optarg, 1, 1024, &wire_cfg.heads)) return 2;
            shape_given = 1;
            break;
        case OPT_HEAD_DIM:
            if (usp_cli_int_option("verify", "head-dim", optarg, 1, 256, &wire_cfg.head_dim)) return 2;
            shape_given = 1;
            break;
        case OPT_QUICK: quick = 1; break;
        case OPT_MASKS: masks_only = 1; break;
        case OPT_JSON: t.json = 1; break;
        case OPT_HELP: help(); return 0;
        default: return usp_cli_bad_input("verify", "unknown option (usp verify --help)");
        }
    }
    if (optind < argc) return usp_cli_bad_input("verify", "unexpected argument '%s'", argv[optind]);
    if (wire_errors) {
        if (dtype_given && usp_dtype_size(t.dtype) != 2)
            return usp_cli_bad_input("verify", "--wire-errors: --dtype %s has no 16-bit wire (fp16, bf16)",
                                     usp_dtype_name(t.dtype));
        if (dtype_given) wire_cfg.dtype = t.dtype;
        return usp_verify_wire_errors(&wire_cfg, t.json);
    }
    if (shape_given) return usp_cli_bad_input("verify", "--seq, --heads and --head-dim go with --wire-errors");
    t.wire = wire;
    if (t.json) printf("{\"dtype\": \"%s\", \"cases\": [", usp_dtype_name(t.dtype));
    if (!masks_only && run_matrix(&t, quick)) return 1;
    if (run_masks(&t, quick)) return 1;
    if (!masks_only && run_uneven(&t, quick)) return 1;
    if (t.json) {
        printf("\n], \"run\": %d, \"failed\": %d, \"mask_cases\": %d, \"uneven_head_cases\": %d, "
               "\"mask_worst_rel_err\": {", t.run, t.failed, t.mask_run, t.uneven_run);
        for (int k = 0; k < USP_T_COUNT; k++) printf("%s\"%s\": %.3e", k ? ", " : "", usp_tensor_names[k], t.worst[k]);
        printf("}, \"uneven_head_worst_rel_err\": {");
        for (int k = 0; k < USP_T_COUNT; k++)
            printf("%s\"%s\": %.3e", k ? ", " : "", usp_tensor_names[k], t.worst_uneven[k]);
        printf("}, \"pass\": %s}\n", t.failed ? "false" : "true");
    } else {
        printf("\n%d cases, %d passed, %d failed (%s%s, tolerance %.0e norm-wise, %.0e element-wise)\n",
               t.run, t.run - t.failed, t.failed, usp_dtype_name(t.dtype),
               usp_dtype_size(t.dtype) == 2 ? (t.wire == USP_WIRE_FP32 ? " emulated on the CPU, fp32 wire"
                                                                       : " emulated on the CPU")
                                            : "",
               usp_tolerance(t.dtype, 0), usp_elem_tolerance(t.dtype, 0));
        printf("mask cases %d, worst rel_err:", t.mask_run);
        for (int k = 0; k < USP_T_COUNT; k++) printf(" %s %.2e", usp_tensor_names[k], t.worst[k]);
        printf("\n");
        if (t.uneven_run) {
            printf("uneven head split cases %d, worst rel_err:", t.uneven_run);
            for (int k = 0; k < USP_T_COUNT; k++) printf(" %s %.2e", usp_tensor_names[k], t.worst_uneven[k]);
            printf("\n");
        }
    }
    return t.failed ? 1 : 0;
}
