/* runcase.h: one problem, run by one executor and checked against the
 * fp64 dense reference. Shared by usp run and usp verify. */
#ifndef USP_RUNCASE_H
#define USP_RUNCASE_H

#include "usp/compare.h"
#include "usp/executor.h"

enum { USP_T_O, USP_T_LSE, USP_T_DQ, USP_T_DK, USP_T_DV, USP_T_COUNT };
extern const char *const usp_tensor_names[USP_T_COUNT];

/* An executor as the runner sees it: ctx carries its own options. */
typedef usp_status (*usp_exec_fn)(const usp_schedule *s, const usp_inputs *in, usp_result *out,
                                  usp_trace *trace, void *ctx);

typedef struct {
    usp_config cfg;
    int backward;
    usp_schedule sched;
    usp_inputs in;
    double *ref[USP_T_COUNT];     /* fp64 dense reference */
    usp_result res;
    usp_error_stats err[USP_T_COUNT];
    double tol[USP_T_COUNT];      /* norm-wise tolerance */
    double elem_tol[USP_T_COUNT]; /* element-wise tolerance */
    int ntensors;                 /* 2 forward only, 5 with backward */
    int pass;
} usp_case;

/* Builds the schedule, makes the inputs (input_dir may be NULL), computes
 * the reference, runs exec, compares. USP_OK means it ran: see c->pass. */
usp_status usp_case_run(usp_case *c, const char *input_dir, usp_exec_fn exec, void *ctx,
                        usp_trace *trace);
void usp_case_free(usp_case *c);

/* Elements of tensor t of the global problem. */
long usp_case_elems(const usp_config *cfg, int t);
/* The gathered output t of the executor (NULL if not computed). */
double *usp_case_output(const usp_case *c, int t);

/* The in-process executor as a usp_exec_fn. */
usp_status usp_exec_ref(const usp_schedule *s, const usp_inputs *in, usp_result *out,
                        usp_trace *trace, void *ctx);

#endif
