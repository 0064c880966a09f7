/* test_published.c: published measurements re-predicted (usp/published.h).
 *
 * Every table of traces/published/ is read and every row re-predicted: no row
 * may be dropped or fail (a row the table marks "skip", a mask the simulator
 * lacks, is carried with its reason), and each table's mean and largest |error| must stay
 * within the bounds below. These rows are held out (never fitted): the
 * bounds are not targets, they record today's errors so that a change to the
 * simulator that makes a prediction worse fails here. A deliberate change to
 * the model comes with new bounds (and the new table in traces/README.md).
 * The double-buffered dK/dV of the backward ring (each hop but the last under
 * an attention, as the public USP code's ring backward also runs) and the
 * 16-bit wire of O, dQ, dK, dV (the public code sends its dtype too) moved
 * every table with a backward or an all-to-all further into over-prediction:
 * A800 x 16 LLAMA3-8B 20.5% mean, 89.3% max -> 31.0%, 94.4%; its longest
 * sequences 3.2%, 8.6% -> 6.0%, 9.5%; A800 x 8 LLAMA2-7B 12.2%, 18.1% ->
 * 14.9%, 26.9%; L20 attention 87.1%, 485.7% -> 102.7%, 600.0%; A100
 * attention 157.8%, 313.9% -> 159.6%, 316.9%; the authors' A100 README table
 * 198.6%, 2839.8% -> 202.1%, 2862.4%.
 * The planner's collectives going through the network layer (NCCL's
 * transports, algorithm and protocol, per-call latency, as the simulator's
 * engine runs its comm steps) moved the training tables a little, within the
 * bounds below by their rule: A800 x 16 LLAMA3-8B 31.0%, 94.4% -> 30.7%,
 * 94.6%; its longest sequences 6.0%, 9.5% -> 5.9%, 9.5%; A800 x 8 LLAMA2-7B
 * 14.9%, 26.9% -> 14.7%, 26.9%.
 * The USP paper's A100 128K rows simulated at the 256K tokens the benchmark ran
 * (seq_run: its --seq_len is per GPU, and the authors' script labels 32768 as
 * 128K; the table's remarks): 159.6%, 316.9% -> 10.1%, 36.8%.
 * Head dim 32 at its own FlashAttention-2 rate on A100 (155 / 140 TFLOP/s, from
 * the D = 64 and D = 128 rates; sim/SOURCES.md, estimates) instead of D = 64's:
 * the authors' README table 202.1%, 2862.4% -> 169.4%, 2857.2% (its 128K rows
 * 36.1%, 106.4% -> 15.2%, 67.3%).
 * Megatron-LM's default gradient synchronization in the A800 training tables
 * (the fp32 gradient reduce-scatter after the backward and the parameter
 * all-gather in the optimizer step, not overlapped) and matrix products no
 * faster than the best of the A100's shape search tightened them: A800 x 16
 * LLAMA3-8B 30.7%, 94.6% -> 16.0%, 63.1%; its longest sequences 5.9%, 9.5%
 * -> 2.8%, 7.9%; A800 x 8 LLAMA2-7B 14.7%, 26.9% -> 10.9%, 20.6%.
 * The yunchang-2024 harness (the USP tables' benchmark: a call takes at least
 * the host time of the PyTorch operations and torch.distributed calls it
 * issues; sim/validate/harness.c): README table 169.4%, 2857.2% -> 88.7%,
 * 1015.1%; L20 table 102.7%, 600.0% -> 100.9%, 600.0%; the paper's A100 table
 * unchanged (its rows are GPU-bound). Its synchronization after every call in
 * the unpacked script (the first attention waits for the host's prefix of the
 * call): the paper's A100 table 10.1%, 36.8% -> 7.5%, 24.1%; README table
 * 88.7% -> 83.9%; L20 100.9% -> 100.6% (Spearman +0.92 -> +0.91; its 8K ring
 * rows move from -8%..+17% to -16%..+15%).
 * Gradient accumulation (the A800 x 8 table's 30K rows as 16 / dp
 * micro-batches of one sequence, the file's remarks) and each card's exact
 * memory: A800 x 8 LLAMA2-7B 10.9%, 20.6% -> 10.2%, 19.3% (its six 30K rows
 * no longer over memory); the other tables unchanged.
 * The authors' README table of the 8 x L20 machine (60 cells: the report's
 * Table 4 again, a stripe column, 24 head-dim-32 cells at the l20 profile's
 * estimated D = 32 rate) added, held out: 69.7%, 600.0% on l20x8.
 * The noise floor (rows that ran one program get one prediction, so their
 * measured spread bounds every table's error from below) is checked on closed
 * forms and against every table's statistics.
 * The report's statements about memory (which mixes ran out of it) are
 * checked against the planner's memory (paper_memory_statements).
 * The statistics (Spearman's rank correlation, the Megatron-LM FLOP count)
 * are checked on closed forms first. */
#define _XOPEN_SOURCE 700
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "usp/plan.h"
#include "usp/sim.h"
#include "usp/published.h"
#include "usp/validate.h"
#include "test_util.h"

/* Closed forms computed in double precision: rounding only. */
#define CLOSED_FORM_REL 1e-12

/* Per table: the mean and largest |error| of the throughput today, rounded
 * up, plus 2 percentage points of slack (the same rule as the recorded 2 x
 * H200 cases' bounds, traces/README.md). Measured by
 * `usp validate --published traces/published`. */
typedef struct {
    const char *table;
    int rows;
    double mean_pct, max_pct;
} table_bound;

static const table_bound BOUNDS[] = {
    /* PyTorch context parallel on the 2 x H200 the h200x2 preset and the h200 / h200-cudnn
     * kernel rates were measured on (sim/SOURCES.md): usp's schedule stands for its ring */
    {"pytorch-cp-h200x2-cudnn", 12, 8, 16},
    {"pytorch-cp-h200x2-flash", 12, 7, 10},
    {"ring-flash-attention-a100x8", 16, 10, 29},
    {"ring-flash-attention-h800x8", 16, 11, 25},
    {"usp-paper-a100x8-attention", 16, 10, 27},
    {"usp-paper-a800x16-llama3-8b", 26, 18, 66},
    {"usp-paper-a800x16-llama3-8b-long", 5, 5, 10},
    {"usp-paper-a800x8-llama2-7b", 9, 13, 22},
    /* l20x8 is fitted to the nccl-tests all-to-all of an 8 x L20 server (NVIDIA/nccl
     * issue 1817, 6.13 GB/s average over SHM): the USP paper's L20 all-to-all is
     * about 6x slower than that server's, so the Ulysses rows are predicted far
     * too fast (a deliberate model change: a micro-benchmark fit, held-out rows) */
    {"usp-paper-l20x8-attention", 24, 103, 602},
    {"usp-readme-a100x8-attention", 168, 86, 1018},
    /* the authors' README table of the same L20 machine: Table 4's cells again, its
     * stripe column and 24 head-dim-32 cells (the l20 profile's estimated D = 32 rate) */
    {"usp-readme-l20x8-attention", 60, 72, 602},
};
#define NBOUNDS ((int)(sizeof BOUNDS / sizeof BOUNDS[0]))

/* ------------------------------------------------------------ closed forms */

static void test_spearman_closed_forms(void **state) {
    (void)state;
    double x[5] = {1, 2, 3, 4, 5}, up[5] = {10, 20, 30, 40, 50}, down[5] = {5, 4, 3, 2, 1};
    assert_true(fabs(usp_spearman(x, up, 5) - 1) < CLOSED_FORM_REL);
    assert_true(fabs(usp_spearman(x, down, 5) + 1) < CLOSED_FORM_REL);
    /* one swap of neighbours among 5: 1 - 6 * 2 / (5 * 24) = 0.9 */
    double swap[5] = {1, 3, 2, 4, 5};
    assert_true(fabs(usp_spearman(x, swap, 5) - 0.9) < CLOSED_FORM_REL);
    /* ties take their average rank: ranks (1.5, 1.5, 3) against (1, 2, 3) */
    double tie[3] = {7, 7, 9}, lin[3] = {1, 2, 3};
    assert_true(fabs(usp_spearman(tie, lin, 3) - sqrt(0.75)) < CLOSED_FORM_REL);
    assert_true(isnan(usp_spearman(x, up, 1)));
    double flat[3] = {2, 2, 2};
    assert_true(isnan(usp_spearman(flat, lin, 3)));
}

static void test_megatron_flops(void **state) {
    (void)state;
    usp_model m;
    assert_int_equal(usp_model_load("llama3-8b", &m), USP_OK);
    /* 12 x 65536 x 32 x 4096^2 x ((1 + 8/32 + 16) + 14336/4096 x 1.5 + 128256 / (2 x 32 x 4096)) */
    double want = 12.0 * 65536 * 32 * 4096.0 * 4096 * (17.25 + 5.25 + 128256.0 / 262144);
    assert_true(fabs(usp_megatron_flops(&m, 65536, 1) / want - 1) < CLOSED_FORM_REL);
    /* usp plan counts causal attention once: 0.652 of Megatron-LM's count at 64K (sim/plan/README.md) */
    usp_workload w = usp_workload_default();
    w.model = m;
    usp_flops f;
    usp_model_flops(&w, &f);
    assert_true(fabs(f.total / usp_megatron_flops(&m, 65536, 1) - 0.652) < 0.001);
}

/* The short-block figures of the flash-attention profiles are the fit of the
 * H200 kernel measurements (traces/h200x2.calibration.json, bf16, full
 * blocks): refitting gives them back, as the profiles print them (fixed to
 * 0.1 us, lengths to a token). */
#define PRINTED_US 0.05
#define PRINTED_TOKENS 0.5

static void test_short_block_fit(void **state) {
    (void)state;
    usp_calib *m = calloc(1, sizeof *m);
    assert_non_null(m);
    assert_int_equal(usp_calib_read(USP_TRACES_DIR "/h200x2.calibration.json", m), USP_OK);
    static const char *const PROFILES[] = {"a100", "a800", "h100", "h200", "l20"};
    for (int d = 64; d <= 128; d += 64)
        for (int bwd = 0; bwd < 2; bwd++) {
            double len[USP_CALIB_MAX], x[USP_CALIB_MAX], t[USP_CALIB_MAX];
            int n = 0;
            for (int i = 0; i < m->nattn; i++) {
                const usp_calib_attn *a = &m->attn[i];
                if (a->dtype != USP_BF16 || a->head_dim != d || a->backward != bwd || a->causal) continue;
                len[n] = a->seq;
                x[n] = a->flops;
                t[n++] = a->seconds;
            }
            usp_short_fit f;
            assert_int_equal(usp_fit_short_block(len, x, t, n, &f), USP_OK);
            assert_true(f.rms_pct < 0.5); /* the model holds on the measurements: 0.00-0.27% */
            for (size_t k = 0; k < sizeof PROFILES / sizeof *PROFILES; k++) {
                usp_profile_desc *p = calloc(1, sizeof *p);
                char path[512];
                snprintf(path, sizeof path, "%s/%s.json", USP_PROFILES_DIR, PROFILES[k]);
                assert_int_equal(usp_profile_desc_read(path, p), USP_OK);
                const usp_profile_rate *r = usp_profile_rate_find(p, USP_BF16, d);
                assert_non_null(r);
                double fixed = bwd ? r->bwd_fixed_us : r->fwd_fixed_us, shrt = bwd ? r->bwd_short_rows : r->fwd_short_keys;
                if (fabs(fixed - f.fixed_s * 1e6) > PRINTED_US || fabs(shrt - f.short_len) > PRINTED_TOKENS)
                    fail_msg("%s D=%d %s: fixed %.1f us, short %.0f; the fit gives %.2f us, %.1f", PROFILES[k], d,
                             bwd ? "bwd" : "fwd", fixed, shrt, f.fixed_s * 1e6, f.short_len);
                free(p);
            }
        }
    free(m);
}

/* The yunchang-2024 harness's host time, counted by hand from the benchmark's
 * code (sim/validate/harness.c): 7 us an operation, 105 us a torch.distributed
 * call. Unpacked, ulysses 8: 4 all-to-alls (9 operations and a call each),
 * 10 per call, one attention block (2) and its first merge (3): 51 operations,
 * 4 calls. Packed, ring 8 zigzag: no all-to-all, 10 + 5 (QKV split), 7 ring
 * hops (6 and a call each), 8 blocks (2), merges 3 + 7 x 5, slices 7 x 2 and
 * slice merges 4 x 4: 141 operations, 7 calls. */
static void test_harness_counts(void **state) {
    (void)state;
    usp_config c = usp_config_default();
    c.ulysses = 8;
    c.ring = 1;
    c.ring_impl = USP_RING_BASIC;
    int ops, calls;
    double t = usp_pub_harness_host_s(USP_HARNESS_YUNCHANG_2024, &c, 0, &ops, &calls);
    assert_int_equal(ops, 51);
    assert_int_equal(calls, 4);
    assert_true(fabs(t - (51 * 7e-6 + 4 * 105e-6)) < CLOSED_FORM_REL);
    c.ulysses = 1;
    c.ring = 8;
    c.ring_impl = USP_RING_ZIGZAG;
    t = usp_pub_harness_host_s(USP_HARNESS_YUNCHANG_2024, &c, 1, &ops, &calls);
    assert_int_equal(ops, 141);
    assert_int_equal(calls, 7);
    assert_true(fabs(t - (141 * 7e-6 + 7 * 105e-6)) < CLOSED_FORM_REL);
    assert_true(usp_pub_harness_host_s(USP_HARNESS_NONE, &c, 1, &ops, &calls) == 0 && ops == 0 && calls == 0);
    /* the prefix of the synchronized (unpacked) script: 3 all-to-alls, 7 set-up
     * operations, the first hop's 4 operations and call (ring > 1), the kernel's 2 */
    assert_false(usp_pub_harness_synced(USP_HARNESS_YUNCHANG_2024, 1));
    assert_true(usp_pub_harness_prefix_s(USP_HARNESS_YUNCHANG_2024, &c, 1) == 0);
    assert_true(fabs(usp_pub_harness_prefix_s(USP_HARNESS_YUNCHANG_2024, &c, 0) - (40 * 7e-6 + 4 * 105e-6)) <
                CLOSED_FORM_REL);
    c.ulysses = 8;
    c.ring = 1;
    assert_true(fabs(usp_pub_harness_prefix_s(USP_HARNESS_YUNCHANG_2024, &c, 0) - (36 * 7e-6 + 3 * 105e-6)) <
                CLOSED_FORM_REL);
    assert_true(usp_pub_harness_prefix_s(USP_HARNESS_NONE, &c, 0) == 0);
    usp_pub_harness h;
    assert_int_equal(usp_pub_harness_parse("yunchang-2024", &h), USP_OK);
    assert_int_equal(h, USP_HARNESS_YUNCHANG_2024);
    assert_int_equal(usp_pub_harness_parse("pytorch", &h), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "yunchang-2024"));
}

/* The noise floor on closed forms: three rows of one program (a ring of one
 * rank: the variant runs nothing different) measured 4, 2 and 1, a skipped
 * row of the same program, and two rings of 2 that differ in their variant
 * (two programs). The widest group: (4 - 1) / (4 + 1) = 60%; the least sum
 * of |p / m - 1| is at p = 1: 3/4 + 1/2 = 1.25, over the 5 rows counted. */
static void test_noise_floor_closed_forms(void **state) {
    (void)state;
    usp_pub_row rows[6];
    memset(rows, 0, sizeof rows);
    const usp_ring_impl impl[6] = {USP_RING_BASIC, USP_RING_ZIGZAG, USP_RING_STRIPE, USP_RING_BASIC,
                                   USP_RING_BASIC, USP_RING_ZIGZAG};
    const double measured[6] = {4, 2, 1, 9, 3, 1};
    for (int i = 0; i < 6; i++) {
        rows[i].cfg = usp_config_default();
        rows[i].cfg.ulysses = i < 4 ? 8 : 4;
        rows[i].cfg.ring = i < 4 ? 1 : 2;
        rows[i].cfg.ring_impl = impl[i];
        rows[i].seq = rows[i].cfg.seq;
        rows[i].measured = measured[i];
    }
    rows[3].skip = 1;
    usp_pub_table t;
    memset(&t, 0, sizeof t);
    t.kind = USP_PUB_ATTENTION;
    t.rows = rows;
    t.nrows = 6;
    assert_true(usp_pub_same_program(&t, &rows[0], &rows[2]));
    assert_false(usp_pub_same_program(&t, &rows[0], &rows[3])); /* skipped */
    assert_false(usp_pub_same_program(&t, &rows[4], &rows[5])); /* a ring of 2: the variant matters */
    usp_pub_floor f;
    usp_pub_floor_make(&t, 0, &f);
    assert_int_equal(f.groups, 1);
    assert_int_equal(f.rows, 3);
    assert_int_equal(f.counted, 5);
    assert_int_equal(f.widest, 0);
    assert_true(fabs(f.max_abs_pct - 60) < CLOSED_FORM_REL * 100);
    assert_true(fabs(f.mean_abs_pct - 100 * 1.25 / 5) < CLOSED_FORM_REL * 100);
    assert_true(fabs(f.spread - 4) < CLOSED_FORM_REL);
    rows[2].qkv_packed = 1; /* another script: no longer the same program */
    usp_pub_floor_make(&t, 0, &f);
    assert_int_equal(f.rows, 2);
    assert_true(fabs(f.max_abs_pct - 100.0 / 3) < CLOSED_FORM_REL * 100);
    usp_pub_floor_make(&t, 12345, &f); /* no row of that length */
    assert_int_equal(f.counted, 0);
    assert_int_equal(f.groups, 0);
    assert_int_equal(f.widest, -1);
}

/* ------------------------------------------------------------ tables */

static void test_bad_tables(void **state) {
    (void)state;
    assert_int_equal(tmp_dir_make("usp_test_published"), 0);
    const char *path = tmp_path("bad.json");
    write_text(path, "{\"table\": \"t\", \"title\": \"x\", \"kind\": \"attention\", \"metric\": \"iters_per_s\",\n"
                          " \"hardware\": \"h\", \"platform\": \"l20x8\", \"profile\": \"l20\",\n"
                          " \"source\": {\"paper\": \"p\", \"url\": \"u\", \"table\": \"T1\"},\n"
                          " \"problem\": {\"batch\": 1}, \"rows\": []}\n");
    usp_pub_table t;
    assert_int_equal(usp_pub_table_read(path, &t), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "bad.json"));
    assert_non_null(strstr(usp_error(), "rows"));
    write_text(path, "{\"table\": \"t\", \"title\": \"x\", \"kind\": \"speed\"}\n");
    assert_int_equal(usp_pub_table_read(path, &t), USP_EINVAL);
    /* a training table's gradient synchronization is layer or step, its gradients dtype or fp32 */
    const char *training = "{\"table\": \"t\", \"title\": \"x\", \"kind\": \"training\", \"metric\": \"tflops_per_gpu\",\n"
                           " \"hardware\": \"h\", \"platform\": \"a800x8\", \"profile\": \"a800\",\n"
                           " \"source\": {\"paper\": \"p\", \"url\": \"u\", \"table\": \"T1\"},\n"
                           " \"problem\": {\"model\": \"llama2-7b\", \"gpus\": 8, \"dtype\": \"bf16\", \"causal\": true,\n"
                           "  \"ring_impl\": \"zigzag\", \"zero\": 1, \"recompute\": false, \"tp_sp\": true, %s},\n"
                           " \"rows\": [{\"seq\": 65536, \"global_batch\": 1, \"dp\": 1, \"tp\": 4, \"ulysses\": 2,\n"
                           "  \"ring\": 1, \"measured\": 1}]}\n";
    char text[2048];
    snprintf(text, sizeof text, training, "\"grad_sync\": \"sometimes\"");
    write_text(path, text);
    assert_int_equal(usp_pub_table_read(path, &t), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "'grad_sync' must be \"layer\" or \"step\""));
    snprintf(text, sizeof text, training, "\"grad_dtype\": \"fp8\"");
    write_text(path, text);
    assert_int_equal(usp_pub_table_read(path, &t), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "'grad_dtype' must be \"dtype\" or \"fp32\""));
    snprintf(text, sizeof text, training, "\"micro_batch\": 0");
    write_text(path, text);
    assert_int_equal(usp_pub_table_read(path, &t), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "'micro_batch' must be an integer >= 1"));
    /* a kernel-only row is one GPU's call */
    write_text(path, "{\"table\": \"t\", \"title\": \"x\", \"kind\": \"attention\", \"metric\": \"iters_per_s\",\n"
                     " \"hardware\": \"h\", \"platform\": \"a100x8\", \"profile\": \"a100\",\n"
                     " \"source\": {\"paper\": \"p\", \"url\": \"u\", \"table\": \"T1\"},\n"
                     " \"problem\": {\"batch\": 1, \"heads\": 8, \"kv_heads\": 8, \"head_dim\": 128, \"dtype\": \"bf16\",\n"
                     "  \"causal\": true, \"backward\": false, \"layout\": \"ulysses-inner\"},\n"
                     " \"rows\": [{\"seq\": 65536, \"ulysses\": 1, \"ring\": 8, \"ring_impl\": \"basic\",\n"
                     "  \"column\": \"c\", \"kernel_only\": true, \"measured\": 1}]}\n");
    assert_int_equal(usp_pub_table_read(path, &t), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "'kernel_only' is a row of one GPU"));
    remove_tmp_dir(NULL);
}

/* A kernel-only row (flash_attn_func on one GPU) is the kernel time of its
 * attention steps: the ring-1 schedule's time less its init and merge (and,
 * with the backward, DELTA and the zeroed accumulators), each a memory-bound
 * step of its own. */
static void test_kernel_only(void **state) {
    (void)state;
    assert_int_equal(tmp_dir_make("usp_test_published"), 0);
    const char *path = tmp_path("kernel.json");
    const char *row = "  {\"seq\": 8192, \"ulysses\": 1, \"ring\": 1, \"ring_impl\": \"basic\", \"column\": \"%s\",%s\n"
                      "   \"backward\": %s, \"measured\": 100}";
    char rows[4][256];
    const char *cols[4] = {"call", "kernel", "call fb", "kernel fb"};
    for (int i = 0; i < 4; i++)
        snprintf(rows[i], sizeof rows[i], row, cols[i], i % 2 ? " \"kernel_only\": true," : "", i / 2 ? "true" : "false");
    char text[4096];
    snprintf(text, sizeof text,
             "{\"table\": \"t\", \"title\": \"x\", \"kind\": \"attention\", \"metric\": \"iters_per_s\",\n"
             " \"hardware\": \"h\", \"platform\": \"a100x8\", \"profile\": \"a100\",\n"
             " \"source\": {\"paper\": \"p\", \"url\": \"u\", \"table\": \"T1\"},\n"
             " \"problem\": {\"batch\": 1, \"heads\": 32, \"kv_heads\": 8, \"head_dim\": 128, \"dtype\": \"bf16\",\n"
             "  \"causal\": true, \"backward\": false, \"layout\": \"ulysses-inner\"},\n"
             " \"rows\": [\n%s,\n%s,\n%s,\n%s]}\n", rows[0], rows[1], rows[2], rows[3]);
    write_text(path, text);
    usp_pub_table t;
    assert_int_equal(usp_pub_table_read(path, &t), USP_OK);
    assert_int_equal(usp_pub_predict(&t, NULL, NULL, NULL), USP_OK);
    for (int i = 0; i < 4; i++) assert_int_equal(t.rows[i].status, USP_OK);
    assert_true(t.rows[1].kernel_only && !t.rows[0].kernel_only);
    assert_false(usp_pub_same_program(&t, &t.rows[0], &t.rows[1])); /* another program */
    /* the call's time less its memory-bound steps, each at least a launch */
    for (int i = 0; i < 4; i += 2) {
        double call = t.rows[i].predicted_s, kernel = t.rows[i + 1].predicted_s;
        assert_true(kernel < call && kernel > 0.5 * call);
        print_message("%-10s call %.4f ms  kernel only %.4f ms\n", cols[i], 1e3 * call, 1e3 * kernel);
    }
    /* the forward kernel alone: the same kernel in both, the backward adds its own */
    assert_true(t.rows[3].predicted_s > 2 * t.rows[1].predicted_s);
    usp_pub_table_free(&t);
    remove_tmp_dir(NULL);
}

static const table_bound *bound_of(const char *name) {
    for (int i = 0; i < NBOUNDS; i++)
        if (!strcmp(BOUNDS[i].table, name)) return &BOUNDS[i];
    return NULL;
}

static void test_published_tables(void **state) {
    (void)state;
    usp_pub_table *tables;
    int n;
    assert_int_equal(usp_pub_tables_read(USP_PUBLISHED_DIR, &tables, &n), USP_OK);
    assert_int_equal(n, NBOUNDS); /* a new table comes with its bound */
    for (int i = 0; i < n; i++) {
        usp_pub_table *t = &tables[i];
        const table_bound *b = bound_of(t->name);
        if (!b) fail_msg("table %s has no bound in test_published.c", t->name);
        assert_int_equal(usp_pub_predict(t, NULL, NULL, NULL), USP_OK);
        assert_int_equal(t->nrows, b->rows); /* every row the source reports */
        int skipped = 0;
        for (int r = 0; r < t->nrows; r++) {
            const usp_pub_row *row = &t->rows[r];
            if (row->skip) { /* carried with its reason, never simulated */
                assert_true(row->why[0] != 0 && isnan(row->predicted));
                skipped++;
            } else if (row->status != USP_OK || !isfinite(row->predicted)) {
                fail_msg("%s row %d (%s) not predicted: %s", t->name, r + 1, row->label, row->why);
            }
        }
        usp_pub_stats s;
        usp_pub_stats_make(t, 0, &s);
        assert_int_equal(s.rows, t->nrows);
        assert_int_equal(s.predicted, t->nrows - skipped);
        /* rows that ran one program get one prediction, so no table does
         * better than its noise floor */
        for (int a = 0; a < t->nrows; a++)
            for (int c = a + 1; c < t->nrows; c++)
                if (usp_pub_same_program(t, &t->rows[a], &t->rows[c]) &&
                    fabs(t->rows[a].predicted - t->rows[c].predicted) > CLOSED_FORM_REL * t->rows[a].predicted)
                    fail_msg("%s: %s and %s ran one program, predicted %.6g and %.6g", t->name, t->rows[a].label,
                             t->rows[c].label, t->rows[a].predicted, t->rows[c].predicted);
        usp_pub_floor fl;
        usp_pub_floor_make(t, 0, &fl);
        assert_true(s.mean_abs_pct >= fl.mean_abs_pct * (1 - CLOSED_FORM_REL) &&
                    s.max_abs_pct >= fl.max_abs_pct * (1 - CLOSED_FORM_REL));
        if (s.mean_abs_pct > b->mean_pct || s.max_abs_pct > b->max_pct)
            fail_msg("%s: mean |error| %.1f%% (bound %.0f%%), max %.1f%% (bound %.0f%%)", t->name, s.mean_abs_pct,
                     b->mean_pct, s.max_abs_pct, b->max_pct);
        print_message("%-36s mean %6.1f%%  max %6.1f%%  spearman %+.2f\n", t->name, s.mean_abs_pct, s.max_abs_pct,
                      s.spearman);
    }
    usp_pub_tables_free(tables, n);
}

/* ring-flash-attention's varlen readings against brute force: rank r's
 * local token i (of L) lies in local document d; each reading places it at
 * a position of global document d, and a query sees a key exactly when
 * both are in the same document and the key's position is not after the
 * query's. Small: R = 4, L = 20, documents of 4, 10 and 6 tokens. */
static long varlen_pos(usp_pub_varlen api, const long *cu, int nd, long R, long L, long g, int *doc) {
    long r = g / L, i = g % L;
    int d = 0;
    while (d + 1 < nd && i >= cu[d + 1]) d++;
    long len = cu[d + 1] - cu[d], off = i - cu[d];
    *doc = d;
    switch (api) {
    case USP_VARLEN_RING: return r * len + off;
    case USP_VARLEN_ZIGZAG: {
        long half = len / 2, chunk = off < half ? r : 2 * R - 1 - r;
        return chunk * half + off % half;
    }
    default: { /* llama3: the packing cu * R over the whole sequence */
        int dd = 0;
        while (dd + 1 < nd && g >= cu[dd + 1] * R) dd++;
        *doc = dd;
        return g - cu[dd] * R;
    }
    }
}

static void varlen_masks_against_brute_force(void **state) {
    (void)state;
    const long cu[] = {0, 4, 14, 20}, R = 4, L = 20;
    const int nd = 3;
    const usp_pub_varlen apis[] = {USP_VARLEN_RING, USP_VARLEN_ZIGZAG, USP_VARLEN_LLAMA3};
    for (int a = 0; a < 3; a++) {
        usp_mask *m;
        assert_int_equal(usp_pub_varlen_mask(apis[a], cu, nd, (int)R, &m), USP_OK);
        assert_int_equal(usp_mask_seq(m), R * L);
        double pairs = 0;
        for (long q = 0; q < R * L; q++)
            for (long k = 0; k < R * L; k++) {
                int dq, dk;
                long pq = varlen_pos(apis[a], cu, nd, R, L, q, &dq), pk = varlen_pos(apis[a], cu, nd, R, L, k, &dk);
                int want = dq == dk && pk <= pq;
                pairs += want;
                if (usp_mask_sees(m, 0, q, k) != want)
                    fail_msg("varlen %s: query %ld, key %ld: %d, want %d", usp_pub_varlen_name(apis[a]), q, k,
                             usp_mask_sees(m, 0, q, k), want);
            }
        /* every reading is causal documents of R x len tokens: sum of N (N + 1) / 2 */
        double want_pairs = 0;
        for (int d = 0; d < nd; d++) {
            double n = (double)R * (cu[d + 1] - cu[d]);
            want_pairs += n * (n + 1) / 2;
        }
        assert_true(fabs(pairs - want_pairs) < 0.5);
        assert_true(fabs(usp_mask_pairs(m, 0) - want_pairs) < 0.5);
        usp_mask_free(m);
    }
    usp_mask *m;
    assert_int_equal(usp_pub_varlen_mask(USP_VARLEN_LOCAL, cu, nd, (int)R, &m), USP_OK);
    assert_int_equal(usp_mask_seq(m), L);
    usp_mask_free(m);
    const long odd[] = {0, 3, 20};
    assert_int_equal(usp_pub_varlen_mask(USP_VARLEN_ZIGZAG, odd, 2, (int)R, &m), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "has no halves"));
}


/* The noise floor of the authors' README table (its measurements alone, no
 * prediction): its widest group is the packed ulysses-8 program at 512
 * tokens, measured 558.972, 249.619 and 188.396 iterations/s under the basic,
 * zigzag and stripe columns (a ring of one rank: one program), so no
 * prediction is within (558.972 - 188.396) / (558.972 + 188.396) = 49.6% of
 * all three, beyond the 30% largest error the tables are held to. The
 * paper's L20 table measured its ulysses-8 program twice per length, at most
 * (15.229 - 14.262) / (15.229 + 14.262) = 3.3% apart (32K). */
static void readme_table_noise_floor(void **state) {
    (void)state;
    const double README_512_HI = 558.972, README_512_LO = 188.396, L20_32K_HI = 15.229, L20_32K_LO = 14.262;
    const double TABLE_MAX_TARGET_PCT = 30;
    usp_pub_table *tables;
    int n, found = 0;
    assert_int_equal(usp_pub_tables_read(USP_PUBLISHED_DIR, &tables, &n), USP_OK);
    for (int i = 0; i < n; i++) {
        const usp_pub_table *t = &tables[i];
        double hi, lo;
        if (!strcmp(t->name, "usp-readme-a100x8-attention")) hi = README_512_HI, lo = README_512_LO;
        else if (!strcmp(t->name, "usp-paper-l20x8-attention")) hi = L20_32K_HI, lo = L20_32K_LO;
        else continue;
        found++;
        usp_pub_floor f;
        usp_pub_floor_make(t, 0, &f);
        assert_true(fabs(f.max_abs_pct - 100 * (hi - lo) / (hi + lo)) < CLOSED_FORM_REL * 100);
        assert_true(fabs(f.spread - hi / lo) < CLOSED_FORM_REL * hi / lo);
        if (hi == README_512_HI) {
            assert_int_equal(f.groups, 13); /* the ulysses-8 rows: 13 programs of 3 columns */
            assert_int_equal(f.rows, 39);
            assert_int_equal(t->rows[f.widest].seq, 512);
            assert_true(f.max_abs_pct > TABLE_MAX_TARGET_PCT);
        } else {
            assert_int_equal(f.groups, 3);
            assert_true(f.max_abs_pct < TABLE_MAX_TARGET_PCT);
        }
        print_message("%-36s noise floor: mean %5.1f%%  max %5.1f%% (%d rows, %d programs)\n", t->name,
                      f.mean_abs_pct, f.max_abs_pct, f.rows, f.groups);
    }
    assert_int_equal(found, 2);
    usp_pub_tables_free(tables, n);
}

/* The L20 tables on the other host NCCL's rules allow: P2P through the CPU
 * between GPUs of different PCIe switches (NCCL up to 2.22 on AMD hosts;
 * neither source states the CPU), its all-to-alls at 2/18 of the route
 * (NVIDIA/nccl issue 1603). This platform was tried after the report's Table
 * 4 gap was known, so those rows are not held out from the choice of it (no
 * figure is fitted to them): the bound, today's 18.7% mean and 46.9% max
 * rounded up plus 2 points, catches a change that moves it (traces/README.md,
 * the L20 table). The yunchang-2024 harness floor moved it from 20.6%, 59.5%
 * (the 8K zigzag ring of 8 host-bound: +59.5% -> +17.1%). The authors' README
 * table of the same machine adds 36 cells that were not looked at then (its
 * stripe column and its head-dim-32 rows): on them 21.4% mean, 45.3% max,
 * against 49.1%, 592.2% on l20x8; the whole README table 20.3%, 46.9%,
 * Spearman +0.97. */
static void l20_table_p2p_through_the_cpu(void **state) {
    (void)state;
    static const struct { const char *table; double mean_pct, max_pct, spearman_min; } WANT[] = {
        {"usp-paper-l20x8-attention", 21, 49, 0.95},
        {"usp-readme-l20x8-attention", 23, 49, 0.95},
    };
    usp_pub_table *tables;
    int n, found = 0;
    assert_int_equal(usp_pub_tables_read(USP_PUBLISHED_DIR, &tables, &n), USP_OK);
    for (int i = 0; i < n; i++) {
        usp_pub_table *t = &tables[i];
        int w = -1;
        for (int k = 0; k < 2; k++)
            if (!strcmp(t->name, WANT[k].table)) w = k;
        if (w < 0) continue;
        found++;
        assert_int_equal(usp_pub_predict(t, "l20x8:p2p=sys", NULL, NULL), USP_OK);
        usp_pub_stats s;
        usp_pub_stats_make(t, 0, &s);
        assert_int_equal(s.predicted, t->nrows);
        if (s.mean_abs_pct > WANT[w].mean_pct || s.max_abs_pct > WANT[w].max_pct || s.spearman < WANT[w].spearman_min)
            fail_msg("%s on l20x8:p2p=sys: mean |error| %.1f%%, max %.1f%%, spearman %.2f", t->name, s.mean_abs_pct,
                     s.max_abs_pct, s.spearman);
        print_message("%-36s mean %6.1f%%  max %6.1f%%  spearman %+.2f (l20x8:p2p=sys)\n", t->name, s.mean_abs_pct,
                      s.max_abs_pct, s.spearman);
    }
    assert_int_equal(found, 2);
    usp_pub_tables_free(tables, n);
}

/* What usp run, sweep and plan print on a platform whose all-to-alls go
 * through host memory (usp_platform_caveat, sim/network/platform.c) is read off
 * the two 8 x L20 tables on l20x8: measured time over simulated 1.4-7x at
 * ulysses 8, at most 3x at ulysses 4. A change of the model or of the tables
 * that moves them outside fails here, and the text must be changed with it. */
static void l20_caveat_figures(void **state) {
    (void)state;
    usp_pub_table *tables;
    int n, found = 0;
    double lo[9], hi[9];   /* by ulysses degree: the time ratio, measured over simulated */
    for (int u = 0; u < 9; u++) lo[u] = INFINITY, hi[u] = -INFINITY;
    assert_int_equal(usp_pub_tables_read(USP_PUBLISHED_DIR, &tables, &n), USP_OK);
    for (int i = 0; i < n; i++) {
        usp_pub_table *t = &tables[i];
        if (strcmp(t->name, "usp-paper-l20x8-attention") && strcmp(t->name, "usp-readme-l20x8-attention")) continue;
        found++;
        assert_int_equal(usp_pub_predict(t, NULL, NULL, NULL), USP_OK);
        for (int r = 0; r < t->nrows; r++) {
            const usp_pub_row *row = &t->rows[r];
            assert_true(isfinite(row->error_pct));
            const double ratio = row->predicted / row->measured;   /* throughputs: time measured / simulated */
            const int u = row->cfg.ulysses;
            if (ratio < lo[u]) lo[u] = ratio;
            if (ratio > hi[u]) hi[u] = ratio;
        }
    }
    assert_int_equal(found, 2);
    for (int u = 1; u <= 8; u *= 2)
        print_message("l20x8, ulysses %d: measured time / simulated %.2f-%.2fx\n", u, lo[u], hi[u]);
    assert_true(lo[8] >= 1.4 && hi[8] <= 7.0);
    assert_true(hi[4] <= 3.0 && hi[4] > 2.0);
    assert_true(usp_platform_caveat("l20x8", &(usp_config){.ulysses = 8, .ring = 1}) != NULL);
    usp_pub_tables_free(tables, n);
}

/* The technical report's statements about memory (section 5.4), held out
 * like its throughputs: every mix it says ran out of memory is over the
 * usable share of an A800 (81920 MiB x USP_MEMORY_USABLE_FRACTION) in the
 * planner. The converse is not yet true: of the rows it ran, today 5 are
 * put over by at most 0.94 GB (80K ulysses x ring 8 x 2, 4 x 4, 2 x 8 at
 * 82.4 GB; 208K tp 8 x ring 2 at 82.5 GB; 190K tp 4 x ring 4 at 82.1 GB,
 * against 81.6 GB usable): the bound records that, rounded up. */
#define A800_BYTES (81920 * 1048576.0)
#define RAN_FLAGGED_MAX 5
#define RAN_EXCESS_MAX_BYTES 1.0e9

static void paper_memory_statements(void **state) {
    (void)state;
    static const struct {
        const char *table, *statement;
        int seq, global_batch, dp;
    } oom[] = {
        {"usp-paper-a800x8-llama2-7b", "When seqlen=64K, SP-only will bring OOM issue", 65536, 1, 1},
        {"usp-paper-a800x16-llama3-8b", "SP-only always has OOM issue with global-bs=2 (64K)", 65536, 2, 2},
        {"usp-paper-a800x16-llama3-8b", "SP-only always has OOM issue with global-bs=2 (80K)", 81920, 2, 2},
        {"usp-paper-a800x16-llama3-8b", "When the sequence length reaches 120K ... SP-only meets an OOM issue",
         122880, 1, 1},
        {"usp-paper-a800x16-llama3-8b-long", "At this point [208K], SP-only could not run due to OOM", 212992, 1, 1},
    };
    usp_pub_table *tables;
    int n;
    assert_int_equal(usp_pub_tables_read(USP_PUBLISHED_DIR, &tables, &n), USP_OK);
    double usable = USP_MEMORY_USABLE_FRACTION * A800_BYTES;
    int flagged = 0;
    for (int i = 0; i < n; i++) {
        const usp_pub_table *t = &tables[i];
        if (t->kind != USP_PUB_TRAINING) continue;
        for (size_t k = 0; k < sizeof oom / sizeof *oom; k++) {
            if (strcmp(oom[k].table, t->name)) continue;
            usp_workload w = t->work;
            w.seq = oom[k].seq;
            w.global_batch = oom[k].global_batch;
            int sp = t->gpus / oom[k].dp; /* SP-only: tp 1, ulysses x ring = the rest, ulysses <= 8 heads */
            for (int u = 1; u <= sp && u <= 8; u *= 2) {
                usp_mix x = t->base_mix;
                x.dp = oom[k].dp, x.tp = 1, x.ulysses = u, x.ring = sp / u;
                usp_memory m;
                usp_memory_closed_form(&w, &x, &m);
                if (!(m.total > usable))
                    fail_msg("%s: '%s', but u%d r%d fits (%.2f of %.2f GB)", t->name, oom[k].statement, u, x.ring,
                             m.total / 1e9, usable / 1e9);
            }
        }
        for (int r = 0; r < t->nrows; r++) { /* the rows it ran */
            const usp_pub_row *row = &t->rows[r];
            usp_workload w = t->work;
            w.seq = row->seq;
            w.global_batch = row->global_batch;
            w.micro_batch = row->micro_batch;
            usp_memory m;
            usp_memory_closed_form(&w, &row->mix, &m);
            if (m.total <= usable) continue;
            flagged++;
            if (m.total - usable > RAN_EXCESS_MAX_BYTES)
                fail_msg("%s: %s ran, the planner puts it %.2f GB over", t->name, row->label, (m.total - usable) / 1e9);
        }
    }
    if (flagged > RAN_FLAGGED_MAX) fail_msg("%d rows the report ran are over memory (bound %d)", flagged, RAN_FLAGGED_MAX);
    usp_pub_tables_free(tables, n);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spearman_closed_forms),
        cmocka_unit_test(test_megatron_flops),
        cmocka_unit_test(test_short_block_fit),
        cmocka_unit_test(test_harness_counts),
        cmocka_unit_test(test_noise_floor_closed_forms),
        cmocka_unit_test(readme_table_noise_floor),
        cmocka_unit_test(test_bad_tables),
        cmocka_unit_test(test_kernel_only),
        cmocka_unit_test(test_published_tables),
        cmocka_unit_test(l20_table_p2p_through_the_cpu),
        cmocka_unit_test(l20_caveat_figures),
        cmocka_unit_test(varlen_masks_against_brute_force),
        cmocka_unit_test(paper_memory_statements),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
