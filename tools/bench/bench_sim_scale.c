/* bench_sim_scale: how far the simulator goes in timing-only mode.
 *
 * Forward + backward of one long-context problem (default: seq 1M tokens,
 * 64 heads, D 128, causal, bf16, zigzag) on h100-fattree, for each world
 * size asked (default 1024 = ulysses 8 x ring 128 on 128 nodes, and 4096 =
 * 8 x 512 on 512 nodes). Prints wall time of the schedule build and of the
 * simulation (wall and CPU), the bytes the compact schedule holds (its pool
 * of distinct steps, the index lists of the ring ranks, the per-rank
 * records), the peak resident memory of this process and of the simulating
 * child, with the predicted times, and how many ranks were simulated (the
 * others folded onto one per ulysses group where that is exact,
 * sim/engine/fold.c). No trace is kept. With --anchor 1 each world also runs
 * with every rank simulated (--no-fold), in the same run: the anchor of the
 * speed-up, whose predicted times must be the same (exit 1 otherwise).
 *
 *   bench_sim_scale [--world N]... [--ulysses U] [--seq L] [--heads H]
 *                   [--platform SPEC] [--ring-impl NAME] [--no-fold 1] [--anchor 1] */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "usp/layout.h"
#include "usp/schedule.h"
#include "usp/sim.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU seconds (user + system): steadier than wall time on a shared machine. */
static double cpu_s(int who) {
    struct rusage ru;
    getrusage(who, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

static double max_rss_mib(int who) {
    struct rusage ru;
    getrusage(who, &ru);
    return ru.ru_maxrss / 1024.0; /* Linux reports KiB */
}

typedef struct {
    int worlds[8], nworlds, ulysses, seq, heads, no_fold, anchor;
    const char *platform;
    usp_ring_impl impl;
} bench_args;

static int parse_args(int argc, char **argv, bench_args *a) {
    *a = (bench_args){.ulysses = 8, .seq = 1 << 20, .heads = 64, .platform = "h100-fattree",
                      .impl = USP_RING_ZIGZAG};
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--world") && a->nworlds < 8) a->worlds[a->nworlds++] = atoi(v);
        else if (!strcmp(k, "--ulysses")) a->ulysses = atoi(v);
        else if (!strcmp(k, "--seq")) a->seq = atoi(v);
        else if (!strcmp(k, "--heads")) a->heads = atoi(v);
        else if (!strcmp(k, "--platform")) a->platform = v;
        else if (!strcmp(k, "--no-fold")) a->no_fold = atoi(v);
        else if (!strcmp(k, "--anchor")) a->anchor = atoi(v);
        else if (!strcmp(k, "--ring-impl")) { if (usp_parse_ring_impl(v, &a->impl)) return -1; }
        else return -1;
    }
    if ((argc - 1) % 2) return -1;
    if (!a->nworlds) { a->worlds[0] = 1024; a->worlds[1] = 4096; a->nworlds = 2; }
    return 0;
}

static int bench_one(const bench_args *a, int world, int no_fold, double *fwd_ms, double *bwd_ms) {
    usp_config c = usp_config_default();
    c.seq = a->seq; c.heads = c.kv_heads = a->heads; c.head_dim = 128;
    c.causal = 1; c.dtype = USP_BF16; c.ring_impl = a->impl;
    c.ulysses = a->ulysses; c.ring = world / a->ulysses;
    usp_schedule s;
    usp_result r;
    double cpu0 = cpu_s(RUSAGE_CHILDREN);
    double t0 = now_s();
    if (usp_schedule_build(&c, 1, &s) != USP_OK) { fprintf(stderr, "schedule: %s\n", usp_error()); return 1; }
    double t1 = now_s();
    long steps = 0;
    for (int g = 0; g < s.world; g++) steps += s.ranks[g].nsteps;
    double held = (double)s.npool * sizeof(usp_step) + (double)s.world * sizeof(usp_rank_schedule);
    for (int r = 0; r < c.ring; r++) held += (double)s.ranks[usp_rank_of(&c, r, 0)].nsteps * sizeof(uint32_t);
    usp_sim_options o = {.platform = a->platform, .no_fold = no_fold};
    usp_status st = usp_result_init(&r, &s, 0);
    if (st == USP_OK) st = usp_sim_execute(&s, NULL, &o, &r, NULL);
    double t2 = now_s();
    if (st != USP_OK) { fprintf(stderr, "simulation: %s\n", usp_error()); usp_schedule_free(&s); return 1; }
    printf("%6d %3d x %-4d %9d %10ld %8d %9.1f %9.2f %9.2f %9.2f %10.0f %10.0f %10.3f %10.3f\n", world, c.ulysses,
           c.ring, r.sim_ranks_simulated, steps, s.npool, held / 1048576, t1 - t0, t2 - t1, cpu_s(RUSAGE_CHILDREN) - cpu0,
           max_rss_mib(RUSAGE_SELF),
           max_rss_mib(RUSAGE_CHILDREN), r.time_fwd_s * 1e3, r.time_bwd_s * 1e3);
    fflush(stdout);
    *fwd_ms = r.time_fwd_s * 1e3;
    *bwd_ms = r.time_bwd_s * 1e3;
    usp_result_free(&r);
    usp_schedule_free(&s);
    return 0;
}

int main(int argc, char **argv) {
    bench_args a;
    if (parse_args(argc, argv, &a) != 0) {
        fprintf(stderr, "usage: bench_sim_scale [--world N]... [--ulysses U] [--seq L] [--heads H] "
                        "[--platform SPEC] [--ring-impl NAME] [--no-fold 1] [--anchor 1]\n");
        return 2;
    }
    printf("timing-only forward+backward, seq %d, %d heads, D 128, causal bf16, %s, on %s\n", a.seq, a.heads,
           usp_ring_impl_name(a.impl), a.platform);
    printf("%6s %-10s %9s %10s %8s %9s %9s %9s %9s %10s %10s %10s %10s\n", "ranks", "U x R", "simulated", "steps",
           "distinct", "sched MiB", "build s", "sim s", "sim cpu s", "RSS MiB", "child MiB", "fwd ms", "bwd ms");
    for (int i = 0; i < a.nworlds; i++) {
        double f, b, f_full, b_full;
        if (bench_one(&a, a.worlds[i], a.no_fold, &f, &b) != 0) return 1;
        if (!a.anchor || a.no_fold) continue;
        if (bench_one(&a, a.worlds[i], 1, &f_full, &b_full) != 0) return 1;
        /* the same events summed in another order at most: far below the printed microsecond */
        if (fabs(f - f_full) > 1e-9 * f_full || fabs(b - b_full) > 1e-9 * b_full) {
            fprintf(stderr, "the folded and full runs predict different times\n");
            return 1;
        }
    }
    return 0;
}
