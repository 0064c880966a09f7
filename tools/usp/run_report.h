/* run_report.h: the summary of `usp run`, for backends whose runs live in
 * their own file (run_gpu.c). Defined in cmd_run.c. */
#ifndef USP_RUN_REPORT_H
#define USP_RUN_REPORT_H

#include "runcase.h"

/* The text summary, or one JSON object when json is set. */
void usp_run_print(const usp_case *c, const char *backend, int json);
/* --dump: the outputs and the reference as .npy files in dir. */
usp_status usp_run_dump(const usp_case *c, const char *dir);

#endif
