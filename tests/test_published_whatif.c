/* test_published_whatif.c: what the USP report's A800 training tables rule
 * out (traces/published/usp-paper-a800x*.json, usp/published.h).
 *
 * The seven TP 2 rows of Table 6 (2 x 8 A800, LLAMA3-8B) run 16-63% slower
 * than the planner predicts, where every other row of the table is within
 * 16%. sim/plan/README.md ("The TP 2 rows: what was checked") lists the
 * explanations tried against the report's text and the code it names; the
 * ones that the planner itself can test are checked here, on the held-out
 * rows, so that the notes stay true when the model changes:
 *
 * - plain TP (all-reduce, norms replicated) instead of TP-sp: the report
 *   says TP always ran with sequence parallel, and plain TP moves each TP 2
 *   prediction by less than PLAIN_TP_MOVE anyway (0.1-0.9% today);
 * - activation recomputation: the rows the planner puts over memory ran
 *   without it: with full recomputation each would be predicted more than
 *   RECOMPUTE_SLOW below its measurement (15-19% today);
 * - memory: a TP 2 mix keeps less than the TP 1 mixes of the same length
 *   that ran at 196-248 TFLOP/s, so no memory limit applies to it alone;
 * - placement: every TP and Ulysses group of the table lies inside a node (a
 *   TP 2 group on one PCIe switch), and the ring of a TP 2 mix leaves a node
 *   through each NIC it uses with as many flows as the TP 4 and TP 8 mixes'.
 *
 * None of these is a fit: the rows stay held out, predicted as every other
 * row (test_published.c bounds the tables' errors). */
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
#include "usp/published.h"
#include "usp/sim.h"
#include "plan_internal.h" /* plan_group_member: the planner's placement */

/* Plain TP against TP-sp on a TP 2 row: the same bytes on the wire (an
 * all-reduce is a reduce-scatter and an all-gather), the norms and their
 * activations on every TP rank; the planner moves the rows by 0.1-0.9% today,
 * bounded at 2% so that the note ("too small to matter") stays true. */
#define PLAIN_TP_MOVE 0.02
/* The rows put over memory, with full recomputation: predicted 14.8-19.1%
 * below their measurement today; 12% leaves room for the model to move while
 * the conclusion (these throughputs are out of recomputation's reach) holds. */
#define RECOMPUTE_SLOW 0.12
/* The rows the planner puts over memory today (test_published.c,
 * paper_memory_statements: 80K ulysses x ring 8 x 2, 4 x 4, 2 x 8; 208K tp 8 x
 * ring 2; 190K tp 4 x ring 4). */
#define FLAGGED_ROWS 5

static const char *const A800_TABLES[] = {"usp-paper-a800x16-llama3-8b", "usp-paper-a800x16-llama3-8b-long",
                                          "usp-paper-a800x8-llama2-7b"};
#define NA800 ((int)(sizeof A800_TABLES / sizeof A800_TABLES[0]))

static int is_a800(const usp_pub_table *t) {
    for (int i = 0; i < NA800; i++)
        if (!strcmp(t->name, A800_TABLES[i])) return 1;
    return 0;
}

static usp_pub_table *read_tables(int *n) {
    usp_pub_table *tables;
    assert_int_equal(usp_pub_tables_read(USP_PUBLISHED_DIR, &tables, n), USP_OK);
    return tables;
}

static usp_pub_table *find(usp_pub_table *tables, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(tables[i].name, name)) return &tables[i];
    fail_msg("no table %s in %s", name, USP_PUBLISHED_DIR);
    return NULL;
}

static void plain_tp_does_not_explain_tp2(void **state) {
    (void)state;
    int n;
    usp_pub_table *tables = read_tables(&n);
    usp_pub_table *t = find(tables, n, "usp-paper-a800x16-llama3-8b");
    assert_true(t->base_mix.tp_sp); /* "We always employ Sequence Parallelism for Tensor Parallelism" */
    assert_int_equal(usp_pub_predict(t, NULL, NULL, NULL), USP_OK);
    double *sp = calloc((size_t)t->nrows, sizeof *sp);
    assert_non_null(sp);
    for (int r = 0; r < t->nrows; r++) {
        sp[r] = t->rows[r].predicted;
        t->rows[r].mix.tp_sp = 0;
    }
    assert_int_equal(usp_pub_predict(t, NULL, NULL, NULL), USP_OK);
    int tp2 = 0;
    for (int r = 0; r < t->nrows; r++) {
        const usp_pub_row *row = &t->rows[r];
        if (row->mix.tp != 2) continue;
        tp2++;
        double move = row->predicted / sp[r] - 1;
        print_message("%-28s TP-sp %.1f, plain TP %.1f TFLOP/s (%+.2f%%), measured %.1f\n", row->label, sp[r],
                      row->predicted, 100 * move, row->measured);
        if (fabs(move) > PLAIN_TP_MOVE) fail_msg("%s: plain TP moves the prediction by %+.1f%%", row->label, 100 * move);
    }
    assert_int_equal(tp2, 7); /* 64K and 80K: u4 r2, u2 r4, u1 r8; 120K: u4 r2 */
    free(sp);
    usp_pub_tables_free(tables, n);
}

static void over_memory_rows_ran_without_recomputation(void **state) {
    (void)state;
    int n, flagged = 0;
    usp_pub_table *tables = read_tables(&n);
    for (int i = 0; i < n; i++) {
        usp_pub_table *t = &tables[i];
        if (!is_a800(t)) continue;
        assert_false(t->base_mix.recompute);
        assert_int_equal(usp_pub_predict(t, NULL, NULL, NULL), USP_OK);
        int *oom = calloc((size_t)t->nrows, sizeof *oom);
        assert_non_null(oom);
        for (int r = 0; r < t->nrows; r++) {
            oom[r] = t->rows[r].oom;
            t->rows[r].mix.recompute = 1;
        }
        assert_int_equal(usp_pub_predict(t, NULL, NULL, NULL), USP_OK);
        for (int r = 0; r < t->nrows; r++) {
            const usp_pub_row *row = &t->rows[r];
            if (!oom[r]) continue;
            flagged++;
            print_message("%-28s over memory; with recomputation %.1f TFLOP/s (%+.1f%%), measured %.1f\n", row->label,
                          row->predicted, row->error_pct, row->measured);
            if (!(row->predicted < (1 - RECOMPUTE_SLOW) * row->measured))
                fail_msg("%s: with recomputation predicted %.1f, within %.0f%% of the measured %.1f", row->label,
                         row->predicted, 100 * RECOMPUTE_SLOW, row->measured);
        }
        free(oom);
    }
    assert_int_equal(flagged, FLAGGED_ROWS);
    usp_pub_tables_free(tables, n);
}

static void tp2_keeps_less_memory_than_tp1(void **state) {
    (void)state;
    int n;
    usp_pub_table *tables = read_tables(&n);
    const usp_pub_table *t = find(tables, n, "usp-paper-a800x16-llama3-8b");
    int pairs = 0;
    for (int a = 0; a < t->nrows; a++) {
        const usp_pub_row *two = &t->rows[a];
        if (two->mix.tp != 2) continue;
        usp_workload w = t->work;
        w.seq = two->seq, w.global_batch = two->global_batch, w.micro_batch = two->micro_batch;
        usp_memory m2;
        usp_memory_closed_form(&w, &two->mix, &m2);
        for (int b = 0; b < t->nrows; b++) {
            const usp_pub_row *one = &t->rows[b];
            if (one->mix.tp != 1 || one->seq != two->seq || one->global_batch != two->global_batch) continue;
            usp_memory m1;
            usp_memory_closed_form(&w, &one->mix, &m1);
            pairs++;
            if (!(m2.total < m1.total))
                fail_msg("%s keeps %.1f GB, %s (which ran faster) %.1f GB", two->label, m2.total / 1e9, one->label,
                         m1.total / 1e9);
        }
    }
    assert_int_equal(pairs, 2 * 3 * 4); /* 64K and 80K: 3 TP 2 rows x 4 TP 1 rows; no TP 1 row at 120K */
    usp_pub_tables_free(tables, n);
}

/* a800-2n (sim/network/platform.c, nvswitch_node): 8 GPUs a node, 2 GPUs on
 * each PCIe switch, NIC i under switch i (4 NICs), shared by its 2 GPUs. */
#define GPUS_PER_NODE 8
#define GPUS_PER_SWITCH 2

/* The most flows of one ring step that leave a node through one NIC. */
static int ring_flows_per_nic(const usp_mix *x) {
    int world = x->dp * x->tp * x->ulysses * x->ring, most = 0;
    int flows[64] = {0}; /* per (node, NIC) */
    for (int g = 0; g < world; g++) {
        int d, r, u, tp;
        plan_coords_of(x, g, &d, &r, &u, &tp);
        int next = plan_group_member(x, PLAN_GROUP_RING, g, (r + 1) % plan_group_size(x, PLAN_GROUP_RING));
        if (next / GPUS_PER_NODE == g / GPUS_PER_NODE) continue;
        int nic = g / GPUS_PER_NODE * (GPUS_PER_NODE / GPUS_PER_SWITCH) + g % GPUS_PER_NODE / GPUS_PER_SWITCH;
        assert_true(nic < 64);
        if (++flows[nic] > most) most = flows[nic];
    }
    return most;
}

static void tp2_placed_as_the_others(void **state) {
    (void)state;
    int n;
    usp_pub_table *tables = read_tables(&n);
    const usp_pub_table *t = find(tables, n, "usp-paper-a800x16-llama3-8b");
    int tp2_most = 0, tp48_least = 1 << 30;
    for (int r = 0; r < t->nrows; r++) {
        const usp_mix *x = &t->rows[r].mix;
        int world = x->dp * x->tp * x->ulysses * x->ring;
        assert_int_equal(world, t->gpus);
        for (int g = 0; g < world; g++) {
            for (int k = 0; k < x->tp; k++) { /* TP inside a node; TP 2 on one PCIe switch */
                int m = plan_group_member(x, PLAN_GROUP_TP, g, k);
                assert_int_equal(m / GPUS_PER_NODE, g / GPUS_PER_NODE);
                if (x->tp == 2) assert_int_equal(m / GPUS_PER_SWITCH, g / GPUS_PER_SWITCH);
            }
            for (int k = 0; k < x->ulysses; k++) /* Ulysses inside a node */
                assert_int_equal(plan_group_member(x, PLAN_GROUP_ULYSSES, g, k) / GPUS_PER_NODE, g / GPUS_PER_NODE);
        }
        if (x->ring < 2) continue;
        int f = ring_flows_per_nic(x);
        if (x->tp == 2 && f > tp2_most) tp2_most = f;
        if (x->tp >= 4 && f < tp48_least) tp48_least = f;
    }
    print_message("ring flows per NIC: TP 2 rows at most %d, TP 4 and 8 rows at least %d\n", tp2_most, tp48_least);
    assert_true(tp2_most > 0 && tp2_most <= tp48_least);
    usp_pub_tables_free(tables, n);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_tp_does_not_explain_tp2),
        cmocka_unit_test(over_memory_rows_ran_without_recomputation),
        cmocka_unit_test(tp2_keeps_less_memory_than_tp1),
        cmocka_unit_test(tp2_placed_as_the_others),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
