/* memory.c: what a simulation will take in memory, worked out from the
 * configuration alone, so that a run that cannot fit is refused before
 * anything is allocated (usp_sim_check_memory).
 *
 * Timing only (--no-numerics), the simulation's memory grows with
 * ranks x steps: the engine keeps a start, an end and a done flag per step
 * of each rank, SimGrid its objects per rank (actor, stack, host, links,
 * mailboxes); the schedule itself is small (usp/schedule.h: 4 bytes per step
 * of each ring rank). The constants below are fitted to the peak resident
 * memory of `usp run --no-numerics --platform h100-fattree` at ulysses 8 x
 * ring 64, 128 and 256 (39, 82 and 212 MB: 512 to 2048 ranks of 413 to
 * 1565 steps), rounded up; a rank has 6 x ring + 29 steps (40 bounds the
 * constant part). With numerics the tensors dominate: usp_case_run checks
 * those (tools/usp/runcase.c). */
#define _DEFAULT_SOURCE /* sysconf's _SC_PHYS_PAGES */
#include "internal.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const double BASE_BYTES = 16e6;        /* libraries, SimGrid, the platform's first hosts */
static const double RANK_BYTES = 40e3;        /* per rank: actor, its stack pages, host, links */
static const double STEP_BYTES = 40.0;        /* per step of each rank (fitted 38) */

double usp_sim_memory_estimate(const usp_config *c, int backward) {
    double world = (double)c->ulysses * c->ring;
    double steps = (backward ? 6.0 : 3.0) * c->ring + 40;
    return BASE_BYTES + world * (RANK_BYTES + steps * STEP_BYTES);
}

/* Memory this process could take: MemAvailable, else the physical pages. */
static double available_bytes(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    double kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lf kB", &kib) == 1) break;
    if (f) fclose(f);
    if (kib > 0) return kib * 1024;
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    return pages > 0 && size > 0 ? (double)pages * size : -1;
}

usp_status usp_sim_check_memory(const usp_config *c, int backward) {
    double need = usp_sim_memory_estimate(c, backward), have = available_bytes();
    if (have > 0 && need > have)
        return usp_fail(USP_EINVAL, "simulating %d ranks (ulysses %d x ring %d, timing only) needs about "
                        "%.1f GiB, more than the %.1f GiB available", c->ulysses * c->ring, c->ulysses,
                        c->ring, need / (1 << 30), have / (1 << 30));
    return USP_OK;
}
