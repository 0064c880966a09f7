/* test_trace_tools.c: step-by-step trace comparison and the SVG timeline. */
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

#include "usp/schedule.h"
#include "usp/trace.h"
#include "usp/trace_read.h"
#include "usp/trace_tools.h"
#include "test_util.h"

/* Traces are written and read back in microseconds with "%.3f", so sums of
 * a few hundred such numbers agree to well under this. */
#define TIME_TOLERANCE_US 1e-6

static int make_tmp_dir(void **state) {
    (void)state;
    return tmp_dir_make("usp_test_trace_tools");
}

/* ---------- traces from a real schedule, with made-up times ---------- */

static usp_config tiny_config(int ulysses, int ring) {
    usp_config c = usp_config_default();
    c.seq = 64;
    c.heads = 4;
    c.kv_heads = 4;
    c.head_dim = 8;
    c.ulysses = ulysses;
    c.ring = ring;
    return c;
}

/* Duration of a step: depends on its kind, so totals by kind are known. */
static double made_up_duration(const usp_step *s, int index) {
    return 1.0 + 2.0 * (double)s->kind + 0.125 * (index % 4);
}

/* One trace event per step of every rank, laid end to end per rank; ranks
 * are added in reverse when `reversed`, to check that order does not matter. */
static void build_trace(usp_trace *t, const usp_schedule *s, int reversed) {
    usp_trace_init(t, "ref", &s->cfg);
    for (int n = 0; n < s->world; n++) {
        int r = reversed ? s->world - 1 - n : n;
        const usp_rank_schedule *rs = &s->ranks[r];
        double clock = 0.5 * r;
        for (int i = 0; i < rs->nsteps; i++) {
            double dur = made_up_duration(usp_rank_step(rs, i), i);
            if (usp_trace_add(t, r, i, usp_rank_step(rs, i), clock, dur) != USP_OK)
                fail_msg("%s", usp_error());
            clock += dur;
        }
    }
}

static void build_schedule(usp_schedule *s, int ulysses, int ring, int backward) {
    usp_config c = tiny_config(ulysses, ring);
    if (usp_schedule_build(&c, backward, s) != USP_OK) fail_msg("%s", usp_error());
}

/* Writes the trace of a tiny schedule to `name` and reads it back. */
static void trace_file(usp_trace *back, const char *name, int ulysses, int ring, int backward) {
    usp_schedule s;
    usp_trace t;
    build_schedule(&s, ulysses, ring, backward);
    build_trace(&t, &s, 0);
    assert_int_equal(usp_trace_write(&t, tmp_path(name)), USP_OK);
    if (usp_trace_read(tmp_path(name), back) != USP_OK) fail_msg("%s", usp_error());
    usp_trace_free(&t);
    usp_schedule_free(&s);
}

static usp_trace_event *find_event(usp_trace *t, int rank, int step) {
    for (long i = 0; i < t->count; i++)
        if (t->events[i].rank == rank && t->events[i].step == step) return &t->events[i];
    fail_msg("no event for rank %d step %d", rank, step);
    return NULL;
}

static double latest_end(const usp_trace *t) {
    double end = 0;
    for (long i = 0; i < t->count; i++)
        end = fmax(end, t->events[i].start_us + t->events[i].dur_us);
    return end;
}

/* ---------- diff ---------- */

static void diff_with_itself_is_zero(void **state) {
    (void)state;
    usp_trace t;
    usp_trace_diff d;
    trace_file(&t, "self.json", 2, 2, 1);
    if (usp_trace_diff_compute(&t, &t, &d) != USP_OK) fail_msg("%s", usp_error());
    assert_int_equal(d.count, t.count);
    assert_int_equal(d.ranks, 4);
    assert_true(d.by_step_index);
    for (long i = 0; i < d.count; i++) assert_true(d.matches[i].dur_a_us == d.matches[i].dur_b_us);
    for (int i = 0; i < d.ntotals; i++) assert_true(d.totals[i].a_us == d.totals[i].b_us);
    assert_true(d.makespan_a_us == d.makespan_b_us);
    assert_true(fabs(d.makespan_a_us - latest_end(&t)) < TIME_TOLERANCE_US);
    assert_true(usp_trace_rel_pct(d.makespan_a_us, d.makespan_b_us) == 0);
    assert_string_equal(d.executor_a, "ref");
    usp_trace_diff_free(&d);
    usp_trace_free(&t);
}

static void longer_step_is_found_first(void **state) {
    (void)state;
    usp_trace a, b;
    usp_trace_diff d;
    trace_file(&a, "a.json", 2, 2, 1);
    trace_file(&b, "b.json", 2, 2, 1);
    usp_trace_event *slow = find_event(&b, 2, 9);
    slow->dur_us += 40.0;
    /* a smaller change elsewhere must rank second */
    find_event(&b, 1, 3)->dur_us -= 5.0;
    if (usp_trace_diff_compute(&a, &b, &d) != USP_OK) fail_msg("%s", usp_error());
    assert_int_equal(d.matches[0].rank, 2);
    assert_int_equal(d.matches[0].step, 9);
    assert_string_equal(d.matches[0].name, slow->name);
    assert_true(fabs(d.matches[0].dur_b_us - d.matches[0].dur_a_us - 40.0) < TIME_TOLERANCE_US);
    assert_int_equal(d.matches[1].rank, 1);
    assert_int_equal(d.matches[1].step, 3);
    assert_true(d.matches[2].dur_a_us == d.matches[2].dur_b_us);
    usp_trace_diff_free(&d);
    usp_trace_free(&a);
    usp_trace_free(&b);
}

static void totals_by_kind_and_stream(void **state) {
    (void)state;
    usp_trace a, b;
    usp_trace_diff d;
    trace_file(&a, "a.json", 2, 2, 1);
    trace_file(&b, "b.json", 2, 2, 1);
    for (long i = 0; i < b.count; i++) b.events[i].dur_us *= 2;
    double expected[USP_STEP_KIND_COUNT][2] = {{0}};
    long steps[USP_STEP_KIND_COUNT][2] = {{0}};
    for (long i = 0; i < a.count; i++) {
        expected[a.events[i].kind][a.events[i].stream] += a.events[i].dur_us;
        steps[a.events[i].kind][a.events[i].stream]++;
    }
    if (usp_trace_diff_compute(&a, &b, &d) != USP_OK) fail_msg("%s", usp_error());
    long counted = 0;
    for (int i = 0; i < d.ntotals; i++) {
        const usp_trace_total *t = &d.totals[i];
        assert_int_equal(t->steps, steps[t->kind][t->stream]);
        assert_true(fabs(t->a_us - expected[t->kind][t->stream]) < TIME_TOLERANCE_US);
        assert_true(fabs(t->b_us - 2 * t->a_us) < TIME_TOLERANCE_US);
        assert_true(fabs(usp_trace_rel_pct(t->a_us, t->b_us) - 100.0) < 1e-9);
        if (i > 0) assert_true(t->kind > d.totals[i - 1].kind ||
                               (t->kind == d.totals[i - 1].kind && t->stream > d.totals[i - 1].stream));
        counted += t->steps;
    }
    assert_int_equal(counted, a.count);
    /* every kind of this schedule is there, attention and all-to-all among them */
    assert_true(steps[USP_STEP_ATTN_FWD][USP_STREAM_COMPUTE] > 0);
    assert_true(steps[USP_STEP_ALL_TO_ALL][USP_STREAM_COMM] > 0);
    usp_trace_diff_free(&d);
    usp_trace_free(&a);
    usp_trace_free(&b);
}

static void expect_refusal(const usp_trace *a, const usp_trace *b, const char *reason) {
    usp_trace_diff d;
    assert_int_equal(usp_trace_diff_compute(a, b, &d), USP_EINVAL);
    if (!strstr(usp_error(), reason)) fail_msg("'%s' lacks '%s'", usp_error(), reason);
    assert_null(d.matches);
}

static void refuses_different_schedules(void **state) {
    (void)state;
    usp_trace four, eight, renamed, forward_only, empty;
    trace_file(&four, "four.json", 2, 2, 1);
    trace_file(&eight, "eight.json", 2, 4, 1);
    trace_file(&renamed, "renamed.json", 2, 2, 1);
    trace_file(&forward_only, "fwd.json", 2, 2, 0);
    snprintf(find_event(&renamed, 3, 4)->name, sizeof renamed.events[0].name, "other.step");
    usp_trace_init(&empty, "ref", NULL);
    expect_refusal(&four, &eight, "different schedules: A has 4 ranks, B has 8");
    expect_refusal(&four, &renamed, "different schedules: rank 3 step 4 is");
    expect_refusal(&four, &forward_only, "is in A only");
    expect_refusal(&forward_only, &four, "is in B only");
    expect_refusal(&four, &empty, "empty trace");
    usp_trace_free(&four);
    usp_trace_free(&eight);
    usp_trace_free(&renamed);
    usp_trace_free(&forward_only);
}

/* Without usable step indices, steps pair by rank, name and occurrence. */
static void matches_by_name_without_step_indices(void **state) {
    (void)state;
    usp_trace a, b;
    usp_trace_diff d;
    trace_file(&a, "a.json", 2, 2, 1);
    trace_file(&b, "b.json", 2, 2, 1);
    for (long i = 0; i < b.count; i++) b.events[i].step = 0;
    find_event(&a, 0, 12)->dur_us += 7.0;
    const char *name = find_event(&a, 0, 12)->name;
    if (usp_trace_diff_compute(&a, &b, &d) != USP_OK) fail_msg("%s", usp_error());
    assert_false(d.by_step_index);
    assert_int_equal(d.count, a.count);
    assert_int_equal(d.matches[0].rank, 0);
    assert_string_equal(d.matches[0].name, name);
    assert_true(fabs(d.matches[0].dur_a_us - d.matches[0].dur_b_us - 7.0) < TIME_TOLERANCE_US);
    assert_true(d.matches[1].dur_a_us == d.matches[1].dur_b_us);
    usp_trace_diff_free(&d);
    usp_trace_free(&a);
    usp_trace_free(&b);
}

static void relative_difference(void **state) {
    (void)state;
    assert_true(usp_trace_rel_pct(0, 0) == 0);
    assert_true(isnan(usp_trace_rel_pct(0, 1)));
    assert_true(fabs(usp_trace_rel_pct(4, 5) - 25.0) < 1e-12);
    assert_true(fabs(usp_trace_rel_pct(4, 3) + 25.0) < 1e-12);
}

static char *printed_json(const usp_trace_diff *d) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    usp_trace_diff_print_json(d, "a.json", "b.json", 3, f);
    fclose(f);
    return text;
}

static void json_report_has_every_part(void **state) {
    (void)state;
    usp_trace a;
    usp_trace_diff d;
    trace_file(&a, "a.json", 2, 2, 1);
    assert_int_equal(usp_trace_diff_compute(&a, &a, &d), USP_OK);
    char *text = printed_json(&d);
    const char *parts[] = {"\"a\": {\"file\": \"a.json\", \"executor\": \"ref\"",
                           "\"matched_by\": \"step\"", "\"ranks\": 4", "\"makespan_diff_pct\": 0",
                           "\"top\": [", "\"totals\": [", "\"kind\": \"attn_fwd\""};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if (!strstr(text, parts[i])) fail_msg("JSON lacks '%s':\n%s", parts[i], text);
    free(text);
    usp_trace_diff_free(&d);
    usp_trace_free(&a);
}

/* ---------- SVG ---------- */

static char *svg_text(const usp_trace *a, const usp_trace *b, const char *title) {
    usp_trace_svg_input inputs[2] = {{a, "a.json"}, {b, "b.json"}};
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    if (usp_trace_svg_write(inputs, b ? 2 : 1, title, f) != USP_OK) fail_msg("%s", usp_error());
    fclose(f);
    return text;
}

static long occurrences(const char *text, const char *what) {
    long n = 0;
    for (const char *p = strstr(text, what); p; p = strstr(p + 1, what)) n++;
    return n;
}

/* Every element opened is closed, in order; CDATA is skipped. */
static void assert_balanced(const char *text) {
    char stack[64][16];
    int depth = 0;
    for (const char *p = strchr(text, '<'); p; p = strchr(p, '<')) {
        if (!strncmp(p, "<![CDATA[", 9)) {
            p = strstr(p, "]]>");
            assert_non_null(p);
            continue;
        }
        const char *end = strchr(p, '>');
        assert_non_null(end);
        int closing = p[1] == '/';
        const char *name = p + 1 + closing;
        size_t len = strcspn(name, " />");
        assert_true(len > 0 && len < sizeof stack[0]);
        if (closing) {
            assert_true(depth > 0);
            depth--;
            if (strlen(stack[depth]) != len || strncmp(stack[depth], name, len))
                fail_msg("</%.*s> closes <%s>", (int)len, name, stack[depth]);
        } else if (end[-1] != '/') {
            assert_true(depth < 64);
            snprintf(stack[depth++], sizeof stack[0], "%.*s", (int)len, name);
        }
        p = end;
    }
    assert_int_equal(depth, 0);
}

static int kinds_in(const usp_trace *t) {
    int present[USP_STEP_KIND_COUNT] = {0}, n = 0;
    for (long i = 0; i < t->count; i++) present[t->events[i].kind] = 1;
    for (int k = 0; k < USP_STEP_KIND_COUNT; k++) n += present[k];
    return n;
}

static void svg_is_well_formed(void **state) {
    (void)state;
    usp_trace t;
    trace_file(&t, "t.json", 2, 2, 1);
    char *text = svg_text(&t, NULL, "a <title> & more");
    assert_int_equal(strncmp(text, "<svg ", 5), 0);
    assert_non_null(strstr(text, "version=\"1.1\""));
    assert_balanced(text);
    /* one per step, one per lane (4 ranks x 2 streams), one per legend entry */
    assert_int_equal(occurrences(text, "<rect"), t.count + 4 * 2 + kinds_in(&t));
    assert_non_null(strstr(text, "a &lt;title&gt; &amp; more"));
    assert_non_null(strstr(text, " ms</text>"));
    assert_non_null(strstr(text, "rank 3 comm"));
    assert_non_null(strstr(text, "ref  a.json"));
    assert_null(strstr(text, "showing the first"));
    free(text);
    usp_trace_free(&t);
}

static void svg_of_two_traces_stacks_them(void **state) {
    (void)state;
    usp_trace a, b;
    trace_file(&a, "a.json", 2, 2, 1);
    trace_file(&b, "b.json", 2, 1, 1);
    char *text = svg_text(&a, &b, NULL);
    assert_balanced(text);
    int kinds = kinds_in(&a) > kinds_in(&b) ? kinds_in(&a) : kinds_in(&b);
    assert_int_equal(occurrences(text, "<rect"), a.count + b.count + (4 + 2) * 2 + kinds);
    const char *head_a = strstr(text, "A: ref  a.json"), *head_b = strstr(text, "B: ref  b.json");
    assert_non_null(head_a);
    assert_non_null(head_b);
    assert_true(head_a < head_b);
    free(text);
    usp_trace_free(&a);
    usp_trace_free(&b);
}

static void svg_is_deterministic(void **state) {
    (void)state;
    usp_schedule s;
    usp_trace ordered, reversed;
    build_schedule(&s, 2, 2, 1);
    build_trace(&ordered, &s, 0);
    build_trace(&reversed, &s, 1);
    char *first = svg_text(&ordered, NULL, "t"), *again = svg_text(&ordered, NULL, "t");
    char *other_order = svg_text(&reversed, NULL, "t");
    assert_string_equal(first, again);
    assert_string_equal(first, other_order);
    free(first), free(again), free(other_order);
    usp_trace_free(&ordered);
    usp_trace_free(&reversed);
    usp_schedule_free(&s);
}

/* 70 ranks of one step each: the first 64 are drawn, and the picture says so. */
static void svg_shows_at_most_64_ranks(void **state) {
    (void)state;
    usp_schedule s;
    usp_trace t;
    build_schedule(&s, 2, 2, 0);
    usp_trace_init(&t, "sim", &s.cfg);
    for (int r = 0; r < 70; r++)
        assert_int_equal(usp_trace_add(&t, r, 0, usp_rank_step(&s.ranks[0], 0), r, 2.0), USP_OK);
    char *text = svg_text(&t, NULL, NULL);
    assert_balanced(text);
    assert_non_null(strstr(text, "showing the first 64 of 70 ranks"));
    assert_int_equal(occurrences(text, "<rect"), 64 + 64 * 2 + 1);
    assert_non_null(strstr(text, "rank 63 comm"));
    assert_null(strstr(text, "rank 64 "));
    free(text);
    usp_trace_free(&t);
    usp_schedule_free(&s);
}

static void svg_refuses_empty_traces(void **state) {
    (void)state;
    usp_trace empty;
    usp_trace_init(&empty, "ref", NULL);
    usp_trace_svg_input input = {&empty, "e.json"};
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_int_equal(usp_trace_svg_write(&input, 1, NULL, f), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "e.json has no steps (empty trace)"));
    fclose(f);
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(diff_with_itself_is_zero),
        cmocka_unit_test(longer_step_is_found_first),
        cmocka_unit_test(totals_by_kind_and_stream),
        cmocka_unit_test(refuses_different_schedules),
        cmocka_unit_test(matches_by_name_without_step_indices),
        cmocka_unit_test(relative_difference),
        cmocka_unit_test(json_report_has_every_part),
        cmocka_unit_test(svg_is_well_formed),
        cmocka_unit_test(svg_of_two_traces_stacks_them),
        cmocka_unit_test(svg_is_deterministic),
        cmocka_unit_test(svg_shows_at_most_64_ranks),
        cmocka_unit_test(svg_refuses_empty_traces),
    };
    return cmocka_run_group_tests(tests, make_tmp_dir, remove_tmp_dir);
}
