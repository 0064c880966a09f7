/* usp/json.h: a small JSON reader (RFC 8259) and the writing primitives.
 *
 * usp_json_parse() turns a JSON text into a tree of usp_json values that the
 * caller walks directly (type, number, string, items, keys) or through the
 * lookups below. Errors name the line: "line 3: expected ',' or '}'".
 * Every value remembers the line it starts on, so a consumer can refuse a
 * field with "profile.json: line 12: 'tflops' must be a number".
 *
 * Limits, each refused with a reason: nesting deeper than USP_JSON_MAX_DEPTH,
 * a key given twice in one object, "\u0000" in a string, numbers beyond the
 * range of a double. */
#ifndef USP_JSON_H
#define USP_JSON_H

#include <stddef.h>
#include <stdio.h>
#include "usp/error.h"

#define USP_JSON_MAX_DEPTH 256

typedef enum {
    USP_JSON_NULL,
    USP_JSON_BOOL,
    USP_JSON_NUMBER,
    USP_JSON_STRING,
    USP_JSON_ARRAY,
    USP_JSON_OBJECT
} usp_json_type;

typedef struct usp_json usp_json;
struct usp_json {
    usp_json_type type;
    int line;            /* 1-based line where the value starts */
    int boolean;         /* BOOL: 0 or 1 */
    double number;       /* NUMBER */
    char *string;        /* STRING: NUL-terminated UTF-8 */
    size_t count;        /* ARRAY, OBJECT: number of items */
    usp_json *items;     /* ARRAY: elements; OBJECT: member values, in file order */
    char **keys;         /* OBJECT: keys[i] names items[i] */
};

/* Parses `len` bytes of `text` (need not be NUL-terminated). On success *out
 * is a tree to release with usp_json_free; on failure *out is NULL and the
 * reason is "line N: ..." (USP_EINVAL), or USP_EINTERNAL when out of memory. */
usp_status usp_json_parse(const char *text, size_t len, usp_json **out);

/* Reads and parses a file; reasons are prefixed with the path. */
usp_status usp_json_parse_file(const char *path, usp_json **out);

void usp_json_free(usp_json *root);

/* "null", "boolean", "number", "string", "array", "object". */
const char *usp_json_type_name(usp_json_type t);

/* The member named `key` of an object; NULL when absent or `obj` is not an object. */
const usp_json *usp_json_get(const usp_json *obj, const char *key);

/* Typed member lookups. A missing member or one of another type is refused
 * (USP_EINVAL) with "line N: 'key' ..."; callers add the file name with
 * usp_error_prefix(). usp_json_get_int also refuses non-integers and values
 * outside the range of int. */
usp_status usp_json_get_number(const usp_json *obj, const char *key, double *out);
usp_status usp_json_get_int(const usp_json *obj, const char *key, int *out);
usp_status usp_json_get_string(const usp_json *obj, const char *key, const char **out);
usp_status usp_json_get_bool(const usp_json *obj, const char *key, int *out);

/* Writes `s` as a JSON string literal, quotes included: '"', '\' and control
 * characters escaped, other bytes (UTF-8) as they are. */
void usp_json_write_string(FILE *f, const char *s);

/* Writes a number in the shortest form that reads back to the same double
 * ("3", "0.1", "1e+300"); non-finite values, which JSON lacks, as null. */
void usp_json_write_number(FILE *f, double x);

#endif
