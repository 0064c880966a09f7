/* usp: sequence-parallel attention you can verify.
 * One binary, one subcommand per file (cmd_<name>.c). */
#include <stdio.h>
#include <string.h>
#include "cli.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *what;
} command;

static const command commands[] = {
    {"run", cmd_run, "run one sharded attention and check it against the fp64 reference"},
    {"schedule", cmd_schedule, "print one rank's USP steps"},
    {"verify", cmd_verify, "the built-in matrix of shardings, each against the reference"},
    {"platform", cmd_platform, "write a SimGrid platform preset as XML"},
    {"nccl", cmd_nccl, "nccl-tests' table of a collective, predicted by usp's NCCL model"},
    {"sweep", cmd_sweep, "rank every ulysses x ring split by simulated time"},
    {"kernel-check", cmd_kernel_check, "check GPU attention kernels against the reference"},
    {"calibrate", cmd_calibrate, "measure kernels and NCCL on the GPUs: a device profile and a platform"},
    {"validate", cmd_validate, "the simulator against recorded GPU runs, phase by phase"},
    {"trace", cmd_trace, "compare two traces step by step, or draw them as an SVG timeline"},
    {"plan", cmd_plan, "rank dp x tp x ulysses x ring x ZeRO mixes of a training step"},
    {"costs", cmd_costs, "per-layer communication and memory of each parallelism"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: usp <command> [options]   (usp <command> --help for its options)\n\n"
               "usp shards attention the way Unified Sequence Parallelism does (Ulysses\n"
               "all-to-all x Ring attention) and checks every sharding against an exact\n"
               "fp64 reference.\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-13s %s\n", commands[i].name, commands[i].what);
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 2; }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) { printf("usp 0.1\n"); return 0; }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "usp: unknown command '%s' (usp --help lists them)\n", argv[1]);
    return 2;
}
