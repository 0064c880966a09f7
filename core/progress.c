/* core/progress.c: the progress line (usp/progress.h). */
#include "usp/progress.h"

#include <stdarg.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static struct {
    double start; /* 0: no line started */
    double last;  /* when the last line was written */
    int shown;    /* something is on the terminal's line */
    int width;    /* its length, to clear it */
} line;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void usp_progress_begin(void) { line.start = now_s(); }

double usp_progress_elapsed(void) { return line.start == 0 ? 0 : now_s() - line.start; }

void usp_progress(FILE *f, const char *fmt, ...) {
    if (!f) return;
    double t = now_s();
    if (line.start == 0) line.start = t;
    if (t - line.start < USP_PROGRESS_AFTER_S) return;
    int tty = isatty(fileno(f));
    if (!tty && line.last > 0 && t - line.last < USP_PROGRESS_LOG_S) return;
    char text[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    int n = (int)strlen(text);
    if (tty) {
        /* pad over what a longer earlier line left */
        fprintf(f, "\r%s%*s", text, line.width > n ? line.width - n : 0, "");
        line.width = n;
        line.shown = 1;
    } else {
        fprintf(f, "%s\n", text);
    }
    fflush(f);
    line.last = t;
}

void usp_progress_end(FILE *f, int keep) {
    if (f && line.shown) {
        if (keep) fputc('\n', f);
        else fprintf(f, "\r%*s\r", line.width, "");
        fflush(f);
    }
    memset(&line, 0, sizeof line);
}
