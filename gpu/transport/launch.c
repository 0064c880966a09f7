/* launch.c: usp starts its own ranks on this machine (usp_gpu_launch_local).
 *
 * Each rank is this same program, exec'ed with the variables a launcher
 * would set, so a self-launched run takes exactly the path of a torchrun,
 * Slurm or mpirun one. The parent only waits, and stops the others when one
 * rank fails and they do not end on their own. */
#define _POSIX_C_SOURCE 200809L
#include "bootstrap.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    pid_t pid;
    int done, code;     /* code: exit status, or 128 + signal */
} child;

static void set_int(const char *name, int value) {
    char s[32];
    snprintf(s, sizeof s, "%d", value);
    setenv(name, s, 1);
}

/* In the child, between fork and exec: only async-signal-safe exits. */
static void become_rank(int rank, int nranks, int port, char *const *argv) {
    set_int("RANK", rank);
    set_int("WORLD_SIZE", nranks);
    set_int("LOCAL_RANK", rank);
    set_int("LOCAL_WORLD_SIZE", nranks);
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    set_int("MASTER_PORT", port);
    /* the port rules of usp_gpu_env_read must not shift our port */
    unsetenv("USP_BOOTSTRAP_PORT");
    unsetenv("TORCHELASTIC_USE_AGENT_STORE");
    setenv("NCCL_NVLS_ENABLE", "0", 0);
    execv("/proc/self/exe", argv);
    fprintf(stderr, "usp: rank %d: cannot start /proc/self/exe: %s\n", rank, strerror(errno));
    _exit(127);
}

static int status_code(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 1;
}

/* Collects ranks that ended; returns how many are still running. */
static int reap(child *c, int n, int *first_failed) {
    int running = 0;
    for (int r = 0; r < n; r++) {
        if (c[r].done) continue;
        int status;
        pid_t p = waitpid(c[r].pid, &status, WNOHANG);
        if (p == 0) { running++; continue; }
        c[r].done = 1;
        c[r].code = p < 0 ? 1 : status_code(status);
        if (p > 0 && WIFSIGNALED(status))
            fprintf(stderr, "usp: rank %d was killed by signal %d\n", r, WTERMSIG(status));
        if (c[r].code != 0 && *first_failed < 0) *first_failed = r;
    }
    return running;
}

static void signal_running(const child *c, int n, int sig) {
    for (int r = 0; r < n; r++)
        if (!c[r].done) kill(c[r].pid, sig);
}

/* Waits for every rank; after a failure, gives the rest timeout_s, then TERM, then KILL. */
static void wait_all(child *c, int n, double timeout_s) {
    int first_failed = -1, termed = 0;
    double stop_at = 0;
    while (reap(c, n, &first_failed) > 0) {
        if (first_failed >= 0 && stop_at == 0) stop_at = usp_now_s() + timeout_s;
        if (stop_at > 0 && usp_now_s() > stop_at) {
            if (!termed) fprintf(stderr, "usp: rank %d failed; stopping the ranks still running\n", first_failed);
            signal_running(c, n, termed ? SIGKILL : SIGTERM);
            termed = 1;
            stop_at = usp_now_s() + 5;
        }
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
}

static int run_code(const child *c, int n) {
    if (c[0].code != 0) return c[0].code > 125 ? 1 : c[0].code;
    for (int r = 1; r < n; r++)
        if (c[r].code != 0) return c[r].code > 125 ? 1 : c[r].code;
    return 0;
}

int usp_gpu_launch_local(int nranks, char *const *argv, double timeout_s) {
    int port = usp_free_port();
    if (port == 0) {
        fprintf(stderr, "usp: cannot find a free TCP port on 127.0.0.1\n");
        return 1;
    }
    child *c = calloc((size_t)nranks, sizeof *c);
    if (!c) return 1;
    fflush(NULL); /* children must not repeat buffered output */
    int started = 0;
    for (; started < nranks; started++) {
        pid_t p = fork();
        if (p == 0) become_rank(started, nranks, port, argv);
        if (p < 0) {
            fprintf(stderr, "usp: cannot start rank %d: %s\n", started, strerror(errno));
            break;
        }
        c[started].pid = p;
    }
    int code;
    if (started < nranks) {
        signal_running(c, started, SIGTERM);
        for (int r = 0; r < started; r++) waitpid(c[r].pid, NULL, 0);
        code = 1;
    } else {
        wait_all(c, nranks, timeout_s);
        code = run_code(c, nranks);
    }
    free(c);
    return code;
}
