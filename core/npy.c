/* npy.c: NumPy .npy files (format 1.0 to 3.0), float64/32/16 in, float64/32 out.
 *
 * The layout is: 6-byte magic "\x93NUMPY", major and minor version bytes, a
 * little-endian header length (2 bytes in 1.0, 4 bytes in 2.0 and 3.0), then
 * a Python dict literal {'descr': '<f8', 'fortran_order': False, 'shape': (..)}
 * padded with spaces and a newline, then the raw array in C order.
 *
 * Every refusal names the file and what is wrong, because these files come
 * from users and a bare "bad file" would leave them guessing. */
#define _POSIX_C_SOURCE 200809L
#include "usp/npy.h"
#include "usp/fileio.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const unsigned char npy_magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

/* numpy aligns the start of the data to this many bytes. */
enum { NPY_ALIGN = 64 };

/* Bytes converted per read, so a large array never needs its raw bytes and
 * its float64 copy in memory at the same time. */
enum { NPY_CHUNK_BYTES = 1 << 16 };

/* Header lengths beyond this are not arrays numpy would write (its own
 * limit is 10000 bytes); refusing keeps a garbled length from allocating GiBs. */
enum { NPY_MAX_HEADER = 1 << 20 };

typedef enum { NPY_LITTLE, NPY_BIG } npy_order;

typedef struct {
    int elem_size;           /* 8, 4 or 2 */
    int is_int;              /* '<i4' or '<i8' (cumulative lengths), else a float */
    char descr[8];
    npy_order order;
    int fortran_order;
    int ndim;
    long shape[USP_NPY_MAX_DIMS];
} npy_header;

/* ---------- small text utilities for messages ---------- */

/* "(1, 128, 8, 64)", "(5,)" or "()", as Python prints a tuple. */
static void format_shape(char *buf, size_t n, int ndim, const long *shape) {
    size_t used = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < ndim && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%ld", i ? ", " : "", shape[i]);
    if (used < n) snprintf(buf + used, n - used, ndim == 1 ? ",)" : ")");
}

static int host_is_little_endian(void) {
    const uint16_t probe = 1;
    unsigned char first;
    memcpy(&first, &probe, 1);
    return first == 1;
}

/* ---------- header dict parsing ---------- */

typedef struct {
    const char *p, *end;
    const char *path;
} header_cursor;

static void skip_spaces(header_cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int at_char(header_cursor *c, char ch) {
    skip_spaces(c);
    return c->p < c->end && *c->p == ch;
}

static usp_status expect_char(header_cursor *c, char ch, const char *where) {
    if (!at_char(c, ch)) {
        if (c->p >= c->end)
            return usp_fail(USP_EINVAL, "%s: header not terminated: expected '%c' %s",
                            c->path, ch, where);
        return usp_fail(USP_EINVAL, "%s: header: expected '%c' %s, found '%c'",
                        c->path, ch, where, *c->p);
    }
    c->p++;
    return USP_OK;
}

/* A Python string literal in single or double quotes, without escapes
 * (numpy never needs them for these keys and dtype strings). */
static usp_status parse_py_string(header_cursor *c, char *out, size_t n) {
    skip_spaces(c);
    if (c->p >= c->end)
        return usp_fail(USP_EINVAL, "%s: header not terminated: expected a string", c->path);
    char quote = *c->p;
    if (quote != '\'' && quote != '"')
        return usp_fail(USP_EINVAL, "%s: header: expected a quoted string, found '%c'",
                        c->path, quote);
    const char *start = ++c->p;
    while (c->p < c->end && *c->p != quote) c->p++;
    if (c->p >= c->end)
        return usp_fail(USP_EINVAL, "%s: header not terminated: unclosed string", c->path);
    size_t len = (size_t)(c->p - start);
    c->p++;
    if (len >= n)
        return usp_fail(USP_EINVAL, "%s: header: string '%.20s...' too long", c->path, start);
    memcpy(out, start, len);
    out[len] = '\0';
    return USP_OK;
}

static usp_status parse_descr(header_cursor *c, npy_header *h) {
    skip_spaces(c);
    if (c->p < c->end && *c->p == '[')
        return usp_fail(USP_EINVAL, "%s: structured dtype not supported "
                        "(float64, float32 or float16 expected)", c->path);
    char descr[32];
    USP_TRY(parse_py_string(c, descr, sizeof descr));
    int is_float = strlen(descr) == 3 && descr[1] == 'f';
    int is_int = strlen(descr) == 3 && descr[1] == 'i';
    int size = is_float || is_int ? descr[2] - '0' : 0;
    if (!(is_float && (size == 8 || size == 4 || size == 2)) && !(is_int && (size == 8 || size == 4)))
        return usp_fail(USP_EINVAL, "%s: dtype '%s' not supported "
                        "(float64, float32, float16, int64 or int32 expected)", c->path, descr);
    h->is_int = is_int;
    snprintf(h->descr, sizeof h->descr, "%s", descr);
    if (descr[0] == '>')
        return usp_fail(USP_EINVAL, "%s: big-endian dtype '%s' not supported; "
                        "save with dtype '<%c%d'", c->path, descr, descr[1], size);
    if (descr[0] == '<') {
        h->order = NPY_LITTLE;
    } else if (descr[0] == '=' || descr[0] == '|') {
        /* native order: what the writing machine used, assumed to be this one's */
        h->order = host_is_little_endian() ? NPY_LITTLE : NPY_BIG;
    } else {
        return usp_fail(USP_EINVAL, "%s: dtype '%s' has an unknown byte order '%c'",
                        c->path, descr, descr[0]);
    }
    h->elem_size = size;
    return USP_OK;
}

static usp_status parse_fortran_order(header_cursor *c, npy_header *h) {
    skip_spaces(c);
    size_t left = (size_t)(c->end - c->p);
    if (left >= 4 && memcmp(c->p, "True", 4) == 0) {
        h->fortran_order = 1;
        c->p += 4;
    } else if (left >= 5 && memcmp(c->p, "False", 5) == 0) {
        h->fortran_order = 0;
        c->p += 5;
    } else {
        return usp_fail(USP_EINVAL, "%s: header: 'fortran_order' must be True or False",
                        c->path);
    }
    return USP_OK;
}

/* One non-negative dimension; Python 2 era files may carry an 'L' suffix. */
static usp_status parse_dimension(header_cursor *c, long *out) {
    skip_spaces(c);
    if (c->p >= c->end)
        return usp_fail(USP_EINVAL, "%s: header not terminated: 'shape' not closed", c->path);
    if (*c->p == '-')
        return usp_fail(USP_EINVAL, "%s: header: negative dimension in 'shape'", c->path);
    if (*c->p < '0' || *c->p > '9')
        return usp_fail(USP_EINVAL, "%s: header: 'shape' must be a tuple of integers",
                        c->path);
    long value = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        int digit = *c->p++ - '0';
        if (value > (LONG_MAX - digit) / 10)
            return usp_fail(USP_EINVAL, "%s: header: dimension in 'shape' too large",
                            c->path);
        value = value * 10 + digit;
    }
    if (c->p < c->end && *c->p == 'L') c->p++;
    *out = value;
    return USP_OK;
}

/* "(a, b, c)", "(a,)", "()" and a trailing comma after the last item. */
static usp_status parse_shape(header_cursor *c, npy_header *h) {
    USP_TRY(expect_char(c, '(', "to open 'shape'"));
    h->ndim = 0;
    while (!at_char(c, ')')) {
        if (h->ndim == USP_NPY_MAX_DIMS)
            return usp_fail(USP_EINVAL, "%s: more than %d dimensions not supported",
                            c->path, USP_NPY_MAX_DIMS);
        USP_TRY(parse_dimension(c, &h->shape[h->ndim]));
        h->ndim++;
        if (at_char(c, ',')) c->p++;
        else if (!at_char(c, ')'))
            return usp_fail(USP_EINVAL, "%s: header: expected ',' or ')' in 'shape'", c->path);
    }
    c->p++;
    return USP_OK;
}

enum { KEY_DESCR = 1, KEY_FORTRAN = 2, KEY_SHAPE = 4 };

static usp_status parse_entry(header_cursor *c, npy_header *h, int *seen) {
    char key[32];
    USP_TRY(parse_py_string(c, key, sizeof key));
    USP_TRY(expect_char(c, ':', "after a key"));
    int bit = !strcmp(key, "descr") ? KEY_DESCR
            : !strcmp(key, "fortran_order") ? KEY_FORTRAN
            : !strcmp(key, "shape") ? KEY_SHAPE : 0;
    if (!bit)
        return usp_fail(USP_EINVAL, "%s: header: unexpected key '%s'", c->path, key);
    if (*seen & bit)
        return usp_fail(USP_EINVAL, "%s: header: key '%s' given twice", c->path, key);
    *seen |= bit;
    if (bit == KEY_DESCR) return parse_descr(c, h);
    if (bit == KEY_FORTRAN) return parse_fortran_order(c, h);
    return parse_shape(c, h);
}

static usp_status check_keys_present(const char *path, int seen) {
    const char *missing = !(seen & KEY_DESCR) ? "descr"
                        : !(seen & KEY_FORTRAN) ? "fortran_order"
                        : !(seen & KEY_SHAPE) ? "shape" : NULL;
    if (missing)
        return usp_fail(USP_EINVAL, "%s: header: missing key '%s'", path, missing);
    return USP_OK;
}

static usp_status parse_header_dict(const char *path, const char *text, size_t len,
                                    npy_header *h) {
    header_cursor c = {text, text + len, path};
    int seen = 0;
    USP_TRY(expect_char(&c, '{', "to open the header dict"));
    while (!at_char(&c, '}')) {
        USP_TRY(parse_entry(&c, h, &seen));
        if (at_char(&c, ',')) c.p++;
        else if (!at_char(&c, '}'))
            return usp_fail(USP_EINVAL, "%s: header%s: expected ',' or '}' in the dict", path,
                            c.p >= c.end ? " not terminated" : "");
    }
    c.p++;
    skip_spaces(&c);
    if (c.p != c.end)
        return usp_fail(USP_EINVAL, "%s: header: unexpected text after the dict", path);
    USP_TRY(check_keys_present(path, seen));
    if (h->fortran_order)
        return usp_fail(USP_EINVAL, "%s: fortran_order True not supported; "
                        "save a C-ordered array (np.ascontiguousarray)", path);
    return USP_OK;
}

/* ---------- file reading ---------- */

static uint32_t little_endian_u32(const unsigned char *b, int bytes) {
    uint32_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) v = (v << 8) | b[i];
    return v;
}

/* Reads magic, version and header length; leaves f at the start of the header. */
static usp_status read_preamble(const char *path, FILE *f, long long file_size,
                                uint32_t *header_len, int *prefix_len) {
    if (file_size == 0) return usp_fail(USP_EINVAL, "%s: empty file", path);
    unsigned char pre[12];
    size_t got = fread(pre, 1, 10, f);
    if (got < 6 || memcmp(pre, npy_magic, 6) != 0)
        return usp_fail(USP_EINVAL, "%s: not an .npy file (bad magic)", path);
    if (got < 8)
        return usp_fail(USP_EINVAL, "%s: header not terminated: file ends in the preamble",
                        path);
    int major = pre[6], minor = pre[7];
    if ((major != 1 && major != 2 && major != 3) || minor != 0)
        return usp_fail(USP_EINVAL, "%s: unsupported .npy format version %d.%d "
                        "(1.0, 2.0 or 3.0 expected)", path, major, minor);
    int len_bytes = major == 1 ? 2 : 4;
    if (len_bytes == 4 && got == 10) got += fread(pre + 10, 1, 2, f);
    if (got < (size_t)(8 + len_bytes))
        return usp_fail(USP_EINVAL, "%s: header not terminated: file ends in the preamble",
                        path);
    *header_len = little_endian_u32(pre + 8, len_bytes);
    *prefix_len = 8 + len_bytes;
    if (*header_len > NPY_MAX_HEADER)
        return usp_fail(USP_EINVAL, "%s: header length %u is implausible", path,
                        (unsigned)*header_len);
    if ((long long)*prefix_len + *header_len > file_size)
        return usp_fail(USP_EINVAL, "%s: header not terminated: header length %u "
                        "exceeds the file (%lld bytes)", path, (unsigned)*header_len, file_size);
    return USP_OK;
}

static usp_status read_header(const char *path, FILE *f, long long file_size,
                              npy_header *h, long long *data_offset) {
    uint32_t header_len = 0;
    int prefix_len = 0;
    USP_TRY(read_preamble(path, f, file_size, &header_len, &prefix_len));
    char *text = usp_malloc(header_len + 1);
    if (!text) return USP_EINTERNAL;
    usp_status st = USP_OK;
    if (fread(text, 1, header_len, f) != header_len)
        st = usp_fail(USP_EINTERNAL, "%s: read error in the header", path);
    else
        st = parse_header_dict(path, text, header_len, h);
    free(text);
    *data_offset = prefix_len + (long long)header_len;
    return st;
}

/* Elements in the array, refusing products that do not fit in memory sizes. */
static usp_status count_elements(const char *path, const npy_header *h, long *elems) {
    /* bytes, not only elements, must fit in a long (and in size_t) */
    const long limit = LONG_MAX / (long)sizeof(double);
    long n = 1;
    for (int i = 0; i < h->ndim; i++) {
        if (h->shape[i] != 0 && n > limit / h->shape[i]) {
            char shape[200];
            format_shape(shape, sizeof shape, h->ndim, h->shape);
            return usp_fail(USP_EINVAL, "%s: shape %s is too large (size overflow)",
                            path, shape);
        }
        n *= h->shape[i];
    }
    *elems = n;
    return USP_OK;
}

static usp_status check_data_size(const char *path, const npy_header *h, long elems,
                                  long long available) {
    long long needed = (long long)elems * h->elem_size;
    char shape[200];
    format_shape(shape, sizeof shape, h->ndim, h->shape);
    if (available < needed)
        return usp_fail(USP_EINVAL, "%s: truncated: shape %s of float%d needs %lld data "
                        "bytes but the file has %lld", path, shape, 8 * h->elem_size,
                        needed, available);
    if (available > needed)
        return usp_fail(USP_EINVAL, "%s: trailing garbage: %lld bytes after the data "
                        "(shape %s of float%d)", path, available - needed, shape,
                        8 * h->elem_size);
    return USP_OK;
}

/* ---------- element conversion ---------- */

static double half_bits_to_double(uint16_t bits) {
    int negative = bits >> 15;
    int exponent = (bits >> 10) & 0x1f;
    int mantissa = bits & 0x3ff;
    double magnitude;
    if (exponent == 0)
        magnitude = ldexp(mantissa, -24);               /* zero and subnormals */
    else if (exponent == 31)
        magnitude = mantissa ? NAN : INFINITY;
    else
        magnitude = ldexp(mantissa | 0x400, exponent - 25);
    return negative ? -magnitude : magnitude;
}

static uint64_t load_bytes(const unsigned char *b, int size, npy_order order) {
    uint64_t v = 0;
    for (int i = 0; i < size; i++) {
        int at = order == NPY_LITTLE ? size - 1 - i : i;
        v = (v << 8) | b[at];
    }
    return v;
}

static double element_to_double(const unsigned char *b, int size, int is_int, npy_order order) {
    uint64_t bits = load_bytes(b, size, order);
    if (is_int) return size == 4 ? (double)(int32_t)(uint32_t)bits : (double)(int64_t)bits;
    if (size == 2) return half_bits_to_double((uint16_t)bits);
    if (size == 4) {
        uint32_t u = (uint32_t)bits;
        float f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

static usp_status read_elements(const char *path, FILE *f, const npy_header *h,
                                double *out, long elems) {
    unsigned char chunk[NPY_CHUNK_BYTES];
    long per_chunk = NPY_CHUNK_BYTES / h->elem_size;
    for (long done = 0; done < elems;) {
        long n = elems - done < per_chunk ? elems - done : per_chunk;
        if (fread(chunk, (size_t)h->elem_size, (size_t)n, f) != (size_t)n)
            return usp_fail(USP_EINTERNAL, "%s: read error in the data", path);
        for (long i = 0; i < n; i++)
            out[done + i] = element_to_double(chunk + i * h->elem_size, h->elem_size, h->is_int, h->order);
        done += n;
    }
    return USP_OK;
}

static usp_status read_open_file(const char *path, FILE *f, long long file_size,
                                 int allow_int, usp_npy *out) {
    npy_header h = {0};
    long long data_offset = 0;
    long elems = 0;
    USP_TRY(read_header(path, f, file_size, &h, &data_offset));
    if (h.is_int && !allow_int)
        return usp_fail(USP_EINVAL, "%s: dtype '%s' not supported (float64, float32 or float16 "
                        "expected)", path, h.descr);
    USP_TRY(count_elements(path, &h, &elems));
    USP_TRY(check_data_size(path, &h, elems, file_size - data_offset));
    double *data = usp_malloc((size_t)elems * sizeof(double));
    if (!data) return USP_EINTERNAL;
    usp_status st = read_elements(path, f, &h, data, elems);
    if (st != USP_OK) {
        free(data);
        return st;
    }
    out->ndim = h.ndim;
    memcpy(out->shape, h.shape, sizeof h.shape);
    out->data = data;
    return USP_OK;
}

static usp_status read_path(const char *path, int allow_int, usp_npy *out) {
    memset(out, 0, sizeof *out);
    FILE *f = NULL;
    long long size = 0;
    USP_TRY(usp_open_regular_file(path, &f, &size));
    usp_status st = read_open_file(path, f, size, allow_int, out);
    fclose(f);
    return st;
}

usp_status usp_npy_read(const char *path, usp_npy *out) { return read_path(path, 0, out); }

usp_status usp_npy_read_any(const char *path, usp_npy *out) { return read_path(path, 1, out); }

void usp_npy_free(usp_npy *a) {
    if (!a) return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

usp_status usp_npy_read_shape(const char *path, int ndim, const long *shape, double **data) {
    *data = NULL;
    usp_npy a;
    USP_TRY(usp_npy_read(path, &a));
    int same = a.ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = a.shape[i] == shape[i];
    if (!same) {
        char got[200], want[200];
        format_shape(got, sizeof got, a.ndim, a.shape);
        format_shape(want, sizeof want, ndim, shape);
        usp_npy_free(&a);
        return usp_fail(USP_EINVAL, "%s: shape %s but %s expected", path, got, want);
    }
    *data = a.data;
    return USP_OK;
}

/* ---------- writing ---------- */

/* The header dict numpy writes, padded with spaces so that the data starts
 * at a multiple of NPY_ALIGN and ending with a newline. Returns its length. */
static size_t build_header(char *buf, size_t n, int ndim, const long *shape, int as_f32) {
    char shape_text[200];
    format_shape(shape_text, sizeof shape_text, ndim, shape);
    int len = snprintf(buf, n, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                       as_f32 ? "<f4" : "<f8", shape_text);
    size_t total = 10 + (size_t)len + 1;             /* preamble, dict, newline */
    size_t padded = (total + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN;
    size_t header_len = padded - 10;
    memset(buf + len, ' ', header_len - 1 - (size_t)len);
    buf[header_len - 1] = '\n';
    return header_len;
}

static usp_status check_write_shape(const char *path, int ndim, const long *shape,
                                    long *elems) {
    if (ndim < 0 || ndim > USP_NPY_MAX_DIMS)
        return usp_fail(USP_EINVAL, "%s: %d dimensions (0 to %d supported)", path, ndim,
                        USP_NPY_MAX_DIMS);
    long n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return usp_fail(USP_EINVAL, "%s: negative dimension %ld", path, shape[i]);
        if (shape[i] != 0 && n > LONG_MAX / 8 / shape[i])
            return usp_fail(USP_EINVAL, "%s: shape too large (size overflow)", path);
        n *= shape[i];
    }
    *elems = n;
    return USP_OK;
}

static void store_element(unsigned char *b, double x, int as_f32) {
    uint64_t bits;
    int size = as_f32 ? 4 : 8;
    if (as_f32) {
        float f = (float)x;
        uint32_t u;
        memcpy(&u, &f, sizeof u);
        bits = u;
    } else {
        memcpy(&bits, &x, sizeof bits);
    }
    for (int i = 0; i < size; i++) b[i] = (unsigned char)(bits >> (8 * i));
}

static int write_elements(FILE *f, const double *data, long elems, int as_f32) {
    unsigned char chunk[NPY_CHUNK_BYTES];
    int size = as_f32 ? 4 : 8;
    long per_chunk = NPY_CHUNK_BYTES / size;
    for (long done = 0; done < elems;) {
        long n = elems - done < per_chunk ? elems - done : per_chunk;
        for (long i = 0; i < n; i++) store_element(chunk + i * size, data[done + i], as_f32);
        if (fwrite(chunk, (size_t)size, (size_t)n, f) != (size_t)n) return -1;
        done += n;
    }
    return 0;
}

usp_status usp_npy_write(const char *path, int ndim, const long *shape,
                         const double *data, int as_f32) {
    long elems = 0;
    USP_TRY(check_write_shape(path, ndim, shape, &elems));
    char header[512];
    size_t header_len = build_header(header, sizeof header, ndim, shape, as_f32);
    unsigned char preamble[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                                  (unsigned char)(header_len & 0xff),
                                  (unsigned char)(header_len >> 8)};
    FILE *f = fopen(path, "wb");
    if (!f) return usp_fail(USP_EINTERNAL, "%s: %s", path, strerror(errno));
    int failed = fwrite(preamble, 1, sizeof preamble, f) != sizeof preamble
              || fwrite(header, 1, header_len, f) != header_len
              || write_elements(f, data, elems, as_f32) != 0;
    return usp_close_written(f, failed, path);
}
