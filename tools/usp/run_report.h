/* run_report.h: the options and the summary of `usp run`, for backends
 * whose runs live in their own file (run_gpu.c). Defined in cmd_run.c. */
#ifndef USP_RUN_REPORT_H
#define USP_RUN_REPORT_H

#include "cli.h"
#include "runcase.h"

/* The options `usp run` takes with every backend, to splice into a
 * getopt_long table; a backend numbers its own from RUN_OPT_OWN_FIRST. */
enum {
    RUN_OPT_BACKEND = USP_OPT_CMD_FIRST, RUN_OPT_INPUT, RUN_OPT_DUMP, RUN_OPT_TRACE, RUN_OPT_FWD, RUN_OPT_JSON,
    RUN_OPT_HELP, RUN_OPT_OWN_FIRST
};
#define USP_RUN_LONGOPTS                                                                             \
    {"backend", required_argument, 0, RUN_OPT_BACKEND}, {"input", required_argument, 0, RUN_OPT_INPUT}, \
    {"dump", required_argument, 0, RUN_OPT_DUMP}, {"trace", required_argument, 0, RUN_OPT_TRACE},       \
    {"forward-only", no_argument, 0, RUN_OPT_FWD}, {"json", no_argument, 0, RUN_OPT_JSON},              \
    {"help", no_argument, 0, RUN_OPT_HELP}

/* The text summary, or one JSON object when json is set. */
void usp_run_print(const usp_case *c, const char *backend, int json);
/* --dump: the outputs and the reference as .npy files in dir. */
usp_status usp_run_dump(const usp_case *c, const char *dir);

#endif
