/* test_npy.c: .npy reading and writing, and every refusal with its reason.
 *
 * Malformed files are written byte by byte into a fresh temporary directory,
 * so each case shows exactly what is wrong with it. */
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
#include <sys/stat.h>

#include "usp/npy.h"
#include "test_util.h"

static int make_tmp_dir(void **state) {
    (void)state;
    return tmp_dir_make("usp_test_npy");
}

static void write_bytes(const char *name, const void *bytes, size_t n) {
    FILE *f = fopen(tmp_path(name), "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* An .npy file with the given version, header text (used as is) and
 * `data_bytes` bytes of data (a repeating pattern). */
static void write_npy_raw(const char *name, int major, const char *header, size_t data_bytes) {
    size_t hlen = strlen(header);
    size_t prefix = major == 1 ? 10 : 12;
    size_t total = prefix + hlen + data_bytes;
    unsigned char *buf = malloc(total);
    assert_non_null(buf);
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)major;
    buf[7] = 0;
    for (size_t i = 0; i < prefix - 8; i++) buf[8 + i] = (unsigned char)(hlen >> (8 * i));
    memcpy(buf + prefix, header, hlen);
    for (size_t i = 0; i < data_bytes; i++) buf[prefix + hlen + i] = (unsigned char)(i * 7);
    write_bytes(name, buf, total);
    free(buf);
}

/* The header numpy would write for a dtype and shape text, newline included. */
static void header_for(char *buf, size_t n, const char *descr, const char *shape) {
    snprintf(buf, n, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }\n", descr, shape);
}

static void assert_refused(const char *name, const char *fragment) {
    usp_npy a;
    usp_status st = usp_npy_read(tmp_path(name), &a);
    if (st != USP_EINVAL || !strstr(usp_error(), fragment))
        fail_msg("%s: status %d, reason \"%s\", expected a reason with \"%s\"", name, st,
                 usp_error(), fragment);
    assert_null(a.data);
    /* the reason names the file */
    assert_non_null(strstr(usp_error(), name));
}

/* ---------- refusals ---------- */

static void refuses_empty_file(void **state) {
    (void)state;
    write_bytes("empty.npy", "", 0);
    assert_refused("empty.npy", "empty file");
}

static void refuses_bad_magic(void **state) {
    (void)state;
    write_bytes("magic.npy", "\x93NUMPX\x01\x00\x10\x00{}", 12);
    assert_refused("magic.npy", "bad magic");
    write_bytes("tiny.npy", "\x93NU", 3);
    assert_refused("tiny.npy", "bad magic");
    write_bytes("text.npy", "hello, this is not numpy", 24);
    assert_refused("text.npy", "bad magic");
}

static void refuses_unsupported_version(void **state) {
    (void)state;
    char header[128];
    header_for(header, sizeof header, "<f8", "(2,)");
    write_npy_raw("v4.npy", 4, header, 16);
    assert_refused("v4.npy", "unsupported .npy format version 4.0");
}

static void refuses_preamble_cut_short(void **state) {
    (void)state;
    write_bytes("pre.npy", "\x93NUMPY\x02\x00\x10", 9);
    assert_refused("pre.npy", "header not terminated");
}

static void refuses_header_longer_than_file(void **state) {
    (void)state;
    write_bytes("hlen.npy", "\x93NUMPY\x01\x00\xff\x00{'descr'", 17);
    assert_refused("hlen.npy", "header not terminated");
}

static void refuses_unterminated_dict(void **state) {
    (void)state;
    write_npy_raw("open.npy", 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,)   \n", 16);
    assert_refused("open.npy", "header not terminated");
    write_npy_raw("quote.npy", 1, "{'descr': '<f8", 0);
    assert_refused("quote.npy", "header not terminated: unclosed string");
    write_npy_raw("tuple.npy", 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,", 0);
    assert_refused("tuple.npy", "header not terminated");
}

static void refuses_missing_key(void **state) {
    (void)state;
    write_npy_raw("noshape.npy", 1, "{'descr': '<f8', 'fortran_order': False}\n", 8);
    assert_refused("noshape.npy", "missing key 'shape'");
    write_npy_raw("nodescr.npy", 1, "{'fortran_order': False, 'shape': (1,)}\n", 8);
    assert_refused("nodescr.npy", "missing key 'descr'");
}

static void refuses_unknown_and_repeated_keys(void **state) {
    (void)state;
    write_npy_raw("extra.npy", 1,
                  "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), 'x': 1}\n", 8);
    assert_refused("extra.npy", "unexpected key 'x'");
    write_npy_raw("twice.npy", 1,
                  "{'descr': '<f8', 'descr': '<f8', 'fortran_order': False, 'shape': (1,)}\n", 8);
    assert_refused("twice.npy", "key 'descr' given twice");
}

static void refuses_big_endian(void **state) {
    (void)state;
    char header[128];
    header_for(header, sizeof header, ">f8", "(2,)");
    write_npy_raw("big.npy", 1, header, 16);
    assert_refused("big.npy", "big-endian dtype '>f8' not supported");
}

static void refuses_other_dtypes(void **state) {
    (void)state;
    const char *dtypes[] = {"<i4", "<c16", "|O", "|b1", "<U8", "<f16", "<i8"};
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++) {
        char header[128], name[32], fragment[64];
        header_for(header, sizeof header, dtypes[i], "(2,)");
        snprintf(name, sizeof name, "dtype%zu.npy", i);
        write_npy_raw(name, 1, header, 16);
        snprintf(fragment, sizeof fragment, "dtype '%s' not supported", dtypes[i]);
        assert_refused(name, fragment);
    }
}

static void refuses_structured_dtype(void **state) {
    (void)state;
    write_npy_raw("rec.npy", 1,
                  "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (2,), }\n", 16);
    assert_refused("rec.npy", "structured dtype not supported");
}

static void refuses_fortran_order(void **state) {
    (void)state;
    write_npy_raw("fortran.npy", 1,
                  "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }\n", 48);
    assert_refused("fortran.npy", "fortran_order True not supported");
}

static void refuses_bad_shapes(void **state) {
    (void)state;
    char header[256];
    header_for(header, sizeof header, "<f8", "(-1, 3)");
    write_npy_raw("negative.npy", 1, header, 0);
    assert_refused("negative.npy", "negative dimension");
    header_for(header, sizeof header, "<f8", "[2, 3]");
    write_npy_raw("list.npy", 1, header, 48);
    assert_refused("list.npy", "expected '(' to open 'shape'");
    header_for(header, sizeof header, "<f8", "(2.5,)");
    write_npy_raw("float.npy", 1, header, 48);
    assert_refused("float.npy", "expected ',' or ')'");
    header_for(header, sizeof header, "<f8", "(99999999999999999999999,)");
    write_npy_raw("huge.npy", 1, header, 8);
    assert_refused("huge.npy", "too large");
}

static void refuses_more_than_eight_dims(void **state) {
    (void)state;
    char header[256];
    header_for(header, sizeof header, "<f8", "(1, 1, 1, 1, 1, 1, 1, 1, 1)");
    write_npy_raw("dims9.npy", 1, header, 8);
    assert_refused("dims9.npy", "more than 8 dimensions");
}

static void refuses_size_overflow(void **state) {
    (void)state;
    char header[256];
    header_for(header, sizeof header, "<f8", "(4294967296, 4294967296)");
    write_npy_raw("overflow.npy", 1, header, 8);
    assert_refused("overflow.npy", "size overflow");
}

static void refuses_truncated_data(void **state) {
    (void)state;
    char header[128];
    header_for(header, sizeof header, "<f8", "(2, 3)");
    write_npy_raw("short.npy", 1, header, 40);
    assert_refused("short.npy", "truncated");
    assert_non_null(strstr(usp_error(), "needs 48 data bytes but the file has 40"));
}

static void refuses_trailing_garbage(void **state) {
    (void)state;
    char header[128];
    header_for(header, sizeof header, "<f4", "(2, 3)");
    write_npy_raw("long.npy", 1, header, 24 + 5);
    assert_refused("long.npy", "trailing garbage: 5 bytes after the data");
}

static void refuses_directory_and_missing_file(void **state) {
    (void)state;
    assert_int_equal(mkdir(tmp_path("adir.npy"), 0700), 0);
    assert_refused("adir.npy", "Is a directory");
    assert_refused("absent.npy", "No such file or directory");
}

/* ---------- reading valid files ---------- */

static void reads_versions_and_header_variants(void **state) {
    (void)state;
    const double values[3] = {1.5, -2.25, 1e300};
    const char *headers[] = {
        "{\"shape\": (3,), \"fortran_order\": False, \"descr\": \"<f8\"}\n",
        "{ 'fortran_order' : False , 'descr' : '=f8' , 'shape' : ( 3 , ) , }      \n",
        "{'descr': '<f8', 'fortran_order': False, 'shape': (3L,)}",
    };
    for (int major = 1; major <= 3; major++) {
        for (size_t h = 0; h < sizeof headers / sizeof headers[0]; h++) {
            char name[32];
            snprintf(name, sizeof name, "ok_v%d_%zu.npy", major, h);
            write_npy_raw(name, major, headers[h], 0);
            FILE *f = fopen(tmp_path(name), "ab");
            assert_non_null(f);
            assert_int_equal(fwrite(values, sizeof values[0], 3, f), 3);
            fclose(f);
            usp_npy a;
            if (usp_npy_read(tmp_path(name), &a) != USP_OK) fail_msg("%s", usp_error());
            assert_int_equal(a.ndim, 1);
            assert_int_equal(a.shape[0], 3);
            assert_memory_equal(a.data, values, sizeof values);
            usp_npy_free(&a);
            assert_null(a.data);
        }
    }
}

static void reads_float16_written_by_hand(void **state) {
    (void)state;
    const uint16_t bits[] = {0x3c00, 0xc000, 0x0001, 0x03ff, 0x7bff, 0x7c00,
                             0xfc00, 0x8000, 0x3555, 0x0400, 0x7e00};
    const double expected[] = {1.0, -2.0, 0x1p-24, 0x3ffp-24, 65504.0, INFINITY,
                               -INFINITY, -0.0, 0x1.554p-2, 0x1p-14};
    unsigned char data[sizeof bits];
    for (size_t i = 0; i < sizeof bits / sizeof bits[0]; i++) {
        data[2 * i] = (unsigned char)(bits[i] & 0xff);
        data[2 * i + 1] = (unsigned char)(bits[i] >> 8);
    }
    char header[128];
    header_for(header, sizeof header, "<f2", "(11,)");
    write_npy_raw("half.npy", 1, header, 0);
    FILE *f = fopen(tmp_path("half.npy"), "ab");
    assert_non_null(f);
    fwrite(data, 1, sizeof data, f);
    fclose(f);
    usp_npy a;
    if (usp_npy_read(tmp_path("half.npy"), &a) != USP_OK) fail_msg("%s", usp_error());
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        assert_true(a.data[i] == expected[i]);
        assert_int_equal(signbit(a.data[i]) != 0, signbit(expected[i]) != 0);
    }
    assert_true(isnan(a.data[10]));
    usp_npy_free(&a);
}

/* ---------- writing ---------- */

static void round_trips_float64_bit_exactly(void **state) {
    (void)state;
    const long shape[3] = {2, 3, 4};
    double x[24];
    for (int i = 0; i < 24; i++) x[i] = sin(i + 1.0) * pow(10.0, i % 7 - 3);
    x[0] = -0.0, x[1] = INFINITY, x[2] = NAN, x[3] = 0x1p-1070, x[4] = -1.7976931348623157e308;
    assert_int_equal(usp_npy_write(tmp_path("rt64.npy"), 3, shape, x, 0), USP_OK);
    double *back;
    if (usp_npy_read_shape(tmp_path("rt64.npy"), 3, shape, &back) != USP_OK)
        fail_msg("%s", usp_error());
    assert_memory_equal(back, x, sizeof x);
    free(back);
}

static void round_trips_float32_as_rounded(void **state) {
    (void)state;
    const long shape[2] = {5, 7};
    double x[35];
    for (int i = 0; i < 35; i++) x[i] = cos(i * 0.37) * 1e3;
    assert_int_equal(usp_npy_write(tmp_path("rt32.npy"), 2, shape, x, 1), USP_OK);
    usp_npy a;
    assert_int_equal(usp_npy_read(tmp_path("rt32.npy"), &a), USP_OK);
    assert_int_equal(a.ndim, 2);
    for (int i = 0; i < 35; i++) assert_true(a.data[i] == (double)(float)x[i]);
    usp_npy_free(&a);
}

static long file_size(const char *path) {
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (long)st.st_size;
}

static void writes_header_as_numpy_does(void **state) {
    (void)state;
    const long shape[4] = {1, 128, 8, 64};
    double *x = calloc(1 * 128 * 8 * 64, sizeof *x);
    assert_int_equal(usp_npy_write(tmp_path("q.npy"), 4, shape, x, 0), USP_OK);
    free(x);
    FILE *f = fopen(tmp_path("q.npy"), "rb");
    unsigned char head[128];
    assert_int_equal(fread(head, 1, sizeof head, f), sizeof head);
    fclose(f);
    int hlen = head[8] | head[9] << 8;
    assert_memory_equal(head, "\x93NUMPY\x01\x00", 8);
    assert_int_equal((10 + hlen) % 64, 0);
    assert_int_equal(head[10 + hlen - 1], '\n');
    const char *dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 128, 8, 64), }";
    assert_memory_equal(head + 10, dict, strlen(dict));
    for (int i = 10 + (int)strlen(dict); i < 10 + hlen - 1; i++) assert_int_equal(head[i], ' ');
    assert_int_equal(file_size(tmp_path("q.npy")), 10 + hlen + 1 * 128 * 8 * 64 * 8);
}

static int contains_bytes(const char *hay, size_t n, const char *needle) {
    size_t len = strlen(needle);
    for (size_t i = 0; i + len <= n; i++)
        if (memcmp(hay + i, needle, len) == 0) return 1;
    return 0;
}

static void writes_scalar_and_vector_shapes(void **state) {
    (void)state;
    const double one = 42.0, five[5] = {1, 2, 3, 4, 5};
    const long vec_shape[1] = {5};
    assert_int_equal(usp_npy_write(tmp_path("scalar.npy"), 0, NULL, &one, 0), USP_OK);
    assert_int_equal(usp_npy_write(tmp_path("vec.npy"), 1, vec_shape, five, 1), USP_OK);
    usp_npy a;
    assert_int_equal(usp_npy_read(tmp_path("scalar.npy"), &a), USP_OK);
    assert_int_equal(a.ndim, 0);
    assert_true(a.data[0] == 42.0);
    usp_npy_free(&a);
    assert_int_equal(usp_npy_read(tmp_path("vec.npy"), &a), USP_OK);
    assert_int_equal(a.ndim, 1);
    assert_memory_equal(a.data, five, sizeof five);
    usp_npy_free(&a);
    FILE *f = fopen(tmp_path("vec.npy"), "rb");
    char head[128];
    size_t got = fread(head, 1, sizeof head, f);
    fclose(f);
    assert_int_equal(file_size(tmp_path("vec.npy")), 128 + 5 * 4);   /* 69 header bytes pad to 128 */
    assert_true(contains_bytes(head, got, "'shape': (5,), }"));
}

static void refuses_bad_write_arguments(void **state) {
    (void)state;
    const long negative[2] = {2, -3};
    double x[1] = {0};
    assert_int_equal(usp_npy_write(tmp_path("neg.npy"), 2, negative, x, 0), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "negative dimension -3"));
    assert_int_equal(usp_npy_write(tmp_path("d9.npy"), 9, negative, x, 0), USP_EINVAL);
    assert_int_equal(usp_npy_write(tmp_path("nodir/x.npy"), 1, (long[]){1}, x, 0),
                     USP_EINTERNAL);
    assert_non_null(strstr(usp_error(), "No such file or directory"));
}

static void read_shape_names_both_shapes(void **state) {
    (void)state;
    const long written[4] = {1, 100, 8, 2};
    const long wanted[4] = {1, 128, 8, 2};
    double x[1600] = {0};
    assert_int_equal(usp_npy_write(tmp_path("q100.npy"), 4, written, x, 1), USP_OK);
    double *data = x;
    assert_int_equal(usp_npy_read_shape(tmp_path("q100.npy"), 4, wanted, &data), USP_EINVAL);
    assert_null(data);
    assert_non_null(strstr(usp_error(), "q100.npy: shape (1, 100, 8, 2) but (1, 128, 8, 2) expected"));
    assert_int_equal(usp_npy_read_shape(tmp_path("q100.npy"), 3, wanted, &data), USP_EINVAL);
    assert_non_null(strstr(usp_error(), "shape (1, 100, 8, 2) but (1, 128, 8) expected"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(refuses_empty_file),
        cmocka_unit_test(refuses_bad_magic),
        cmocka_unit_test(refuses_unsupported_version),
        cmocka_unit_test(refuses_preamble_cut_short),
        cmocka_unit_test(refuses_header_longer_than_file),
        cmocka_unit_test(refuses_unterminated_dict),
        cmocka_unit_test(refuses_missing_key),
        cmocka_unit_test(refuses_unknown_and_repeated_keys),
        cmocka_unit_test(refuses_big_endian),
        cmocka_unit_test(refuses_other_dtypes),
        cmocka_unit_test(refuses_structured_dtype),
        cmocka_unit_test(refuses_fortran_order),
        cmocka_unit_test(refuses_bad_shapes),
        cmocka_unit_test(refuses_more_than_eight_dims),
        cmocka_unit_test(refuses_size_overflow),
        cmocka_unit_test(refuses_truncated_data),
        cmocka_unit_test(refuses_trailing_garbage),
        cmocka_unit_test(refuses_directory_and_missing_file),
        cmocka_unit_test(reads_versions_and_header_variants),
        cmocka_unit_test(reads_float16_written_by_hand),
        cmocka_unit_test(round_trips_float64_bit_exactly),
        cmocka_unit_test(round_trips_float32_as_rounded),
        cmocka_unit_test(writes_header_as_numpy_does),
        cmocka_unit_test(writes_scalar_and_vector_shapes),
        cmocka_unit_test(refuses_bad_write_arguments),
        cmocka_unit_test(read_shape_names_both_shapes),
    };
    return cmocka_run_group_tests(tests, make_tmp_dir, remove_tmp_dir);
}
