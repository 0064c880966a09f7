/* error.c: the thread-local reason behind a failing usp_status. */
#include "usp/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char last_error[512];

usp_status usp_fail(usp_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

const char *usp_error(void) { return last_error; }

void usp_error_prefix(const char *fmt, ...) {
    char prefix[256], old[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, last_error, sizeof old);
    size_t n = strlen(prefix);
    if (n >= sizeof last_error) n = sizeof last_error - 1;
    memcpy(last_error, prefix, n);
    size_t rest = strlen(old);
    if (rest > sizeof last_error - 1 - n) rest = sizeof last_error - 1 - n;
    memcpy(last_error + n, old, rest);
    last_error[n + rest] = '\0';
}

void *usp_malloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) usp_fail(USP_EINTERNAL, "out of memory allocating %zu bytes", bytes);
    return p;
}

void *usp_calloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) usp_fail(USP_EINTERNAL, "out of memory allocating %zu x %zu bytes", count, size);
    return p;
}
