/* test_json.c: the JSON reader (core/json.c) against an independent parser
 * (jansson): the same documents accepted and refused, the same trees; and
 * its cost stays linear (an object of 200k keys, once quadratic). */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "usp/json.h"
#include "json_same_tree.h"

/* Both parsers on one document: agree on accepting it, and on its tree. */
static void agree(const char *text) {
    usp_json *u = NULL;
    usp_status st = usp_json_parse(text, strlen(text), &u);
    json_error_t err;
    json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);
    if ((st == USP_OK) != (j != NULL))
        fail_msg("'%s': usp %s, jansson %s", text, st == USP_OK ? "accepts" : usp_error(),
                 j ? "accepts" : err.text);
    if (u && !same_tree(u, j)) fail_msg("'%s': the trees differ", text);
    usp_json_free(u);
    json_decref(j);
}

static void agrees_with_jansson(void **state) {
    (void)state;
    static const char *docs[] = {
        /* accepted */
        "0", "-0", "1.5e-3", "-12.25E+2", "1e308", "4.9e-324", "12345678901234567",
        "true", "false", "null", "\"\"", "\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"", "\"\\u00e9\\u4e2d\"",
        "\"\\ud83d\\ude00\"", "\"caf\xc3\xa9\"", "[]", "{}", " [1, [2, [3, {}]]] ", "{\"a\": {\"b\": [true, null]}}",
        "{\"k1\": 1, \"k2\": 2, \"k3\": 3}", "[\"x\", 1, -1, 0.5, {\"y\": []}]", "\t\n\r [ \n1 ]",
        /* refused */
        "", " ", "[", "]", "{", "[1,]", "{\"a\":1,}", "[1 2]", "{\"a\" 1}", "{a: 1}", "01", "1.", ".5",
        "-", "+1", "1e", "1e+", "0x10", "NaN", "Infinity", "-Infinity", "tru", "nul", "True",
        "\"unterminated", "\"bad \\x escape\"", "\"\\u12\"", "\"\\ud800\"", "\"\\udc00\"",
        "\"tab\tinside\"", "\"line\nbreak\"", "[1] [2]", "{\"a\": 1} x", "1e400", "-1e400",
        "{\"a\": 1, \"a\": 2}", "\"\\u0000\"", "/* c */ 1", "[1] // c",
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) agree(docs[i]);
    /* where they differ on purpose: an integer beyond int64 is a double to
     * usp (every number is), too big to jansson */
    usp_json *u = NULL;
    assert_int_equal(usp_json_parse("123456789012345678901234567890", 30, &u), USP_OK);
    assert_true(u->number == 123456789012345678901234567890.0);
    usp_json_free(u);
}

/* An object of n keys "k0".."k{n-1}", with key `dup` repeated at the end when >= 0. */
static char *object_of(long n, long dup) {
    size_t cap = (size_t)n * 24 + 64, len = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    text[len++] = '{';
    for (long i = 0; i < n; i++) len += (size_t)snprintf(text + len, cap - len, "%s\"k%ld\": %ld", i ? ", " : "", i, i);
    if (dup >= 0) len += (size_t)snprintf(text + len, cap - len, ", \"k%ld\": 0", dup);
    snprintf(text + len, cap - len, "}");
    return text;
}

static double seconds_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* 200k keys: about 0.1 s in linear time; comparing each key with every
 * earlier one took 30 s for 80k. The bound leaves room for a loaded machine
 * and still fails a quadratic reader by two orders of magnitude. */
enum { MANY_KEYS = 200000 };
static const double MANY_KEYS_LIMIT_S = 10.0;

static void many_keys_in_linear_time(void **state) {
    (void)state;
    char *text = object_of(MANY_KEYS, -1);
    usp_json *root = NULL;
    double t0 = seconds_now();
    assert_int_equal(usp_json_parse(text, strlen(text), &root), USP_OK);
    double took = seconds_now() - t0;
    assert_int_equal(root->count, MANY_KEYS);
    assert_string_equal(root->keys[MANY_KEYS - 1], "k199999");
    if (took > MANY_KEYS_LIMIT_S) fail_msg("%d keys took %.1f s", MANY_KEYS, took);
    usp_json_free(root);
    free(text);
}

/* Duplicates are found in small objects (linear scan) and large ones (hash). */
static void duplicates_found_at_any_size(void **state) {
    (void)state;
    static const long sizes[] = {2, 15, 16, 17, 100, 5000};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        long n = sizes[s];
        long dups[] = {0, n / 2, n - 1};
        for (int d = 0; d < 3; d++) {
            char *text = object_of(n, dups[d]);
            usp_json *root = NULL;
            assert_int_equal(usp_json_parse(text, strlen(text), &root), USP_EINVAL);
            char want[64];
            snprintf(want, sizeof want, "key 'k%ld' given twice", dups[d]);
            if (!strstr(usp_error(), want)) fail_msg("%ld keys: '%s', expected '%s'", n, usp_error(), want);
            assert_null(root);
            free(text);
        }
        char *text = object_of(n, -1);
        usp_json *root = NULL;
        assert_int_equal(usp_json_parse(text, strlen(text), &root), USP_OK);
        assert_int_equal(root->count, (size_t)n);
        usp_json_free(root);
        free(text);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(agrees_with_jansson),
        cmocka_unit_test(many_keys_in_linear_time),
        cmocka_unit_test(duplicates_found_at_any_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
