/* run_gpu.h: `usp run --backend gpu` (run_gpu.c), called from cmd_run.c. */
#ifndef USP_RUN_GPU_H
#define USP_RUN_GPU_H

/* The whole of `usp run` with --backend gpu: argv as cmd_run received it
 * (argv[0] is "run"). Returns the process exit code. */
int usp_run_gpu_main(int argc, char **argv);

#endif
