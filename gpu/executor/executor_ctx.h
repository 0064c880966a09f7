/* executor_ctx.h: what one rank process holds for its whole life (inside
 * usp_gpu): its GPU, two streams, the TCP links and the transport (NCCL
 * communicators or CUDA IPC, transport.h). */
#ifndef USP_GPU_EXECUTOR_CTX_H
#define USP_GPU_EXECUTOR_CTX_H

#include "transport/bootstrap.h"
#include "transport/transport.h"
#include "usp/gpu_exec.h"

struct usp_gpu_ctx {
    usp_gpu_env env;
    int device;
    double timeout_s;
    usp_links links;
    usp_transport *tr;            /* NULL until opened */
    cudaStream_t compute, comm;   /* the schedule's two streams */
    float *scratch;               /* one float on the device, for barriers */
    int failed;                   /* peers were told and the transport aborted already */
};

#endif
