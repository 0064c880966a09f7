/* bench_gpu_kcheck.c: `usp kernel-check` alone, as the program usp_kernel_check.
 *
 * Built only on request (target usp_kernel_check): it links the kernel-check
 * command without the other subcommands, so the GPU machine can check the
 * kernels even when another part of the tree does not build there. */
#include "../usp/cli.h"

int main(int argc, char **argv) { return cmd_kernel_check(argc, argv); }
