/* internal.h: what the parts of the simulator share (not installed). */
#ifndef USP_SIM_INTERNAL_H
#define USP_SIM_INTERNAL_H

#include <stdio.h>
#include <sys/types.h>
#include "usp/profile.h"
#include "usp/sim.h"

/* ------------------------------------------------------ device profiles */

enum { SIM_NDTYPES = 4, SIM_MAX_HEAD_DIMS = USP_PROFILE_MAX_HEAD_DIMS };

typedef struct {
    int head_dim;
    double fwd_flops, bwd_flops;   /* FLOP/s */
    double fwd_fixed_s, bwd_fixed_s; /* per kernel ('fwd_fixed_us', optional): the
                                        small-size cost an affine fit of measured
                                        kernel times finds */
    double fwd_short, bwd_short;   /* tokens ('fwd_short_keys', 'bwd_short_rows',
                                      optional, 0): a block of n keys (forward)
                                      or n query rows (backward) runs at
                                      n / (n + short) of the rate: the per-tile
                                      setup of the kernel over a short loop */
    double fwd_rowmask, bwd_rowmask; /* ('fwd_rowmask_efficiency', ..., optional, 1):
                                        blocks under per-row masks run at this
                                        fraction of the rate their tiles and units
                                        give (usp calibrate fits it on packed
                                        documents of equal length) */
} sim_attention_rate;

typedef struct {
    char name[64];
    char kernel[96];          /* the attention kernel its rates are of ('kernel', optional) */
    sim_attention_rate rates[SIM_NDTYPES][SIM_MAX_HEAD_DIMS]; /* by usp_dtype */
    int nrates[SIM_NDTYPES];
    double peak_flops[SIM_NDTYPES];
    double masked_fwd, masked_bwd; /* efficiency of partial (masked) blocks */
    double hbm_bytes_per_s;
    /* by usp_step_kind, memory-bound kinds only: 'memory_gbps', else hbm_gbps
     * (the copy kernels of one GPU differ up to sevenfold in achieved rate) */
    double mem_bytes_per_s[USP_STEP_KIND_COUNT];
    double launch_s;
    double capacity_bytes;   /* the card's memory: 'memory_mib' x 2^20 or 'memory_gb' x 10^9 */
    double usable_bytes;     /* USP_MEMORY_USABLE_FRACTION of it */
    /* fraction of an attention kernel's rate lost while its rank's comm
     * stream transfers ('comm_overlap_slowdown', default 0): the NCCL kernel
     * holds SMs and memory bandwidth the attention kernel then lacks */
    double comm_slowdown;
} sim_profile;

/* Loads a built-in profile ("h200") or a JSON file (usp/profile.h: the
 * fields, which are optional, and the ranges each figure must lie in). */
usp_status sim_profile_load(const char *name_or_file, sim_profile *p);
/* USP_EINVAL when the profile has no attention figures for the config's dtype. */
usp_status sim_profile_supports(const sim_profile *p, const usp_config *c);
/* Seconds a COMPUTE step takes on the device (0 for comm steps). */
double sim_step_seconds(const sim_profile *p, const usp_config *c, const usp_step *st);
/* The profile the options name: o->profile, else the preset's GPU, else h200. */
const char *sim_profile_for(const usp_sim_options *o);
/* usp_platform_caveat of a run with these options: of o->platform (h200x8 by
 * default), NULL with a host map (its ranks are not on the hosts in order). */
const char *sim_caveat_for(const usp_sim_options *o, const usp_config *c);

/* Built-in profile texts, generated from sim/profiles/<gpu>.json. */
typedef struct { const char *name, *json; } sim_embedded_profile;
extern const sim_embedded_profile SIM_EMBEDDED_PROFILES[];
extern const int SIM_NEMBEDDED_PROFILES;

/* ------------------------------------------------------------- engine */

/* How a run was simulated (engine.c, fold.c). */
typedef enum {
    SIM_MODE_FULL,        /* every rank an actor */
    SIM_MODE_FOLDED,      /* one rank per ulysses group runs its list, exact by symmetry */
    SIM_MODE_FOLD_BROKEN  /* folded, but a shadow's all-to-all differed: run again in full */
} sim_mode;
enum { SIM_WHY_LEN = 160 };

/* What the child process computes and sends back. */
typedef struct {
    sim_mode mode;
    char why[SIM_WHY_LEN];                  /* not folded: why */
    double time_fwd_s, time_bwd_s;
    double *compute_s, *comm_s, *exposed_s; /* [world] */
    double **start, **end;                  /* [world][nsteps], only with a trace */
} sim_timeline;

typedef struct {
    const usp_schedule *sched;
    const usp_inputs *inputs;   /* NULL: timing only */
    usp_result *outputs;        /* numerics: where the shards are stored */
    const sim_profile *profile;
    const char *platform_file;
    char **hosts;               /* [world] host names, or NULL: natural order */
    const usp_sim_options *opts;
    int keep_steps;             /* fill timeline start/end */
    int no_fold;                /* simulate every rank (no_fold_why says why) */
    const char *no_fold_why;
} sim_job;

/* Runs one simulation in this process (SimGrid initialized here: once per
 * process). `phase` is called when the platform starts and ends loading. */
usp_status sim_engine_run(const sim_job *job, sim_timeline *tl, void (*phase)(int loaded, void *ctx),
                          void *ctx);

/* Exposed communication: time the comm stream is busy while compute is not.
 * Intervals of each stream are in order and disjoint. */
double sim_exposed_time(const double *cs, const double *ce, int nc, const double *ms, const double *me, int nm);

/* In a simulation child (execute.c): if SimGrid crashes the process (abort,
 * fault) before the next call, or watchdog_s > 0 seconds pass (a hang), the
 * parent receives `message` as bad input (USP_EINVAL) instead of "the
 * simulation died". watchdog_s 0 keeps the running watchdog; NULL disarms
 * all. Outside a child: nothing. */
void sim_child_arm_failure(const char *message, int watchdog_s);

/* Natural order of names: digit runs compare as numbers ("gpu2" < "gpu10"). */
int sim_natural_cmp(const char *a, const char *b);

/* ------------------------------------------------- the simulation child */

/* A forked child running one simulation. */
typedef struct {
    pid_t pid;
    int fd;    /* read end of the pipe the child writes its result to */
    FILE *err; /* the child's stderr; the caller closes it */
} sim_child;

/* Forks a child that runs body(fd, arg), fd the write end of the pipe, with
 * its stderr in c->err and SIGPIPE fatal; the child then exits without the
 * parent's atexit handlers. */
usp_status sim_child_start(sim_child *c, void (*body)(int fd, const void *arg), const void *arg);
/* Closes the read end and waits for the child: its wait status. */
int sim_child_wait(sim_child *c);
/* SimGrid's reason from a dead child's stderr (rewound here) into buf[n]:
 * the first ERROR/CRITICAL line other than "Exiting now", without its
 * "[time] file:line: [category/LEVEL] " prefix; else the first non-empty
 * line, which may be an "Exiting now" line only if exiting_as_fallback. */
void sim_child_reason(FILE *err, char *buf, size_t n, int exiting_as_fallback);

/* Copies src into dst[n], cut to fit, always terminated. */
void sim_copy_str(char *dst, size_t n, const char *src);

/* Writes the preset platform `spec` sized for `world` GPUs to a new file
 * $TMPDIR/<prefix>-XXXXXX.xml (path[n]); the caller removes it. */
usp_status sim_write_preset(const char *spec, int world, const char *prefix, char *path, size_t n);

#endif
