/* usp/nccl.h: nccl-tests' tables, predicted by the network layer
 * (sim/network/: transports, collectives, protocols over SimGrid).
 *
 * usp_nccl_simulate() runs one collective over `ranks` GPUs of a platform at
 * each size, as all_to_all_perf / sendrecv_perf / all_gather_perf /
 * reduce_scatter_perf / all_reduce_perf would, and fills the rows nccl-tests
 * prints: size (bytes), count (elements), type, redop, time (us), algbw and
 * busbw (GB/s, nccl-tests' formulas: algbw = size / time; busbw = algbw x
 * (n-1)/n for alltoall, allgather, reducescatter, x 2(n-1)/n for allreduce,
 * x 1 for sendrecv). Every figure is simulated.
 *
 * usp_nccl_compare() reads a published nccl-tests result
 * (traces/published/nccl/NAME.json: its source, hardware, software, platform
 * and every row), re-predicts each row on the platform it names, and gives
 * the error of the bus bandwidth per row. */
#ifndef USP_NCCL_H
#define USP_NCCL_H

#include <stdio.h>
#include "usp/error.h"

typedef struct {
    const char *platform;   /* preset spec or SimGrid XML; NULL: h200x8 */
    const char *op;         /* alltoall, sendrecv, allgather, reducescatter, allreduce */
    int ranks;              /* 0: every GPU of the platform (its preset size) */
    int per_node;           /* 0: ranks on the GPUs in order; G: on the first G GPUs of each node
                               (mpirun -N G), which needs a platform whose hosts name their node */
    double min_bytes, max_bytes, factor; /* nccl-tests' -b -e -f */
    const double *sizes;    /* when not NULL: these sizes instead of -b/-e/-f */
    int nsizes;
} usp_nccl_options;

typedef struct {
    double size;            /* bytes, nccl-tests' size column */
    double count;           /* elements (float) */
    double time_us, algbw, busbw;
    char algo[8];           /* the algorithm NCCL would pick: direct, ring, tree, nvls */
    char proto[8];          /* the protocol NCCL would pick */
    char xport[12];         /* the slowest transport of the call */
} usp_nccl_row;

typedef struct {
    char op[16], perf[32], redop[8], platform[160];
    int ranks;
    usp_nccl_row *rows;
    int nrows;
} usp_nccl_table;

/* The op names, NULL-terminated. */
const char *const *usp_nccl_ops(void);

usp_status usp_nccl_simulate(const usp_nccl_options *o, usp_nccl_table *t);
void usp_nccl_table_free(usp_nccl_table *t);
/* nccl-tests' table, its header saying the figures are simulated. */
void usp_nccl_print(FILE *f, const usp_nccl_table *t);
void usp_nccl_json(FILE *f, const usp_nccl_table *t);

/* ------------------------------------------------- published comparisons */

/* One published figure and its prediction. A "sweep" table gives one row per
 * size; a "peak" or "average" table one figure for a whole sweep (nccl-tests'
 * "Avg bus bandwidth", or the best busbw an author quotes), predicted as the
 * peak or mean of the simulated sweep over the same sizes. */
typedef struct {
    char op[16], kind[8];   /* kind: "sweep", "peak", "average" */
    int ranks;
    int per_node;           /* the table's "per_node": ranks on the first G GPUs of each node; 0: in order */
    double size;            /* bytes (sweep rows), 0 for a peak or average */
    double published_busbw, predicted_busbw, error; /* error: predicted / published busbw - 1
                                                       (published / predicted time - 1 where
                                                       the row gives its time) */
    double published_time_us, predicted_time_us;    /* 0 when not published */
    int counted;            /* 1: counts toward the file's bar */
    char note[96];          /* why not counted */
    char cls[32];           /* topology class: the table's, else the file's */
    char platform[64];      /* the table's own platform, "" when it is the file's */
} usp_nccl_compare_row;

typedef struct {
    char source[256], hardware[256], software[384], cls[32], platform[256], file[256];
    usp_nccl_compare_row *rows;
    int nrows;
    int counted;
    double mean_abs_error, max_abs_error; /* over counted rows */
    int held_out;       /* "held_out": true: no figure of the network model was fitted to it */
} usp_nccl_comparison;

usp_status usp_nccl_compare(const char *file, usp_nccl_comparison *c);
/* Reads and checks the file without simulating (its reasons as usp_nccl_compare's). */
usp_status usp_nccl_compare_check(const char *file);
/* The bar of the published comparison: the |error| of every counted row, all
 * sizes, of each topology class (pcie-shm, pcie-p2p, nvswitch, multi-node). */
#define USP_NCCL_BAR 0.25
/* Per class, the held-out files apart from those the model was fitted to:
 * files, counted rows, mean and max |error|, rows within the bar. */
void usp_nccl_compare_summary(FILE *f, const usp_nccl_comparison *c, int n, int json);
void usp_nccl_comparison_free(usp_nccl_comparison *c);
void usp_nccl_compare_print(FILE *f, const usp_nccl_comparison *c);
void usp_nccl_compare_json(FILE *f, const usp_nccl_comparison *c);

#endif
