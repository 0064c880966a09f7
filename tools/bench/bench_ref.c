/* bench_ref.c: speed of the CPU attention kernels against the matrix
 * product they are built on.
 *
 * The block kernels spend their time in cblas products of score tiles, so
 * the fair anchor is the machine's own large dgemm/sgemm, measured in the
 * same run with all threads. Forward FLOPs are 4*B*L^2*H*D (QK^T and PV),
 * halved under a causal mask; backward FLOPs are 2.5x the forward's (the
 * usual convention; the kernels recompute P, so they do more work).
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
    ANCHOR_N = 4096,       /* square products for the dgemm/sgemm anchors */
    ANCHOR_REPEATS = 2,    /* best of, after a warm-up */
    MAIN_SEQ = 16384, MAIN_HEADS = 8, MAIN_HEAD_DIM = 128,
    LONG_SEQ = 131072, LONG_HEADS = 1, LONG_HEAD_DIM = 128
};

/* The memory the long problem may use: its tensors take 1 GiB in fp64. */
static const double LONG_RSS_LIMIT_BYTES = 2.0 * 1024 * 1024 * 1024;

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
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

/* ---- anchors ------------------------------------------------------------------ */

typedef struct {
    double dgemm, sgemm; /* GFLOP/s, 0 when there is no cblas */
} anchors;

#ifdef USP_HAVE_CBLAS
static double time_dgemm(int n, const double *a, const double *b, double *c) {
    double t = now_seconds();
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, a, n, b, n, 0.0, c, n);
    return now_seconds() - t;
}

static double time_sgemm(int n, const float *a, const float *b, float *c) {
    double t = now_seconds();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    return now_seconds() - t;
}

static anchors measure_anchors(void) {
    long n = ANCHOR_N, elems = n * n;
    double flops = 2.0 * n * n * n, best_d = 1e30, best_s = 1e30;
    double *a = random_f64(elems), *b = random_f64(elems), *c = alloc_or_die(sizeof *c * (size_t)elems);
    time_dgemm(1024, a, b, c); /* warm-up: threads and buffers */
    for (int r = 0; r < ANCHOR_REPEATS; r++) {
        double t = time_dgemm((int)n, a, b, c);
        best_d = t < best_d ? t : best_d;
    }
    free(a), free(b), free(c);
    float *fa = random_f32(elems), *fb = random_f32(elems), *fc = alloc_or_die(sizeof *fc * (size_t)elems);
    time_sgemm(1024, fa, fb, fc);
    for (int r = 0; r < ANCHOR_REPEATS; r++) {
        double t = time_sgemm((int)n, fa, fb, fc);
        best_s = t < best_s ? t : best_s;
    }
    free(fa), free(fb), free(fc);
    return (anchors){flops / best_d * 1e-9, flops / best_s * 1e-9};
}
#else
static anchors measure_anchors(void) { return (anchors){0, 0}; }
#endif

/* ---- attention runs -------------------------------------------------------------- */

typedef struct {
    const char *name;   /* "fwd_f64", ... */
    int seq, heads, head_dim, causal;
    double seconds, gflops, anchor_ratio; /* anchor_ratio 0 when no anchor */
} result;

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

static void finish(result *r, double seconds, double flops, double anchor_gflops) {
    r->seconds = seconds;
    r->gflops = flops / seconds * 1e-9;
    r->anchor_ratio = anchor_gflops > 0 ? r->gflops / anchor_gflops : 0;
}

static void die_on(usp_status st) {
    if (st == USP_OK) return;
    fprintf(stderr, "bench_ref: %s\n", usp_error());
    exit(1);
}

/* fp64 forward (and backward when `backward`) of one problem through the
 * dense reference. */
static void run_f64(const usp_config *c, int backward, double dgemm, result *fwd, result *bwd) {
    long q_elems = (long)c->batch * c->seq * c->heads * c->head_dim;
    long stat_elems = (long)c->batch * c->heads * c->seq;
    double *q = random_f64(q_elems), *k = random_f64(q_elems), *v = random_f64(q_elems);
    double *o = alloc_or_die(sizeof *o * (size_t)q_elems), *lse = alloc_or_die(sizeof *lse * (size_t)stat_elems);
    double flops = forward_flops(c);
    progress(fwd->name, flops);
    double t = now_seconds();
    die_on(usp_ref_forward(c, q, k, v, o, lse));
    finish(fwd, now_seconds() - t, flops, dgemm);
    if (backward) {
        double *dout = random_f64(q_elems), *dq = alloc_or_die(sizeof *dq * (size_t)q_elems);
        double *dk = alloc_or_die(sizeof *dk * (size_t)q_elems), *dv = alloc_or_die(sizeof *dv * (size_t)q_elems);
        progress(bwd->name, 2.5 * flops);
        t = now_seconds();
        die_on(usp_ref_backward(c, q, k, v, o, lse, dout, dq, dk, dv));
        finish(bwd, now_seconds() - t, 2.5 * flops, dgemm);
        free(dout), free(dq), free(dk), free(dv);
    }
    free(q), free(k), free(v), free(o), free(lse);
}

/* fp32 forward of one problem through the block kernel. */
static void run_fwd_f32(const usp_config *c, double sgemm, result *fwd) {
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
    double t = now_seconds();
    usp_attn_fwd_f32(&s, &blk, q, k, v, o, lse);
    finish(fwd, now_seconds() - t, flops, sgemm);
    free(q), free(k), free(v), free(o), free(lse);
}

/* ---- output -------------------------------------------------------------------------- */

typedef struct {
    int json, long_run, seq, heads;
} options;

static int thread_count(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static void print_result_row(const result *r, const char *anchor) {
    printf("%-12s %-6s %7d %5d %4d %9.2f %9.1f", r->name, r->causal ? "causal" : "full", r->seq,
           r->heads, r->head_dim, r->seconds, r->gflops);
    if (r->anchor_ratio > 0)
        printf("   %5.1f%% of %s\n", 100 * r->anchor_ratio, anchor);
    else
        printf("\n");
}

static void print_table(const anchors *a, const result *rows, const char **anchor_names, int n,
                        int long_run, double long_rss) {
    printf("threads %d; anchors (%dx%d products, all threads): dgemm %.1f GFLOP/s, sgemm %.1f GFLOP/s\n",
           thread_count(), ANCHOR_N, ANCHOR_N, a->dgemm, a->sgemm);
    printf("%-12s %-6s %7s %5s %4s %9s %9s   %s\n", "kernel", "mask", "L", "H", "D", "seconds",
           "GFLOP/s", "vs anchor");
    for (int i = 0; i < n; i++) print_result_row(&rows[i], anchor_names[i]);
    if (long_run)
        printf("long run peak resident memory: %.2f GiB (limit %.0f GiB): %s\n",
               long_rss / (1024.0 * 1024 * 1024), LONG_RSS_LIMIT_BYTES / (1024.0 * 1024 * 1024),
               long_rss < LONG_RSS_LIMIT_BYTES ? "ok" : "OVER");
}

static void print_json_result(const result *r, const char *anchor) {
    printf("\"%s\": {\"seq\": %d, \"heads\": %d, \"head_dim\": %d, \"causal\": %s, "
           "\"seconds\": %.3f, \"gflops\": %.2f",
           r->name, r->seq, r->heads, r->head_dim, r->causal ? "true" : "false", r->seconds, r->gflops);
    if (r->anchor_ratio > 0) printf(", \"ratio_to_%s\": %.4f", anchor, r->anchor_ratio);
    printf("}");
}

static void print_json(const anchors *a, const result *rows, const char **anchor_names, int n,
                       int long_run, double long_rss) {
    printf("{\"threads\": %d, \"anchor_n\": %d, \"dgemm_gflops\": %.2f, \"sgemm_gflops\": %.2f",
           thread_count(), ANCHOR_N, a->dgemm, a->sgemm);
    for (int i = 0; i < n; i++) {
        printf(", ");
        print_json_result(&rows[i], anchor_names[i]);
    }
    if (long_run)
        printf(", \"long_peak_rss_bytes\": %.0f, \"long_rss_ok\": %s", long_rss,
               long_rss < LONG_RSS_LIMIT_BYTES ? "true" : "false");
    printf("}\n");
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench_ref [--json] [--long] [--seq L] [--heads H]\n"
            "  Forward GFLOP/s of the CPU attention kernels (fp64 usp_ref_forward, fp32\n"
            "  usp_attn_fwd_f32; non-causal, batch 1, D=%d, L=%d, H=%d) beside dgemm/sgemm\n"
            "  GFLOP/s measured in the same run, and fp64 backward GFLOP/s (2.5x forward FLOPs).\n"
            "  --long   also L=%d H=%d D=%d causal fp64 forward and backward: wall time and\n"
            "           peak resident memory (must stay under 2 GiB)\n"
            "  --json   one JSON object on stdout\n"
            "  --seq, --heads  change L and H of the main problem\n",
            MAIN_HEAD_DIM, MAIN_SEQ, MAIN_HEADS, LONG_SEQ, LONG_HEADS, LONG_HEAD_DIM);
}

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

enum { MAX_ROWS = 5 };

int main(int argc, char **argv) {
    options opt;
    int rc = parse_options(argc, argv, &opt);
    if (rc >= 0) return rc;
    result rows[MAX_ROWS];
    const char *anchor_names[MAX_ROWS];
    int n = 0;
    double long_rss = 0;
    /* The long problem first, so that the peak resident memory is its own. */
    if (opt.long_run) {
        usp_config c = problem_config(LONG_SEQ, LONG_HEADS, LONG_HEAD_DIM, 1);
        rows[n] = (result){"long_fwd_f64", c.seq, c.heads, c.head_dim, 1, 0, 0, 0};
        rows[n + 1] = (result){"long_bwd_f64", c.seq, c.heads, c.head_dim, 1, 0, 0, 0};
        run_f64(&c, 1, 0, &rows[n], &rows[n + 1]);
        anchor_names[n] = anchor_names[n + 1] = "dgemm";
        n += 2;
        long_rss = peak_rss_bytes();
    }
    progress("dgemm and sgemm anchors", 4.0 * ANCHOR_REPEATS * ANCHOR_N * ANCHOR_N * (double)ANCHOR_N);
    anchors a = measure_anchors();
    for (int i = 0; i < n; i++) finish(&rows[i], rows[i].seconds,
                                       rows[i].gflops * rows[i].seconds * 1e9, a.dgemm);
    usp_config c = problem_config(opt.seq, opt.heads, MAIN_HEAD_DIM, 0);
    rows[n] = (result){"fwd_f64", c.seq, c.heads, c.head_dim, 0, 0, 0, 0};
    rows[n + 1] = (result){"bwd_f64", c.seq, c.heads, c.head_dim, 0, 0, 0, 0};
    rows[n + 2] = (result){"fwd_f32", c.seq, c.heads, c.head_dim, 0, 0, 0, 0};
    run_f64(&c, 1, a.dgemm, &rows[n], &rows[n + 1]);
    run_fwd_f32(&c, a.sgemm, &rows[n + 2]);
    anchor_names[n] = anchor_names[n + 1] = "dgemm";
    anchor_names[n + 2] = "sgemm";
    n += 3;
    if (opt.json)
        print_json(&a, rows, anchor_names, n, opt.long_run, long_rss);
    else
        print_table(&a, rows, anchor_names, n, opt.long_run, long_rss);
    return 0;
}
