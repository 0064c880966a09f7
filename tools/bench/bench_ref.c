/* bench_ref.c: speed of the CPU attention kernels against the matrix
 * product they are built on.
 *
 * The block kernels spend their time in cblas products of score tiles, so
 * the fair anchor is the machine's own large dgemm/sgemm, measured in the
 * same run with all threads. Forward FLOPs are 4*B*L^2*H*D (QK^T and PV),
 * about halved under a causal mask; backward FLOPs are 2.5x the forward's
 * (the usual convention; the kernels recompute P, so they do more work).
 *
 * Each rate is given per wall-clock second and per CPU second of the
 * process. On a machine shared with other work the wall-clock ratio moves
 * with the load from one step to the next; the CPU-time ratio does not.
 *
 *   bench_ref            fp64 and fp32 forward, fp64 backward at L=16384 H=8 D=128
 *   bench_ref --long     also L=131072 H=1 D=128 causal fp64, forward and
 *                        backward, with the peak resident memory
 *   bench_ref --json     one JSON object instead of the table */
#define _POSIX_C_SOURCE 200809L
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#ifdef USP_HAVE_CBLAS
#include <cblas.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#include "usp/attention.h"

enum {
    ANCHOR_N = 4096,    /* square products for the dgemm/sgemm anchors */
    ANCHOR_REPEATS = 2, /* best of, after a warm-up */
    MAIN_SEQ = 16384, MAIN_HEADS = 8, MAIN_HEAD_DIM = 128,
    LONG_SEQ = 131072, LONG_HEADS = 1, LONG_HEAD_DIM = 128,
    MAX_ROWS = 5
};

/* The memory the long problem may use: its fp64 tensors take 1 GiB. */
static const double LONG_RSS_LIMIT_BYTES = 2.0 * 1024 * 1024 * 1024;

/* ---- clocks ------------------------------------------------------------------ */

typedef struct {
    double wall, cpu; /* seconds */
} stopwatch;

static stopwatch clock_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    double cpu = (double)u.ru_utime.tv_sec + 1e-6 * (double)u.ru_utime.tv_usec +
                 (double)u.ru_stime.tv_sec + 1e-6 * (double)u.ru_stime.tv_usec;
    return (stopwatch){(double)t.tv_sec + 1e-9 * (double)t.tv_nsec, cpu};
}

static stopwatch clock_since(stopwatch start) {
    stopwatch end = clock_now();
    return (stopwatch){end.wall - start.wall, end.cpu - start.cpu};
}

static double peak_rss_bytes(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_maxrss * 1024.0; /* Linux reports KiB */
}

/* A line on stderr before each step that takes more than a few seconds. */
static void progress(const char *what, double flops) {
    fprintf(stderr, "bench_ref: running %s (%.2f TFLOP)...\n", what, flops * 1e-12);
    fflush(stderr);
}

/* ---- inputs ---------------------------------------------------------------- */

static uint64_t rng_state = 0x853c49e6748fea9bULL;

static double uniform(void) {
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rng_state >> 11) * 0x1p-52 - 1.0;
}

static void *alloc_or_die(size_t bytes) {
    void *p = malloc(bytes);
    if (!p) {
        fprintf(stderr, "bench_ref: out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

static double *random_f64(long n) {
    double *x = alloc_or_die(sizeof *x * (size_t)n);
    for (long i = 0; i < n; i++) x[i] = uniform();
    return x;
}

static float *random_f32(long n) {
    float *x = alloc_or_die(sizeof *x * (size_t)n);
    for (long i = 0; i < n; i++) x[i] = (float)uniform();
    return x;
}

/* ---- rates ---------------------------------------------------------------------- */

typedef struct {
    double wall, cpu; /* GFLOP per wall second, per CPU second; 0: not measured */
} rate;

static rate rate_of(double flops, stopwatch took) {
    return (rate){flops / took.wall * 1e-9, took.cpu > 0 ? flops / took.cpu * 1e-9 : 0};
}

static rate rate_ratio(rate r, rate anchor) {
    return (rate){anchor.wall > 0 ? r.wall / anchor.wall : 0, anchor.cpu > 0 ? r.cpu / anchor.cpu : 0};
}

static rate rate_best(rate a, rate b) {
    return (rate){a.wall > b.wall ? a.wall : b.wall, a.cpu > b.cpu ? a.cpu : b.cpu};
}

/* ---- anchors ------------------------------------------------------------------ */

typedef struct {
    rate dgemm, sgemm; /* zero when there is no cblas */
} anchors;

#ifdef USP_HAVE_CBLAS
static stopwatch time_dgemm(int n, const double *a, const double *b, double *c) {
    stopwatch t = clock_now();
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, a, n, b, n, 0.0, c, n);
    return clock_since(t);
}

static stopwatch time_sgemm(int n, const float *a, const float *b, float *c) {
    stopwatch t = clock_now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    return clock_since(t);
}

static rate measure_dgemm(void) {
    long n = ANCHOR_N, elems = n * n;
    double *a = random_f64(elems), *b = random_f64(elems), *c = alloc_or_die(sizeof *c * (size_t)elems);
    rate best = {0, 0};
    time_dgemm(1024, a, b, c); /* warm-up: threads and buffers */
    for (int r = 0; r < ANCHOR_REPEATS; r++)
        best = rate_best(best, rate_of(2.0 * n * n * n, time_dgemm((int)n, a, b, c)));
    free(a), free(b), free(c);
    return best;
}

static rate measure_sgemm(void) {
    long n = ANCHOR_N, elems = n * n;
    float *a = random_f32(elems), *b = random_f32(elems), *c = alloc_or_die(sizeof *c * (size_t)elems);
    rate best = {0, 0};
    time_sgemm(1024, a, b, c);
    for (int r = 0; r < ANCHOR_REPEATS; r++)
        best = rate_best(best, rate_of(2.0 * n * n * n, time_sgemm((int)n, a, b, c)));
    free(a), free(b), free(c);
    return best;
}

static anchors measure_anchors(void) {
    progress("dgemm and sgemm anchors", 4.0 * ANCHOR_REPEATS * ANCHOR_N * ANCHOR_N * (double)ANCHOR_N);
    return (anchors){measure_dgemm(), measure_sgemm()};
}
#else
static anchors measure_anchors(void) { return (anchors){{0, 0}, {0, 0}}; }
#endif

/* ---- attention runs -------------------------------------------------------------- */

typedef struct {
    const char *name;   /* "fwd_f64", ... */
    const char *anchor; /* "dgemm" or "sgemm" */
    int seq, heads, head_dim, causal;
    double seconds;     /* wall clock */
    rate gflops, ratio; /* ratio: to the anchor */
} result;

static result result_named(const char *name, const char *anchor, const usp_config *c) {
    result r = {.name = name, .anchor = anchor, .seq = c->seq, .heads = c->heads,
                .head_dim = c->head_dim, .causal = c->causal};
    return r;
}

static void result_set(result *r, double flops, stopwatch took) {
    r->seconds = took.wall;
    r->gflops = rate_of(flops, took);
}

static usp_config problem_config(int seq, int heads, int head_dim, int causal) {
    usp_config c = usp_config_default();
    c.batch = 1, c.seq = seq, c.heads = heads, c.kv_heads = heads, c.head_dim = head_dim;
    c.causal = causal, c.scale = 0;
    return c;
}

/* FLOPs of the forward: 4*D per visible (query, key) pair and head. */
static double forward_flops(const usp_config *c) {
    double pairs = (double)c->seq * c->seq;
    if (c->causal) pairs = (double)c->seq * (c->seq + 1) / 2;
    return 4.0 * c->batch * c->heads * c->head_dim * pairs;
}

static void die_on(usp_status st) {
    if (st == USP_OK) return;
    fprintf(stderr, "bench_ref: %s\n", usp_error());
    exit(1);
}

/* fp64 forward, then backward, of one problem through the dense reference. */
static void run_f64(const usp_config *c, result *fwd, result *bwd) {
    long q_elems = (long)c->batch * c->seq * c->heads * c->head_dim;
    long stat_elems = (long)c->batch * c->heads * c->seq;
    double *q = random_f64(q_elems), *k = random_f64(q_elems), *v = random_f64(q_elems);
    double *o = alloc_or_die(sizeof *o * (size_t)q_elems), *lse = alloc_or_die(sizeof *lse * (size_t)stat_elems);
    double flops = forward_flops(c);
    progress(fwd->name, flops);
    stopwatch t = clock_now();
    die_on(usp_ref_forward(c, q, k, v, o, lse));
    result_set(fwd, flops, clock_since(t));
    double *dout = random_f64(q_elems), *dq = alloc_or_die(sizeof *dq * (size_t)q_elems);
    double *dk = alloc_or_die(sizeof *dk * (size_t)q_elems), *dv = alloc_or_die(sizeof *dv * (size_t)q_elems);
    progress(bwd->name, 2.5 * flops);
    t = clock_now();
    die_on(usp_ref_backward(c, q, k, v, o, lse, dout, dq, dk, dv));
    result_set(bwd, 2.5 * flops, clock_since(t));
    free(dout), free(dq), free(dk), free(dv);
    free(q), free(k), free(v), free(o), free(lse);
}

/* fp32 forward of one problem through the block kernel. */
static void run_fwd_f32(const usp_config *c, result *fwd) {
    long q_elems = (long)c->batch * c->seq * c->heads * c->head_dim;
    long stat_elems = (long)c->batch * c->heads * c->seq;
    usp_attn_shape s = {.batch = c->batch, .hq = c->heads, .hkv = c->kv_heads, .d = c->head_dim,
                        .lq = c->seq, .lkv = c->seq, .scale = usp_scale(c)};
    usp_block blk = {.q_begin = 0, .q_len = c->seq, .kv_begin = 0, .kv_len = c->seq,
                     .causal = c->causal, .diag = 0};
    float *q = random_f32(q_elems), *k = random_f32(q_elems), *v = random_f32(q_elems);
    float *o = alloc_or_die(sizeof *o * (size_t)q_elems), *lse = alloc_or_die(sizeof *lse * (size_t)stat_elems);
    double flops = forward_flops(c);
    progress(fwd->name, flops);
    stopwatch t = clock_now();
    usp_attn_fwd_f32(&s, &blk, q, k, v, o, lse);
    result_set(fwd, flops, clock_since(t));
    free(q), free(k), free(v), free(o), free(lse);
}

/* ---- output -------------------------------------------------------------------------- */

typedef struct {
    int json, long_run, seq, heads;
} options;

typedef struct {
    anchors anchor;
    result rows[MAX_ROWS];
    int nrows;
    int long_run;
    double long_rss; /* bytes */
} report;

static int thread_count(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static void print_result_row(const result *r) {
    printf("%-12s %-6s %7d %3d %4d %8.2f %8.1f %8.1f", r->name, r->causal ? "causal" : "full",
           r->seq, r->heads, r->head_dim, r->seconds, r->gflops.wall, r->gflops.cpu);
    if (r->ratio.wall > 0)
        printf("   %5.1f%% / %5.1f%% of %s\n", 100 * r->ratio.wall, 100 * r->ratio.cpu, r->anchor);
    else
        printf("\n");
}

static void print_table(const report *rep) {
    const anchors *a = &rep->anchor;
    printf("threads %d; anchors, %dx%d products on all threads (GFLOP/s per wall / CPU second):\n"
           "  dgemm %.1f / %.1f, sgemm %.1f / %.1f\n",
           thread_count(), ANCHOR_N, ANCHOR_N, a->dgemm.wall, a->dgemm.cpu, a->sgemm.wall, a->sgemm.cpu);
    printf("%-12s %-6s %7s %3s %4s %8s %8s %8s   %s\n", "kernel", "mask", "L", "H", "D", "seconds",
           "GF/wall", "GF/cpu", "of anchor (wall / cpu)");
    for (int i = 0; i < rep->nrows; i++) print_result_row(&rep->rows[i]);
    if (rep->long_run)
        printf("long run peak resident memory: %.2f GiB (limit %.0f GiB): %s\n",
               rep->long_rss / (1024.0 * 1024 * 1024), LONG_RSS_LIMIT_BYTES / (1024.0 * 1024 * 1024),
               rep->long_rss < LONG_RSS_LIMIT_BYTES ? "ok" : "OVER");
}

static void print_json_result(const result *r) {
    printf(", \"%s\": {\"seq\": %d, \"heads\": %d, \"head_dim\": %d, \"causal\": %s, "
           "\"seconds\": %.3f, \"gflops\": %.2f, \"gflops_per_cpu_second\": %.2f",
           r->name, r->seq, r->heads, r->head_dim, r->causal ? "true" : "false", r->seconds,
           r->gflops.wall, r->gflops.cpu);
    if (r->ratio.wall > 0)
        printf(", \"ratio_to_%s\": %.4f, \"cpu_ratio_to_%s\": %.4f", r->anchor, r->ratio.wall,
               r->anchor, r->ratio.cpu);
    printf("}");
}

static void print_json(const report *rep) {
    const anchors *a = &rep->anchor;
    printf("{\"threads\": %d, \"anchor_n\": %d, \"dgemm_gflops\": %.2f, \"dgemm_gflops_per_cpu_second\": %.2f, "
           "\"sgemm_gflops\": %.2f, \"sgemm_gflops_per_cpu_second\": %.2f",
           thread_count(), ANCHOR_N, a->dgemm.wall, a->dgemm.cpu, a->sgemm.wall, a->sgemm.cpu);
    for (int i = 0; i < rep->nrows; i++) print_json_result(&rep->rows[i]);
    if (rep->long_run)
        printf(", \"long_peak_rss_bytes\": %.0f, \"long_rss_ok\": %s", rep->long_rss,
               rep->long_rss < LONG_RSS_LIMIT_BYTES ? "true" : "false");
    printf("}\n");
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench_ref [--json] [--long] [--seq L] [--heads H]\n"
            "  GFLOP/s of the CPU attention kernels (fp64 usp_ref_forward and backward, fp32\n"
            "  usp_attn_fwd_f32; non-causal, batch 1, D=%d, L=%d, H=%d) beside dgemm/sgemm\n"
            "  measured in the same run on all threads, per wall-clock and per CPU second.\n"
            "  Backward FLOPs are counted as 2.5x the forward's.\n"
            "  --long   first L=%d H=%d D=%d causal fp64 forward and backward: wall time\n"
            "           and peak resident memory (must stay under 2 GiB)\n"
            "  --json   one JSON object on stdout\n"
            "  --seq, --heads  change L and H of the main problem\n",
            MAIN_HEAD_DIM, MAIN_SEQ, MAIN_HEADS, LONG_SEQ, LONG_HEADS, LONG_HEAD_DIM);
}

/* -1 to go on, else the exit status. */
static int parse_options(int argc, char **argv, options *o) {
    static const struct option longopts[] = {
        {"json", no_argument, NULL, 'j'}, {"long", no_argument, NULL, 'l'},
        {"seq", required_argument, NULL, 's'}, {"heads", required_argument, NULL, 'H'},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    *o = (options){0, 0, MAIN_SEQ, MAIN_HEADS};
    int opt;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'j': o->json = 1; break;
        case 'l': o->long_run = 1; break;
        case 's': o->seq = atoi(optarg); break;
        case 'H': o->heads = atoi(optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc || o->seq < 1 || o->heads < 1) {
        usage(stderr);
        return 2;
    }
    return -1;
}

/* The long causal problem runs first, so that the peak resident memory
 * read after it is its own. */
static void run_long(report *rep) {
    usp_config c = problem_config(LONG_SEQ, LONG_HEADS, LONG_HEAD_DIM, 1);
    result *fwd = &rep->rows[rep->nrows], *bwd = &rep->rows[rep->nrows + 1];
    *fwd = result_named("long_fwd_f64", "dgemm", &c);
    *bwd = result_named("long_bwd_f64", "dgemm", &c);
    run_f64(&c, fwd, bwd);
    rep->nrows += 2;
    rep->long_run = 1;
    rep->long_rss = peak_rss_bytes();
}

static void run_main(report *rep, const options *opt) {
    usp_config c = problem_config(opt->seq, opt->heads, MAIN_HEAD_DIM, 0);
    result *rows = &rep->rows[rep->nrows];
    rows[0] = result_named("fwd_f64", "dgemm", &c);
    rows[1] = result_named("bwd_f64", "dgemm", &c);
    rows[2] = result_named("fwd_f32", "sgemm", &c);
    run_f64(&c, &rows[0], &rows[1]);
    run_fwd_f32(&c, &rows[2]);
    rep->nrows += 3;
}

int main(int argc, char **argv) {
    options opt;
    int rc = parse_options(argc, argv, &opt);
    if (rc >= 0) return rc;
    report rep = {0};
    if (opt.long_run) run_long(&rep);
    rep.anchor = measure_anchors();
    run_main(&rep, &opt);
    for (int i = 0; i < rep.nrows; i++) {
        result *r = &rep.rows[i];
        r->ratio = rate_ratio(r->gflops, strcmp(r->anchor, "sgemm") == 0 ? rep.anchor.sgemm : rep.anchor.dgemm);
    }
    if (opt.json)
        print_json(&rep);
    else
        print_table(&rep);
    return 0;
}
