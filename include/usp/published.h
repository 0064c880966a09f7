/* usp/published.h: the simulator against measurements published by others.
 *
 * traces/published/ holds one JSON file per published table (a paper's
 * attention benchmark, a training-throughput table), every row the source
 * reports, with the source, hardware and software. Every row is held out:
 * nothing is fitted to them. usp_pub_predict() re-predicts each row with
 * the simulator (timing only) on the table's platform preset and device
 * profile, and the summary gives per table (and per sequence length inside
 * it) the mean and largest |error| and the Spearman rank correlation
 * between predicted and measured throughput.
 *
 * A table file:
 *
 *   {"table": "usp-paper-l20x8-attention", "title": "...", "kind": "attention" | "training",
 *    "source": {"paper": "...", "url": "...", "table": "...", "read": "..."},
 *    "hardware": "...", "software": "...", "metric": "iters_per_s" | "tflops_per_gpu",
 *    "platform": "l20x8", "profile": "l20",
 *    "problem": {...}, "rows": [{...}, ...]}
 *
 * attention: "problem" holds batch, heads, kv_heads, head_dim, dtype, causal,
 *   backward, layout; each row seq, ulysses, ring, ring_impl, "column" (the
 *   source's column name) and "measured" (iterations per second of the
 *   forward, or of forward + backward when "backward" is true; a row may
 *   set its own "backward", "batch", "heads", "kv_heads", "head_dim").
 *   Predicted: 1 / the simulated time of the schedule.
 * Packed documents (ring-flash-attention's varlen benchmark): "problem"
 *   holds "varlen_cu_seqlens", the lists of local cumulative lengths the
 *   benchmark cycles through call by call, and a row "varlen": "local",
 *   "ring", "zigzag" or "llama3", how its function reads them
 *   (usp_pub_varlen_mask); predicted: 1 / the mean of the simulated times
 *   of one call with each list.
 * A row of one GPU (ulysses and ring 1) may set "kernel_only": true: it
 *   times the attention function alone (flash_attn_func), which zeroes
 *   nothing and merges nothing, so it is predicted as the kernel time of the
 *   schedule's attention steps, without usp's init, merge, DELTA and
 *   accumulation steps around them.
 * Any row may carry "skip": "why": a row the source reports that the
 *   simulator cannot take (a mask it lacks); printed with the reason, left
 *   out of the statistics.
 * training: "problem" holds model (a built-in name or a file beside the
 *   table), gpus, dtype, causal, ring_impl, zero, recompute, tp_sp; each row
 *   seq, global_batch, dp, tp, ulysses, ring and "measured" (TFLOP/s per GPU
 *   as Megatron-LM prints them: causal attention counted in full, see
 *   usp_megatron_flops). Predicted: usp_plan_one's step time, converted
 *   with the same FLOP count, so the error is that of the step time.
 *
 * Errors are (predicted - measured) / measured of the throughput, in
 * percent. Rows the simulator cannot run keep their reason and are left out
 * of the statistics (the count says so). */
#ifndef USP_PUBLISHED_H
#define USP_PUBLISHED_H

#include <stdio.h>
#include "usp/config.h"
#include "usp/plan.h"

typedef enum { USP_PUB_ATTENTION, USP_PUB_TRAINING } usp_pub_kind;

/* The benchmark harness behind an attention table, whose host side bounds a
 * call's time from below (sim/validate/harness.c): "harness" of the table. */
typedef enum { USP_HARNESS_NONE, USP_HARNESS_YUNCHANG_2024 } usp_pub_harness;
usp_status usp_pub_harness_parse(const char *name, usp_pub_harness *h);
const char *usp_pub_harness_name(usp_pub_harness h);
/* Host seconds of one forward call of `c` under harness h (0 for none);
 * ops and calls, when not NULL, get what it counts. */
double usp_pub_harness_host_s(usp_pub_harness h, const usp_config *c, int qkv_packed, int *ops, int *calls);
/* Whether the harness synchronizes after every call (yunchang-2024: the
 * unpacked script), and then the host seconds before a call's first
 * attention kernel is issued (0 when not synchronized). */
int usp_pub_harness_synced(usp_pub_harness h, int qkv_packed);
double usp_pub_harness_prefix_s(usp_pub_harness h, const usp_config *c, int qkv_packed);

/* How a varlen row's function reads the benchmark's local cu_seqlens
 * (sim/validate/published_varlen.c has the four readings). */
typedef enum { USP_VARLEN_NONE, USP_VARLEN_LOCAL, USP_VARLEN_RING, USP_VARLEN_ZIGZAG, USP_VARLEN_LLAMA3 } usp_pub_varlen;
const char *usp_pub_varlen_name(usp_pub_varlen v);
usp_status usp_pub_varlen_parse(const char *s, usp_pub_varlen *out);
/* The global mask of one call: cu [ndocs+1] local cumulative lengths (every
 * rank's), `ring` ranks; L*ring tokens (L for local). One list, causal
 * inside each document. Free with usp_mask_free. */
usp_status usp_pub_varlen_mask(usp_pub_varlen api, const long *cu, int ndocs, int ring, usp_mask **out);

typedef struct {
    char label[96];        /* "32K u4 r2 lb-ring (zigzag)" */
    int seq;               /* tokens: the group a row belongs to */
    usp_config cfg;        /* attention */
    int backward;          /* attention: forward + backward timed */
    int qkv_packed;        /* attention: Q, K, V packed in one tensor ("qkv_packed"; harness only) */
    int kernel_only;       /* attention: one GPU's attention call alone ("kernel_only") */
    double sim_s;          /* attention: the simulated time alone (GPU-bound) */
    double host_s;         /* attention: the harness's host time of one call (0: none) */
    double delay_s;        /* attention: a synchronized harness's prefix beyond the simulated
                            * start of the first attention (0: none) */
    int global_batch;      /* training */
    int micro_batch;       /* training: sequences per DP rank per micro-batch ("micro_batch" of the
                            * row, else of the problem; 0: global_batch / dp, no accumulation) */
    usp_mix mix;           /* training */
    double measured;       /* throughput in the table's metric */
    double predicted;      /* same unit; NAN when the row could not be predicted */
    double predicted_s;    /* the simulated time: one call (attention) or one step (training) */
    double error_pct;      /* 100 (predicted - measured) / measured; NAN when not predicted */
    int oom;               /* training: the planner puts the mix over the GPU's memory */
    usp_pub_varlen varlen; /* attention: packed documents, read from the table's lists */
    int skip;              /* the table marks the row as one the simulator cannot take
                            * ("skip": reason): reported with its reason, never predicted */
    usp_status status;     /* USP_OK, or why the row was not predicted (why) */
    char why[200];
} usp_pub_row;

typedef struct {
    char file[512];        /* the table's path */
    char name[96], title[200], metric[32];
    char source[800];      /* paper, table and URL on one line */
    char hardware[400];
    char platform[128], profile[128];
    usp_pub_kind kind;
    usp_pub_harness harness; /* attention: "harness" (default none) */
    usp_workload work;     /* training: the model and the fixed parts of the workload */
    usp_mix base_mix;      /* training: zero, recompute, tp_sp */
    int gpus;
    usp_pub_row *rows;
    int nrows;
    long *varlen_cu;       /* attention: the varlen lists, one after the other */
    int *varlen_first;     /* [nvarlen + 1]: list k is varlen_cu[first[k] .. first[k+1]) */
    int nvarlen;
} usp_pub_table;

/* Reads one table; missing or malformed fields are refused with the file and line. */
usp_status usp_pub_table_read(const char *path, usp_pub_table *t);
void usp_pub_table_free(usp_pub_table *t);

/* Every *.json of `dir`, in name order (*tables freed with usp_pub_tables_free). */
usp_status usp_pub_tables_read(const char *dir, usp_pub_table **tables, int *count);
void usp_pub_tables_free(usp_pub_table *tables, int count);

/* Re-predicts every row. A row the simulator refuses keeps its reason
 * (status, why) and the call goes on; only an internal failure returns an
 * error. `platform` / `profile`, when not NULL, replace the table's.
 * progress, when not NULL, gets one "\r..." line per row. Needs the simulator. */
usp_status usp_pub_predict(usp_pub_table *t, const char *platform, const char *profile, FILE *progress);

/* Statistics over the rows of t with a prediction (only those of sequence
 * length `seq` when seq > 0). */
typedef struct {
    int rows, predicted;   /* rows considered, rows with a prediction */
    double mean_abs_pct, max_abs_pct;
    double spearman;       /* of predicted vs measured throughput; NAN with fewer than 2 rows or no spread */
} usp_pub_stats;
void usp_pub_stats_make(const usp_pub_table *t, int seq, usp_pub_stats *s);

/* The noise floor of a table (sim/validate/published_floor.c): rows that ran
 * one program (the ulysses-8 rows of the USP tables: ring degree 1, so the
 * ring variant of their column runs nothing different) get one prediction,
 * so their measured spread bounds the error of any deterministic prediction
 * from below. Over the rows of t (of sequence length `seq` when seq > 0). */
typedef struct {
    int groups, rows;      /* groups of 2 or more rows that ran one program, and their rows */
    int counted;           /* the rows considered (every row not skipped) */
    double mean_abs_pct;   /* the least mean |error| over `counted` rows any prediction can reach */
    double max_abs_pct;    /* the least largest |error|: (max - min) / (max + min) of the widest group */
    double spread;         /* the widest group's largest over smallest measurement (1: no group) */
    int widest;            /* a row of the widest group, -1 when there is no group */
} usp_pub_floor;
void usp_pub_floor_make(const usp_pub_table *t, int seq, usp_pub_floor *f);
/* Whether rows a and b of t ran one program (neither skipped). */
int usp_pub_same_program(const usp_pub_table *t, const usp_pub_row *a, const usp_pub_row *b);

/* Spearman rank correlation of x and y (ties take their average rank): the
 * Pearson correlation of the ranks. NAN when n < 2 or either has no spread. */
double usp_spearman(const double *x, const double *y, int n);

/* Training FLOPs of one step as Megatron-LM counts them (training.py
 * num_floating_point_operations, 2024): 12 x batch x seq x layers x hidden^2 x
 * ((1 + kv_heads/heads + seq/hidden) x heads x head_dim / hidden
 *  + ffn/hidden x (3/2 when gated) + vocab / (2 x layers x hidden)),
 * causal attention counted in full; the vocabulary unpadded. */
double usp_megatron_flops(const usp_model *m, int seq, int batch);

/* Per table: the rows (measured, predicted, error), then the statistics per
 * sequence length and for the table. */
void usp_pub_print(FILE *f, const usp_pub_table *tables, int count);
/* One JSON object: {"tables": [{..., "rows": [...], "by_seq": [...], "all": {...}, "floor": {...}}]}. */
void usp_pub_print_json(FILE *f, const usp_pub_table *tables, int count);

#endif
