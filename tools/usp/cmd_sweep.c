/* cmd_sweep.c: `usp sweep`, every sharding of one problem ranked by the
 * simulator's predicted time. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "usp/sim.h"

enum {
    OPT_WORLD = USP_OPT_CMD_FIRST, OPT_PLATFORM, OPT_HOSTMAP, OPT_PROFILE, OPT_CFG, OPT_CSV, OPT_JSON,
    OPT_SVG, OPT_QUIET
};

static void usage(FILE *f) {
    fprintf(f, "usage: usp sweep --world N [--platform P] [problem options] [--csv | --json] [--svg FILE]\n\n"
               "Simulates every ulysses x ring factorization of N ranks with every ring_impl\n"
               "and layout (timing only, forward and backward) and ranks them by predicted\n"
               "time. Variants that cannot differ are left out (ring_impl when ring = 1,\n"
               "layout when a degree is 1); shapes a variant cannot split are listed as refused.\n\n"
               "  --world N         ranks (default 8)\n"
               "  --platform P      a preset (usp platform --list) or a SimGrid XML file (default h200x8)\n"
               "  --hostmap FILE    host names of ranks 0, 1, ... one per line\n"
               "  --profile P       device profile, JSON file or built-in name\n"
               "  --cfg NAME:VALUE  a SimGrid setting (repeatable)\n"
               "  --csv | --json    machine-readable output instead of the table\n"
               "  --svg FILE        a bar chart of predicted time, compute and exposed communication\n"
               "  --quiet           no progress line on stderr\n\n"
               "The --ulysses, --ring, --ring-impl and --layout options below are swept over;\n"
               "--dtype defaults to bf16 here (a timing question: the dtype GPUs run).\n\n");
    usp_cli_config_help(f);
}

typedef struct {
    int world, csv, json, quiet;
    const char *svg;
    usp_sim_options sim;
    usp_config cfg;
} sweep_args;

static int parse_option(int opt, const char *arg, sweep_args *a) {
    long v;
    switch (opt) {
    case OPT_WORLD:
        if (usp_parse_int(arg, 1, 1 << 20, &v) != 0)
            return usp_cli_bad_input("sweep", "--world '%s' is not an integer in 1..%d", arg, 1 << 20);
        a->world = (int)v;
        return 0;
    case OPT_PLATFORM: a->sim.platform = arg; return 0;
    case OPT_HOSTMAP: a->sim.hostmap = arg; return 0;
    case OPT_PROFILE: a->sim.profile = arg; return 0;
    case OPT_CFG:
        if (a->sim.ncfg == USP_SIM_MAX_CFG) return usp_cli_bad_input("sweep", "at most %d --cfg settings", USP_SIM_MAX_CFG);
        if (!strchr(arg, ':')) return usp_cli_bad_input("sweep", "--cfg '%s' is not NAME:VALUE", arg);
        a->sim.cfg_overrides[a->sim.ncfg++] = arg;
        return 0;
    case OPT_CSV: a->csv = 1; return 0;
    case OPT_JSON: a->json = 1; return 0;
    case OPT_SVG: a->svg = arg; return 0;
    case OPT_QUIET: a->quiet = 1; return 0;
    default: {
        int r = usp_cli_config_option("sweep", opt, arg, &a->cfg);
        if (r == 1) return 0;
        if (r == 0) usp_cli_bad_input("sweep", "unknown option (see usp sweep --help)");
        return 2;
    }
    }
}

static int parse_args(int argc, char **argv, sweep_args *a) {
    static const struct option opts[] = {
        USP_CLI_CONFIG_LONGOPTS,
        {"world", required_argument, 0, OPT_WORLD}, {"platform", required_argument, 0, OPT_PLATFORM},
        {"hostmap", required_argument, 0, OPT_HOSTMAP}, {"profile", required_argument, 0, OPT_PROFILE},
        {"cfg", required_argument, 0, OPT_CFG}, {"csv", no_argument, 0, OPT_CSV},
        {"json", no_argument, 0, OPT_JSON}, {"svg", required_argument, 0, OPT_SVG},
        {"quiet", no_argument, 0, OPT_QUIET}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int opt;
    optind = 1;
    while ((opt = usp_cli_getopt("sweep", "sweep", argc, argv, "h", opts)) != -1) {
        if (opt == 'h') { usage(stdout); return -1; }
        if (opt == '?') return 2;
        if (parse_option(opt, optarg, a) != 0) return 2;
    }
    if (optind < argc) return usp_cli_bad_input("sweep", "unexpected argument '%s'", argv[optind]);
    if (a->csv && a->json) return usp_cli_bad_input("sweep", "--csv and --json exclude each other");
    return usp_cli_config_finish("sweep", &a->cfg);
}

static void svg_title(const sweep_args *a, char *buf, size_t n) {
    const usp_config *c = &a->cfg;
    snprintf(buf, n, "usp sweep: %d x %s, %s seq %d, %d heads, D %d, %s, forward + backward", a->world,
             a->sim.platform ? a->sim.platform : "h200x8", c->causal ? "causal" : "non-causal", c->seq, c->heads,
             c->head_dim, usp_dtype_name(c->dtype));
}

int cmd_sweep(int argc, char **argv) {
    sweep_args a = {.world = 8, .cfg = usp_config_default()};
    a.cfg.dtype = USP_BF16; /* a timing question: the dtype GPUs run */
    a.cfg.kv_heads = 0;     /* follows --heads unless given */
    int r = parse_args(argc, argv, &a);
    if (r == -1) return 0;
    if (r != 0) return r;
    usp_sweep sw;
    usp_status st = usp_sweep_run(&a.cfg, a.world, &a.sim, a.quiet ? NULL : stderr, &sw);
    if (st != USP_OK) return usp_cli_report("sweep", st);
    if (sw.ran == 0) {
        usp_cli_bad_input("sweep", "no configuration of %d ranks can run this problem:", a.world);
        usp_sweep_print_table(stderr, &sw);
        usp_sweep_free(&sw);
        return 2;
    }
    if (a.json) usp_sweep_print_json(stdout, &sw, a.sim.platform);
    else if (a.csv) usp_sweep_print_csv(stdout, &sw);
    else usp_sweep_print_table(stdout, &sw);
    if (a.svg) {
        char title[256];
        svg_title(&a, title, sizeof title);
        st = usp_sweep_write_svg(&sw, title, a.svg);
    }
    usp_sweep_free(&sw);
    return st == USP_OK ? 0 : usp_cli_report("sweep", st);
}
