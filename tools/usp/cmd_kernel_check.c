/* usp kernel-check: the conformance battery of attention kernels on the GPU.
 *
 * Runs every case of usp/kcheck.h through the built-in kernels, or through a
 * plugin (--kernel PATH.so), against the fp64 CPU reference on the same
 * rounded inputs. One line per case with each relative error and its
 * tolerance; exit 0 when all pass, 1 when one fails, 2 on bad input or a
 * refused plugin. */
#include <stdlib.h>
#include <string.h>
#include <cuda_runtime_api.h>
#include "cli.h"
#include "usp/compare.h"
#include "usp/json.h"
#include "usp/kcheck.h"
#include "usp/kernel.h"

static void help(void) {
    printf("usage: usp kernel-check [--kernel PATH.so] [--quick] [--case NAME] [--seed N] [--json]\n\n"
           "Checks attention kernels on the GPU against the fp64 CPU reference, on the same\n"
           "inputs rounded to the case's dtype: sequence lengths 1, 17, 128, 1000, 4096 and a\n"
           "16K slice, head dims 64 and 128 (and 96), causal blocks with diagonal offsets\n"
           "0, -1, 5 and 15872, query/key slices as zigzag ring steps use them, GQA and\n"
           "MQA, bf16, fp16 and fp32, rows that see no key (LSE -inf, O 0, no NaN), two\n"
           "ring steps merged, forward and backward, and the a2a pack/unpack kernels.\n"
           "Relative error ||x-ref||/||ref||; tolerances (usp/compare.h): forward 1e-2\n"
           "bf16, 2e-3 fp16, 1e-5 fp32; backward 2e-2, 5e-3, 1e-5. Element-wise error\n"
           "max|x-ref|/max|ref| of every tensor, within 4x those tolerances; elem/tol is\n"
           "the largest over the tensors (a case fails on either error).\n\n"
           "  --kernel PATH.so  check a plugin (exports usp_kernel_entry, see\n"
           "                    include/usp/kernel.h and gpu/plugins/naive_plugin.cu)\n"
           "  --quick           the quick subset\n"
           "  --case NAME       only cases whose name contains NAME\n"
           "  --seed N          input seed (default 1234)\n"
           "  --list            list the cases and exit\n"
           "  --json            one JSON document on stdout\n");
}

static void print_err(double e) {
    if (e < 0) printf(" %8s", "-");
    else printf(" %8.2e", e);
}

static void print_text(const usp_kcheck_case *c, const usp_kcheck_result *r) {
    char shape[64];
    if (c->kind == USP_KC_PACK) snprintf(shape, sizeof shape, "5 patterns x 2 geometries");
    else snprintf(shape, sizeof shape, "B%d Lq%d Lk%d H%d/%d D%d", c->batch, c->lq, c->lkv, c->heads,
                  c->kv_heads, c->head_dim);
    printf("%-24s %-5s %-28s", c->name, c->kind == USP_KC_PACK ? "-" : usp_dtype_name(c->dtype), shape);
    print_err(r->err[USP_KC_O]);
    print_err(r->err[USP_KC_LSE]);
    printf(" <=%7.1e |", r->tol_fwd);
    print_err(r->err[USP_KC_DQ]);
    print_err(r->err[USP_KC_DK]);
    print_err(r->err[USP_KC_DV]);
    printf(" <=%7.1e", r->tol_bwd);
    /* the largest element-wise error over its tolerance, over the tensors */
    double worst = -1;
    for (int i = 0; i < USP_KC_NERR; i++) {
        double tol = i < USP_KC_DQ ? r->tol_fwd : r->tol_bwd;
        if (r->elem_err[i] >= 0 && tol > 0 && r->elem_err[i] / (USP_ELEM_TOL_FACTOR * tol) > worst)
            worst = r->elem_err[i] / (USP_ELEM_TOL_FACTOR * tol);
    }
    print_err(worst);
    printf(" %8.2f  %s", r->gpu_ms, r->skipped ? "skip" : r->pass ? "pass" : "FAIL");
    if (r->note[0]) printf("  (%s)", r->note);
    printf("\n");
}

static void json_err(const char *key, double e) {
    printf("\"%s\": ", key);
    if (e < 0) printf("null");
    else usp_json_write_number(stdout, e);
}

static void print_json(const usp_kcheck_case *c, const usp_kcheck_result *r, int first) {
    printf("%s\n  {\"name\": ", first ? "" : ",");
    usp_json_write_string(stdout, c->name);
    printf(", \"dtype\": \"%s\", \"batch\": %d, \"lq\": %d, \"lkv\": %d, \"heads\": %d, \"kv_heads\": %d, "
           "\"head_dim\": %d, \"block\": {\"q_begin\": %d, \"q_len\": %d, \"kv_begin\": %d, \"kv_len\": %d, "
           "\"causal\": %d, \"diag\": %d}, ",
           usp_dtype_name(c->dtype), c->batch, c->lq, c->lkv, c->heads, c->kv_heads, c->head_dim, c->blk.q_begin,
           c->blk.q_len, c->blk.kv_begin, c->blk.kv_len, c->blk.causal, c->blk.diag);
    printf("\"row_mask\": %s, ", c->mask.kind != USP_KC_MASK_NONE ? "true" : "false");
    json_err("o", r->err[USP_KC_O]);
    printf(", ");
    json_err("lse", r->err[USP_KC_LSE]);
    printf(", \"tol_fwd\": %.3g, ", r->tol_fwd);
    json_err("dq", r->err[USP_KC_DQ]);
    printf(", ");
    json_err("dk", r->err[USP_KC_DK]);
    printf(", ");
    json_err("dv", r->err[USP_KC_DV]);
    printf(", \"elem_err\": {");
    static const char *const names[USP_KC_NERR] = {"o", "lse", "dq", "dk", "dv"};
    for (int i = 0; i < USP_KC_NERR; i++) {
        printf("%s", i ? ", " : "");
        json_err(names[i], r->elem_err[i]);
    }
    printf("}, \"elem_tol_factor\": %g", USP_ELEM_TOL_FACTOR);
    printf(", \"tol_bwd\": %.3g, \"gpu_ms\": %.3f, \"skipped\": %s, \"pass\": %s, \"note\": ", r->tol_bwd,
           r->gpu_ms, r->skipped ? "true" : "false", r->pass ? "true" : "false");
    usp_json_write_string(stdout, r->note);
    printf("}");
}

typedef struct {
    const char *kernel_path, *filter;
    int quick, json, list;
    uint64_t seed;
} kc_opts;

static int parse(int argc, char **argv, kc_opts *o) {
    enum { OPT_KERNEL = USP_OPT_CMD_FIRST, OPT_QUICK, OPT_CASE, OPT_SEED, OPT_LIST, OPT_JSON, OPT_HELP };
    static const struct option opts[] = {
        {"kernel", required_argument, 0, OPT_KERNEL}, {"quick", no_argument, 0, OPT_QUICK},
        {"case", required_argument, 0, OPT_CASE},     {"seed", required_argument, 0, OPT_SEED},
        {"list", no_argument, 0, OPT_LIST},           {"json", no_argument, 0, OPT_JSON},
        {"help", no_argument, 0, OPT_HELP},           {0, 0, 0, 0}};
    long v;
    int opt;
    optind = 1;
    while ((opt = usp_cli_getopt("kernel-check", "kernel-check", argc, argv, "", opts)) != -1) {
        switch (opt) {
        case '?': return 2;
        case OPT_KERNEL: o->kernel_path = optarg; break;
        case OPT_QUICK: o->quick = 1; break;
        case OPT_CASE: o->filter = optarg; break;
        case OPT_SEED:
            if (usp_parse_int(optarg, 0, 0x7fffffffffffffffL, &v))
                return usp_cli_bad_input("kernel-check", "--seed %s: not a non-negative integer", optarg);
            o->seed = (uint64_t)v;
            break;
        case OPT_LIST: o->list = 1; break;
        case OPT_JSON: o->json = 1; break;
        case OPT_HELP: help(); return -1;
        default: return usp_cli_bad_input("kernel-check", "unknown option (usp kernel-check --help)");
        }
    }
    if (optind < argc) return usp_cli_bad_input("kernel-check", "unexpected argument '%s'", argv[optind]);
    return 0;
}

static int selected(const kc_opts *o, const usp_kcheck_case *c) {
    if (o->quick && !c->quick) return 0;
    return !o->filter || strstr(c->name, o->filter) != NULL;
}

static void list_cases(void) {
    for (int i = 0; i < usp_kcheck_count(); i++) {
        const usp_kcheck_case *c = usp_kcheck_case_at(i);
        printf("%-24s %s%s\n", c->name, c->what, c->quick ? " [quick]" : "");
    }
}

static void header(const usp_kernel *k, int json) {
    struct cudaDeviceProp prop;
    const char *dev = cudaGetDeviceProperties(&prop, 0) == cudaSuccess ? prop.name : "?";
    if (json) {
        printf("{\"kernel\": ");
        usp_json_write_string(stdout, k->name);
        printf(", \"device\": ");
        usp_json_write_string(stdout, dev);
        printf(", \"cases\": [");
        return;
    }
    printf("kernel: %s\ndevice: %s\n", k->name, dev);
    printf("%-24s %-5s %-28s %8s %8s %9s | %8s %8s %8s %9s %8s %8s\n", "case", "dtype", "shape", "O", "LSE", "tol",
           "dQ", "dK", "dV", "tol", "elem/tol", "gpu ms");
}

int cmd_kernel_check(int argc, char **argv) {
    kc_opts o = {NULL, NULL, 0, 0, 0, 1234};
    int rc = parse(argc, argv, &o);
    if (rc) return rc < 0 ? 0 : rc;
    if (o.list) {
        list_cases();
        return 0;
    }
    if (usp_kcheck_gpu_ready() != USP_OK) return usp_cli_report("kernel-check", USP_EINTERNAL);
    const usp_kernel *k = usp_kernel_builtin();
    void *handle = NULL;
    if (o.kernel_path && usp_kernel_load(o.kernel_path, &k, &handle) != USP_OK)
        return usp_cli_report("kernel-check", USP_EINVAL);

    header(k, o.json);
    int run = 0, failed = 0, skipped = 0, first = 1;
    for (int i = 0; i < usp_kcheck_count(); i++) {
        const usp_kcheck_case *c = usp_kcheck_case_at(i);
        if (!selected(&o, c)) continue;
        usp_kcheck_result r;
        if (usp_kcheck_run(k, c, o.seed + (uint64_t)i, &r) != USP_OK) {
            fprintf(stderr, "usp: kernel-check: %s: %s\n", c->name, usp_error());
            usp_kernel_unload(handle);
            return 1;
        }
        if (o.json) print_json(c, &r, first);
        else print_text(c, &r);
        fflush(stdout);
        first = 0;
        run++;
        skipped += r.skipped;
        failed += !r.skipped && !r.pass;
    }
    if (o.json)
        printf("\n], \"run\": %d, \"skipped\": %d, \"failed\": %d, \"pass\": %s}\n", run, skipped, failed,
               failed || run == skipped ? "false" : "true");
    else
        printf("\n%d cases, %d passed, %d skipped, %d failed\n", run, run - failed - skipped, skipped, failed);
    usp_kernel_unload(handle);
    return failed || run == skipped ? 1 : 0;
}
