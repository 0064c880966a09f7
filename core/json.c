/* json.c: a recursive-descent JSON reader and the writing primitives.
 *
 * Strict RFC 8259 on input (no comments, no trailing commas, no NaN), because
 * the files it reads are also read by other tools and should stay portable.
 * A value that fails half-way is always left in a state usp_json_free can
 * release: children are counted before they are parsed, and a zeroed value
 * owns nothing. Cost: linear in the input; duplicate keys are found with a
 * hash set once an object has more than a few keys.
 *
 * Why this reader and not a library (Debian's libjansson 2.14 or cJSON
 * 1.7.15), decided with both at hand:
 * - every consumer walks usp_json trees and refuses a field with the line
 *   it is on ("profile.json: line 12: 'hbm_gbps' must be positive"); jansson
 *   keeps a line only for the point where parsing failed, not per value, and
 *   cJSON keeps none, so either would lose the line of a semantic refusal or
 *   need a second pass over the text;
 * - the refusals usp relies on are not jansson's or cJSON's defaults: a key
 *   given twice (jansson keeps the last unless JSON_REJECT_DUPLICATES, cJSON
 *   keeps both), nesting deeper than USP_JSON_MAX_DEPTH (cJSON 1000, jansson
 *   2048), numbers beyond a double (cJSON reads 1e400 as inf);
 * - the GPU build of usp links nothing beyond CUDA, NCCL and libc, and this
 *   file is about 500 lines with no state beyond its arguments.
 * The reader is instead held to a library: tests/test_json.c compares it
 * with jansson on a corpus, tests/fuzz/fuzz_json.c runs it under libFuzzer
 * (ASan + UBSan) and checks every document it accepts against jansson, and
 * the tests parse every --json output of the usp command with jansson
 * (tests/test_json_outputs.c), so a hand-written writer that emits invalid
 * JSON fails the build. */
#define _POSIX_C_SOURCE 200809L
#include "usp/json.h"
#include "usp/fileio.h"

#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *p, *end;
    int line;
    int depth;
} json_reader;

/* ---------- errors ---------- */

static usp_status syntax_error(const json_reader *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static usp_status syntax_error(const json_reader *r, const char *fmt, ...) {
    char reason[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    return usp_fail(USP_EINVAL, "line %d: %s", r->line, reason);
}

/* What the reader is looking at, for "expected X, found Y". */
static void describe_next(const json_reader *r, char *buf, size_t n) {
    if (r->p >= r->end)
        snprintf(buf, n, "end of input");
    else if (isprint((unsigned char)*r->p))
        snprintf(buf, n, "'%c'", *r->p);
    else
        snprintf(buf, n, "byte 0x%02x", (unsigned char)*r->p);
}

static usp_status expected(const json_reader *r, const char *what) {
    char found[32];
    describe_next(r, found, sizeof found);
    return syntax_error(r, "expected %s, found %s", what, found);
}

/* ---------- tree memory ---------- */

static void free_contents(usp_json *v) {
    for (size_t i = 0; i < v->count; i++) {
        free_contents(&v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->string);
    memset(v, 0, sizeof *v);
}

void usp_json_free(usp_json *root) {
    if (!root) return;
    free_contents(root);
    free(root);
}

/* Makes room for one more child (and key, for objects); the new slot is zeroed. */
static usp_status grow_children(usp_json *v, size_t *cap, int with_keys) {
    if (v->count < *cap) return USP_OK;
    size_t new_cap = *cap ? 2 * *cap : 8;
    usp_json *items = realloc(v->items, new_cap * sizeof *items);
    if (!items) return usp_fail(USP_EINTERNAL, "out of memory parsing JSON");
    v->items = items;
    if (with_keys) {
        char **keys = realloc(v->keys, new_cap * sizeof *keys);
        if (!keys) return usp_fail(USP_EINTERNAL, "out of memory parsing JSON");
        v->keys = keys;
    }
    *cap = new_cap;
    return USP_OK;
}

/* ---------- lexical pieces ---------- */

static void skip_space(json_reader *r) {
    while (r->p < r->end) {
        char c = *r->p;
        if (c == '\n') r->line++;
        else if (c != ' ' && c != '\t' && c != '\r') return;
        r->p++;
    }
}

static int next_is(json_reader *r, char c) {
    skip_space(r);
    return r->p < r->end && *r->p == c;
}

typedef struct {
    char *data;
    size_t len, cap;
} text_buffer;

static usp_status buffer_put(text_buffer *b, const char *bytes, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 32;
        while (cap < b->len + n + 1) cap *= 2;
        char *data = realloc(b->data, cap);
        if (!data) return usp_fail(USP_EINTERNAL, "out of memory parsing JSON");
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
    b->data[b->len] = '\0';
    return USP_OK;
}

static usp_status put_utf8(text_buffer *b, uint32_t code) {
    char out[4];
    size_t n;
    if (code < 0x80) {
        out[0] = (char)code;
        n = 1;
    } else if (code < 0x800) {
        out[0] = (char)(0xc0 | (code >> 6));
        out[1] = (char)(0x80 | (code & 0x3f));
        n = 2;
    } else if (code < 0x10000) {
        out[0] = (char)(0xe0 | (code >> 12));
        out[1] = (char)(0x80 | ((code >> 6) & 0x3f));
        out[2] = (char)(0x80 | (code & 0x3f));
        n = 3;
    } else {
        out[0] = (char)(0xf0 | (code >> 18));
        out[1] = (char)(0x80 | ((code >> 12) & 0x3f));
        out[2] = (char)(0x80 | ((code >> 6) & 0x3f));
        out[3] = (char)(0x80 | (code & 0x3f));
        n = 4;
    }
    return buffer_put(b, out, n);
}

/* Four hex digits after "\u"; r->p is on the first digit. */
static usp_status read_hex4(json_reader *r, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        if (r->p >= r->end || !isxdigit((unsigned char)*r->p))
            return syntax_error(r, "\\u must be followed by four hex digits");
        char c = *r->p++;
        v = v * 16 + (uint32_t)(isdigit((unsigned char)c) ? c - '0'
                                                          : tolower((unsigned char)c) - 'a' + 10);
    }
    *out = v;
    return USP_OK;
}

/* "\uXXXX", or a surrogate pair "\uD83D\uDE00"; r->p is after the 'u'. */
static usp_status read_unicode_escape(json_reader *r, text_buffer *b) {
    uint32_t code;
    USP_TRY(read_hex4(r, &code));
    if (code >= 0xdc00 && code <= 0xdfff)
        return syntax_error(r, "invalid \\u escape: lone low surrogate");
    if (code >= 0xd800 && code <= 0xdbff) {
        uint32_t low;
        if (r->end - r->p < 2 || r->p[0] != '\\' || r->p[1] != 'u')
            return syntax_error(r, "invalid \\u escape: high surrogate without its pair");
        r->p += 2;
        USP_TRY(read_hex4(r, &low));
        if (low < 0xdc00 || low > 0xdfff)
            return syntax_error(r, "invalid \\u escape: high surrogate without its pair");
        code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
    }
    if (code == 0) return syntax_error(r, "\\u0000 in a string is not supported");
    return put_utf8(b, code);
}

/* One escape sequence; r->p is on the character after the backslash. */
static usp_status read_escape(json_reader *r, text_buffer *b) {
    if (r->p >= r->end) return syntax_error(r, "unterminated string");
    char c = *r->p++;
    const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
    const char *at = strchr(from, c);
    if (c != '\0' && at) return buffer_put(b, to + (at - from), 1);
    if (c == 'u') return read_unicode_escape(r, b);
    r->p--;
    return syntax_error(r, "invalid escape '\\%c' in a string", isprint((unsigned char)c) ? c : '?');
}

/* A string literal; r->p is on the opening quote. *out is malloc'd. */
static usp_status read_string(json_reader *r, char **out) {
    text_buffer b = {0};
    usp_status st = buffer_put(&b, "", 0);
    r->p++;
    while (st == USP_OK) {
        if (r->p >= r->end) {
            st = syntax_error(r, "unterminated string");
            break;
        }
        const char *run = r->p;
        while (r->p < r->end && *r->p != '"' && *r->p != '\\' && (unsigned char)*r->p >= 0x20)
            r->p++;
        st = buffer_put(&b, run, (size_t)(r->p - run));
        if (st != USP_OK || r->p >= r->end) continue;
        char c = *r->p++;
        if (c == '"') break;
        if (c == '\\') st = read_escape(r, &b);
        else if (c == '\n') st = syntax_error(r, "unterminated string (newline before '\"')");
        else st = syntax_error(r, "control character 0x%02x in a string", (unsigned char)c);
    }
    if (st != USP_OK) {
        free(b.data);
        return st;
    }
    *out = b.data;
    return USP_OK;
}

static const char *skip_digits(const char *p, const char *end) {
    while (p < end && *p >= '0' && *p <= '9') p++;
    return p;
}

/* Checks the RFC 8259 number grammar; returns where the number ends, or NULL. */
static const char *scan_number(const char *p, const char *end) {
    if (p < end && *p == '-') p++;
    if (p >= end || *p < '0' || *p > '9') return NULL;
    p = *p == '0' ? p + 1 : skip_digits(p, end);
    if (p < end && *p == '.') {
        const char *frac = p + 1;
        p = skip_digits(frac, end);
        if (p == frac) return NULL;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        const char *exp = p;
        p = skip_digits(exp, end);
        if (p == exp) return NULL;
    }
    return p;
}

static usp_status read_number(json_reader *r, double *out) {
    const char *stop = scan_number(r->p, r->end);
    if (!stop) return syntax_error(r, "invalid number");
    size_t len = (size_t)(stop - r->p);
    char local[64];
    char *copy = len < sizeof local ? local : malloc(len + 1);
    if (!copy) return usp_fail(USP_EINTERNAL, "out of memory parsing JSON");
    memcpy(copy, r->p, len);
    copy[len] = '\0';
    /* the grammar was checked above, so strtod reads all of it */
    *out = strtod(copy, NULL);
    if (copy != local) free(copy);
    if (isinf(*out)) return syntax_error(r, "number %.*s out of range", (int)(len > 40 ? 40 : len), r->p);
    r->p = stop;
    return USP_OK;
}

static usp_status read_word(json_reader *r, usp_json *v) {
    static const struct { const char *word; usp_json_type type; int boolean; } words[] = {
        {"true", USP_JSON_BOOL, 1}, {"false", USP_JSON_BOOL, 0}, {"null", USP_JSON_NULL, 0}};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        size_t n = strlen(words[i].word);
        if ((size_t)(r->end - r->p) >= n && memcmp(r->p, words[i].word, n) == 0) {
            v->type = words[i].type;
            v->boolean = words[i].boolean;
            r->p += n;
            return USP_OK;
        }
    }
    return expected(r, "a value");
}

/* ---------- containers ---------- */

static usp_status parse_value(json_reader *r, usp_json *v);

/* The keys of one object being read, for the duplicate check: a linear scan
 * while the object is small, then an open-addressing hash set of indices
 * into obj->keys (FNV-1a), so an object of n keys costs O(n), not O(n^2). */
enum { KEY_SET_LINEAR = 16 };

typedef struct {
    size_t *slots;    /* index + 1 into obj->keys; 0 is empty */
    size_t cap;       /* a power of two, at least twice the keys held */
} key_set;

static size_t key_hash(const char *key) {
    size_t h = (size_t)14695981039346656037ULL;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) h = (h ^ *p) * (size_t)1099511628211ULL;
    return h;
}

/* Inserts key i of obj; returns 1 if an equal key is already there. */
static int key_set_insert(key_set *set, const usp_json *obj, size_t i) {
    size_t mask = set->cap - 1;
    for (size_t at = key_hash(obj->keys[i]) & mask;; at = (at + 1) & mask) {
        if (!set->slots[at]) {
            set->slots[at] = i + 1;
            return 0;
        }
        if (strcmp(obj->keys[set->slots[at] - 1], obj->keys[i]) == 0) return 1;
    }
}

/* Makes room for obj->count + 1 keys, rehashing what obj already holds. */
static usp_status key_set_reserve(key_set *set, const usp_json *obj) {
    if (2 * (obj->count + 1) <= set->cap) return USP_OK;
    size_t cap = set->cap ? 2 * set->cap : 64;
    while (cap < 2 * (obj->count + 1)) cap *= 2;
    size_t *slots = calloc(cap, sizeof *slots);
    if (!slots) return usp_fail(USP_EINTERNAL, "out of memory parsing JSON");
    free(set->slots);
    set->slots = slots;
    set->cap = cap;
    for (size_t i = 0; i < obj->count; i++) key_set_insert(set, obj, i);
    return USP_OK;
}

/* Refuses `key` if obj already has it; obj->keys[obj->count] is `key` itself
 * (already appended, not yet counted). */
static usp_status check_unique_key(const json_reader *r, const usp_json *obj, key_set *set) {
    const char *key = obj->keys[obj->count];
    if (obj->count < KEY_SET_LINEAR) {
        for (size_t i = 0; i < obj->count; i++)
            if (strcmp(obj->keys[i], key) == 0) return syntax_error(r, "key '%s' given twice", key);
        return USP_OK;
    }
    USP_TRY(key_set_reserve(set, obj));
    if (key_set_insert(set, obj, obj->count)) return syntax_error(r, "key '%s' given twice", key);
    return USP_OK;
}

/* One "key": value member, appended to obj. */
static usp_status parse_member(json_reader *r, usp_json *obj, size_t *cap, key_set *set) {
    if (!next_is(r, '"')) return expected(r, "a string key");
    char *key = NULL;
    USP_TRY(read_string(r, &key));
    usp_status st = grow_children(obj, cap, 1);
    if (st != USP_OK) {
        free(key);
        return st;
    }
    obj->keys[obj->count] = key;
    memset(&obj->items[obj->count], 0, sizeof obj->items[0]);
    st = check_unique_key(r, obj, set);
    obj->count++; /* counted even when refused, so usp_json_free releases the key */
    USP_TRY(st);
    if (!next_is(r, ':')) return expected(r, "':' after the key");
    r->p++;
    return parse_value(r, &obj->items[obj->count - 1]);
}

static usp_status parse_object(json_reader *r, usp_json *v) {
    size_t cap = 0;
    key_set set = {NULL, 0};
    usp_status st = USP_OK;
    v->type = USP_JSON_OBJECT;
    r->p++;
    if (next_is(r, '}')) {
        r->p++;
        return USP_OK;
    }
    for (;;) {
        st = parse_member(r, v, &cap, &set);
        if (st != USP_OK) break;
        if (next_is(r, ',')) r->p++;
        else if (next_is(r, '}')) break;
        else {
            st = expected(r, "',' or '}'");
            break;
        }
    }
    free(set.slots);
    if (st == USP_OK) r->p++;
    return st;
}

static usp_status parse_array(json_reader *r, usp_json *v) {
    size_t cap = 0;
    v->type = USP_JSON_ARRAY;
    r->p++;
    if (next_is(r, ']')) {
        r->p++;
        return USP_OK;
    }
    for (;;) {
        USP_TRY(grow_children(v, &cap, 0));
        memset(&v->items[v->count], 0, sizeof v->items[0]);
        v->count++;
        USP_TRY(parse_value(r, &v->items[v->count - 1]));
        if (next_is(r, ',')) r->p++;
        else if (next_is(r, ']')) break;
        else return expected(r, "',' or ']'");
    }
    r->p++;
    return USP_OK;
}

static usp_status parse_nested(json_reader *r, usp_json *v, int is_object) {
    if (++r->depth > USP_JSON_MAX_DEPTH)
        return syntax_error(r, "nesting deeper than %d", USP_JSON_MAX_DEPTH);
    usp_status st = is_object ? parse_object(r, v) : parse_array(r, v);
    r->depth--;
    return st;
}

static usp_status parse_value(json_reader *r, usp_json *v) {
    skip_space(r);
    v->line = r->line;
    if (r->p >= r->end) return expected(r, "a value");
    char c = *r->p;
    if (c == '{' || c == '[') return parse_nested(r, v, c == '{');
    if (c == '"') {
        v->type = USP_JSON_STRING;
        return read_string(r, &v->string);
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        v->type = USP_JSON_NUMBER;
        return read_number(r, &v->number);
    }
    return read_word(r, v);
}

/* ---------- entry points ---------- */

usp_status usp_json_parse(const char *text, size_t len, usp_json **out) {
    *out = NULL;
    json_reader r = {text, text + len, 1, 0};
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) r.p += 3; /* UTF-8 byte order mark */
    usp_json *root = calloc(1, sizeof *root);
    if (!root) return usp_fail(USP_EINTERNAL, "out of memory parsing JSON");
    usp_status st = parse_value(&r, root);
    if (st == USP_OK) {
        skip_space(&r);
        if (r.p < r.end) st = expected(&r, "end of input after the JSON value");
    }
    if (st != USP_OK) {
        usp_json_free(root);
        return st;
    }
    *out = root;
    return USP_OK;
}

static usp_status read_whole_file(const char *path, char **text, size_t *len) {
    FILE *f;
    long long file_size;
    USP_TRY(usp_open_regular_file(path, &f, &file_size));
    size_t size = (size_t)file_size;
    char *buf = usp_malloc(size + 1);
    usp_status status = buf ? USP_OK : USP_EINTERNAL;
    if (buf && fread(buf, 1, size, f) != size)
        status = usp_fail(USP_EINTERNAL, "%s: read error", path);
    fclose(f);
    if (status != USP_OK) {
        free(buf);
        return status;
    }
    *text = buf;
    *len = size;
    return USP_OK;
}

usp_status usp_json_parse_file(const char *path, usp_json **out) {
    *out = NULL;
    char *text = NULL;
    size_t len = 0;
    USP_TRY(read_whole_file(path, &text, &len));
    usp_status st = usp_json_parse(text, len, out);
    free(text);
    if (st != USP_OK) usp_error_prefix("%s: ", path);
    return st;
}

/* ---------- lookups ---------- */

const char *usp_json_type_name(usp_json_type t) {
    static const char *names[] = {"null", "boolean", "number", "string", "array", "object"};
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "?";
}

const usp_json *usp_json_get(const usp_json *obj, const char *key) {
    if (!obj || obj->type != USP_JSON_OBJECT) return NULL;
    for (size_t i = 0; i < obj->count; i++)
        if (strcmp(obj->keys[i], key) == 0) return &obj->items[i];
    return NULL;
}

static usp_status get_typed(const usp_json *obj, const char *key, usp_json_type type,
                            const usp_json **out) {
    if (!obj || obj->type != USP_JSON_OBJECT)
        return usp_fail(USP_EINVAL, "line %d: an object with '%s' expected, found %s",
                        obj ? obj->line : 0, key, obj ? usp_json_type_name(obj->type) : "nothing");
    const usp_json *v = usp_json_get(obj, key);
    if (!v) return usp_fail(USP_EINVAL, "line %d: missing '%s'", obj->line, key);
    if (v->type != type)
        return usp_fail(USP_EINVAL, "line %d: '%s' must be a %s, found %s", v->line, key,
                        usp_json_type_name(type), usp_json_type_name(v->type));
    *out = v;
    return USP_OK;
}

usp_status usp_json_get_number(const usp_json *obj, const char *key, double *out) {
    const usp_json *v = NULL;
    USP_TRY(get_typed(obj, key, USP_JSON_NUMBER, &v));
    *out = v->number;
    return USP_OK;
}

usp_status usp_json_get_int(const usp_json *obj, const char *key, int *out) {
    const usp_json *v = NULL;
    USP_TRY(get_typed(obj, key, USP_JSON_NUMBER, &v));
    if (v->number != floor(v->number) || v->number < INT_MIN || v->number > INT_MAX)
        return usp_fail(USP_EINVAL, "line %d: '%s' must be an integer, found %g", v->line,
                        key, v->number);
    *out = (int)v->number;
    return USP_OK;
}

usp_status usp_json_get_string(const usp_json *obj, const char *key, const char **out) {
    const usp_json *v = NULL;
    USP_TRY(get_typed(obj, key, USP_JSON_STRING, &v));
    *out = v->string;
    return USP_OK;
}

usp_status usp_json_get_bool(const usp_json *obj, const char *key, int *out) {
    const usp_json *v = NULL;
    USP_TRY(get_typed(obj, key, USP_JSON_BOOL, &v));
    *out = v->boolean;
    return USP_OK;
}

/* ---------- writing ---------- */

void usp_json_write_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        const char *short_form = *p == '"' ? "\\\"" : *p == '\\' ? "\\\\"
                               : *p == '\n' ? "\\n" : *p == '\t' ? "\\t"
                               : *p == '\r' ? "\\r" : *p == '\b' ? "\\b"
                               : *p == '\f' ? "\\f" : NULL;
        if (short_form) fputs(short_form, f);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

void usp_json_write_number(FILE *f, double x) {
    if (!isfinite(x)) {
        fputs("null", f);
        return;
    }
    char buf[40];
    for (int precision = 15; precision <= 17; precision++) {
        snprintf(buf, sizeof buf, "%.*g", precision, x);
        if (strtod(buf, NULL) == x) break;
    }
    fputs(buf, f);
}
