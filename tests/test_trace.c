/* test_trace.c: the Chrome trace writer and reader, and the JSON parser under them. */
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

#include "usp/json.h"
#include "usp/trace.h"
#include "usp/trace_read.h"
#include "test_util.h"

static int make_tmp_dir(void **state) {
    (void)state;
    return tmp_dir_make("usp_test_trace");
}

/* ---------- traces ---------- */

static usp_step make_step(usp_step_kind kind, usp_stream stream, const char *name,
                          double bytes, double flops) {
    usp_step s;
    memset(&s, 0, sizeof s);
    s.kind = kind;
    s.stream = stream;
    s.bytes_sent = stream == USP_STREAM_COMM ? bytes : 0;
    s.bytes_mem = stream == USP_STREAM_COMPUTE ? bytes : 0;
    s.flops = flops;
    snprintf(s.name, sizeof s.name, "%s", name);
    return s;
}

/* Twelve events over three ranks and both streams, added out of order
 * (rank 2 first, later steps before earlier ones) when `shuffled`. */
static void build_trace(usp_trace *t, int shuffled) {
    usp_config c = usp_config_default();
    usp_trace_init(t, "sim", &c);
    for (int n = 0; n < 12; n++) {
        int i = shuffled ? (n * 5) % 12 : n;
        int rank = i / 4, step = i % 4;
        usp_step s = step % 2 == 0
            ? make_step(USP_STEP_ALL_TO_ALL, USP_STREAM_COMM, "fwd.a2a.q", 1048576.0 * (rank + 1), 0)
            : make_step(USP_STEP_ATTN_FWD, USP_STREAM_COMPUTE, "fwd.ring0.attn", 0,
                        0.1 + 3.5e12 * step);
        double start = 0.125 * step + 2.5 * rank;
        if (usp_trace_add(t, rank, step, &s, start, 10.25 + step) != USP_OK)
            fail_msg("%s", usp_error());
    }
}

static void assert_same_event(const usp_trace_event *a, const usp_trace_event *b) {
    assert_int_equal(a->rank, b->rank);
    assert_int_equal(a->step, b->step);
    assert_int_equal(a->stream, b->stream);
    assert_int_equal(a->kind, b->kind);
    assert_true(a->start_us == b->start_us);
    assert_true(a->dur_us == b->dur_us);
    assert_true(a->bytes == b->bytes);
    assert_true(a->flops == b->flops);
    assert_string_equal(a->name, b->name);
}

static void written_trace_reads_back_equal(void **state) {
    (void)state;
    usp_trace t, back;
    build_trace(&t, 0);
    assert_int_equal(usp_trace_write(&t, tmp_path("t.json")), USP_OK);
    if (usp_trace_read(tmp_path("t.json"), &back) != USP_OK) fail_msg("%s", usp_error());
    assert_int_equal(back.count, t.count);
    /* built in (rank, start, step) order already, so file order is insertion order */
    for (long i = 0; i < t.count; i++) assert_same_event(&back.events[i], &t.events[i]);
    assert_string_equal(back.executor, "sim");
    assert_string_equal(back.config, t.config);
    assert_true(strlen(t.config) > 0);
    usp_trace_free(&t);
    usp_trace_free(&back);
    assert_null(back.events);
}

static void output_is_deterministic(void **state) {
    (void)state;
    usp_trace ordered, shuffled, back;
    build_trace(&ordered, 0);
    build_trace(&shuffled, 1);
    assert_int_equal(usp_trace_write(&ordered, tmp_path("a.json")), USP_OK);
    assert_int_equal(usp_trace_write(&shuffled, tmp_path("b.json")), USP_OK);
    assert_int_equal(usp_trace_read(tmp_path("b.json"), &back), USP_OK);
    assert_int_equal(usp_trace_write(&back, tmp_path("c.json")), USP_OK);
    char *a = read_text(tmp_path("a.json")), *b = read_text(tmp_path("b.json"));
    char *c = read_text(tmp_path("c.json"));
    assert_string_equal(a, b);
    assert_string_equal(a, c);
    free(a), free(b), free(c);
    usp_trace_free(&ordered);
    usp_trace_free(&shuffled);
    usp_trace_free(&back);
}

/* A trace streamed rank by rank (steps of a rank in any order) has the
 * bytes of the same trace written at once; a rank out of order is refused. */
static void streams_the_same_bytes(void **state) {
    (void)state;
    usp_trace whole, streamed;
    build_trace(&whole, 1);
    assert_int_equal(usp_trace_write(&whole, tmp_path("whole.json")), USP_OK);
    usp_config c = usp_config_default();
    usp_trace_init(&streamed, "sim", &c);
    assert_int_equal(usp_trace_stream_to(&streamed, tmp_path("streamed.json")), USP_OK);
    for (int rank = 0; rank < 3; rank++)
        for (int k = 0; k < 4; k++) {
            int step = 3 - k; /* later steps first */
            usp_step s = step % 2 == 0
                ? make_step(USP_STEP_ALL_TO_ALL, USP_STREAM_COMM, "fwd.a2a.q", 1048576.0 * (rank + 1), 0)
                : make_step(USP_STEP_ATTN_FWD, USP_STREAM_COMPUTE, "fwd.ring0.attn", 0, 0.1 + 3.5e12 * step);
            assert_int_equal(usp_trace_add(&streamed, rank, step, &s, 0.125 * step + 2.5 * rank, 10.25 + step),
                             USP_OK);
        }
    assert_int_equal(streamed.count, 4); /* one rank's events held at a time */
    assert_int_equal(streamed.written, 8);
    assert_int_equal(usp_trace_finish(&streamed), USP_OK);
    char *a = read_text(tmp_path("whole.json")), *b = read_text(tmp_path("streamed.json"));
    assert_string_equal(a, b);
    free(a);
    free(b);
    usp_trace_free(&streamed);
    usp_trace_free(&whole);

    usp_trace_init(&streamed, "sim", &c);
    assert_int_equal(usp_trace_stream_to(&streamed, tmp_path("bad.json")), USP_OK);
    usp_step s = make_step(USP_STEP_ALL_TO_ALL, USP_STREAM_COMM, "fwd.a2a.q", 1, 0);
    assert_int_equal(usp_trace_add(&streamed, 1, 0, &s, 0, 1), USP_OK);
    assert_int_equal(usp_trace_add(&streamed, 2, 0, &s, 0, 1), USP_OK);
    assert_int_equal(usp_trace_add(&streamed, 1, 1, &s, 0, 1), USP_EINTERNAL);
    usp_trace_free(&streamed);
}

static void writes_chrome_trace_events(void **state) {
    (void)state;
    usp_trace t;
    build_trace(&t, 1);
    assert_int_equal(usp_trace_write(&t, tmp_path("fmt.json")), USP_OK);
    char *text = read_text(tmp_path("fmt.json"));
    const char *expected[] = {
        "{\"traceEvents\":[\n",
        "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":1,\"tid\":0,\"args\":{\"name\":\"rank 1\"}},\n",
        "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":2,\"tid\":1,\"args\":{\"name\":\"comm\"}},\n",
        "{\"name\":\"fwd.ring0.attn\",\"cat\":\"attn_fwd\",\"ph\":\"X\",\"pid\":1,\"tid\":0,"
        "\"ts\":2.875,\"dur\":13.250,\"args\":{\"step\":3,\"bytes\":0,\"flops\":10500000000000.1}},\n",
        "{\"name\":\"fwd.a2a.q\",\"cat\":\"all_to_all\",\"ph\":\"X\",\"pid\":2,\"tid\":1,"
        "\"ts\":5.250,\"dur\":12.250,\"args\":{\"step\":2,\"bytes\":3145728,\"flops\":0}},\n",
        "\"ts\":5.375,\"dur\":13.250,\"args\":{\"step\":3,\"bytes\":0,\"flops\":10500000000000.1}}\n],\n",
        "\"displayTimeUnit\":\"ms\",\n\"otherData\":{\"executor\":\"sim\",\"config\":\"",
    };
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++)
        if (!strstr(text, expected[i])) fail_msg("missing: %s", expected[i]);
    /* the whole file is valid JSON */
    usp_json *root;
    assert_int_equal(usp_json_parse(text, strlen(text), &root), USP_OK);
    usp_json_free(root);
    free(text);
    usp_trace_free(&t);
}

static void escapes_names(void **state) {
    (void)state;
    usp_trace t, back;
    usp_trace_init(&t, "gpu\"x", NULL);
    usp_step s = make_step(USP_STEP_MERGE, USP_STREAM_COMPUTE, "odd \"name\"\\\t\x01", 8, 0);
    assert_int_equal(usp_trace_add(&t, 0, 0, &s, 0, 1), USP_OK);
    assert_int_equal(usp_trace_write(&t, tmp_path("esc.json")), USP_OK);
    char *text = read_text(tmp_path("esc.json"));
    assert_non_null(strstr(text, "\"name\":\"odd \\\"name\\\"\\\\\\t\\u0001\""));
    free(text);
    assert_int_equal(usp_trace_read(tmp_path("esc.json"), &back), USP_OK);
    assert_string_equal(back.events[0].name, s.name);
    assert_string_equal(back.executor, "gpu\"x");
    usp_trace_free(&t);
    usp_trace_free(&back);
}

static void refuses_non_finite_times(void **state) {
    (void)state;
    usp_trace t;
    usp_trace_init(&t, "ref", NULL);
    usp_step s = make_step(USP_STEP_INIT, USP_STREAM_COMPUTE, "init", 0, 0);
    assert_int_equal(usp_trace_add(&t, 0, 0, &s, 0, NAN), USP_EINTERNAL);
    assert_int_equal(usp_trace_add(&t, 0, 0, &s, INFINITY, 1), USP_EINTERNAL);
    assert_int_equal(usp_trace_add(&t, 0, 0, &s, 0, -1), USP_EINTERNAL);
    assert_int_equal(t.count, 0);
    usp_trace_free(&t);
}

static void reads_foreign_chrome_traces(void **state) {
    (void)state;
    write_text(tmp_path("foreign.json"),
               "[\n"
               "  {\"name\": \"process_name\", \"ph\": \"M\", \"pid\": 3, \"args\": {\"name\": \"GPU 3\"}},\n"
               "  {\"name\": \"marker\", \"ph\": \"i\", \"ts\": 4, \"s\": \"g\"},\n"
               "  {\"name\": \"ring.send\", \"cat\": \"sendrecv\", \"ph\": \"X\", \"pid\": 3, \"tid\": 1,\n"
               "   \"ts\": 1.5e3, \"dur\": 20, \"id\": 7, \"args\": {\"step\": 9, \"stream\": \"nccl\"}}\n"
               "]\n");
    usp_trace t;
    if (usp_trace_read(tmp_path("foreign.json"), &t) != USP_OK) fail_msg("%s", usp_error());
    assert_int_equal(t.count, 1);
    assert_int_equal(t.events[0].rank, 3);
    assert_int_equal(t.events[0].stream, USP_STREAM_COMM);
    assert_int_equal(t.events[0].kind, USP_STEP_SENDRECV);
    assert_int_equal(t.events[0].step, 9);
    assert_true(t.events[0].start_us == 1500 && t.events[0].dur_us == 20);
    assert_true(t.events[0].bytes == 0 && t.events[0].flops == 0);
    assert_string_equal(t.executor, "");
    usp_trace_free(&t);
}

static void assert_trace_refused(const char *name, const char *text, const char *fragment) {
    write_text(tmp_path(name), text);
    usp_trace t;
    usp_status st = usp_trace_read(tmp_path(name), &t);
    if (st != USP_EINVAL || !strstr(usp_error(), fragment) || !strstr(usp_error(), name))
        fail_msg("%s: status %d, reason \"%s\", expected \"%s\"", name, st, usp_error(), fragment);
    assert_int_equal(t.count, 0);
    assert_null(t.events);
}

static void refuses_unusable_traces(void **state) {
    (void)state;
    const char *head = "{\"traceEvents\":[\n";
    char text[512];
    snprintf(text, sizeof text, "%s{\"name\":\"a\",\"cat\":\"merge\",\"ph\":\"X\",\"pid\":0,"
             "\"tid\":0,\"ts\":0,\"dur\":1}]}", head);
    assert_trace_refused("nostep.json", text, "no \"args\" object");
    snprintf(text, sizeof text, "%s{\"name\":\"a\",\"cat\":\"gemm\",\"ph\":\"X\",\"pid\":0,"
             "\"tid\":0,\"ts\":0,\"dur\":1,\"args\":{\"step\":0}}]}", head);
    assert_trace_refused("cat.json", text, "line 2: category 'gemm' is not a usp step kind");
    snprintf(text, sizeof text, "%s{\"name\":\"a\",\"cat\":\"merge\",\"ph\":\"X\",\"pid\":0,"
             "\"tid\":5,\"ts\":0,\"dur\":1,\"args\":{\"step\":0}}]}", head);
    assert_trace_refused("tid.json", text, "tid 5 is not a usp stream");
    snprintf(text, sizeof text, "%s{\"name\":\"a\",\"cat\":\"merge\",\"ph\":\"X\",\"pid\":0,"
             "\"tid\":0,\"ts\":\"0\",\"dur\":1,\"args\":{\"step\":0}}]}", head);
    assert_trace_refused("ts.json", text, "'ts' must be a number, found string");
    assert_trace_refused("events.json", "{\"events\":[]}", "no \"traceEvents\" array");
    assert_trace_refused("broken.json", "{\"traceEvents\":[\n{\"ph\":\"X\"\n", "line 3: expected");
    usp_trace t;
    assert_int_equal(usp_trace_read(tmp_path("absent.json"), &t), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "absent.json: No such file or directory"));
}

/* ---------- JSON ---------- */

static void parses_a_document(void **state) {
    (void)state;
    const char *text = "\xef\xbb\xbf{\n"
                       "  \"name\": \"h100\", \"tflops\": [1.5e2, -0.25, 0, 12],\n"
                       "  \"ok\": true, \"off\": false, \"none\": null,\n"
                       "  \"nested\": {\"a\": {\"b\": []}, \"e\": {}}\n"
                       "}\n";
    usp_json *root;
    if (usp_json_parse(text, strlen(text), &root) != USP_OK) fail_msg("%s", usp_error());
    assert_int_equal(root->type, USP_JSON_OBJECT);
    assert_int_equal(root->count, 6);
    const usp_json *tflops = usp_json_get(root, "tflops");
    assert_int_equal(tflops->type, USP_JSON_ARRAY);
    assert_int_equal(tflops->count, 4);
    assert_int_equal(tflops->line, 2);
    assert_true(tflops->items[0].number == 150 && tflops->items[1].number == -0.25);
    const char *name;
    int ok, off, n;
    double x;
    assert_int_equal(usp_json_get_string(root, "name", &name), USP_OK);
    assert_string_equal(name, "h100");
    assert_int_equal(usp_json_get_bool(root, "ok", &ok), USP_OK);
    assert_int_equal(usp_json_get_bool(root, "off", &off), USP_OK);
    assert_true(ok == 1 && off == 0);
    assert_int_equal(usp_json_get(root, "none")->type, USP_JSON_NULL);
    assert_int_equal(usp_json_get(usp_json_get(usp_json_get(root, "nested"), "a"), "b")->type,
                     USP_JSON_ARRAY);
    assert_null(usp_json_get(root, "missing"));
    assert_null(usp_json_get(tflops, "name"));
    assert_int_equal(usp_json_get_int(root, "tflops", &n), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "line 2: 'tflops' must be a number, found array"));
    assert_int_equal(usp_json_get_number(root, "gbps", &x), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "line 1: missing 'gbps'"));
    usp_json_free(root);
}

static void getters_check_integers(void **state) {
    (void)state;
    const char *text = "{\"a\": 2.5, \"b\": -7, \"c\": 1e10, \"d\": 4e0}";
    usp_json *root;
    int n;
    assert_int_equal(usp_json_parse(text, strlen(text), &root), USP_OK);
    assert_int_equal(usp_json_get_int(root, "a", &n), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "'a' must be an integer, found 2.5"));
    assert_int_equal(usp_json_get_int(root, "b", &n), USP_OK);
    assert_int_equal(n, -7);
    assert_int_equal(usp_json_get_int(root, "c", &n), USP_EINVAL);
    assert_int_equal(usp_json_get_int(root, "d", &n), USP_OK);
    assert_int_equal(n, 4);
    usp_json_free(root);
}

static void decodes_string_escapes(void **state) {
    (void)state;
    const char *text = "\"a\\n\\t\\\"\\\\\\/\\b\\f\\r\\u00e9\\u20AC\\ud83d\\ude00z\"";
    usp_json *root;
    if (usp_json_parse(text, strlen(text), &root) != USP_OK) fail_msg("%s", usp_error());
    assert_string_equal(root->string, "a\n\t\"\\/\b\f\r\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z");
    usp_json_free(root);
}

static void assert_json_refused(const char *text, const char *fragment) {
    usp_json *root = (usp_json *)1;
    usp_status st = usp_json_parse(text, strlen(text), &root);
    if (st != USP_EINVAL || !strstr(usp_error(), fragment))
        fail_msg("'%s': status %d, reason \"%s\", expected \"%s\"", text, st, usp_error(), fragment);
    assert_null(root);
}

static void reports_syntax_errors_with_lines(void **state) {
    (void)state;
    assert_json_refused("{\n  \"a\": 1\n  \"b\": 2\n}", "line 3: expected ',' or '}', found '\"'");
    assert_json_refused("[1,\n 2\n,]", "line 3: expected a value, found ']'");
    assert_json_refused("[1 2]", "line 1: expected ',' or ']'");
    assert_json_refused("{\"a\": 1,}", "expected a string key, found '}'");
    assert_json_refused("{'a': 1}", "expected a string key, found '''");
    assert_json_refused("{\"a\" 1}", "expected ':' after the key");
    assert_json_refused("{\"a\": 1, \"a\": 2}", "key 'a' given twice");
    assert_json_refused("", "line 1: expected a value, found end of input");
    assert_json_refused("\n\n", "line 3: expected a value, found end of input");
    assert_json_refused("{} x", "expected end of input after the JSON value, found 'x'");
    assert_json_refused("01", "found '1'");
    assert_json_refused("-", "invalid number");
    assert_json_refused("1.", "invalid number");
    assert_json_refused("1e+", "invalid number");
    assert_json_refused("1e999", "out of range");
    assert_json_refused("NaN", "expected a value, found 'N'");
    assert_json_refused("tru", "expected a value");
    assert_json_refused("\"abc", "unterminated string");
    assert_json_refused("\"ab\nc\"", "unterminated string (newline");
    assert_json_refused("\"a\tb\"", "control character 0x09");
    assert_json_refused("\"\\x\"", "invalid escape '\\x'");
    assert_json_refused("\"\\u12g4\"", "four hex digits");
    assert_json_refused("\"\\ud800\"", "high surrogate without its pair");
    assert_json_refused("\"\\udc00\"", "lone low surrogate");
    assert_json_refused("\"\\u0000\"", "\\u0000");
    char deep[600];
    memset(deep, '[', 300);
    memset(deep + 300, ']', 300);
    deep[600 - 1] = '\0';
    assert_json_refused(deep, "nesting deeper than 256");
}

static void accepts_nesting_up_to_the_limit(void **state) {
    (void)state;
    char text[2 * USP_JSON_MAX_DEPTH + 1];
    memset(text, '[', USP_JSON_MAX_DEPTH);
    memset(text + USP_JSON_MAX_DEPTH, ']', USP_JSON_MAX_DEPTH);
    text[2 * USP_JSON_MAX_DEPTH] = '\0';
    usp_json *root;
    assert_int_equal(usp_json_parse(text, strlen(text), &root), USP_OK);
    usp_json_free(root);
}

static char *written(void (*write)(FILE *, const void *), const void *arg) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    write(f, arg);
    fclose(f);
    return buf;
}

static void write_string_arg(FILE *f, const void *s) { usp_json_write_string(f, s); }
static void write_number_arg(FILE *f, const void *x) { usp_json_write_number(f, *(const double *)x); }

static void writes_strings_that_parse_back(void **state) {
    (void)state;
    char original[64];
    int n = 0;
    for (int c = 1; c < 32; c++) original[n++] = (char)c;
    memcpy(original + n, "\"\\/\xc3\xa9", 6);
    original[n + 6] = '\0';
    char *text = written(write_string_arg, original);
    usp_json *root;
    if (usp_json_parse(text, strlen(text), &root) != USP_OK) fail_msg("%s", usp_error());
    assert_string_equal(root->string, original);
    usp_json_free(root);
    free(text);
}

static void writes_numbers_shortest_and_exact(void **state) {
    (void)state;
    const double values[] = {0.1, 3, -0.0, 1e300, 1.0 / 3, 10500000000000.1, 5e-324, NAN};
    const char *texts[] = {"0.1", "3", "-0", "1e+300", "0.3333333333333333",
                           "10500000000000.1", "4.94065645841247e-324", "null"};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char *text = written(write_number_arg, &values[i]);
        assert_string_equal(text, texts[i]);
        free(text);
    }
}

static void parse_file_names_the_file(void **state) {
    (void)state;
    usp_json *root;
    write_text(tmp_path("bad.json"), "{\n\"a\": [1, 2}\n");
    assert_int_equal(usp_json_parse_file(tmp_path("bad.json"), &root), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "bad.json: line 2: expected ',' or ']', found '}'"));
    assert_int_equal(usp_json_parse_file(tmp_path("nothere.json"), &root), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "nothere.json: No such file or directory"));
    assert_int_equal(usp_json_parse_file(tmp_dir, &root), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "Is a directory"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(written_trace_reads_back_equal),
        cmocka_unit_test(output_is_deterministic),
        cmocka_unit_test(writes_chrome_trace_events),
        cmocka_unit_test(streams_the_same_bytes),
        cmocka_unit_test(escapes_names),
        cmocka_unit_test(refuses_non_finite_times),
        cmocka_unit_test(reads_foreign_chrome_traces),
        cmocka_unit_test(refuses_unusable_traces),
        cmocka_unit_test(parses_a_document),
        cmocka_unit_test(getters_check_integers),
        cmocka_unit_test(decodes_string_escapes),
        cmocka_unit_test(reports_syntax_errors_with_lines),
        cmocka_unit_test(accepts_nesting_up_to_the_limit),
        cmocka_unit_test(writes_strings_that_parse_back),
        cmocka_unit_test(writes_numbers_shortest_and_exact),
        cmocka_unit_test(parse_file_names_the_file),
    };
    return cmocka_run_group_tests(tests, make_tmp_dir, remove_tmp_dir);
}
