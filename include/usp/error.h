/* usp/error.h: how library functions report failure.
 *
 * Every library function that can fail returns a usp_status and leaves a
 * one-line reason behind (thread-local), which the CLI prints as
 * "usp: <what>: <why>". Nothing inside the library calls exit(). */
#ifndef USP_ERROR_H
#define USP_ERROR_H

#include <stddef.h>

typedef enum {
    USP_OK = 0,
    USP_EINVAL = 2,   /* bad input from the user: a refused configuration or file */
    USP_EINTERNAL = 1 /* something that should not happen: out of memory, I/O */
} usp_status;

/* Records the reason for the failure being returned; returns `status` so a
 * caller can write `return usp_fail(USP_EINVAL, "seq %d ...", seq);`. */
usp_status usp_fail(usp_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The reason recorded by the last usp_fail on this thread ("" if none). */
const char *usp_error(void);

/* Prefixes the current reason with context: "k.npy: " + reason. */
void usp_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Convenience: propagate a failing status unchanged. */
#define USP_TRY(expr)                          \
    do {                                       \
        usp_status usp_try_s_ = (expr);        \
        if (usp_try_s_ != USP_OK) return usp_try_s_; \
    } while (0)

/* malloc/calloc that record an error on failure (return NULL). */
void *usp_malloc(size_t bytes);
void *usp_calloc(size_t count, size_t size);

#endif
