/* cmd_nccl.c: `usp nccl`, nccl-tests' table of one collective as usp's NCCL
 * model predicts it (sim/network/perf.c), or its comparison with a published
 * nccl-tests result (traces/published/nccl/). Parses and prints only. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "usp/nccl.h"
#include "usp/progress.h"

enum { OPT_PLATFORM = USP_OPT_CMD_FIRST, OPT_OP, OPT_RANKS, OPT_PER_NODE, OPT_COMPARE, OPT_JSON, OPT_HELP };

static void usage(void) {
    printf("usage: usp nccl --platform P --op OP [--ranks N [--per-node G]] [-b MIN -e MAX -f FACTOR] [--json]\n"
           "       usp nccl --compare FILE [FILE...] [--json]\n"
           "Prints the table nccl-tests prints (size, count, type, time, algbw, busbw) for one\n"
           "collective, SIMULATED by usp's NCCL model (transport per GPU pair, ring/direct\n"
           "algorithm, protocol by size, per-call and per-step latency) over the platform's links.\n\n"
           "  --platform P     a preset (usp platform --list) or a SimGrid XML file (default h200x8)\n"
           "  --op OP          alltoall, sendrecv, allgather, reducescatter, allreduce\n"
           "  --ranks N        GPUs taking part (default: every GPU of the platform)\n"
           "  --per-node G     the ranks on the first G GPUs of each node (mpirun -N G); needs --ranks\n"
           "  -b, --minbytes   smallest size, e.g. 8, 1K, 32M (default 8)\n"
           "  -e, --maxbytes   largest size (default 128M)\n"
           "  -f, --stepfactor multiply the size by this from one row to the next (default 2)\n"
           "  --compare FILE   re-predict every row of a published nccl-tests result\n"
           "                   (traces/published/nccl/NAME.json) and print the busbw error per row;\n"
           "                   more files after it: each, then the error per topology class\n"
           "  --json           machine-readable output\n"
           "  -h, --help\n"
           "Sizes follow nccl-tests: the send buffer (alltoall, sendrecv, allreduce), the receive\n"
           "buffer (allgather) or the send buffer (reducescatter) of one rank, in bytes.\n");
}

typedef struct {
    usp_nccl_options o;
    const char *compare;
    int json;
} nccl_args;

/* "32M", "1K", "8", "2G": bytes (binary multiples, as nccl-tests' -b/-e). */
static int parse_bytes(const char *name, const char *arg, double *out) {
    char buf[64];
    size_t n = strlen(arg);
    if (n == 0 || n >= sizeof buf) return usp_cli_bad_input("nccl", "--%s '%s' is not a size", name, arg);
    memcpy(buf, arg, n + 1);
    double mult = 1;
    char last = buf[n - 1];
    if (last == 'K' || last == 'k') mult = 1024;
    else if (last == 'M' || last == 'm') mult = 1024.0 * 1024;
    else if (last == 'G' || last == 'g') mult = 1024.0 * 1024 * 1024;
    if (mult > 1) buf[n - 1] = '\0';
    double x;
    if (usp_parse_double(buf, &x) != 0 || !(x > 0) || x * mult > 1e13)
        return usp_cli_bad_input("nccl", "--%s '%s' is not a size in bytes (e.g. 8, 1K, 32M, 1G)", name, arg);
    *out = x * mult;
    return 0;
}

static int apply(int opt, const char *arg, void *ctx) {
    nccl_args *a = ctx;
    switch (opt) {
    case OPT_PLATFORM: a->o.platform = arg; return 0;
    case OPT_OP: a->o.op = arg; return 0;
    case OPT_RANKS: return usp_cli_int_option("nccl", "ranks", arg, 2, 100000, &a->o.ranks);
    case OPT_PER_NODE: return usp_cli_int_option("nccl", "per-node", arg, 1, 4096, &a->o.per_node);
    case 'b': return parse_bytes("minbytes", arg, &a->o.min_bytes);
    case 'e': return parse_bytes("maxbytes", arg, &a->o.max_bytes);
    case 'f':
        if (usp_parse_double(arg, &a->o.factor) != 0 || !(a->o.factor > 1) || a->o.factor > 1024)
            return usp_cli_bad_input("nccl", "--stepfactor '%s' is not a number in (1, 1024]", arg);
        return 0;
    case OPT_COMPARE: a->compare = arg; return 0;
    case OPT_JSON: a->json = 1; return 0;
    default: return usp_cli_bad_input("nccl", "unknown option (see usp nccl --help)");
    }
}

int cmd_nccl(int argc, char **argv) {
    static const struct option opts[] = {
        {"platform", required_argument, 0, OPT_PLATFORM}, {"op", required_argument, 0, OPT_OP},
        {"ranks", required_argument, 0, OPT_RANKS}, {"per-node", required_argument, 0, OPT_PER_NODE},
        {"minbytes", required_argument, 0, 'b'},
        {"maxbytes", required_argument, 0, 'e'}, {"stepfactor", required_argument, 0, 'f'},
        {"compare", required_argument, 0, OPT_COMPARE}, {"json", no_argument, 0, OPT_JSON},
        {"help", no_argument, 0, OPT_HELP}, {0, 0, 0, 0}};
    /* nccl-tests' short options (-b -e -f) and -h, then the long ones. */
    nccl_args a = {.o = {.min_bytes = 8, .max_bytes = 128.0 * 1024 * 1024, .factor = 2}};
    int opt;
    optind = 1;
    while ((opt = usp_cli_getopt("nccl", "nccl", argc, argv, "hb:e:f:", opts)) != -1) {
        if (opt == 'h' || opt == OPT_HELP) { usage(); return 0; }
        if (opt == '?') return 2;
        int rc = apply(opt, optarg, &a);
        if (rc) return rc;
    }
    if (optind < argc && !a.compare) return usp_cli_bad_input("nccl", "unexpected argument '%s'", argv[optind]);
    if (a.compare) {
        if (a.o.op || a.o.platform) return usp_cli_bad_input("nccl", "--compare takes its platform and op from the file");
        int n = 1 + argc - optind;
        usp_nccl_comparison *c = calloc((size_t)n, sizeof *c);
        if (!c) return usp_cli_report("nccl", usp_fail(USP_EINTERNAL, "out of memory"));
        int rc = 0, done = 0;
        for (int i = 0; i < n && rc == 0; i++, done++) {
            const char *file = i == 0 ? a.compare : argv[optind + i - 1];
            usp_progress(stderr, "usp nccl --compare: file %d of %d, %s", i + 1, n, file);
            usp_status st = usp_nccl_compare(file, &c[i]);
            if (st != USP_OK) { rc = usp_cli_report("nccl", st); break; }
        }
        usp_progress_end(stderr, 0);
        if (rc == 0 && a.json && n == 1) usp_nccl_compare_json(stdout, &c[0]);
        else if (rc == 0 && a.json) {
            fputs("{\"files\": [", stdout);
            for (int i = 0; i < n; i++) { if (i) fputs(",\n", stdout); usp_nccl_compare_json(stdout, &c[i]); }
            fputs("], \"summary\": ", stdout);
            usp_nccl_compare_summary(stdout, c, n, 1);
            fputs("}\n", stdout);
        } else if (rc == 0) {
            for (int i = 0; i < n; i++) { usp_nccl_compare_print(stdout, &c[i]); fputc('\n', stdout); }
            if (n > 1) usp_nccl_compare_summary(stdout, c, n, 0);
        }
        for (int i = 0; i < done; i++) usp_nccl_comparison_free(&c[i]);
        free(c);
        return rc;
    }
    if (!a.o.op) return usp_cli_bad_input("nccl", "--op is required (alltoall, sendrecv, allgather, reducescatter, allreduce)");
    if (a.o.max_bytes < a.o.min_bytes) return usp_cli_bad_input("nccl", "--maxbytes is smaller than --minbytes");
    usp_nccl_table t;
    usp_status st = usp_nccl_simulate(&a.o, &t);
    if (st != USP_OK) return usp_cli_report("nccl", st);
    if (a.json) usp_nccl_json(stdout, &t);
    else usp_nccl_print(stdout, &t);
    usp_nccl_table_free(&t);
    return 0;
}
