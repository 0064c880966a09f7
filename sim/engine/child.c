/* child.c: what the simulator and the planner need to run SimGrid apart
 * from the calling process.
 *
 * SimGrid initializes once per process and exits on a platform it cannot
 * load, so each simulation runs in a forked child that sends its result
 * through a pipe; its stderr goes to a temporary file, where the parent finds
 * SimGrid's reason when the child dies. A preset platform is written to a
 * temporary file for SimGrid to load. */
#define _GNU_SOURCE /* mkstemps */
#include "internal.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

usp_status sim_child_start(sim_child *c, void (*body)(int fd, const void *arg), const void *arg) {
    int fds[2];
    FILE *err = tmpfile();
    if (!err || pipe(fds) != 0) {
        if (err) fclose(err);
        return usp_fail(USP_EINTERNAL, "cannot start the simulation: %s", strerror(errno));
    }
    fflush(NULL); /* the child must not write the parent's buffered output again */
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]); close(fds[1]); fclose(err);
        return usp_fail(USP_EINTERNAL, "cannot fork the simulation: %s", strerror(errno));
    }
    if (pid == 0) {
        close(fds[0]);
        signal(SIGPIPE, SIG_DFL);
        dup2(fileno(err), STDERR_FILENO);
        body(fds[1], arg);
        close(fds[1]);
        _exit(0); /* no atexit handlers: they belong to the parent */
    }
    close(fds[1]);
    c->pid = pid;
    c->fd = fds[0];
    c->err = err;
    return USP_OK;
}

int sim_child_wait(sim_child *c) {
    close(c->fd); /* a child still writing gets SIGPIPE rather than blocking */
    int wstatus = 0;
    while (waitpid(c->pid, &wstatus, 0) < 0 && errno == EINTR) {}
    return wstatus;
}

void sim_child_reason(FILE *err, char *buf, size_t n, int exiting_as_fallback) {
    char line[1024];
    buf[0] = '\0';
    rewind(err);
    while (fgets(line, sizeof line, err)) {
        line[strcspn(line, "\n")] = '\0';
        char *lvl = strstr(line, "/ERROR] ");
        if (!lvl) lvl = strstr(line, "/CRITICAL] ");
        if (lvl && !strstr(lvl, "Exiting now")) { sim_copy_str(buf, n, strstr(lvl, "] ") + 2); return; }
        if (lvl && !exiting_as_fallback) continue;
        if (!buf[0] && line[0]) sim_copy_str(buf, n, line);
    }
}

void sim_copy_str(char *dst, size_t n, const char *src) {
    size_t len = strlen(src);
    if (len >= n) len = n - 1;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

usp_status sim_write_preset(const char *spec, int world, const char *prefix, char *path, size_t n) {
    char name[64];
    usp_platform_params p;
    USP_TRY(usp_platform_parse_spec(spec, name, sizeof name, &p));
    const char *dir = getenv("TMPDIR");
    snprintf(path, n, "%s/%s-XXXXXX.xml", dir && *dir ? dir : "/tmp", prefix);
    int fd = mkstemps(path, 4);
    if (fd < 0) return usp_fail(USP_EINTERNAL, "cannot create %s: %s", path, strerror(errno));
    FILE *f = fdopen(fd, "w");
    if (!f) { close(fd); unlink(path); return usp_fail(USP_EINTERNAL, "cannot write %s", path); }
    usp_status st = usp_platform_write(name, &p, world, f);
    if (fclose(f) != 0 && st == USP_OK) st = usp_fail(USP_EINTERNAL, "cannot write %s", path);
    if (st != USP_OK) unlink(path);
    return st;
}
