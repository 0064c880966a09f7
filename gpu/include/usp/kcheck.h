/* usp/kcheck.h: the conformance battery of attention kernels.
 *
 * Every case runs a usp_kernel (built-in or plugin) on the GPU and the fp64
 * block kernels of usp/attention.h on the CPU, on the SAME inputs: generated
 * in fp64 (usp/inputs.h), rounded to the case's dtype, then handed to both.
 * Errors are ||x - ref||_2 / ||ref||_2 (usp/compare.h) over the rows the
 * block covers, with the tolerances of usp_tolerance(). Beyond the errors a
 * case fails on any NaN, on a row that sees no key without LSE = -inf and
 * O = 0, and on any write outside the block's rows (outputs are poisoned
 * first; dQ/dK/dV start non-zero to check that the backward adds). */
#ifndef USP_KCHECK_H
#define USP_KCHECK_H

#include "usp/kernel.h"

typedef enum {
    USP_KC_BLOCK,   /* one block: forward (+ backward) */
    USP_KC_RING2,   /* keys in two blocks: forward twice + merge, backward twice (ring steps) */
    USP_KC_PACK     /* pack/unpack of every a2a pattern against the host version */
} usp_kcheck_kind;

/* A per-row key-interval mask (usp/rowmask.h, ABI 2) built from positions:
 * query row i of the block sits at q_begin + i, key j at kv_begin + j, in
 * documents whose lengths `docs` repeat over the sequence (shifted by 7
 * positions a batch element). A row sees the keys of its document (up to
 * itself when causal), within the window [pos - left, pos + right] (-1:
 * unbounded); rows with i % empty_every == 3 see nothing, and so do the rows
 * of the second of every three spans of empty_span rows ((i / empty_span) % 3
 * == 1: whole query tiles without keys when empty_span is a multiple of the
 * tile). SCATTER: seeded
 * intervals, some empty, some past either end of the keys. */
typedef enum { USP_KC_MASK_NONE, USP_KC_MASK_DOCS, USP_KC_MASK_SCATTER } usp_kcheck_mask_kind;

typedef struct {
    usp_kcheck_mask_kind kind;
    const char *docs;      /* "l1,l2,..."; NULL: one document */
    int causal;            /* inside documents */
    int left, right;       /* window; -1: unbounded */
    int empty_every;       /* 0: no empty rows */
    int empty_span;        /* 0: no empty spans */
} usp_kcheck_mask;

typedef struct {
    const char *name;
    usp_kcheck_kind kind;
    usp_dtype dtype;
    int batch, lq, lkv, heads, kv_heads, head_dim;
    usp_block blk;   /* q_len / kv_len of -1: to the end of the tensor */
    int backward;    /* also dQ, dK, dV */
    int quick;       /* part of the quick subset (tests, --quick) */
    const char *what;/* what the case is for */
    usp_kcheck_mask mask;   /* kind NONE: the block's causal/diag */
} usp_kcheck_case;

/* Errors: O, LSE, dQ, dK, dV. */
enum { USP_KC_O, USP_KC_LSE, USP_KC_DQ, USP_KC_DK, USP_KC_DV, USP_KC_NERR };

typedef struct {
    double err[USP_KC_NERR];   /* norm-wise relative errors; -1 where not measured */
    double elem_err[USP_KC_NERR]; /* max |x - ref| / max |ref|; -1 where not measured */
    double tol_fwd, tol_bwd;
    int pass, skipped;
    double gpu_ms;             /* kernel time of the case (events), forward + backward */
    char note[256];            /* why it failed or was skipped */
} usp_kcheck_result;

int usp_kcheck_count(void);
const usp_kcheck_case *usp_kcheck_case_at(int i);

/* USP_OK when a CUDA device is usable; else USP_EINTERNAL with the reason. */
usp_status usp_kcheck_gpu_ready(void);

/* Runs one case. A failed check is a result (pass = 0), not an error; an
 * error (USP_EINTERNAL) is a CUDA or allocation failure, with the reason.
 * A masked case on a kernel without masks (ABI 1) is skipped with the reason. */
usp_status usp_kcheck_run(const usp_kernel *k, const usp_kcheck_case *c, uint64_t seed, usp_kcheck_result *r);

/* Host helpers shared with the benchmark: fp64 values (already rounded to dt)
 * to/from the device representation of dt (fp32, fp16, bf16). */
void usp_kcheck_encode(const double *x, long n, usp_dtype dt, void *out);
void usp_kcheck_decode(const void *in, long n, usp_dtype dt, double *x);

/* The per-row intervals of mask m for block blk of batch elements [0, B):
 * lo, hi hold B * blk->q_len values each, local key coordinates, not
 * clipped (kernels clip to [0, kv_len)). USP_EINVAL on a bad docs list. */
usp_status usp_kcheck_mask_build(const usp_kcheck_mask *m, const usp_block *blk, int B, uint64_t seed,
                                 int32_t *lo, int32_t *hi);

#endif
