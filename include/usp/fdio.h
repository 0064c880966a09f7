/* usp/fdio.h: whole reads and writes on a file descriptor.
 *
 * A pipe or a signal may split a read or write into pieces; these retry
 * until every byte has moved, so a record is never half sent. */
#ifndef USP_FDIO_H
#define USP_FDIO_H

#include <stddef.h>

/* Writes all n bytes of buf to fd, retrying after EINTR: 0, or -1 on an
 * error or a write that moved nothing. */
int usp_write_full(int fd, const void *buf, size_t n);

/* Reads exactly n bytes from fd into buf, retrying after EINTR: 0, or -1 on
 * an error or end of file before n bytes. */
int usp_read_full(int fd, void *buf, size_t n);

#endif
