/* usp/progress.h: one progress line on a stream, as a terminal or a log wants it.
 *
 * On a terminal the line is rewritten in place ("\r" and the text) as often as
 * it changes; in a file or a pipe (a CI log) a whole line ending in "\n" is
 * written at most once every USP_PROGRESS_LOG_S seconds, so a log does not fill
 * with one rewritten line per step. Either way nothing is shown before
 * USP_PROGRESS_AFTER_S seconds have passed since the first call: a quick
 * command prints no progress at all.
 *
 * The state is per process (one progress line at a time), which is what a
 * command-line tool has. */
#ifndef USP_PROGRESS_H
#define USP_PROGRESS_H

#include <stdio.h>

#define USP_PROGRESS_AFTER_S 3.0 /* quiet for the first seconds */
#define USP_PROGRESS_LOG_S 10.0  /* at most one line this often when not a terminal */

/* Starts the clock now; otherwise the first usp_progress does. */
void usp_progress_begin(void);

/* Seconds since the clock started (0 before it has). */
double usp_progress_elapsed(void);

/* Shows the formatted text as the progress line on f (NULL: nothing). The
 * first call starts the clock if usp_progress_begin did not. */
void usp_progress(FILE *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Ends the progress line: on a terminal the line is cleared (or, with keep,
 * ended with a newline so the last text stays); the clock is reset. */
void usp_progress_end(FILE *f, int keep);

#endif
