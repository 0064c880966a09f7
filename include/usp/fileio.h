/* usp/fileio.h: opening a file to read and closing one written, each with
 * the reason when it fails. */
#ifndef USP_FILEIO_H
#define USP_FILEIO_H

#include <stdio.h>
#include "usp/error.h"

/* Opens path for reading in binary; *size is its length in bytes. A missing
 * file, a directory or anything but a regular file is refused (USP_EINVAL)
 * with "<path>: <why>". */
usp_status usp_open_regular_file(const char *path, FILE **out, long long *size);

/* Closes f, written to path; `failed` says whether writing it failed. A
 * failure of either is USP_EINTERNAL "<path>: write failed: <why>", why from
 * errno as the caller left it, else from fclose. */
usp_status usp_close_written(FILE *f, int failed, const char *path);

#endif
