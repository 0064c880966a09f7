/* missing.c: the subcommands of backends this binary was built without. */
#include "cli.h"

#if !defined(USP_HAVE_SIM) || !defined(USP_HAVE_GPU)
static int not_built(const char *cmd, const char *what) {
    return usp_cli_bad_input(cmd, "this usp was built without %s", what);
}
#endif

#ifndef USP_HAVE_SIM
int cmd_platform(int argc, char **argv) { (void)argc; (void)argv; return not_built("platform", "SimGrid (install libsimgrid-dev and rebuild)"); }
int cmd_sweep(int argc, char **argv) { (void)argc; (void)argv; return not_built("sweep", "SimGrid (install libsimgrid-dev and rebuild)"); }
int cmd_plan(int argc, char **argv) { (void)argc; (void)argv; return not_built("plan", "SimGrid (install libsimgrid-dev and rebuild)"); }
int cmd_costs(int argc, char **argv) { (void)argc; (void)argv; return not_built("costs", "SimGrid (install libsimgrid-dev and rebuild)"); }
int cmd_nccl(int argc, char **argv) { (void)argc; (void)argv; return not_built("nccl", "SimGrid (install libsimgrid-dev and rebuild)"); }
#endif
#ifndef USP_HAVE_GPU
int cmd_kernel_check(int argc, char **argv) { (void)argc; (void)argv; return not_built("kernel-check", "CUDA (nvcc was not found at build time)"); }
#endif
