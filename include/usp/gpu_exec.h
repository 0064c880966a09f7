/* usp/gpu_exec.h: the GPU executor, one process per GPU.
 *
 * Every rank is its own process bound to one GPU. The processes find each
 * other from the variables a launcher sets (torchrun, Slurm, mpirun), or
 * usp starts them itself (usp_gpu_launch_local). Rank 0 listens on
 * MASTER_ADDR:MASTER_PORT and hands out the NCCL unique id over TCP; the
 * TCP links then stay open for barriers and for failure reports, so a rank
 * that fails ends every rank of the run, with the failing rank and step named,
 * instead of leaving its peers waiting in NCCL.
 *
 * A run: usp_gpu_open() once per process, usp_gpu_execute() per schedule
 * (the ulysses and ring communicators are split per configuration),
 * usp_gpu_close(). Each step runs on its stream (COMPUTE or COMM), after a
 * CUDA event of its `dep`; every step is timed by CUDA events. Transport is
 * NCCL: the all-to-all as grouped send/recv in the ulysses communicator, ring
 * K/V and dK/dV as send/recv in the ring communicator, all-gather and
 * reduce-scatter as NCCL collectives in the ring communicator; or, for ranks
 * that share a GPU (NCCL takes one rank per GPU), CUDA IPC between the
 * processes of one machine (gpu/transport.h). */
#ifndef USP_GPU_EXEC_H
#define USP_GPU_EXEC_H

#include "usp/executor.h"
#include "usp/kernel.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Where this process sits among the ranks, as a launcher said. */
typedef struct {
    int rank, world, local_rank;
    char master_addr[256];
    int port;                /* the bootstrap's TCP port (see usp_gpu_env_read) */
    const char *source;      /* the variable the rank came from: "RANK", "OMPI_COMM_WORLD_RANK", ... */
} usp_gpu_env;

/* Reads the launcher's variables, the first set of:
 *   RANK, WORLD_SIZE, LOCAL_RANK                       torchrun, usp's own launcher
 *   OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK           Open MPI's mpirun
 *   PMI_RANK, PMI_SIZE, MPI_LOCALRANKID                MPICH / Intel MPI (hydra)
 *   SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID          srun
 * and MASTER_ADDR (default 127.0.0.1) and MASTER_PORT (default 29500). The
 * port is USP_BOOTSTRAP_PORT when set; under torchrun, whose agent keeps its
 * own store on MASTER_PORT (TORCHELASTIC_USE_AGENT_STORE is set), MASTER_PORT + 1.
 * *found is 0 when no launcher variable is set (env is then rank 0 of 1).
 * Returns USP_EINVAL on malformed values. */
usp_status usp_gpu_env_read(usp_gpu_env *env, int *found);

/* Starts `nranks` copies of this program (/proc/self/exe) with argv (argv[0]
 * included, NULL-terminated) and RANK, WORLD_SIZE, LOCAL_RANK,
 * MASTER_ADDR=127.0.0.1 and a free MASTER_PORT set, waits for all of them,
 * and returns the exit code of the whole run: 0 if every rank exited 0, else
 * that of rank 0 if it failed, else that of the first rank that failed. Once
 * a rank has failed the others get timeout_s to stop on their own (they
 * notice through the TCP links), then they are killed. */
int usp_gpu_launch_local(int nranks, char *const *argv, double timeout_s);

typedef struct usp_gpu_ctx usp_gpu_ctx;

/* Binds the GPU LOCAL_RANK (mod the GPU count), connects the ranks over TCP
 * and makes the NCCL world communicator. Every wait is bounded by timeout_s
 * (a peer that never comes, a step that never ends). */
usp_status usp_gpu_open(const usp_gpu_env *env, double timeout_s, usp_gpu_ctx **out);
/* Tells the peers this rank is done and frees everything. */
void usp_gpu_close(usp_gpu_ctx *ctx);
/* Tells the peers this rank failed, with usp_error() as the reason, aborts
 * the NCCL communicators and frees everything. */
void usp_gpu_abort(usp_gpu_ctx *ctx);

int usp_gpu_rank(const usp_gpu_ctx *ctx);
int usp_gpu_world(const usp_gpu_ctx *ctx);
/* Every rank waits until all have called it (over the TCP links). */
usp_status usp_gpu_barrier(usp_gpu_ctx *ctx);

typedef struct {
    usp_gpu_ctx *ctx;
    const usp_kernel *kernel;  /* NULL: usp_kernel_builtin() */
    int warmup;                /* untimed runs of the whole list first */
    int iters;                 /* timed runs (>= 1); times are their median */
    int gather_outputs;        /* rank 0 collects O, LSE, dQ, dK, dV into out */
} usp_gpu_options;

/* Runs this rank's list of `s` (every rank calls it with the same schedule
 * and options). Inputs: `in` holds the global tensors (each rank takes its
 * shard, usp_scatter_tokens), or NULL to generate the shard on the GPU from
 * the same counter-based hash as usp_inputs_make (equal up to the last bit of
 * the GPU's log and cos; for timing runs of problems too large for the host).
 * On rank 0, `out` (usp_result_init'ed) gets the gathered outputs (when
 * gather_outputs), every rank's stats, and time_fwd_s / time_bwd_s: the
 * median over the timed runs of the time from a common start (after a NCCL
 * barrier) to the end of the last forward step on any rank, and from there
 * to the end of the last step. `trace` (rank 0, may be NULL) gets the steps
 * of the last timed run of every rank, rank as pid, tid 0 compute / 1 comm.
 * For tests, USP_GPU_INJECT_FAILURE="R:S" makes rank R fail at step S
 * ("R:S:die": its process is killed there); USP_GPU_SYNC_STEPS=1 runs one
 * step at a time (no overlap), to tell a race from a wrong result. */
usp_status usp_gpu_execute(const usp_schedule *s, const usp_inputs *in, const usp_gpu_options *o,
                           usp_result *out, usp_trace *trace);

/* The transport the ranks agreed on: "nccl" or "ipc" (usp_gpu_open picks
 * it, gpu/transport/transport.h: USP_TRANSPORT=nccl|ipc when set, else IPC
 * where ranks share a GPU and NCCL otherwise). */
const char *usp_gpu_transport_name(const usp_gpu_ctx *ctx);

/* The number of CUDA devices this process sees (0 when there is no driver). */
int usp_gpu_device_count(void);

#ifdef __cplusplus
}
#endif

#endif
