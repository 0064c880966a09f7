/* ref/attention.c: the CPU block kernels of usp/attention.h.
 *
 * Flash-attention on the CPU: for one (batch, query head, query tile) the
 * scores S = scale * Q K^T of one key tile at a time go through an online
 * softmax into the output rows, so memory stays O(rows x tile) and never
 * O(lq x lkv). Every product is a matrix product on (rows x D) slices read in
 * place: a head's rows sit hq*D (or hkv*D) elements apart, which is the
 * leading dimension handed to cblas, so nothing is copied.
 *
 * The numeric code is written once, in attention_impl.inc, and included
 * twice: for double (the _f64 kernels) and for float (_f32).
 *
 * Threads: OpenMP over independent tasks, each owning its output rows
 * (forward and dQ: one query tile of one head; dK/dV: one key tile of one
 * K/V head, visiting every query head of its group in a fixed order). A
 * task computes the same thing whichever thread runs it, with BLAS single-
 * threaded inside, so results are bit-identical for any thread count. */
#include "usp/attention.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef USP_HAVE_CBLAS
#include <cblas.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(USP_HAVE_CBLAS) && defined(OPENBLAS_VERSION) && defined(_OPENMP)
#define USP_PIN_BLAS_THREADS 1
#include <pthread.h>
#endif

/* Tiles. Forward: 128 query rows x 256 keys keeps one thread's query
 * slice, K/V slices and score tile (128, 256, 256, 256 KiB in fp64 at
 * D = 128) near L2. Measured on one core at L = 8192, D = 128: 128x256 and
 * 256x256 are fastest; 128x512, 256x128 and 128x128 lose 5-10% (more
 * copying into OpenBLAS's packed panels per FLOP, or more L2 misses).
 * Backward: 128x128, within noise of 64..256 rows and 128..256 keys. */
enum {
    FWD_TILE_ROWS = 128,
    FWD_TILE_COLS = 256,
    BWD_TILE_ROWS = 128,
    BWD_TILE_COLS = 128,
    /* Tile used when the work buffers cannot be allocated: small enough for
     * the stack of any thread; slower, same results up to rounding. */
    FALLBACK_TILE_ROWS = 8,
    FALLBACK_TILE_COLS = 16,
    /* Independent partial sums in reductions, so that the compiler can keep
     * them in vector registers without reassociating (no -ffast-math). */
    SUM_LANES = 8
};

/* Below this many multiply-adds a call runs on the calling thread: starting
 * a thread team costs more than it saves (a few microseconds). */
static const double PARALLEL_MIN_MULADDS = 2e6;

#ifdef _OPENMP
#define USP_OMP(directive) _Pragma(#directive)
#else
#define USP_OMP(directive)
#endif

/* The element-wise loops of the softmax are compiled twice on x86-64: for
 * the baseline ISA and for x86-64-v3 (AVX2 + FMA), picked when the program
 * loads. exp() dominates them; the wider vectors make it about 3x faster. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) && \
    defined(__linux__)
#define USP_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define USP_VECTOR_CLONES
#endif

/* ---- layout ------------------------------------------------------------ */

/* Offset of element 0 of row i, head h, batch b in a (B, rows, heads, d) tensor. */
static inline long token_offset(long b, long rows, long i, int heads, int h, int d) {
    return ((b * rows + i) * heads + h) * (long)d;
}

/* Offset of row i, head h, batch b in a (B, heads, rows) statistic (LSE, delta). */
static inline long stat_offset(long b, int heads, int h, long rows, long i) {
    return (b * heads + h) * rows + i;
}

static inline long min_long(long a, long b) { return a < b ? a : b; }
static inline long ceil_div(long a, long b) { return (a + b - 1) / b; }

/* ---- the mask ---------------------------------------------------------- *
 * One key interval a query row (usp/rowmask.h): the block's causal/diag mask,
 * or the per-row arrays of a usp_row_mask. A tile of rows visits the key
 * tiles of the union of its rows' intervals, and masks element by element
 * only where some row does not see the whole tile. */

/* ---- BLAS threads ------------------------------------------------------ *
 * Inside our parallel regions every BLAS call must run on its calling
 * thread. OpenBLAS's thread count is process-wide and other threads (the
 * ranks of an executor) may run kernels at the same time, so the first
 * kernel to enter pins it to 1 and the last one to leave restores it. */
#ifdef USP_PIN_BLAS_THREADS
static pthread_mutex_t blas_pin_lock = PTHREAD_MUTEX_INITIALIZER;
static int blas_pin_users;
static int blas_threads_before_pin;

static void blas_pin_single_thread(void) {
    pthread_mutex_lock(&blas_pin_lock);
    if (blas_pin_users++ == 0) {
        blas_threads_before_pin = openblas_get_num_threads();
        openblas_set_num_threads(1);
    }
    pthread_mutex_unlock(&blas_pin_lock);
}

static void blas_unpin(void) {
    pthread_mutex_lock(&blas_pin_lock);
    if (--blas_pin_users == 0) openblas_set_num_threads(blas_threads_before_pin);
    pthread_mutex_unlock(&blas_pin_lock);
}
#else
static void blas_pin_single_thread(void) {}
static void blas_unpin(void) {}
#endif

/* ---- exp for the softmax ----------------------------------------------- *
 * Branch-free, so that loops calling it vectorize. x is split as
 * n*ln2 + r with |r| <= ln2/2 (ln2 in two parts so that n*ln2_hi is exact),
 * exp(r) is its Taylor polynomial and 2^n is built in the exponent bits.
 * Softmax arguments are <= 0 (scores minus their maximum or their LSE), but
 * any x <= 709 works. Below -708 the result would be subnormal: it returns 0
 * instead, which moves a softmax sum (>= 1) by less than 1e-307 relative.
 * -inf gives exactly 0, NaN gives NaN. */

/* Degree 13: the Taylor remainder r^14/14! is below 4e-18 relative on
 * |r| <= ln2/2; with rounding the result is within 1 ulp (0.82 ulp measured
 * over 2e7 points against expl). */
static inline double exp_softmax_f64(double x) {
    const double log2e = 0x1.71547652b82fep0, round_shift = 0x1.8p52;
    const double ln2_hi = 0x1.62e42fee00000p-1, ln2_lo = 0x1.a39ef35793c76p-33;
    double xc = x < -708.0 ? -708.0 : x;
    xc = xc > 709.0 ? 709.0 : xc;
    double t = xc * log2e + round_shift; /* round_shift + nearest integer n */
    double n = t - round_shift;
    double r = (xc - n * ln2_hi) - n * ln2_lo;
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    int64_t t_bits, shift_bits;
    memcpy(&t_bits, &t, sizeof t);
    memcpy(&shift_bits, &round_shift, sizeof round_shift);
    int64_t pow2_bits = (int64_t)((uint64_t)(t_bits - shift_bits + 1023) << 52);
    double pow2;
    memcpy(&pow2, &pow2_bits, sizeof pow2);
    return x < -708.0 ? 0.0 : p * pow2;
}

/* Degree 7: remainder r^8/8! below 6e-9 relative (0.1 ulp of float). Below
 * -87 the result would be subnormal: 0 instead. */
static inline float exp_softmax_f32(float x) {
    const float log2e = 0x1.715476p0f, round_shift = 0x1.8p23f;
    const float ln2_hi = 0x1.62e400p-1f, ln2_lo = 0x1.7f7d1cp-20f;
    float xc = x < -87.0f ? -87.0f : x;
    xc = xc > 88.0f ? 88.0f : xc;
    float t = xc * log2e + round_shift;
    float n = t - round_shift;
    float r = (xc - n * ln2_hi) - n * ln2_lo;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t t_bits, shift_bits;
    memcpy(&t_bits, &t, sizeof t);
    memcpy(&shift_bits, &round_shift, sizeof round_shift);
    int32_t pow2_bits = (int32_t)((uint32_t)(t_bits - shift_bits + 127) << 23);
    float pow2;
    memcpy(&pow2, &pow2_bits, sizeof pow2);
    return x < -87.0f ? 0.0f : p * pow2;
}

/* ---- the kernels, once per element type -------------------------------- */

#define REAL double
#define FN(name) name##_f64
#define EXP_SOFTMAX exp_softmax_f64
#define EXP exp
#define LOG log
#define LOG1P log1p
#define FABS fabs
#ifdef USP_HAVE_CBLAS
#define CBLAS_GEMM cblas_dgemm
#endif
#include "attention_impl.inc"
#undef REAL
#undef FN
#undef EXP_SOFTMAX
#undef EXP
#undef LOG
#undef LOG1P
#undef FABS
#undef CBLAS_GEMM

#define REAL float
#define FN(name) name##_f32
#define EXP_SOFTMAX exp_softmax_f32
#define EXP expf
#define LOG logf
#define LOG1P log1pf
#define FABS fabsf
#ifdef USP_HAVE_CBLAS
#define CBLAS_GEMM cblas_sgemm
#endif
#include "attention_impl.inc"
