/* usp/plan.h: the whole-model planner.
 *
 * Given a model, a sequence length and a cluster, which mix of data
 * parallelism (DP), tensor parallelism with sequence parallel (TP-sp),
 * Ulysses degree, ring degree and ZeRO stage trains fastest without running
 * out of memory?
 *
 * A training step is predicted from one representative transformer layer per
 * mix, simulated on the SimGrid platform with the device profile the
 * simulator uses, multiplied by the layer count, plus the step-level parts
 * (embedding, LM head, the collectives the last layer cannot hide, the
 * optimizer step) simulated once. Inside a layer the attention IS the USP
 * schedule (usp_schedule_build with heads / TP); the projections, the MLP,
 * the TP collectives and the gradient/parameter collectives of DP and ZeRO
 * are steps around it. With gradient accumulation (usp_workload.micro_batch)
 * a step is its micro-batches one after the other, each timed the same way,
 * the gradients synchronized and the optimizer run after the last.
 *
 * The closed forms below give the bytes each GPU sends and the memory it
 * holds; the tests check that the simulation moves exactly those bytes. */
#ifndef USP_PLAN_H
#define USP_PLAN_H

#include <stdio.h>
#include "usp/config.h"

/* ------------------------------------------------------------- models */

typedef struct {
    char name[64];
    int layers, hidden, heads, kv_heads, head_dim, ffn, vocab;
    int gated_mlp;       /* 1: SwiGLU (gate, up, down matrices); 0: GELU (up, down) */
    int tied_embeddings; /* 1: the LM head reuses the embedding matrix */
} usp_model;

/* Built-in model names ("llama2-7b", "llama3-8b", "llama3-70b", "gpt"), NULL-terminated. */
const char *const *usp_model_names(void);
/* A built-in name or a JSON file with the fields of usp_model
 * ({"name", "layers", "hidden", "heads", "kv_heads", "ffn", "vocab"}; optional
 * "head_dim" (default hidden / heads), "mlp": "swiglu" | "gelu" (default
 * swiglu), "tied_embeddings": bool (default false)). */
usp_status usp_model_load(const char *name_or_file, usp_model *m);
/* USP_EINVAL naming the field when a model is not well formed. */
usp_status usp_model_validate(const usp_model *m);
/* Parameters: all of them, and those of one layer (matrices and norms). */
double usp_model_params(const usp_model *m);
double usp_model_layer_params(const usp_model *m);

/* ----------------------------------------------------- workload and mix */

typedef struct {
    usp_model model;
    int seq;             /* tokens per sequence */
    int global_batch;    /* sequences per training step */
    int micro_batch;     /* sequences one DP rank runs forward and backward at once; the step
                          * accumulates gradients over global_batch / (dp x micro_batch)
                          * micro-batches, synchronizing them once (0: global_batch / dp, one
                          * micro-batch per step, no accumulation) */
    int causal;          /* 1 for language models */
    usp_dtype dtype;     /* activations, parameters and gradients (bf16) */
    usp_ring_impl ring_impl;
    const usp_mask *mask;/* NULL, or which keys each query sees (packed documents,
                          * windows; one list for every sequence), seq tokens long */
    /* How the framework synchronizes gradients and parameters (both 0: each
     * layer's gradient reduction and ZeRO parameter all-gather run behind the
     * computation, as with Megatron-LM's --overlap-grad-reduce and
     * --overlap-param-gather). */
    int grad_sync_step;  /* 1: one reduction of every gradient after the whole backward, the
                          * optimizer, then one all-gather of every ZeRO-1/2 parameter shard,
                          * nothing overlapped (Megatron-LM without those flags, its default;
                          * ZeRO-3's per-layer parameter gathers stay per layer) */
    int grad_fp32;       /* 1: gradients are kept and reduced in fp32 (Megatron-LM with bf16
                          * forces accumulate_allreduce_grads_in_fp32) */
} usp_workload;

/* llama3-8b, seq 65536, global batch 1, causal, bf16, zigzag. */
usp_workload usp_workload_default(void);

typedef struct {
    int dp, tp, ulysses, ring;
    int zero;            /* ZeRO stage 0..3, over the dp x ulysses x ring ranks of one TP shard */
    int recompute;       /* 1: full activation recomputation of every layer */
    int tp_sp;           /* 1: TP with sequence parallel (Megatron-LM); 0: plain TP (all-reduce) */
    int tp_overlap;      /* 0: every TP collective waits for its product and is waited for;
                          * 1: the backward's all-gather runs behind the data-gradient product
                          * and its reduce-scatter behind the weight-gradient product
                          * (Megatron-LM's asynchronous path with sequence parallel) */
} usp_mix;

static inline int usp_mix_gpus(const usp_mix *x) { return x->dp * x->tp * x->ulysses * x->ring; }
/* Sequences per micro-batch of one DP rank, and micro-batches per step
 * (usp_mix_check refuses a mix where they do not divide the global batch). */
static inline int usp_micro_batch(const usp_workload *w, const usp_mix *x) {
    return w->micro_batch > 0 ? w->micro_batch : w->global_batch / (x->dp > 0 ? x->dp : 1);
}
static inline int usp_accumulation_steps(const usp_workload *w, const usp_mix *x) {
    int per_step = (x->dp > 0 ? x->dp : 1) * usp_micro_batch(w, x);
    return per_step > 0 && w->global_batch >= per_step ? w->global_batch / per_step : 1;
}
/* Ranks that shard ZeRO states and reduce gradients: dp x ulysses x ring. */
static inline int usp_mix_zero_group(const usp_mix *x) { return x->dp * x->ulysses * x->ring; }

/* USP_OK, or USP_EINVAL with the reason a mix cannot run: "heads 32 are not
 * divisible by tp x ulysses = 64", "seq 1000 is not divisible by ...",
 * "16 GPUs are not dp x tp x ulysses x ring = 1 x 2 x 2 x 2 = 8". gpus <= 0
 * skips the last check. */
usp_status usp_mix_check(const usp_workload *w, const usp_mix *x, int gpus);

/* "dp1 tp2 u4 r2 zero1" (+ " rc" with recomputation, " tp-nosp" without sp,
 * " tp-overlap" with the backward's TP collectives overlapped). */
void usp_mix_describe(const usp_mix *x, char *buf, size_t n);

/* ------------------------------------------------ closed forms, per GPU */

typedef enum {
    USP_TERM_TP,         /* TP activations: all-gather / reduce-scatter (sp) or all-reduce */
    USP_TERM_ULYSSES,    /* USP all-to-all in the ulysses group */
    USP_TERM_RING,       /* USP ring: K/V forward, K/V and dK/dV backward */
    USP_TERM_ZERO_PARAM, /* ZeRO parameter all-gathers */
    USP_TERM_GRAD_RS,    /* ZeRO gradient reduce-scatter */
    USP_TERM_GRAD_AR,    /* gradient all-reduce over dp x ulysses x ring (ZeRO-0) */
    USP_TERM_COUNT
} usp_comm_term;

const char *usp_comm_term_name(usp_comm_term t);

typedef struct {
    double layer[USP_TERM_COUNT]; /* bytes one GPU sends for one layer, forward + backward */
    double edges[USP_TERM_COUNT]; /* embedding, LM head and their gradients, the step's sync */
    /* With gradient accumulation, one micro-batch before the last, all layers
     * and edges: its activations' bytes; gradients are reduced only where the
     * shards are all a rank keeps (ZeRO-2/3, as DeepSpeed does) and only
     * ZeRO-3 gathers parameters; 0 without accumulation. */
    double accum[USP_TERM_COUNT];
    double step[USP_TERM_COUNT];  /* layers x layer + edges + (micro-batches - 1) x accum */
} usp_comm_bytes;

/* Bytes GPU 0 sends per training step, by term (every GPU sends the same);
 * layer and edges are those of the step's last micro-batch, which
 * synchronizes the gradients and parameters. */
void usp_comm_closed_form(const usp_workload *w, const usp_mix *x, usp_comm_bytes *out);

typedef struct {
    double params, grads, optimizer; /* model states */
    double activations;              /* saved for the backward, all layers */
    double working;                  /* the largest transient: one layer's backward or the LM head */
    double total;                    /* tensors only: compared with USP_MEMORY_USABLE_FRACTION
                                      * of the card (usp/sim.h) */
    double layer_saved;              /* activations one layer keeps (without recomputation) */
} usp_memory;

/* Bytes per GPU at the peak of a step (activations of one micro-batch). */
void usp_memory_closed_form(const usp_workload *w, const usp_mix *x, usp_memory *out);

/* Model FLOPs of one training step, whole cluster, without recomputation:
 * linear 6 x (matrix parameters, LM head included) x tokens; attention
 * 3 x 4 x B x L^2 x H x D per layer (forward once, backward twice), halved
 * when causal; with a mask, 3 x 4 x B x (visible pairs) x H x D. */
typedef struct { double linear, attention, total; } usp_flops;
void usp_model_flops(const usp_workload *w, usp_flops *f);

/* ------------------------------------------------------------- plans */

/* The most GPUs a plan takes (the planner holds a few hundred bytes per GPU
 * and program; the representative simulation runs one ring of them). */
#define USP_PLAN_MAX_GPUS 65536

typedef struct {
    const char *platform;  /* preset spec or SimGrid XML; NULL: "h200x8" */
    const char *profile;   /* device profile; NULL: the preset's GPU */
    int gpus;
    /* Restrictions: 0 (or -1 for zero, recompute) leaves a dimension free. */
    int dp, tp, ulysses, ring, zero, recompute;
    double matmul_tflops;  /* > 0: overrides the profile's matrix-product rate (every shape alike) */
    int tp_overlap;        /* usp_mix.tp_overlap of every mix */
    int keep;              /* > 0: only the `keep` best fitting mixes need exact times (usp plan
                            * --top): mixes that cannot reach them are not simulated (pruned) */
    int full;              /* 1: simulate every GPU; 0: where the platform gives every GPU links
                            * of its own, one GPU per ring position stands for the rest */
    /* called after each batch of simulated programs (NULL: none) */
    void (*progress)(void *ctx, int simulated, int programs);
    void *progress_ctx;
} usp_plan_options;

void usp_plan_options_init(usp_plan_options *o);

typedef struct {
    usp_mix mix;
    usp_status status;          /* USP_OK or why the mix cannot run */
    char why[200];
    double step_s;              /* predicted time of one training step */
    double layer_fwd_s, layer_bwd_s, edges_s;
    double compute_s, exposed_s;/* per step, critical GPU: busy compute, and time it waits */
    double tflops_per_gpu, mfu; /* model FLOPs (see usp_model_flops) */
    usp_memory mem;
    int oom;                    /* mem.total > the plan's usable_bytes */
    int micro_batch, accumulation_steps; /* usp_micro_batch, usp_accumulation_steps */
    int pruned;                 /* 1: not simulated (usp_plan_options.keep), `why` says why */
    usp_comm_bytes simulated;   /* bytes GPU 0 moved in the simulation, by term */
} usp_plan_point;

typedef struct {
    usp_workload work;
    char platform[128], gpu[64];
    int gpus;
    double peak_flops, matmul_flops, capacity_bytes;
    double usable_bytes;        /* USP_MEMORY_USABLE_FRACTION of capacity_bytes: a point above is oom */
    usp_flops flops;
    usp_plan_point *points;     /* ranked: fitting by step time, then out of memory, then refused;
                                 * times within 1e-4 tie, fewer bytes sent first, then less memory */
    int count, runnable;
    int pruned;                 /* runnable points not simulated (ranked after the others) */
} usp_plan;

/* Enumerates every mix of o->gpus (within the restrictions), refuses the
 * impossible ones with a reason, simulates the rest, and ranks them. */
usp_status usp_plan_run(const usp_workload *w, const usp_plan_options *o, usp_plan *out);
/* Evaluates exactly one mix (refused with a reason when impossible). */
usp_status usp_plan_one(const usp_workload *w, const usp_plan_options *o, const usp_mix *x, usp_plan *out);
void usp_plan_free(usp_plan *p);

/* Readable table of the first `top` points (0: all); with `distinct` only the
 * best ZeRO stage and recomputation of each dp x tp x ulysses x ring; the
 * refused degrees listed with their reason when `refused`. */
void usp_plan_print(FILE *f, const usp_plan *p, int top, int refused, int distinct);
/* One JSON object; with explain >= 0 it holds the explanation of that point too. */
void usp_plan_print_json(FILE *f, const usp_plan *p, int top, int refused, int distinct, int explain);
/* Communication and memory of one point, term by term (closed form and simulated). */
void usp_plan_explain(FILE *f, const usp_plan *p, int index);

/* ------------------------------------------------------- the costs table */

/* The USP paper's table of communication and memory costs (arXiv
 * 2405.07719, Table 2) at given dimensions: one row per parallelism, each of
 * degree `degree` (USP: ulysses x degree/ulysses), bytes per GPU per layer. */
typedef enum {
    USP_COST_ULYSSES, USP_COST_RING, USP_COST_USP, USP_COST_DP,
    USP_COST_ZERO1, USP_COST_ZERO2, USP_COST_ZERO3, USP_COST_TP, USP_COST_TP_SP,
    USP_COST_ROWS
} usp_cost_row;

typedef struct {
    const char *name, *param_ops, *act_ops, *split;
    usp_mix mix;
    double param_bytes, act_bytes;   /* sent per GPU per layer, forward + backward */
    double pg_bytes, os_bytes, act_mem_bytes; /* per GPU per layer */
} usp_cost;

/* Fills rows[USP_COST_ROWS]; `w->global_batch` is the batch of the table
 * (DP and ZeRO rows split it). USP_EINVAL when a row's mix is impossible is
 * not an error: its status is kept in `row_status`. */
usp_status usp_costs(const usp_workload *w, int degree, int ulysses, usp_cost rows[USP_COST_ROWS],
                     usp_status row_status[USP_COST_ROWS], char why[USP_COST_ROWS][200]);
void usp_costs_print(FILE *f, const usp_workload *w, int degree, const usp_cost *rows,
                     const usp_status *row_status, char why[][200]);
void usp_costs_print_json(FILE *f, const usp_workload *w, int degree, const usp_cost *rows,
                          const usp_status *row_status, char why[][200]);

#endif
