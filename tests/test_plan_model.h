/* The small model of the planner's tests: 2 layers, hidden 512, 8 heads of 64
 * (4 K/V heads), SwiGLU 1024, vocabulary 2048; simulations of it take
 * milliseconds. */
#ifndef USP_TEST_PLAN_MODEL_H
#define USP_TEST_PLAN_MODEL_H

#include "usp/plan.h"

static inline usp_workload small_workload(int seq, int batch) {
    usp_workload w = usp_workload_default();
    usp_model m = {"small", 2, 512, 8, 4, 64, 1024, 2048, 1, 0};
    w.model = m;
    w.seq = seq;
    w.global_batch = batch;
    return w;
}

#endif
