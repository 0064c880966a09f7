/* fileio.c: opening a file to read and closing one written (usp/fileio.h). */
#define _POSIX_C_SOURCE 200809L /* fileno */
#include "usp/fileio.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

usp_status usp_open_regular_file(const char *path, FILE **out, long long *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return usp_fail(USP_EINVAL, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        int err = errno;
        fclose(f);
        return usp_fail(USP_EINTERNAL, "%s: %s", path, strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
        fclose(f);
        return usp_fail(USP_EINVAL, "%s: %s", path,
                        S_ISDIR(st.st_mode) ? strerror(EISDIR) : "not a regular file");
    }
    *out = f;
    *size = (long long)st.st_size;
    return USP_OK;
}

usp_status usp_close_written(FILE *f, int failed, const char *path) {
    int err = errno;
    if (fclose(f) != 0 && !failed) {
        failed = 1;
        err = errno;
    }
    if (failed) return usp_fail(USP_EINTERNAL, "%s: write failed: %s", path, strerror(err));
    return USP_OK;
}
