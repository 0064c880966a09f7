/* cmd_platform.c: `usp platform`, the built-in platforms as SimGrid XML. */
#define _POSIX_C_SOURCE 200809L /* open_memstream */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "usp/json.h"
#include "usp/sim.h"

enum {
    OPT_PRESET = USP_OPT_CMD_FIRST, OPT_NODES, OPT_DIMS, OPT_GROUPS, OPT_CHASSIS, OPT_ROUTERS,
    OPT_HOSTS_PER_ROUTER, OPT_BW, OPT_LAT, OPT_WORLD, OPT_LIST, OPT_JSON, OPT_HELP, OPT_FROM_TOPO, OPT_GEN, OPT_NVSWITCH,
    OPT_P2P
};

static void usage(FILE *f) {
    fprintf(f, "usage: usp platform --preset NAME [options] [-o FILE]\n"
               "       usp platform --from-topo FILE [--nodes N] [--gen G] [--nvswitch GBPS] [--p2p L] [-o FILE]\n"
               "       usp platform --list [--json]\n"
               "Writes a built-in platform as SimGrid XML (stdout, or -o FILE). Every simulating\n"
               "command takes the same names with --platform NAME[:key=value,...], or an XML file.\n\n"
               "  --preset NAME          see --list\n"
               "  --nodes N              multi-node presets (h100-fattree, a800-2n), star: hosts\n"
               "  --world N              size the preset for N ranks (default: its own size, or 8)\n"
               "  --dims AxBxC           torus\n"
               "  --groups G --chassis C --routers R --hosts-per-router N   dragonfly\n"
               "  --bw GBPS --lat US     torus, dragonfly, star: every link\n"
               "  -o, --output FILE      write there instead of stdout\n"
               "  --from-topo FILE       a platform from your server's topology: the output of\n"
               "                         `nvidia-smi topo -m`, or an NCCL topology dump (XML, from\n"
               "                         NCCL_TOPO_DUMP_FILE); --nodes N repeats it on N nodes (NIC i\n"
               "                         of each on rail i); --gen G: its PCIe generation (default 4;\n"
               "                         topo -m does not say it); --nvswitch GBPS: every GPU on one\n"
               "                         NVSwitch at GBPS achieved (files for NCCL_TOPO_FILE omit NVLink)\n"
               "  --p2p pxb|sys          NCCL's P2P level, for --from-topo and the machine presets:\n"
               "                         pxb (default) P2P only under a PCIe switch, SHM elsewhere;\n"
               "                         sys P2P through the CPU too (NCCL before 2.23.4 on AMD\n"
               "                         hosts, or NCCL_P2P_LEVEL=SYS); presets also take NAME:p2p=sys\n"
               "  --list                 the presets and what they model\n"
               "  --json                 with --list: a JSON array; with --preset: {\"preset\",\n"
               "                         \"spec\", \"xml\": the XML} (or \"file\" with -o)\n"
               "  -h, --help\n");
}

static void list_presets(int json) {
    const char *const *names = usp_platform_presets();
    if (json) fputc('[', stdout);
    for (int i = 0; names[i]; i++) {
        if (json) {
            fputs(i ? ",\n {\"name\": " : "{\"name\": ", stdout);
            usp_json_write_string(stdout, names[i]);
            fputs(", \"gpu\": ", stdout);
            usp_json_write_string(stdout, usp_platform_gpu(names[i]));
            fputs(", \"about\": ", stdout);
            usp_json_write_string(stdout, usp_platform_describe(names[i]));
            fputc('}', stdout);
        } else {
            printf("%-13s %-5s %s\n", names[i], usp_platform_gpu(names[i]), usp_platform_describe(names[i]));
        }
    }
    if (json) fputs("]\n", stdout);
}

static int int_arg(const char *name, const char *arg, int *out) {
    return usp_cli_int_option("platform", name, arg, 1, 1000000, out);
}

static int double_arg(const char *name, const char *arg, int allow_zero, double *out) {
    if (usp_parse_double(arg, out) != 0 || *out < 0 || (!allow_zero && *out == 0))
        return usp_cli_bad_input("platform", "--%s '%s' is not a %s number", name, arg,
                                 allow_zero ? "non-negative" : "positive");
    return 0;
}

static int parse_dims(const char *arg, int dims[3]) {
    char spec[64];
    char name[16];
    usp_platform_params p;
    snprintf(spec, sizeof spec, "torus:dims=%s", arg);
    if (usp_platform_parse_spec(spec, name, sizeof name, &p) != USP_OK) return usp_cli_report("platform", USP_EINVAL);
    memcpy(dims, p.dims, sizeof p.dims);
    return 0;
}

typedef struct {
    const char *preset, *output, *from_topo;
    int world, list, json, gen;
    double nvswitch;
    usp_platform_params p;
} platform_args;

static int parse_option(int opt, const char *arg, platform_args *a) {
    switch (opt) {
    case OPT_PRESET: a->preset = arg; return 0;
    case 'o': a->output = arg; return 0;
    case OPT_NODES: return int_arg("nodes", arg, &a->p.nodes);
    case OPT_WORLD: return int_arg("world", arg, &a->world);
    case OPT_DIMS: return parse_dims(arg, a->p.dims);
    case OPT_GROUPS: return int_arg("groups", arg, &a->p.groups);
    case OPT_CHASSIS: return int_arg("chassis", arg, &a->p.chassis);
    case OPT_ROUTERS: return int_arg("routers", arg, &a->p.routers);
    case OPT_HOSTS_PER_ROUTER: return int_arg("hosts-per-router", arg, &a->p.hosts_per_router);
    case OPT_BW: return double_arg("bw", arg, 0, &a->p.bw_gbps);
    case OPT_LAT: return double_arg("lat", arg, 1, &a->p.lat_us);
    case OPT_LIST: a->list = 1; return 0;
    case OPT_FROM_TOPO: a->from_topo = arg; return 0;
    case OPT_GEN: return usp_cli_int_option("platform", "gen", arg, 3, 5, &a->gen);
    case OPT_NVSWITCH: return double_arg("nvswitch", arg, 0, &a->nvswitch);
    case OPT_P2P:
        if (!strcmp(arg, "pxb")) a->p.p2p_level = 1;
        else if (!strcmp(arg, "sys")) a->p.p2p_level = 2;
        else return usp_cli_bad_input("platform", "--p2p '%s' is not pxb or sys", arg);
        return 0;
    case OPT_JSON: a->json = 1; return 0;
    default: return usp_cli_bad_input("platform", "unknown option (see usp platform --help)");
    }
}

/* Options given on the command line win over the NAME:key=value ones. */
static usp_platform_params merge(const usp_platform_params *spec, const usp_platform_params *cli) {
    usp_platform_params p = *spec;
    if (cli->nodes) p.nodes = cli->nodes;
    if (cli->dims[0]) memcpy(p.dims, cli->dims, sizeof p.dims);
    if (cli->groups) p.groups = cli->groups;
    if (cli->chassis) p.chassis = cli->chassis;
    if (cli->routers) p.routers = cli->routers;
    if (cli->hosts_per_router) p.hosts_per_router = cli->hosts_per_router;
    if (cli->bw_gbps > 0) p.bw_gbps = cli->bw_gbps;
    if (cli->lat_us >= 0) p.lat_us = cli->lat_us;
    if (cli->p2p_level) p.p2p_level = cli->p2p_level;
    return p;
}

static int write_platform(const platform_args *a) {
    char name[64];
    usp_platform_params base;
    if (usp_platform_parse_spec(a->preset, name, sizeof name, &base) != USP_OK)
        return usp_cli_report("platform", USP_EINVAL);
    usp_platform_params p = merge(&base, &a->p);
    /* --json: the XML as a string member, or the file it went to */
    char *xml = NULL;
    size_t xml_len = 0;
    FILE *f = a->output ? fopen(a->output, "w") : a->json ? open_memstream(&xml, &xml_len) : stdout;
    if (!f) return usp_cli_bad_input("platform", "cannot write %s", a->output ? a->output : "to memory");
    usp_status st = usp_platform_write(name, &p, a->world, f);
    if ((a->output || a->json) && fclose(f) != 0 && st == USP_OK)
        st = usp_fail(USP_EINTERNAL, "cannot write %s", a->output ? a->output : "to memory");
    if (st != USP_OK) {
        if (a->output) remove(a->output);
        free(xml);
        return usp_cli_report("platform", st);
    }
    if (a->json) {
        printf("{\"preset\": ");
        usp_json_write_string(stdout, name);
        printf(", \"spec\": ");
        usp_json_write_string(stdout, a->preset);
        printf(", \"%s\": ", a->output ? "file" : "xml");
        usp_json_write_string(stdout, a->output ? a->output : xml);
        printf("}\n");
    }
    free(xml);
    return 0;
}

int cmd_platform(int argc, char **argv) {
    static const struct option opts[] = {
        {"preset", required_argument, 0, OPT_PRESET}, {"nodes", required_argument, 0, OPT_NODES},
        {"world", required_argument, 0, OPT_WORLD}, {"dims", required_argument, 0, OPT_DIMS},
        {"groups", required_argument, 0, OPT_GROUPS}, {"chassis", required_argument, 0, OPT_CHASSIS},
        {"routers", required_argument, 0, OPT_ROUTERS},
        {"hosts-per-router", required_argument, 0, OPT_HOSTS_PER_ROUTER},
        {"bw", required_argument, 0, OPT_BW}, {"lat", required_argument, 0, OPT_LAT},
        {"output", required_argument, 0, 'o'}, {"list", no_argument, 0, OPT_LIST},
        {"json", no_argument, 0, OPT_JSON}, {"help", no_argument, 0, 'h'},
        {"from-topo", required_argument, 0, OPT_FROM_TOPO}, {"gen", required_argument, 0, OPT_GEN},
        {"nvswitch", required_argument, 0, OPT_NVSWITCH}, {"p2p", required_argument, 0, OPT_P2P}, {0, 0, 0, 0}};
    platform_args a = {0};
    a.p.lat_us = -1;
    int opt;
    optind = 1;
    while ((opt = usp_cli_getopt("platform", "platform", argc, argv, "ho:", opts)) != -1) {
        if (opt == 'h') { usage(stdout); return 0; }
        if (opt == '?') return 2;
        if (parse_option(opt, optarg, &a) != 0) return 2;
    }
    if (optind < argc) return usp_cli_bad_input("platform", "unexpected argument '%s'", argv[optind]);
    if (a.list) { list_presets(a.json); return 0; }
    if (a.from_topo) {
        if (a.preset) return usp_cli_bad_input("platform", "--from-topo and --preset exclude each other");
        usp_topo_options to = {a.p.nodes, a.gen, a.nvswitch, a.p.p2p_level == 2};
        FILE *f = a.output ? fopen(a.output, "w") : stdout;
        if (!f) return usp_cli_bad_input("platform", "cannot write %s", a.output);
        usp_status st = usp_platform_from_topo(a.from_topo, &to, f);
        if (a.output && fclose(f) != 0 && st == USP_OK) st = usp_fail(USP_EINTERNAL, "cannot write %s", a.output);
        if (st != USP_OK) {
            if (a.output) remove(a.output);
            return usp_cli_report("platform", st);
        }
        return 0;
    }
    if (!a.preset) return usp_cli_bad_input("platform", "--preset NAME is required (usp platform --list)");
    return write_platform(&a);
}
