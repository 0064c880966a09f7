/* plan_internal.h: what the parts of the planner share (not installed).
 *
 * A "layer program" is, for every rank, one ordered list of steps on three
 * in-order streams, the way the USP schedule is (usp/schedule.h):
 *   COMPUTE  matrix products, attention blocks, memory-bound kernels;
 *   COMM     activation collectives: TP, the USP all-to-alls and ring;
 *   BG       gradient and parameter collectives of DP and ZeRO, which real
 *            frameworks run on their own stream behind the computation.
 * A step starts after the previous step of its stream and after its deps
 * (earlier steps of other streams). plan_sim.c runs programs in SimGrid. */
#ifndef USP_PLAN_INTERNAL_H
#define USP_PLAN_INTERNAL_H

#include "internal.h"
#include "usp/plan.h"
#include "usp/schedule.h"

/* Built-in model texts, generated from sim/models/<name>.json. */
typedef struct { const char *name, *json; } plan_embedded_model;
extern const plan_embedded_model PLAN_EMBEDDED_MODELS[];
extern const int PLAN_NEMBEDDED_MODELS;

/* ----------------------------------------------------------- dimensions */

/* Optimizer states per parameter: fp32 master weights, Adam momentum and
 * variance (the USP paper's OS = 6 P for 2-byte parameters). */
#define PLAN_OPTIMIZER_BYTES_PER_PARAM 12.0
/* Bytes the optimizer step reads and writes per local parameter: master,
 * momentum, variance read and written (24), the gradient read (2), the bf16
 * parameter written (2). */
#define PLAN_OPTIMIZER_TRAFFIC_PER_PARAM 28.0
/* Matrix-product rate as a fraction of the dense peak when the profile
 * gives none: bf16 8192^3 on H200 measured 790 of 989 TFLOP/s (sim/SOURCES.md). */
#define PLAN_MATMUL_PEAK_FRACTION (790.0 / 989.0)

/* Everything the closed forms and the program builder derive from a
 * workload and a mix, as doubles (products overflow int). */
typedef struct {
    double b;            /* sequences per DP rank in one micro-batch */
    double L, h, H, Hkv, D, F, V;
    double layers;
    double T, U, R, Z;
    double S;            /* tokens per USP rank: b L / (U R) */
    double St;           /* tokens per GPU between TP regions: S / T with sp, S without */
    double Ht, Hkvt;     /* heads per TP rank */
    double Hu, Hkvu;     /* per ulysses rank; K/V heads replicated when Hkvt < U */
    double Vt;           /* vocabulary rows per TP rank (padded up) */
    double mlp_mats;     /* 3 (SwiGLU) or 2 (GELU) */
    double e, ea, es;    /* element bytes: data, accumulators, statistics (as the USP schedule) */
    double ew;           /* element bytes of O, dQ, dK, dV on the all-to-all wire (usp_wire_dtype) */
    double eg;           /* element bytes of gradients (e, or 4 with grad_fp32) */
    double p_layer;      /* parameters of one layer on one TP shard */
    double p_edges;      /* embedding, LM head, final norm on one TP shard */
    double shard_layer, shard_edges; /* their ZeRO shards, padded up */
    int sp, zero, recompute;
    int grad_step;       /* usp_workload.grad_sync_step */
    int ring_allgather;  /* K/V all-gathered instead of passed around */
} plan_dims;

void plan_dims_make(const usp_workload *w, const usp_mix *x, plan_dims *d);
/* The attention problem of one layer: heads / TP, the mix's ulysses x ring. */
usp_config plan_attention_config(const usp_workload *w, const usp_mix *x);

/* ------------------------------------------------------------ programs */

typedef enum { PLAN_COMPUTE, PLAN_COMM, PLAN_BG, PLAN_NSTREAMS } plan_stream;

typedef enum {
    PLAN_STEP_COMPUTE,   /* lasts `seconds` */
    PLAN_STEP_ALLGATHER, /* every member ends with every member's shard */
    PLAN_STEP_REDUCE_SCATTER, /* every member ends with its shard summed over the members */
    PLAN_STEP_ALLREDUCE, /* reduce-scatter, then all-gather */
    PLAN_STEP_ALL_TO_ALL,/* a message to every other member */
    PLAN_STEP_SENDRECV   /* one message to peer_send, one from peer_recv */
} plan_step_kind;

enum { PLAN_STEP_NAME = 40 }; /* bytes of a step's name, its NUL included */

typedef enum { PLAN_GROUP_NONE, PLAN_GROUP_TP, PLAN_GROUP_ULYSSES, PLAN_GROUP_RING,
               PLAN_GROUP_ZERO } plan_group;

typedef struct {
    plan_step_kind kind;
    plan_stream stream;
    int backward;        /* 0: forward pass, 1: backward (recomputation included) */
    plan_group group;
    usp_comm_term term;
    int counted;         /* 0: stands for traffic another step already counts */
    double seconds;      /* COMPUTE */
    int attention;       /* spliced from the layer's USP attention schedule */
    double slowdown;     /* COMPUTE: fraction of its rate lost while its rank's COMM stream
                          * transfers one of the attention's messages (the profile's
                          * comm_overlap_slowdown, attention only, as the simulator's
                          * engine applies it) */
    double message;      /* comm: bytes per peer: the shard of a collective (per round for
                          * ALLREDUCE), the piece of an all-to-all, the SENDRECV message */
    int direct;          /* collectives: 1 sends every peer its shard (as the simulator's engine
                          * does for the USP schedule's); 0 runs NCCL-style rings */
    int peer_send, peer_recv; /* SENDRECV: global ranks */
    int a2a;             /* USP all-to-alls: the usp_a2a pattern (the pieces of an uneven
                          * head split, weighed by plan_program.attn), else -1 */
    int dep[2];          /* earlier steps of other streams, or -1 */
    char name[PLAN_STEP_NAME];
} plan_step;

typedef struct {
    int nsteps, cap;
    plan_step *steps;
} plan_rank_program;

typedef struct {
    usp_mix mix;
    int world;
    plan_rank_program *ranks;
    usp_config attn;     /* the attention's configuration (plan_attention_config) */
} plan_program;

/* The device as the planner times it. */
typedef struct {
    sim_profile prof;
    double matmul_flops;     /* achieved rate of matrix products reducing over matmul_ref_k */
    double matmul_ref_k;     /* the reduction length that rate was measured at; 0: long */
    double matmul_short_k;   /* a product reducing over k runs at k / (k + short) of its
                              * long-product rate; 0: every shape alike */
    int matmul_is_max;       /* the profile's rate is the best of a shape search: no product
                              * runs faster than matmul_flops */
    double peak_flops;       /* dense peak of the workload dtype */
} plan_device;

/* Seconds of one matrix product of `flops` reducing over k (the inner
 * dimension), launch included. */
double plan_gemm_seconds(const plan_device *dev, double flops, double k);

usp_status plan_device_load(const char *profile, const usp_workload *w, double matmul_tflops,
                            plan_device *dev);

/* One representative layer, forward and backward (recomputation included),
 * with the gradient and parameter collectives of one layer on BG; of one
 * micro-batch of usp_micro_batch sequences. `accumulating`: a micro-batch
 * before the step's last (gradients accumulate, see plan_program.c). */
usp_status plan_build_layer(const usp_workload *w, const usp_mix *x, const plan_device *dev, int accumulating,
                            plan_program *out);
/* The once-per-micro-batch parts: embedding, LM head, their collectives, the
 * collectives the first and last layer cannot hide; on the last micro-batch
 * the optimizer step (and the step's gradient synchronization). */
usp_status plan_build_edges(const usp_workload *w, const usp_mix *x, const plan_device *dev, int accumulating,
                            plan_program *out);
/* The attention of one layer alone (the USP schedule of heads / tp, forward
 * and backward, as plan_build_layer splices it, without the layer around it):
 * what tests/test_plan_agree.c compares with the simulator's engine. */
usp_status plan_build_attention(const usp_workload *w, const usp_mix *x, const plan_device *dev, plan_program *out);
/* The same for the ranks `only` accepts (the others get no steps); NULL: all. */
usp_status plan_build_some(const usp_workload *w, const usp_mix *x, const plan_device *dev, int layer,
                           int accumulating, int (*only)(const usp_mix *x, int rank), plan_program *out);
/* The same for rank 0 alone, from its own attention schedule
 * (usp_schedule_build_rank), without the whole ring's. */
usp_status plan_build_rank0(const usp_workload *w, const usp_mix *x, const plan_device *dev, int layer,
                            int accumulating, plan_program *out);
void plan_program_free(plan_program *p);
/* The compute rank 0 of a layer (layer = 1) or of the once-per-step parts
 * does, in seconds: its compute stream runs one step at a time, so no
 * simulation of the program ends sooner. Built from rank 0's attention
 * schedule alone (usp_schedule_build_rank), without the whole ring's. */
usp_status plan_compute_bound(const usp_workload *w, const usp_mix *x, const plan_device *dev, int layer,
                              int accumulating, double *seconds);

/* Global rank of coordinates (dp index, ring rank, ulysses rank, tp rank):
 * TP innermost, then ulysses, then ring, then DP, so that TP and ulysses
 * groups are consecutive GPUs (one node). */
int plan_rank_of(const usp_mix *x, int d, int r, int u, int t);
void plan_coords_of(const usp_mix *x, int g, int *d, int *r, int *u, int *t);
int plan_group_size(const usp_mix *x, plan_group grp);
int plan_group_member(const usp_mix *x, plan_group grp, int rank, int index);

/* ----------------------------------------------------------- simulation */

typedef struct {
    double makespan_s;       /* last step end, over ranks */
    double fwd_s;            /* last forward step end, over ranks */
    double compute_s;        /* busy compute of the rank that ends last */
    double bytes[USP_TERM_COUNT]; /* sent by rank 0, counted steps only */
    double comm_s[USP_TERM_COUNT];/* comm steps' durations (end - start), summed over every rank */
    double lower_s;          /* representative mode on a known topology: a lower bound on
                              * makespan_s (plan_sim.c, lower_bound), else 0 */
    int cut;                 /* 1: not simulated, lower_s above the program's cutoff
                              * (makespan_s = lower_s, the other fields 0) */
} plan_sim_result;

/* Runs the programs one after the other in one SimGrid simulation (in a
 * forked child: SimGrid initializes once per process). Unless `full`, on a
 * platform where every GPU has links of its own, only the GPUs of one
 * sequence-parallel ring (dp, ulysses and tp index 0) run: the others do the
 * same work at the same moments (see plan_sim.c). */
/* Program i is (mixes[i], layers[i]: 1 a layer, 0 the once-per-step
 * parts, accumulating[i]: a micro-batch before the step's last), built in
 * the simulation's process for the ranks that run. */
typedef struct {
    const usp_workload *w;
    const plan_device *dev;
    const usp_mix *mixes;
    const int *layers, *accumulating;
    const plan_program *const *built; /* non-NULL: the programs, built beforehand (mixes unused) */
    const double *cutoff;    /* [n] or NULL: program i is not simulated when its lower bound
                              * exceeds cutoff[i] > 0 (plan_sim_result.cut) */
    const int *skip_if;      /* [n] or NULL: -1, or an earlier program j: program i is not
                              * simulated either when j is cut (cut = 1, makespan 0) */
} plan_programs;

usp_status plan_simulate_mixes(const plan_programs *progs, int n, const char *platform, int gpus, int full,
                               plan_sim_result *results);
/* The same in two halves, so that several simulations run at once (one
 * child process each): plan_sim_start forks the child, which keeps its own
 * copy of progs; plan_sim_finish waits for it and fills results. */
typedef struct {
    sim_child child;
    plan_sim_result *results;
    int n, temp;
    const char *spec;
    char path[4096];
} plan_sim_job;
usp_status plan_sim_start(const plan_programs *progs, int n, const char *platform, int gpus, int full,
                          plan_sim_result *results, plan_sim_job *job);
usp_status plan_sim_finish(plan_sim_job *job);
/* The same for programs built beforehand, every GPU simulated. */
usp_status plan_simulate(const plan_program *const *progs, int n, const char *platform, int gpus,
                         plan_sim_result *results);

#endif
