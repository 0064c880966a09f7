/* test_util.h: a temporary directory for the files a test program writes,
 * whole text files written and read back, and the check on a refused usp
 * command.
 *
 * Include after <cmocka.h> (the readers assert), with _XOPEN_SOURCE 700 or
 * _GNU_SOURCE defined before any header (mkdtemp, nftw). */
#ifndef USP_TEST_UTIL_H
#define USP_TEST_UTIL_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char tmp_dir[256];

/* Creates a fresh /tmp/<prefix>_XXXXXX as tmp_dir: 0, or -1. */
static inline int tmp_dir_make(const char *prefix) {
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/%s_XXXXXX", prefix);
    return mkdtemp(tmp_dir) ? 0 : -1;
}

static inline int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

/* Group teardown: tmp_dir and everything in it. */
static inline int remove_tmp_dir(void **state) {
    (void)state;
    return nftw(tmp_dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* tmp_dir/name. The last four answers stay valid, so one call can name
 * several files. */
static inline const char *tmp_path(const char *name) {
    static char path[4][512];
    static int next;
    next = (next + 1) % 4;
    snprintf(path[next], sizeof path[next], "%s/%s", tmp_dir, name);
    return path[next];
}

/* The whole file, NUL-terminated; the caller frees it. */
static inline char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *text = malloc((size_t)n + 1);
    assert_int_equal(fread(text, 1, (size_t)n, f), (size_t)n);
    text[n] = '\0';
    fclose(f);
    return text;
}

static inline void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* `usp <args>` exited with rc and wrote err on stderr: fails the test unless
 * rc is 2 and err is one line that contains message. */
static inline void check_refusal(const char *args, int rc, const char *err, const char *message) {
    if (rc != 2 || !strstr(err, message))
        fail_msg("usp %s: exit %d, stderr '%s', expected exit 2 with '%s'", args, rc, err, message);
    const char *nl = strchr(err, '\n');
    if (!nl || nl[1] != '\0') fail_msg("usp %s: more than one line: '%s'", args, err);
}

#endif
